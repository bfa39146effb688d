//! `kubectl logs job/NAME` (a Job's defaulted selector) and `kubectl logs
//! -f` (a log followed until its container exits).

use std::time::Duration;

use sandbox::{SandboxConfig, SimulatedConfig};

use super::{cluster_on, real_cluster};

/// A pod with the labels the Job's template also has, created first so
/// that a selector-less lookup would find it.
const DECOY_AND_JOB: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: db, labels: {app: backup}}
spec:
  containers: [{name: db, image: postgres:16}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: backup}
spec:
  template:
    metadata: {labels: {app: backup}}
    spec:
      restartPolicy: Never
      containers: [{name: dump, image: postgres:16, command: [pg_dump, --version]}]
"#;

/// Upstream: a Job without `manualSelector` gets `spec.selector` matching
/// its uid and a template labelled with `batch.kubernetes.io/controller-uid`,
/// `batch.kubernetes.io/job-name` and the legacy `controller-uid` and
/// `job-name`; `kubectl logs job/NAME` reads the log of a pod that
/// selector finds, never another pod with the template's labels.
#[tokio::test]
async fn logs_of_a_job_are_its_pods_not_another_pods_with_its_labels() {
    // The simulated Job pod runs long enough to be read (a finished
    // simulated pod's log is gone).
    let k = cluster_on(SandboxConfig {
        simulated: SimulatedConfig {
            job_duration: Duration::from_secs(60),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let f = k.file("job.yaml", DECOY_AND_JOB);
    k.ok(&["apply", "-f", &f]).await;
    let job: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "job", "backup", "-o", "json"]).await)
            .expect("the job as JSON");
    let uid = job["metadata"]["uid"].as_str().expect("a uid");
    assert_eq!(
        job["spec"]["selector"],
        serde_json::json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    assert!(job["spec"].get("manualSelector").is_none(), "{job}");
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    for (key, value) in [
        ("app", "backup"),
        ("batch.kubernetes.io/controller-uid", uid),
        ("controller-uid", uid),
        ("batch.kubernetes.io/job-name", "backup"),
        ("job-name", "backup"),
    ] {
        assert_eq!(labels[key], value, "template label {key}: {labels}");
    }
    // The Job's pod appears a moment after the Job.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let out = loop {
        let r = k.run(&["logs", "job/backup"]).await;
        if r.ok {
            break r.stdout;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.stderr);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(out.contains("of pod default/backup-"), "{out}");
}

/// Upstream: `kubectl logs -f` prints what the container writes while it
/// runs and ends when the container exits.
#[tokio::test]
async fn logs_follow_prints_the_log_until_the_container_exits() {
    let k = real_cluster().await;
    k.ok(&[
        "run",
        "talker",
        "--image=busybox",
        "--restart=Never",
        "--command",
        "--",
        "sh",
        "-c",
        "echo first; sleep 2; echo second",
    ])
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = k.run(&["logs", "talker"]).await;
        if r.ok && r.stdout.contains("first") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.stderr);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = k.ok(&["logs", "-f", "talker"]).await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["first", "second"],
        "{out}"
    );
}
