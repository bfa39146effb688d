//! The real-PostgreSQL runtime at the level of pods: image pulls, exact
//! minor versions, restarts with back-off, logs, termination messages,
//! probes, Services, ConfigMap volumes that follow their object, faults and
//! cleanup. Without PostgreSQL server binaries every test fails, saying
//! how to install them (`scripts/install-postgres.sh`).
//!
//! The tests are grouped by what they exercise: [`images`], [`processes`],
//! [`exec`],
//! [`faults`], [`volumes`], [`stats`], [`termination`], [`portforward`],
//! [`operator_image`] and [`sandbox_process`]; the
//! helpers they share (starting a sandbox on the real runtime, fixtures
//! for pods and claims, bounded waits, psql) are here.

mod exec;
mod faults;
mod images;
mod init_containers;
mod operator_image;
mod portforward;
mod processes;
mod sandbox_process;
mod scripts;
mod stats;
mod termination;
mod volumes;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStateWaiting, PersistentVolumeClaim, Pod, Service,
};
use kube::api::{Api, PostParams};
use sandbox::{
    BackOffConfig, PostgresConfig, PostgresRuntime, RuntimeKind, Sandbox, SandboxConfig,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// A sandbox on the real runtime; fails, saying how to install them,
/// without PostgreSQL server binaries.
async fn start() -> Sandbox {
    let postgres = PostgresConfig {
        backoff: BackOffConfig {
            initial: Duration::from_millis(500),
            ..Default::default()
        },
        max_grace: Duration::from_secs(3),
        ..Default::default()
    };
    assert!(
        PostgresRuntime::available(&postgres),
        "no PostgreSQL server binaries are installed: install them with scripts/install-postgres.sh"
    );
    Sandbox::start(SandboxConfig {
        runtime_kind: RuntimeKind::Postgres,
        postgres,
        ..Default::default()
    })
    .await
    .expect("the sandbox starts")
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

/// The waiting state of the pod's first container, if it is waiting.
fn waiting(p: &Pod) -> Option<&ContainerStateWaiting> {
    p.status.as_ref()?.container_statuses.as_ref()?[0]
        .state
        .as_ref()?
        .waiting
        .as_ref()
}

fn waiting_reason(p: &Pod) -> Option<String> {
    waiting(p)?.reason.clone()
}

/// Why the pod's first container is waiting, as the kubelet says it (empty
/// when it is not waiting or has no message).
fn waiting_message(p: &Pod) -> String {
    waiting(p)
        .and_then(|w| w.message.clone())
        .unwrap_or_default()
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

/// A pod named `name` with one container, `container`, running `image`;
/// tests add what else they need to the JSON.
fn pod(name: &str, container: &str, image: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": container, "image": image}]}})
}

/// A `postgres:15` pod (database `shop`, password `pw`) whose readiness is
/// `pg_isready` every second, unready after one failure; with its data on
/// claim `claim` when given.
fn postgres_pod(name: &str, claim: Option<&str>) -> serde_json::Value {
    let mut pod = pod(name, "postgres", "postgres:15");
    let container = &mut pod["spec"]["containers"][0];
    container["env"] = json!([{"name": "POSTGRES_PASSWORD", "value": "pw"},
                              {"name": "POSTGRES_DB", "value": "shop"}]);
    container["readinessProbe"] = json!({
        "exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-p", "5432"]},
        "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1});
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
