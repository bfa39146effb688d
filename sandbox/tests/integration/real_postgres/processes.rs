//! Containers as host processes: the user they run as, their logs,
//! restarts with back-off, a server reached through its Service, and no
//! process outliving the sandbox, whether it is shut down or only dropped.

use sandbox::KillKind;
use serde_json::json;

use super::{create, pods, ready, restarts, start, wait_pod, waiting_reason};

#[tokio::test]
async fn a_crashing_container_is_restarted_with_back_off_and_its_log_is_served() {
    let sb = start().await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crash"},
               "spec": {"containers": [{"name": "main", "image": "postgres:15",
                   "command": ["sh", "-c", "echo starting as $(id -un) with $GREETING; exit 3"],
                   "env": [{"name": "GREETING", "value": "hello"}]}]}}),
    )
    .await;
    let pod = wait_pod(&sb, "crash", "in CrashLoopBackOff after restarts", |p| {
        waiting_reason(p).as_deref() == Some("CrashLoopBackOff") && restarts(p) >= 1
    })
    .await;
    let status = &pod
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("statuses")[0];
    let last = status
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .expect("a last state");
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.clone()).as_deref(),
        Some("Running")
    );
    let log = pods(&sb)
        .logs("crash", &Default::default())
        .await
        .expect("the log is served");
    let user = sb
        .postgres_runtime()
        .and_then(|r| r.run_as())
        .expect("a user");
    assert_eq!(log.trim(), format!("starting as {user} with hello"));
    sb.shutdown().await;
}

#[tokio::test]
async fn a_postgres_pod_serves_through_its_service_survives_an_oom_kill_and_stops_with_the_sandbox()
{
    let sb = start().await;
    let labels = json!({"app": "db"});
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db", "labels": labels},
               "spec": {"containers": [{"name": "postgres", "image": "postgres:15",
                   "env": [{"name": "POSTGRES_PASSWORD", "value": "secret-pw"},
                           {"name": "POSTGRES_DB", "value": "shop"}],
                   "ports": [{"name": "postgres", "containerPort": 5432}],
                   "startupProbe": {"tcpSocket": {"port": "postgres"}, "periodSeconds": 1, "failureThreshold": 30},
                   "readinessProbe": {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-p", "5432"]}, "periodSeconds": 1}}]}}),
    )
    .await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
               "spec": {"selector": labels, "ports": [{"port": 5432, "targetPort": "postgres"}]}}),
    )
    .await;
    let pod = wait_pod(&sb, "db", "Ready", ready).await;
    let pod_ip = pod.status.and_then(|s| s.pod_ip).expect("a pod IP");
    assert!(pod_ip.starts_with("127."), "{pod_ip}");
    let addr = sb
        .resolve("db.default.svc.cluster.local")
        .expect("the Service resolves");
    assert_eq!(sb.resolve("db"), Some(addr));
    // psql runs as a child the runtime's proxy answers, so it must not
    // block this (single-threaded) test runtime.
    let query = |sql: &str| {
        tokio::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-h",
                &addr.to_string(),
                "-U",
                "postgres",
                "-d",
                "shop",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", "secret-pw")
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
    };
    let out = query("select current_database()").await.expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "shop");

    let rt = sb.postgres_runtime().expect("the real runtime");
    let before = rt.pids("default", "db");
    assert!(rt.kill_container("default", "db", None, KillKind::OomKill));
    let pod = wait_pod(&sb, "db", "restarted and Ready", |p| {
        restarts(p) == 1 && ready(p)
    })
    .await;
    let last = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].last_state.as_ref()?.terminated.clone());
    let last = last.expect("a last state");
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (137, Some("OOMKilled"))
    );
    let out = query("select 1").await.expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    rt.set_ready("default", "db", Some(false));
    wait_pod(&sb, "db", "forced unready", |p| !ready(p)).await;
    rt.set_ready("default", "db", None);
    wait_pod(&sb, "db", "ready again", ready).await;
    // Held on its image it is unready; held on another image (the one a
    // rollout would replace it with), the hold is not its own.
    rt.set_ready_on_image("default", "db", "postgres:15", Some(false));
    wait_pod(&sb, "db", "held unready on its image", |p| !ready(p)).await;
    rt.set_ready_on_image("default", "db", "postgres:16", Some(false));
    wait_pod(&sb, "db", "ready: the hold names another image", ready).await;
    rt.set_ready_on_image("default", "db", "postgres:16", None);

    let pids: Vec<i32> = rt.all_pids().into_iter().chain(before).collect();
    let work = rt.work_dir().to_path_buf();
    sb.shutdown().await;
    for pid in pids {
        assert!(
            !sandbox::pgruntime::process::alive(pid),
            "process {pid} outlived the sandbox"
        );
    }
    assert!(!work.exists(), "the work directory is removed");
}

#[tokio::test]
async fn dropping_the_sandbox_without_shutdown_leaves_no_process_behind() {
    let sb = start().await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db"},
               "spec": {"containers": [{"name": "postgres", "image": "postgres:15",
                   "env": [{"name": "POSTGRES_PASSWORD", "value": "pw"}],
                   "readinessProbe": {"exec": {"command": ["pg_isready", "-h", "127.0.0.1"]}}}]}}),
    )
    .await;
    wait_pod(&sb, "db", "Ready", ready).await;
    let rt = sb.postgres_runtime().expect("the real runtime");
    let pids = rt.all_pids();
    let work = rt.work_dir().to_path_buf();
    assert!(!pids.is_empty());
    // What a panicking test does: the sandbox is only dropped.
    drop(sb);
    for pid in pids {
        assert!(
            !sandbox::pgruntime::process::alive(pid),
            "process {pid} outlived the sandbox"
        );
    }
    assert!(!work.exists(), "the work directory is removed");
}

/// Upstream: deleting a running pod marks it (deletionTimestamp) and the
/// kubelet removes it once its containers have stopped, within the grace
/// period; `gracePeriodSeconds=0` removes it from the API at once. The
/// containers here ignore SIGTERM, so a graceful delete takes the whole
/// (capped) grace period.
#[tokio::test]
async fn a_pod_deleted_with_a_zero_grace_period_leaves_the_api_at_once() {
    let sb = start().await;
    for name in ["graceful", "forced"] {
        create(
            &sb,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": {"terminationGracePeriodSeconds": 30,
                            "containers": [{"name": "c", "image": "busybox:1",
                                "command": ["sh", "-c", "trap '' TERM; echo started; while true; do sleep 1; done"]}]}}),
        )
        .await;
    }
    for name in ["graceful", "forced"] {
        wait_pod(&sb, name, "Running", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .await;
    }
    pods(&sb)
        .delete("graceful", &Default::default())
        .await
        .expect("graceful is deleted");
    let marked = pods(&sb)
        .get_opt("graceful")
        .await
        .expect("the API answers")
        .expect("graceful stays while its container ignores SIGTERM");
    assert!(marked.metadata.deletion_timestamp.is_some());
    pods(&sb)
        .delete(
            "forced",
            &kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("forced is deleted");
    assert!(
        pods(&sb)
            .get_opt("forced")
            .await
            .expect("the API answers")
            .is_none(),
        "a pod deleted with gracePeriodSeconds=0 is still in the API"
    );
    sb.shutdown().await;
}
