//! The real-PostgreSQL runtime at the level of pods: image pulls, restarts
//! with back-off, logs, probes, Services, faults and cleanup. Each test is
//! skipped (with a note) when no PostgreSQL server binaries are installed.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, PostParams};
use sandbox::pgruntime::VolumeFull;
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
        "PersistentVolumeClaim" => {
            Api::<PersistentVolumeClaim>::namespaced(sb.client(), "default")
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(obj).expect("a claim"),
                )
                .await
                .expect("the claim is accepted");
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

/// Waits until `check` holds, failing with `what` and the last `describe`.
async fn wait_until(what: &str, check: impl Fn() -> bool, describe: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}\n{}", describe());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `postgres:15` pod (database `shop`, password `pw`) whose readiness is
/// `pg_isready` every second, unready after one failure; with its data on
/// claim `claim` when given.
fn postgres_pod(name: &str, claim: Option<&str>) -> serde_json::Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "postgres", "image": "postgres:15",
            "env": [{"name": "POSTGRES_PASSWORD", "value": "pw"},
                    {"name": "POSTGRES_DB", "value": "shop"}],
            "readinessProbe": {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-p", "5432"]},
                               "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1}}]}});
    if let Some(claim) = claim {
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/var/lib/postgresql/data"}]);
        pod["spec"]["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    }
    pod
}

fn claim(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
}

fn pod_ip(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP")
}

/// Runs one statement with psql on database `shop` of the server at `host`
/// (as a child process, so the test's runtime keeps serving).
async fn psql(host: &str, sql: &str) -> std::process::Output {
    tokio::process::Command::new("psql")
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", host, "-U", "postgres", "-d", "shop", "-c", sql])
        .env("PGPASSWORD", "pw")
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .await
        .expect("psql runs")
}

/// Runs a statement that must succeed; returns its output, trimmed.
async fn query(host: &str, sql: &str) -> String {
    let out = psql(host, sql).await;
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The state letter of a process (`T` when stopped), from /proc.
fn process_state(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_string()))
        .unwrap_or_else(|| "gone".into())
}

#[tokio::test]
async fn a_paused_server_becomes_unready_and_is_ready_again_once_resumed() {
    let Some(sb) = start().await else { return };
    create(&sb, postgres_pod("db", None)).await;
    let pod = wait_pod(&sb, "db", "Ready", ready).await;
    let ip = pod_ip(&pod);
    let rt = sb.postgres_runtime().expect("the real runtime");
    let leader = rt.pids("default", "db")[0];

    assert!(rt.pause("default", "db", None, true));
    // The whole container is stopped, as a frozen cgroup: the postmaster
    // and every child it forked (they run in sessions of their own).
    let tree = sandbox::pgruntime::process::tree(leader);
    assert!(tree.len() > 1, "the server has children: {tree:?}");
    let states = || {
        tree.iter()
            .map(|&p| format!("{p}:{}", process_state(p)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    wait_until(
        "every process of the container is stopped",
        || tree.iter().all(|&p| process_state(p) == "T"),
        states,
    )
    .await;
    // pg_isready connects (the kernel accepts) but gets no answer in time.
    wait_pod(&sb, "db", "unready while paused", |p| !ready(p)).await;
    let pod = pods(&sb).get("db").await.expect("exists");
    assert_eq!(restarts(&pod), 0, "a paused container is not restarted");

    assert!(rt.pause("default", "db", None, false));
    wait_pod(&sb, "db", "ready again once resumed", ready).await;
    assert!(
        tree.iter().all(|&p| process_state(p) != "T"),
        "every process runs again: {}",
        states()
    );
    assert_eq!(query(&ip, "select 1").await, "1");
    assert_eq!(restarts(&pods(&sb).get("db").await.expect("exists")), 0);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_postgres_pod_whose_volume_data_is_deleted_starts_over_with_a_fresh_initdb() {
    let Some(sb) = start().await else { return };
    create(&sb, claim("data")).await;
    create(&sb, postgres_pod("db", Some("data"))).await;
    let pod = wait_pod(&sb, "db", "Ready", ready).await;
    let ip = pod_ip(&pod);
    query(
        &ip,
        "create table orders (id int); insert into orders values (1), (2)",
    )
    .await;
    assert_eq!(query(&ip, "select count(*) from orders").await, "2");

    let rt = sb.postgres_runtime().expect("the real runtime");
    rt.delete_volume_data("default", "data")
        .expect("the data is deleted");
    let dir = rt.volume_path("default", "data").expect("a bound claim");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("the volume's directory stays")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the volume is empty: {left:?}");
    // The server is not told: it keeps running until it is restarted, but
    // a new connection needs files that are gone.
    assert_eq!(restarts(&pods(&sb).get("db").await.expect("exists")), 0);
    let out = psql(&ip, "select 1").await;
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && error.contains("No such file or directory"),
        "a connection to the wiped server fails for want of its files: {error}"
    );

    assert!(rt.kill_container("default", "db", None, KillKind::Crash));
    wait_pod(&sb, "db", "restarted and Ready", |p| {
        restarts(p) == 1 && ready(p)
    })
    .await;
    let log = pods(&sb)
        .logs("db", &Default::default())
        .await
        .expect("the log is served");
    assert!(
        log.contains("PostgreSQL init process complete"),
        "the restarted container ran initdb:\n{log}"
    );
    // A fresh cluster: the entrypoint made database `shop` again, the
    // table and its rows are gone.
    assert_eq!(
        query(&ip, "select to_regclass('orders') is null").await,
        "t"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_full_volume_makes_writes_fail_until_it_has_room_again() {
    let Some(sb) = start().await else { return };
    create(&sb, claim("data")).await;
    create(&sb, postgres_pod("db", Some("data"))).await;
    let pod = wait_pod(&sb, "db", "Ready", ready).await;
    let ip = pod_ip(&pod);
    query(
        &ip,
        "create table items (id int); insert into items values (1)",
    )
    .await;
    let rt = sb.postgres_runtime().expect("the real runtime");

    let how = rt
        .fill_volume("default", "data", true)
        .expect("the volume fills");
    let insert = "insert into items select generate_series(2, 20000)";
    let out = psql(&ip, insert).await;
    let error = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the insert fails on a full volume");
    match how {
        // As root (as here and on CI): a real full disk. Reading needs no
        // room, and a failed write is an error, not a crash.
        VolumeFull::NoSpace => {
            assert!(error.contains("No space left on device"), "{error}");
            assert_eq!(query(&ip, "select count(*) from items").await, "1");
        }
        // As a normal user: files cannot be opened for writing, and
        // PostgreSQL opens relation files read-write, so a new connection
        // may already fail; either way with EACCES.
        VolumeFull::NoWritePermission => {
            assert!(error.contains("Permission denied"), "{error}");
        }
    }

    rt.fill_volume("default", "data", false)
        .expect("the volume has room again");
    query(&ip, insert).await;
    assert_eq!(query(&ip, "select count(*) from items").await, "20000");
    let pod = pods(&sb).get("db").await.expect("exists");
    assert!(ready(&pod));
    assert_eq!(restarts(&pod), 0);
    sb.shutdown().await;
}
