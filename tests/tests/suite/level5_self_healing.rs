//! Level 5's configuration self-healing on real PostgreSQL 15: a parameter
//! the server refuses to start with (`wal_level = 'minimal'` beside the
//! default `max_wal_senders`) is rolled back to the last configuration
//! that ran, the database is Ready again, Degraded and the Events name the
//! parameter and quote the server, and the spec is left as written, held
//! back; a corrected spec is then applied.
//!
//! Level 5 runs in-process, reaching the servers directly (the sandbox's
//! pod IPs are loopback addresses of this machine).

use std::collections::BTreeMap;
use std::time::Duration;

use shared::api::PostgresDB;
use shared::autopilot::guard::ConfigurationGuardStatus;
use shared::runner::RunOptions;
use shared::sql::DatabaseAccess;
use tests::builders::DbBuilder;
use tests::connect::{Role, connect_to};
use tests::harness::{Operator, TestCluster};
use tests::levels::LevelId;

/// First starts and restarts of a real server on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(180);

const NAME: &str = "orders";

/// What the server says when `wal_level = 'minimal'` meets the default
/// `max_wal_senders` (10).
const FATAL: &str =
    "FATAL: WAL streaming (max_wal_senders > 0) requires wal_level \"replica\" or \"logical\"";

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

fn condition<'a>(db: &'a PostgresDB, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    db.status.as_ref()?.conditions.iter().find_map(|c| {
        (c.type_ == type_).then_some((c.status.as_str(), c.reason.as_str(), c.message.as_str()))
    })
}

fn guard(db: &PostgresDB) -> Option<&ConfigurationGuardStatus> {
    db.status
        .as_ref()?
        .autopilot
        .as_ref()?
        .configuration
        .as_ref()
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

async fn show(cluster: &TestCluster, name: &str) -> String {
    let client = connect_to(cluster, Role::Superuser, NAME, None)
        .await
        .expect("connects");
    client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .expect("SHOW answers")
        .get(0)
}

async fn wait(
    cluster: &TestCluster,
    what: &str,
    check: impl Fn(&PostgresDB) -> bool,
) -> PostgresDB {
    cluster
        .wait_for(NAME, what, check)
        .await
        .unwrap_or_else(|failed| panic!("{failed}"))
}

async fn wait_event(cluster: &TestCluster, what: &str, check: impl Fn(&str) -> bool) -> String {
    cluster
        .wait_for_event(NAME, what, check)
        .await
        .unwrap_or_else(|failed| panic!("{failed}"))
}

#[tokio::test]
async fn a_parameter_the_server_will_not_start_with_is_rolled_back_and_held_until_the_spec_changes()
{
    let cluster = cluster().await;
    let operator = level5(&cluster);
    cluster
        .create(
            &DbBuilder::manifest(NAME)
                .version("15")
                .parameter("work_mem", "8MB")
                .build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    let good = params(&[("work_mem", "8MB")]);
    wait(
        &cluster,
        "Ready, its configuration recorded as good",
        |db| {
            condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
                && guard(db).is_some_and(|g| g.last_good == good)
        },
    )
    .await;

    // Valid on its own (Level 1 accepts it); the server refuses to start.
    cluster
        .patch_spec(
            NAME,
            serde_json::json!({"parameters": {"wal_level": "minimal"}}),
        )
        .await
        .expect("the patch is accepted");
    let rejected = wait_event(
        &cluster,
        "a Warning naming wal_level and quoting the server",
        |e| {
            e.starts_with("Warning ConfigurationRejected:")
                && e.contains("wal_level = 'minimal' did not run")
                && e.contains(FATAL)
        },
    )
    .await;
    assert!(
        rejected.contains("held back until it changes"),
        "{rejected}"
    );
    wait_event(&cluster, "a Warning saying it rolls back", |e| {
        e.starts_with("Warning ConfigurationRolledBack:")
    })
    .await;
    let recovered = wait(&cluster, "Ready again, Degraded False Recovered", |db| {
        condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
            && condition(db, "Degraded")
                .is_some_and(|(status, reason, _)| status == "False" && reason == "Recovered")
    })
    .await;
    let (_, _, message) = condition(&recovered, "Degraded").expect("Degraded");
    assert!(message.contains("held back until it changes"), "{message}");
    wait_event(&cluster, "a Normal Event saying it recovered", |e| {
        e.starts_with("Normal Recovered:")
    })
    .await;
    let held = guard(&recovered)
        .and_then(|g| g.held_back.clone())
        .expect("status holds the rejected parameters back");
    let rejected_parameters = params(&[("wal_level", "minimal"), ("work_mem", "8MB")]);
    assert_eq!(held.parameters, rejected_parameters);
    assert_eq!(held.rejected_parameter.as_deref(), Some("wal_level"));
    assert!(held.message.contains(FATAL), "{}", held.message);
    assert_eq!(
        recovered.spec.parameters, rejected_parameters,
        "the spec is never edited"
    );
    assert_eq!(show(&cluster, "wal_level").await, "replica");
    assert_eq!(show(&cluster, "work_mem").await, "8MB");

    // Asking for the last good parameters releases the hold; asking for
    // the rejected ones again tries them again: rolled back again.
    cluster
        .patch_spec(NAME, serde_json::json!({"parameters": {"wal_level": null}}))
        .await
        .expect("the patch is accepted");
    wait(&cluster, "released, nothing held back", |db| {
        condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
            && guard(db).is_some_and(|g| g.held_back.is_none() && g.last_good == good)
    })
    .await;
    cluster
        .patch_spec(
            NAME,
            serde_json::json!({"parameters": {"wal_level": "minimal"}}),
        )
        .await
        .expect("the patch is accepted");
    wait(&cluster, "rolled back again, and recovered", |db| {
        condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
            && guard(db)
                .and_then(|g| g.held_back.as_ref())
                .is_some_and(|again| again.since != held.since && again.recovered_at.is_some())
    })
    .await;
    assert_eq!(show(&cluster, "wal_level").await, "replica");

    // The user corrects the spec: the hold is released and it runs.
    cluster
        .patch_spec(
            NAME,
            serde_json::json!({"parameters": {"wal_level": "logical"}}),
        )
        .await
        .expect("the patch is accepted");
    let fixed = params(&[("wal_level", "logical"), ("work_mem", "8MB")]);
    wait(
        &cluster,
        "running the corrected parameters, recorded as good",
        |db| {
            condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
                && guard(db).is_some_and(|g| g.last_good == fixed && g.held_back.is_none())
        },
    )
    .await;
    assert_eq!(show(&cluster, "wal_level").await, "logical");
    for event in cluster.events(NAME).await.expect("lists Events") {
        eprintln!("{event}");
    }
    operator.stop().await;
    cluster.finish().await;
}

/// The uid and container restarts of the database's pod.
async fn pod_identity(cluster: &TestCluster) -> (Option<String>, i32) {
    let pod = cluster
        .api::<k8s_openapi::api::core::v1::Pod>()
        .get(&format!("{NAME}-0"))
        .await
        .expect("the pod exists");
    let restarts = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    (pod.metadata.uid, restarts)
}

#[tokio::test]
async fn a_value_the_server_refuses_on_reload_is_rolled_back_without_a_restart() {
    let cluster = cluster().await;
    let operator = level5(&cluster);
    cluster
        .create(
            &DbBuilder::manifest(NAME)
                .version("15")
                .parameter("work_mem", "8MB")
                .build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    let good = params(&[("work_mem", "8MB")]);
    wait(
        &cluster,
        "Ready, its configuration recorded as good",
        |db| {
            condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
                && guard(db).is_some_and(|g| g.last_good == good)
        },
    )
    .await;
    let timezone = show(&cluster, "log_timezone").await;
    let before = pod_identity(&cluster).await;

    // A string parameter: Level 1 cannot check it; a reload keeps the old
    // value and logs why, and pg_file_settings says the file's is refused.
    cluster
        .patch_spec(
            NAME,
            serde_json::json!({"parameters": {"log_timezone": "Bad/Zone"}}),
        )
        .await
        .expect("the patch is accepted");
    wait_event(
        &cluster,
        "a Warning naming log_timezone and quoting the server",
        |e| {
            e.starts_with("Warning ConfigurationRejected:")
                && e.contains("log_timezone = 'Bad/Zone' did not run")
                && e.contains("pg_file_settings: setting could not be applied")
        },
    )
    .await;
    let recovered = wait(&cluster, "Ready, Degraded False Recovered", |db| {
        condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
            && condition(db, "Degraded")
                .is_some_and(|(status, reason, _)| status == "False" && reason == "Recovered")
    })
    .await;
    let held = guard(&recovered)
        .and_then(|g| g.held_back.clone())
        .expect("held back");
    assert_eq!(held.rejected_parameter.as_deref(), Some("log_timezone"));
    assert_eq!(
        recovered.spec.parameters,
        params(&[("log_timezone", "Bad/Zone"), ("work_mem", "8MB")]),
        "the spec is never edited"
    );
    assert_eq!(show(&cluster, "log_timezone").await, timezone);
    assert_eq!(
        pod_identity(&cluster).await,
        before,
        "no restart, no new pod"
    );
    operator.stop().await;
    cluster.finish().await;
}

fn pods_ready(db: &PostgresDB, n: i32) -> bool {
    db.status.as_ref().is_some_and(|s| s.ready_replicas == n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_will_not_start_with_a_parameter_rolls_it_back_and_the_primary_keeps_serving()
 {
    let cluster = cluster().await;
    let operator = level5(&cluster);
    cluster
        .create(
            &DbBuilder::manifest(NAME)
                .version("15")
                .instances(2)
                .parameter("work_mem", "8MB")
                .build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    let good = params(&[("work_mem", "8MB")]);
    let running = wait(
        &cluster,
        "two instances ready, the configuration recorded",
        |db| {
            pods_ready(db, 2)
                && condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
                && guard(db).is_some_and(|g| g.last_good == good)
        },
    )
    .await;
    let primary = running
        .status
        .as_ref()
        .and_then(|s| s.current_primary.clone())
        .expect("a primary");

    // The StatefulSet restarts the highest ordinal first; its server
    // refuses to start, and the rollout stops there.
    cluster
        .patch_spec(
            NAME,
            serde_json::json!({"parameters": {"wal_level": "minimal"}}),
        )
        .await
        .expect("the patch is accepted");
    wait_event(
        &cluster,
        "a Warning naming wal_level and quoting the server",
        |e| {
            e.starts_with("Warning ConfigurationRejected:")
                && e.contains("wal_level = 'minimal' did not run")
                && e.contains(FATAL)
        },
    )
    .await;
    let recovered = wait(&cluster, "both instances ready again, Recovered", |db| {
        pods_ready(db, 2)
            && condition(db, "Degraded")
                .is_some_and(|(status, reason, _)| status == "False" && reason == "Recovered")
    })
    .await;
    assert_eq!(
        recovered
            .status
            .as_ref()
            .and_then(|s| s.current_primary.clone()),
        Some(primary),
        "the primary kept serving"
    );
    assert_eq!(show(&cluster, "wal_level").await, "replica");

    // A parameter both servers take, restarted one after the other, is
    // not mistaken for one that does not run.
    cluster
        .patch_spec(
            NAME,
            serde_json::json!({"parameters": {"wal_level": "logical"}}),
        )
        .await
        .expect("the patch is accepted");
    let fixed = params(&[("wal_level", "logical"), ("work_mem", "8MB")]);
    wait(
        &cluster,
        "both instances running the corrected parameters",
        |db| {
            pods_ready(db, 2)
                && guard(db).is_some_and(|g| g.last_good == fixed && g.held_back.is_none())
        },
    )
    .await;
    assert_eq!(show(&cluster, "wal_level").await, "logical");
    let rejections = cluster
        .events(NAME)
        .await
        .expect("lists Events")
        .into_iter()
        .filter(|e| e.starts_with("Warning ConfigurationRejected:"))
        .count();
    assert_eq!(rejections, 1, "only wal_level = 'minimal' was rejected");
    operator.stop().await;
    cluster.finish().await;
}

#[tokio::test]
async fn derived_parameters_the_server_cannot_run_are_rolled_back_until_the_resources_change() {
    let cluster = cluster().await;
    let operator = level5(&cluster);
    let mut db = DbBuilder::manifest(NAME).version("15").build();
    db.spec.tuning = Some(shared::autopilot::tuning::Tuning::Auto);
    cluster
        .create(&db)
        .await
        .expect("the PostgresDB is accepted");
    // The default limit, 512Mi: shared_buffers 128MB.
    wait(
        &cluster,
        "Ready, the tuned configuration recorded as good",
        |db| {
            condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
                && guard(db).is_some_and(|g| {
                    g.last_good.get("shared_buffers").map(String::as_str) == Some("128MB")
                })
        },
    )
    .await;
    assert_eq!(show(&cluster, "shared_buffers").await, "128MB");

    // A memory limit far beyond the machine's: a quarter of it is more
    // shared memory than the kernel will map.
    cluster
        .patch_spec(
            NAME,
            serde_json::json!({"resources": {"limits": {"memory": "400Gi"}}}),
        )
        .await
        .expect("the patch is accepted");
    wait_event(
        &cluster,
        "a Warning naming shared_buffers and quoting the server",
        |e| {
            e.starts_with("Warning ConfigurationRejected:")
                && e.contains("shared_buffers = '")
                && e.contains("FATAL: could not map anonymous shared memory")
        },
    )
    .await;
    let recovered = wait(&cluster, "Ready again, Recovered", |db| {
        condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
            && condition(db, "Degraded")
                .is_some_and(|(status, reason, _)| status == "False" && reason == "Recovered")
    })
    .await;
    let held = guard(&recovered)
        .and_then(|g| g.held_back.clone())
        .expect("held back");
    assert_eq!(held.rejected_parameter.as_deref(), Some("shared_buffers"));
    assert!(
        recovered.spec.parameters.is_empty(),
        "the spec is never edited"
    );
    assert_eq!(show(&cluster, "shared_buffers").await, "128MB");

    // Other resources derive other parameters: tried, and they run.
    cluster
        .patch_spec(
            NAME,
            serde_json::json!({"resources": {"limits": {"memory": "1Gi"}}}),
        )
        .await
        .expect("the patch is accepted");
    wait(&cluster, "running the parameters derived from 1Gi", |db| {
        condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
            && guard(db).is_some_and(|g| {
                g.held_back.is_none()
                    && g.last_good.get("shared_buffers").map(String::as_str) == Some("256MB")
            })
    })
    .await;
    assert_eq!(show(&cluster, "shared_buffers").await, "256MB");
    operator.stop().await;
    cluster.finish().await;
}
