//! Level 5's storage auto-grow on real PostgreSQL 15: a primary whose
//! data volume fills (the sandbox's volume-fill fault: its tmpfs shrunk to
//! what it holds, so the next block fails with ENOSPC, and the kubelet's
//! stats say it is full) is grown on every instance's claim by the
//! increase, the volume's quota grows with the claim and writes work
//! again; a second fill grows it to `maxSize` and no further, with the
//! `StorageAutoGrowLimited` condition and a Warning Event. The spec is
//! never edited.
//!
//! Level 5 runs in-process, measuring every second (`metrics_interval`),
//! and reaches the servers directly.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use shared::autopilot::autogrow::AutoGrowSpec;
use shared::runner::RunOptions;
use shared::sql::DatabaseAccess;
use tests::builders::DbBuilder;
use tests::connect::{Role, connect};
use tests::harness::{Operator, TestCluster};
use tests::levels::LevelId;

/// First starts and clones of real servers on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(240);

async fn cluster() -> TestCluster {
    TestCluster::real_postgres_15(WAIT).await
}

fn level5(cluster: &TestCluster) -> Operator {
    cluster.run_operator_with(
        LevelId::Five,
        RunOptions {
            database_access: DatabaseAccess::Direct,
            metrics_interval: Some(Duration::from_secs(1)),
            ..Default::default()
        },
    )
}

fn runtime(cluster: &TestCluster) -> &sandbox::PostgresRuntime {
    cluster
        .sandbox_handle()
        .and_then(|s| s.postgres_runtime())
        .expect("the real runtime")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_ready(cluster: &TestCluster, name: &str) {
    if let Err(failed) = cluster
        .wait_for_object::<Pod>(name, "ready", |pod| pod.is_some_and(is_ready))
        .await
    {
        panic!("{failed}");
    }
}

/// The claim's request and reported capacity.
fn sizes(claim: &PersistentVolumeClaim) -> (Option<String>, Option<String>) {
    let request = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    let capacity = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone());
    (request, capacity)
}

/// Waits until every instance's claim asks for and has `size`.
async fn wait_claims(cluster: &TestCluster, size: &str) {
    for k in 0..2 {
        let name = format!("data-orders-{k}");
        let wanted = (Some(size.to_string()), Some(size.to_string()));
        if let Err(failed) = cluster
            .wait_for_object::<PersistentVolumeClaim>(&name, &format!("grown to {size}"), |c| {
                c.is_some_and(|c| sizes(c) == wanted)
            })
            .await
        {
            panic!("{failed}");
        }
    }
}

/// The size of the filesystem of the claim's volume, in bytes (`statfs`).
fn quota(cluster: &TestCluster, claim: &str) -> u64 {
    let dir = runtime(cluster)
        .volume_path(cluster.namespace(), claim)
        .expect("the claim is bound");
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%S %b"])
        .arg(&dir)
        .output()
        .expect("stat runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap_or(0));
    fields.next().unwrap_or(0) * fields.next().unwrap_or(0)
}

/// Waits until a megabyte written through the read-write Service commits
/// (after a full volume the server may have restarted meanwhile).
async fn wait_writable(cluster: &TestCluster) {
    let waited = cluster
        .eventually(WAIT, "a 1 MB write commits", || async {
            let Some(owner) = connect(cluster, Role::Owner, "orders").await else {
                return Ok(None);
            };
            let written = owner
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS filler (body text); \
                     INSERT INTO filler SELECT string_agg(md5(i::text), '') FROM generate_series(1, 32768) i;",
                )
                .await;
            Ok(written.ok())
        })
        .await;
    if let Err(failed) = waited {
        panic!("{failed}");
    }
}

async fn wait_grown_to(cluster: &TestCluster, size: &str) {
    let size = size.to_string();
    if let Err(failed) = cluster
        .wait_for("orders", &format!("grown to {size}"), |db| {
            db.status
                .as_ref()
                .and_then(|s| s.autopilot.as_ref())
                .and_then(|a| a.storage.as_ref())
                .is_some_and(|s| s.size == size)
        })
        .await
    {
        panic!("{failed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_volume_is_grown_on_every_instance_up_to_the_maximum_and_writes_work_again() {
    let cluster = cluster().await;
    let operator = level5(&cluster);
    let db = DbBuilder::manifest("orders")
        .version("15")
        .instances(2)
        .storage("1Gi")
        .auto_grow(AutoGrowSpec {
            threshold_percent: 80,
            increase_percent: 50,
            max_size: "2Gi".into(),
        })
        .build();
    cluster.create(&db).await.expect("creates the database");
    wait_ready(&cluster, "orders-0").await;
    wait_ready(&cluster, "orders-1").await;
    wait_writable(&cluster).await;

    // The primary's volume fills: its tmpfs holds no free block.
    let ns = cluster.namespace().to_string();
    assert_eq!(
        runtime(&cluster)
            .fill_volume(&ns, "data-orders-0", true)
            .expect("the volume fills"),
        sandbox::pgruntime::VolumeFull::NoSpace,
        "the sandbox runs as root: the volume is a tmpfs"
    );
    assert!(quota(&cluster, "data-orders-0") < 1 << 30);

    // Every instance's claim grows by 50%, and the volume's quota with it.
    wait_claims(&cluster, "1536Mi").await;
    wait_grown_to(&cluster, "1536Mi").await;
    assert_eq!(quota(&cluster, "data-orders-0"), 1536 << 20);
    let grown = cluster
        .wait_for_event("orders", "StorageGrown", |e| {
            e.contains("StorageGrown") && e.contains("to 1536Mi")
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    assert!(grown.contains("100% used"), "{grown}");
    wait_writable(&cluster).await;

    // Full again: grown to the maximum, not beyond, and it says so.
    runtime(&cluster)
        .fill_volume(&ns, "data-orders-0", true)
        .expect("the volume fills");
    wait_claims(&cluster, "2Gi").await;
    wait_grown_to(&cluster, "2Gi").await;
    let limited = cluster
        .wait_for("orders", "limited at its maximum", |db| {
            db.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "StorageAutoGrowLimited"
                        && c.status == "True"
                        && c.reason == "StorageAtMaximum"
                })
            })
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    assert_eq!(limited.spec.storage.size, "1Gi", "the spec was edited");
    cluster
        .wait_for_event("orders", "a StorageAtMaximum warning", |e| {
            e.starts_with("Warning StorageAtMaximum")
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    wait_writable(&cluster).await;
    operator.stop().await;
    cluster.finish().await;
}
