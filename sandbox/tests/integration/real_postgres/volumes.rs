//! Volumes on the real runtime: a claim passes from one pod to the next
//! once the first has let go of it, and ConfigMap volumes follow their
//! object while a `subPath` mount keeps the content it started with.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use sandbox::{KillKind, Sandbox};
use serde_json::json;

use super::{
    WAIT, claim, create, pod_ip, pods, postgres_pod, query, ready, restarts, start, wait_pod,
    wait_pod_within, wait_until, waiting_message, waiting_reason,
};

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

/// Whether the pod is Running with its first container running (not
/// waiting for its volumes in ContainerCreating).
fn running(p: &Pod) -> bool {
    phase(p) == Some("Running")
        && p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs[0].state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// A `postgres:15` pod running `script` with `sh -c`, claim `claim`
/// mounted at `/data`.
fn shell_pod(name: &str, restart_policy: &str, claim: &str, script: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": restart_policy,
               "containers": [{"name": "main", "image": "postgres:15",
                   "command": ["sh", "-c", script],
                   "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
               "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

/// Deletes a pod and waits until it is gone (the kubelet stopped it).
async fn delete_pod(sb: &Sandbox, name: &str) {
    pods(sb)
        .delete(name, &DeleteParams::default())
        .await
        .expect("the pod is deleted");
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Some(p) = pods(sb).get_opt(name).await.expect("the API answers") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for pod {name} to be gone\nstatus: {}",
            serde_json::to_string_pretty(&p.status).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sets one key of ConfigMap `name` (a merge patch, as `kubectl patch`).
async fn set_config(sb: &Sandbox, name: &str, key: &str, value: &str) {
    Api::<ConfigMap>::namespaced(sb.client(), "default")
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {key: value}})),
        )
        .await
        .expect("the configmap is patched");
}

/// The last line a pod's container logged.
async fn last_log_line(sb: &Sandbox, name: &str) -> String {
    let log = pods(sb)
        .logs(name, &Default::default())
        .await
        .unwrap_or_default();
    log.lines().last().unwrap_or_default().to_string()
}

/// Waits until the pod's last log line is `line`.
async fn wait_log_line(sb: &Sandbox, name: &str, line: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = last_log_line(sb, name).await;
        if last == line {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {line:?}; last line {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long a pod taking over a claim may take to start: nothing else
/// holds the volume, so it starts at once (a pod counted as still
/// releasing the volume would keep it in ContainerCreating for ever).
const TAKEOVER: Duration = Duration::from_secs(20);

// Multi-threaded, as the sandbox binary and the operators' tests run: the
// bug needs the kubelet to stop the finished pod (when it records
// Succeeded) after the pod's task has ended. On one thread the kubelet
// always gets there first; on two, it comes after most of the time, and
// three Job pods in a row make a miss unlikely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_mounting_the_claim_of_a_deleted_finished_job_pod_starts() {
    let sb = start().await;
    create(&sb, claim("data")).await;
    for run in 1..=3 {
        // What a Job's pod is: run to completion, never restarted.
        let job = format!("job-{run}");
        create(
            &sb,
            shell_pod(&job, "Never", "data", &format!("echo run {run} >> /data/x")),
        )
        .await;
        wait_pod_within(&sb, &job, "Succeeded", TAKEOVER, |p| {
            phase(p) == Some("Succeeded")
        })
        .await;
        // Its processes were gone before it was deleted: it holds nothing.
        delete_pod(&sb, &job).await;
    }

    create(
        &sb,
        shell_pod("next", "Always", "data", "cat /data/x; sleep 30"),
    )
    .await;
    wait_pod_within(&sb, "next", "Running", TAKEOVER, running).await;
    wait_log_line(&sb, "next", "run 3").await;
    let log = pods(&sb)
        .logs("next", &Default::default())
        .await
        .expect("the log is served");
    assert_eq!(
        log, "run 1\nrun 2\nrun 3\n",
        "every Job pod wrote to the claim"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_pod_deleted_while_waiting_for_its_volumes_does_not_hold_them() {
    let sb = start().await;
    create(&sb, claim("data")).await;
    // The claim is bound and known, but a ConfigMap volume is missing: the
    // pod waits in ContainerCreating and never runs a process.
    let mut pod = shell_pod("waiting", "Always", "data", "sleep 30");
    pod["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({"name": "config", "mountPath": "/etc/config"}));
    pod["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes")
        .push(json!({"name": "config", "configMap": {"name": "absent"}}));
    create(&sb, pod).await;
    wait_pod(&sb, "waiting", "waiting for ConfigMap absent", |p| {
        waiting_reason(p).as_deref() == Some("ContainerCreating")
            && waiting_message(p).contains("\"absent\" not found")
    })
    .await;
    delete_pod(&sb, "waiting").await;

    create(
        &sb,
        shell_pod("next", "Always", "data", "echo started; sleep 30"),
    )
    .await;
    wait_pod_within(&sb, "next", "Running", TAKEOVER, running).await;
    wait_log_line(&sb, "next", "started").await;
    sb.shutdown().await;
}

#[tokio::test]
async fn a_changed_configmap_reaches_a_running_server_whose_pg_reload_conf_then_applies_it() {
    let sb = start().await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pg-config"},
               "data": {"postgresql.conf": "work_mem = '4MB'\n"}}),
    )
    .await;
    let mut pod = postgres_pod("db", None);
    pod["spec"]["containers"][0]["args"] =
        json!(["-c", "config_file=/etc/postgresql/postgresql.conf"]);
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "config", "mountPath": "/etc/postgresql"}]);
    pod["spec"]["volumes"] = json!([{"name": "config", "configMap": {"name": "pg-config"}}]);
    create(&sb, pod).await;
    let pod = wait_pod(&sb, "db", "Ready", ready).await;
    let ip = pod_ip(&pod);
    let pid = sb
        .postgres_runtime()
        .expect("the real runtime")
        .pids("default", "db");
    assert_eq!(query(&ip, "show work_mem").await, "4MB");
    // The server reads the file behind the mount: its host path.
    let config_file = query(&ip, "show config_file").await;
    assert!(
        config_file.ends_with("/volumes/config/postgresql.conf"),
        "{config_file}"
    );

    set_config(&sb, "pg-config", "postgresql.conf", "work_mem = '8MB'\n").await;
    let changed_at = tokio::time::Instant::now();
    wait_until(
        "the mounted file has the new content",
        || std::fs::read_to_string(&config_file).is_ok_and(|c| c.contains("8MB")),
        || std::fs::read_to_string(&config_file).unwrap_or_default(),
    )
    .await;
    assert!(
        changed_at.elapsed() < Duration::from_secs(10),
        "the update arrives within the sync delay, not at a restart"
    );
    // The server has not been told: it still runs the old setting.
    assert_eq!(query(&ip, "show work_mem").await, "4MB");
    assert_eq!(query(&ip, "select pg_reload_conf()").await, "t");
    let deadline = tokio::time::Instant::now() + WAIT;
    while query(&ip, "show work_mem").await != "8MB" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload applies the new file"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pod = pods(&sb).get("db").await.expect("exists");
    assert_eq!(restarts(&pod), 0, "the container is not restarted");
    assert_eq!(
        sb.postgres_runtime()
            .expect("the real runtime")
            .pids("default", "db"),
        pid,
        "the same process serves"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_subpath_mount_of_a_configmap_keeps_its_content_until_the_container_restarts() {
    let sb = start().await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "notes"},
               "data": {"note": "one"}}),
    )
    .await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
               "spec": {"containers": [{"name": "main", "image": "postgres:15",
                   "command": ["sh", "-c", "while true; do echo \"whole=$(cat /etc/notes/note) sub=$(cat /etc/note)\"; sleep 0.2; done"],
                   "volumeMounts": [{"name": "notes", "mountPath": "/etc/notes"},
                                    {"name": "notes", "mountPath": "/etc/note", "subPath": "note"}]}],
                   "volumes": [{"name": "notes", "configMap": {"name": "notes"}}]}}),
    )
    .await;
    wait_log_line(&sb, "reader", "whole=one sub=one").await;
    set_config(&sb, "notes", "note", "two").await;
    // As on a node: the volume follows the object, the subPath (a bind
    // mount of the file as the container started) does not.
    wait_log_line(&sb, "reader", "whole=two sub=one").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(last_log_line(&sb, "reader").await, "whole=two sub=one");
    assert_eq!(restarts(&pods(&sb).get("reader").await.expect("exists")), 0);

    let rt = sb.postgres_runtime().expect("the real runtime");
    assert!(rt.kill_container("default", "reader", None, KillKind::Crash));
    wait_pod(&sb, "reader", "restarted", |p| restarts(p) == 1).await;
    wait_log_line(&sb, "reader", "whole=two sub=two").await;
    sb.shutdown().await;
}
