//! Scripts that run instead of the image's entrypoint (an operator's
//! instance script deciding how a server starts): the entrypoint is on
//! the image's PATH, the server a script `exec`s is stopped with the
//! image's STOPSIGNAL like one the entrypoint started, and the tools such
//! a script runs (`pg_rewind`) are the real ones.

use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::json;

use super::{create, pod_ip, pods, postgres_pod, ready, start, wait_pod};

#[tokio::test]
async fn a_script_that_execs_the_entrypoint_runs_the_server_and_is_stopped_as_the_server() {
    let sb = start().await;
    let mut pod = postgres_pod("scripted", None);
    pod["spec"]["containers"][0]["command"] =
        json!(["sh", "-c", "exec docker-entrypoint.sh \"$@\"", "sh"]);
    pod["spec"]["containers"][0]["args"] = json!(["postgres"]);
    create(&sb, pod).await;
    let running = wait_pod(&sb, "scripted", "ready", ready).await;
    let host = pod_ip(&running);
    // A session in progress: a smart shutdown (SIGTERM) would wait for it
    // until the grace period ends and the processes are killed; the
    // image's SIGINT ends it at once with an administrator's FATAL.
    let session = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-h", &host, "-U", "postgres", "-d", "shop"])
        .args(["-c", "SELECT pg_sleep(60)"])
        .env("PGPASSWORD", "pw")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql starts");
    tokio::time::sleep(Duration::from_millis(500)).await;
    pods(&sb)
        .delete("scripted", &DeleteParams::default())
        .await
        .expect("the pod is deleted");
    let output = tokio::time::timeout(Duration::from_secs(30), session.wait_with_output())
        .await
        .expect("the session ends")
        .expect("psql ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("terminating connection due to administrator command"),
        "the server a script exec'd was not given a fast shutdown: psql said {stderr}"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn pg_rewind_runs_for_real() {
    let sb = start().await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rewind"},
               "spec": {"restartPolicy": "Never",
                   "containers": [{"name": "main", "image": "postgres:15",
                       "command": ["pg_rewind", "--version"]}]}}),
    )
    .await;
    wait_pod(&sb, "rewind", "Succeeded", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    let log = pods(&sb)
        .logs("rewind", &Default::default())
        .await
        .expect("its log");
    assert!(
        log.contains("pg_rewind (PostgreSQL) 15"),
        "pg_rewind did not run: its log says {log:?}"
    );
    sb.shutdown().await;
}
