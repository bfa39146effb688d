//! The real-PostgreSQL runtime at the level of pods: image pulls, restarts
//! with back-off, logs, probes, Services, faults and cleanup. Each test is
//! skipped (with a note) when no PostgreSQL server binaries are installed.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use sandbox::{KillKind, PostgresConfig, PostgresRuntime, RuntimeKind, Sandbox, SandboxConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

async fn start() -> Option<Sandbox> {
    let postgres = PostgresConfig {
        backoff: Duration::from_millis(500),
        max_grace: Duration::from_secs(3),
        ..Default::default()
    };
    if !PostgresRuntime::available(&postgres) {
        eprintln!("skipped: no PostgreSQL server binaries (run scripts/install-postgres.sh)");
        return None;
    }
    let sb = Sandbox::start(SandboxConfig {
        runtime_kind: RuntimeKind::Postgres,
        postgres,
        ..Default::default()
    })
    .await
    .expect("the sandbox starts");
    Some(sb)
}

fn pods(sb: &Sandbox) -> Api<Pod> {
    Api::namespaced(sb.client(), "default")
}

/// Waits until the pod satisfies `check`, failing with its status and log.
async fn wait_pod(sb: &Sandbox, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pod = pods(sb).get_opt(name).await.expect("the API answers");
        if let Some(p) = pod.as_ref().filter(|p| check(p)) {
            return p.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let log = pods(sb)
                .logs(name, &Default::default())
                .await
                .unwrap_or_default();
            panic!(
                "timed out waiting for pod {name} to be {what}\nstatus: {}\nlog:\n{log}",
                serde_json::to_string_pretty(&pod.and_then(|p| p.status)).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn waiting_reason(p: &Pod) -> Option<String> {
    p.status.as_ref()?.container_statuses.as_ref()?[0]
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs[0].restart_count)
}

async fn create(sb: &Sandbox, obj: serde_json::Value) {
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    match kind.as_str() {
        "Pod" => {
            pods(sb)
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(obj).expect("a pod"),
                )
                .await
                .expect("the pod is accepted");
        }
        "Service" => {
            Api::<Service>::namespaced(sb.client(), "default")
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(obj).expect("a service"),
                )
                .await
                .expect("the service is accepted");
        }
        other => panic!("cannot create {other}"),
    }
}

#[tokio::test]
async fn a_postgres_image_whose_major_is_not_installed_fails_like_an_image_pull() {
    let Some(sb) = start().await else { return };
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "old"},
               "spec": {"containers": [{"name": "postgres", "image": "postgres:9.6"}]}}),
    )
    .await;
    let pod = wait_pod(&sb, "old", "ErrImagePull", |p| {
        waiting_reason(p).as_deref() == Some("ErrImagePull")
    })
    .await;
    let message = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].state.as_ref()?.waiting.as_ref()?.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("PostgreSQL 9 server binaries not found")),
        "{message:?}"
    );
    wait_pod(&sb, "old", "ImagePullBackOff", |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    let pod = pods(&sb).get("old").await.expect("exists");
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    sb.shutdown().await;
}

#[tokio::test]
async fn a_crashing_container_is_restarted_with_back_off_and_its_log_is_served() {
    let Some(sb) = start().await else { return };
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
    let Some(sb) = start().await else { return };
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
async fn a_postgres_17_pod_runs_the_binaries_of_major_17() {
    let Some(sb) = start().await else { return };
    if let Err(missing) = PostgresConfig::default().binaries.server(17) {
        eprintln!("skipped: {missing}");
        return;
    }
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "new"},
               "spec": {"containers": [{"name": "postgres", "image": "postgres:17.2",
                   "env": [{"name": "POSTGRES_PASSWORD", "value": "pw"}],
                   "readinessProbe": {"exec": {"command": ["pg_isready", "-h", "localhost"]}}}]}}),
    )
    .await;
    wait_pod(&sb, "new", "Ready", ready).await;
    let log = pods(&sb)
        .logs("new", &Default::default())
        .await
        .expect("the log is served");
    assert!(log.contains("starting PostgreSQL 17."), "{log}");
    sb.shutdown().await;
}

#[tokio::test]
async fn dropping_the_sandbox_without_shutdown_leaves_no_process_behind() {
    let Some(sb) = start().await else { return };
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
