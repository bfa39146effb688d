//! The real-PostgreSQL runtime at the level of pods: image pulls, exact
//! minor versions, restarts with back-off, logs, termination messages,
//! probes, Services, ConfigMap volumes that follow their object, faults and
//! cleanup. Each test is skipped (with a note) when no PostgreSQL server
//! binaries are installed.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
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
    wait_pod_within(sb, name, what, WAIT, check).await
}

/// [`wait_pod`], failing after `limit`.
async fn wait_pod_within(
    sb: &Sandbox,
    name: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = tokio::time::Instant::now() + limit;
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
                "timed out after {limit:?} waiting for pod {name} to be {what}\nstatus: {}\nlog:\n{log}",
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
        "ConfigMap" => {
            Api::<ConfigMap>::namespaced(sb.client(), "default")
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(obj).expect("a configmap"),
                )
                .await
                .expect("the configmap is accepted");
        }
        "Job" => {
            Api::<Job>::namespaced(sb.client(), "default")
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(obj).expect("a job"),
                )
                .await
                .expect("the job is accepted");
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
    let Some(sb) = start().await else { return };
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
    let Some(sb) = start().await else { return };
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
            && p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs[0].state.as_ref()?.waiting.as_ref()?.message.clone())
                .is_some_and(|m| m.contains("\"absent\" not found"))
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

#[tokio::test]
async fn a_changed_configmap_reaches_a_running_server_whose_pg_reload_conf_then_applies_it() {
    let Some(sb) = start().await else { return };
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

#[tokio::test]
async fn a_subpath_mount_of_a_configmap_keeps_its_content_until_the_container_restarts() {
    let Some(sb) = start().await else { return };
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
    let Some(sb) = start().await else { return };
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
    let Some(sb) = start().await else { return };
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
    let Some(sb) = start().await else { return };
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

/// Whether exactly PostgreSQL `16.<minor>` is installed (not just a 16).
fn exact_minor_installed(minor: u32) -> bool {
    PostgresConfig::default()
        .binaries
        .server_for(16, Some(minor))
        .is_ok_and(|bin| bin.ends_with(format!("16.{minor}/bin")))
}

#[tokio::test]
async fn postgres_16_2_and_16_4_pods_run_exactly_their_minor() {
    let Some(sb) = start().await else { return };
    if !(exact_minor_installed(2) && exact_minor_installed(4)) {
        eprintln!(
            "skipped: PostgreSQL 16.2 and 16.4 are not both installed (run scripts/install-postgres.sh 16.2 16.4)"
        );
        return;
    }
    for (name, image) in [("old", "postgres:16.2"), ("new", "postgres:16.4")] {
        let mut pod = postgres_pod(name, None);
        pod["spec"]["containers"][0]["image"] = json!(image);
        create(&sb, pod).await;
    }
    for (name, version) in [("old", "16.2"), ("new", "16.4")] {
        let pod = wait_pod(&sb, name, "Ready", ready).await;
        assert_eq!(query(&pod_ip(&pod), "show server_version").await, version);
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn a_postgres_pod_port_forwarded_with_kube_rs_answers_select_1() {
    let Some(sb) = start().await else { return };
    create(&sb, postgres_pod("db", None)).await;
    wait_pod(&sb, "db", "Ready", ready).await;
    let mut pf = pods(&sb)
        .portforward("db", &[5432])
        .await
        .expect("the connection is upgraded");
    let stream = pf.take_stream(5432).expect("a stream for port 5432");
    let (client, connection) = tokio_postgres::Config::new()
        .user("postgres")
        .password("pw")
        .dbname("shop")
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers through the forward");
    let connection = tokio::spawn(connection);
    let row = client
        .query_one("SELECT 1", &[])
        .await
        .expect("the query runs");
    assert_eq!(row.get::<_, i32>(0), 1);
    let db: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("the query runs")
        .get(0);
    assert_eq!(db, "shop");
    drop(client);
    let _ = connection.await;
    tokio::time::timeout(Duration::from_secs(10), pf.join())
        .await
        .expect("the forward ends once the client is done")
        .expect("the forward ends cleanly");
    sb.shutdown().await;
}

#[tokio::test]
async fn port_forwarding_to_a_port_nobody_listens_on_reports_connection_refused() {
    let Some(sb) = start().await else { return };
    create(&sb, postgres_pod("db", None)).await;
    let pod = wait_pod(&sb, "db", "Ready", ready).await;
    let mut pf = pods(&sb)
        .portforward("db", &[5433, 5432])
        .await
        .expect("the connection is upgraded");
    let error = pf
        .take_error(5433)
        .expect("an error channel for 5433")
        .await
        .expect("an error message");
    assert!(
        error.starts_with("error forwarding port 5433 to pod "),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "dial tcp4 {}:5433: connect: connection refused",
            pod_ip(&pod)
        )),
        "{error}"
    );
    // The other port works on the same connection.
    let stream = pf.take_stream(5432).expect("a stream for port 5432");
    let (client, connection) = tokio_postgres::Config::new()
        .user("postgres")
        .password("pw")
        .dbname("shop")
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers through the forward");
    tokio::spawn(connection);
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("the query runs")
        .get(0);
    assert_eq!(one, 1);
    sb.shutdown().await;
}
