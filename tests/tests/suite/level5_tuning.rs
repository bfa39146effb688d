//! Level 5's auto-tuning on real PostgreSQL 15: with `tuning: auto` the
//! server runs the parameters derived from the memory limit (`SHOW` on
//! the server equals what status shows), a larger limit is applied as
//! Level 2 applies a parameter that needs a restart, a parameter the user
//! sets wins over the derived one, and at rest nothing is written.
//!
//! Level 5 runs in-process and reaches the server directly; the test
//! reads the server the same way, as the superuser.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use shared::api::{ComputeResources, ResourcesSpec};
use shared::autopilot::tuning::Tuning;
use shared::runner::RunOptions;
use shared::sql::DatabaseAccess;
use tests::builders::DbBuilder;
use tests::connect::{Role, login};
use tests::harness::{Operator, TestCluster};
use tests::levels::LevelId;

/// First starts and restarts of real servers on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(240);

async fn cluster() -> TestCluster {
    TestCluster::real_postgres_15(WAIT).await
}

fn level5(cluster: &TestCluster) -> Operator {
    cluster.run_operator_with(
        LevelId::Five,
        RunOptions {
            database_access: DatabaseAccess::Direct,
            ..Default::default()
        },
    )
}

/// `SHOW name` on the server of pod orders-0, `None` while it does not
/// answer.
async fn show(cluster: &TestCluster, name: &str) -> Option<String> {
    let pod = cluster.api::<Pod>().get_opt("orders-0").await.ok()??;
    let ip = pod.status?.pod_ip?;
    let mut config = login(cluster, Role::Superuser, "orders", Some("postgres")).await?;
    config.host(&ip);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(connection);
    let row = client.query_one(&format!("SHOW {name}"), &[]).await.ok()?;
    row.try_get::<_, String>(0).ok()
}

/// Waits until the server shows `value` for every `(name, value)`.
async fn wait_shown(cluster: &TestCluster, wanted: &[(&str, &str)]) {
    let waited = cluster
        .eventually(WAIT, &format!("the server shows {wanted:?}"), || async {
            for (name, value) in wanted {
                if show(cluster, name).await.as_deref() != Some(*value) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        })
        .await;
    if let Err(failed) = waited {
        let mut shown = Vec::new();
        for (name, _) in wanted {
            shown.push((name, show(cluster, name).await));
        }
        panic!("{failed}\nit shows {shown:?}");
    }
}

fn limits(memory: &str) -> ResourcesSpec {
    ResourcesSpec {
        requests: Some(ComputeResources {
            cpu: Some("100m".into()),
            memory: Some("256Mi".into()),
        }),
        limits: Some(ComputeResources {
            cpu: Some("2".into()),
            memory: Some(memory.into()),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_the_parameters_derived_from_its_limits_and_the_users_win() {
    let cluster = cluster().await;
    let operator = level5(&cluster);
    let mut db = DbBuilder::manifest("orders")
        .version("15")
        .tuning(Tuning::Auto)
        .build();
    db.spec.resources = limits("1Gi");
    cluster.create(&db).await.expect("creates the database");

    wait_shown(
        &cluster,
        &[
            ("shared_buffers", "256MB"),
            ("effective_cache_size", "768MB"),
            ("maintenance_work_mem", "64MB"),
            ("max_connections", "100"),
            ("work_mem", "4MB"),
            ("max_parallel_workers", "2"),
            ("max_parallel_workers_per_gather", "1"),
        ],
    )
    .await;
    let tuned = cluster
        .wait_for("orders", "showing its tuning", |db| {
            db.status
                .as_ref()
                .and_then(|s| s.autopilot.as_ref())
                .and_then(|a| a.tuning.as_ref())
                .is_some_and(|t| {
                    t.memory == "1Gi"
                        && t.parameters.get("shared_buffers").map(String::as_str) == Some("256MB")
                })
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    assert!(tuned.spec.parameters.is_empty(), "the spec was edited");
    cluster
        .wait_for_event("orders", "Tuned", |e| {
            e.starts_with("Normal Tuned") && e.contains("shared_buffers=256MB")
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));

    // A larger memory limit: shared_buffers needs a restart, which Level 2
    // makes.
    cluster
        .patch_spec(
            "orders",
            serde_json::json!({"resources": {"limits": {"memory": "2Gi"}}}),
        )
        .await
        .expect("raises the memory limit");
    wait_shown(
        &cluster,
        &[
            ("shared_buffers", "512MB"),
            ("effective_cache_size", "1536MB"),
        ],
    )
    .await;

    // The user's work_mem wins over the derived one, and status leaves it
    // out.
    cluster
        .patch_spec(
            "orders",
            serde_json::json!({"parameters": {"work_mem": "16MB"}}),
        )
        .await
        .expect("sets work_mem");
    wait_shown(
        &cluster,
        &[("work_mem", "16MB"), ("shared_buffers", "512MB")],
    )
    .await;
    cluster
        .wait_for(
            "orders",
            "leaving the user's work_mem out of its tuning",
            |db| {
                db.status
                    .as_ref()
                    .and_then(|s| s.autopilot.as_ref())
                    .and_then(|a| a.tuning.as_ref())
                    .is_some_and(|t| {
                        !t.parameters.contains_key("work_mem")
                            && t.parameters.get("shared_buffers").map(String::as_str)
                                == Some("512MB")
                    })
            },
        )
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));

    // At rest, a tuned database is not written to: the derived values are
    // the same at every reconcile, and status only changes with them.
    cluster
        .wait_for("orders", "settled", |db| {
            db.status.as_ref().is_some_and(|s| {
                s.phase == Some(shared::api::Phase::Ready)
                    && s.observed_generation == db.metadata.generation
                    && s.configuration.as_ref().is_none_or(|c| c.applied)
                    && !s
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Progressing" && c.status == "True")
            })
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    let writes = cluster
        .settle("orders")
        .await
        .unwrap_or_else(|failed| panic!("{failed}"))
        .expect("the sandbox counts requests");
    assert_eq!(
        writes.resources_except(&["events"]),
        Vec::<String>::new(),
        "writes at rest: {writes:?}; Events: {:?}",
        cluster.events("orders").await
    );
    operator.stop().await;
    cluster.finish().await;
}
