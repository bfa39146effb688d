//! Termination messages: what a container writes to its
//! `terminationMessagePath`, or its log's end under
//! `FallbackToLogsOnError`, shows in its terminated state, now or as its
//! last state after a restart.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::json;

use super::{WAIT, create, pods, restarts, start, wait_pod};

/// The terminated state of a pod's first container, now or (`last`) in
/// its previous run.
fn terminated(p: &Pod, last: bool) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    let s = &p.status.as_ref()?.container_statuses.as_ref()?[0];
    let state = if last {
        s.last_state.as_ref()?
    } else {
        s.state.as_ref()?
    };
    state.terminated.clone()
}

#[tokio::test]
async fn a_job_s_summary_written_to_dev_termination_log_shows_in_its_pod_s_status() {
    let sb = start().await;
    create(
        &sb,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup"},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                   "containers": [{"name": "dump", "image": "postgres:15",
                       "command": ["sh", "-c", "echo working; echo 'dumped 3 tables' > /dev/termination-log"]}]}}}}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let name = loop {
        let list = pods(&sb)
            .list(&ListParams::default().labels("job-name=backup"))
            .await
            .expect("the API answers");
        if let Some(name) = list.items.first().and_then(|p| p.metadata.name.clone()) {
            break name;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Job makes a pod"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pod = wait_pod(&sb, &name, "Succeeded", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    let t = terminated(&pod, false).expect("a terminated state");
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(t.message.as_deref(), Some("dumped 3 tables\n"));
    sb.shutdown().await;
}

#[tokio::test]
async fn a_failed_container_with_no_message_reports_its_log_s_end_under_fallback_to_logs_on_error()
{
    let sb = start().await;
    let pod = |name: &str, policy: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "postgres:15",
                   "terminationMessagePolicy": policy,
                   "command": ["sh", "-c", "for i in $(seq 1 100); do echo line $i; done; exit 2"]}]}})
    };
    create(&sb, pod("fallback", "FallbackToLogsOnError")).await;
    create(&sb, pod("file", "File")).await;
    let failed = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed");
    let pod = wait_pod(&sb, "fallback", "Failed", failed).await;
    let message = terminated(&pod, false)
        .and_then(|t| t.message)
        .expect("a message");
    assert!(
        message.starts_with("line 21\n") && message.ends_with("line 100\n"),
        "the last 80 lines: {message}"
    );
    let pod = wait_pod(&sb, "file", "Failed", failed).await;
    assert_eq!(
        terminated(&pod, false).and_then(|t| t.message),
        None,
        "policy File reads only the (empty) file"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_restarted_container_keeps_the_message_of_its_last_run_in_last_state() {
    let sb = start().await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "flaky"},
               "spec": {"containers": [{"name": "main", "image": "postgres:15",
                   "terminationMessagePath": "/var/run/why",
                   "command": ["sh", "-c", "test -s /var/run/why && exit 9; echo \"gave up at run $RANDOM\" > /var/run/why; exit 1"]}]}}),
    )
    .await;
    let pod = wait_pod(&sb, "flaky", "restarted", |p| {
        restarts(p) >= 2 && terminated(p, true).is_some()
    })
    .await;
    let last = terminated(&pod, true).expect("a last state");
    assert_eq!(last.exit_code, 1, "each run starts with an empty file");
    let message = last.message.expect("a message");
    assert!(message.starts_with("gave up at run "), "{message}");
    sb.shutdown().await;
}
