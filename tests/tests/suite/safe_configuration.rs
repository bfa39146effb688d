//! Safe configuration on real PostgreSQL (Level 1 on the sandbox's
//! real-PostgreSQL runtime): a bad change of `spec.parameters` is refused
//! naming its field while the running server keeps its configuration, a
//! server that will not start says why in the database's status, a
//! malformed image is never Ready and a simulated container says so, and
//! the committed parameter tables match the installed binaries; with Level
//! 2, a major change is re-checked against the new major's table before
//! anything moves. Skipped, with a note, when the binaries are missing.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams};
use sandbox::{PostgresConfig, RuntimeKind, SandboxConfig};
use serde_json::json;
use shared::api::PostgresDB;
use tests::builders::DbBuilder;
use tests::connect::{Role, connect_to};
use tests::harness::{Operator, TestCluster};
use tests::levels::LevelId;

/// Long enough for initdb and a first start on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// A sandbox running real PostgreSQL, with Level 1 running against it.
async fn start() -> Option<(TestCluster, Operator)> {
    start_level(LevelId::One, &[15]).await
}

/// A sandbox running real PostgreSQL `majors`, with `level` against it.
async fn start_level(level: LevelId, majors: &[u32]) -> Option<(TestCluster, Operator)> {
    let postgres = PostgresConfig::default();
    for &major in majors {
        if let Err(missing) = postgres.binaries.server(major) {
            eprintln!("skipped: {missing}");
            return None;
        }
    }
    let config = SandboxConfig {
        runtime_kind: RuntimeKind::Postgres,
        postgres,
        ..Default::default()
    };
    let cluster = match TestCluster::sandbox(config).await {
        Ok(cluster) => cluster.with_budget(WAIT),
        Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
    };
    let operator = cluster.run_operator(level);
    Some((cluster, operator))
}

fn condition(db: &PostgresDB, type_: &str) -> Option<(String, String, String)> {
    db.status.as_ref()?.conditions.iter().find_map(|c| {
        (c.type_ == type_).then(|| (c.status.clone(), c.reason.clone(), c.message.clone()))
    })
}

fn ready(db: &PostgresDB) -> bool {
    condition(db, "Ready").is_some_and(|(status, _, _)| status == "True")
}

async fn show(client: &tokio_postgres::Client, name: &str) -> String {
    client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .expect("SHOW answers")
        .get(0)
}

#[tokio::test]
async fn a_bad_parameter_change_is_refused_naming_its_field_and_the_server_keeps_its_configuration()
{
    let Some((cluster, operator)) = start().await else {
        return;
    };
    let marker = std::env::temp_dir().join(format!("pgdb-archive-ran-{}", std::process::id()));
    cluster
        .api::<PostgresDB>()
        .create(
            &PostParams::default(),
            &DbBuilder::manifest("orders")
                .version("15")
                .parameter("work_mem", "8MB")
                .build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("orders", "Ready", ready)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    let client = connect_to(&cluster, Role::Superuser, "orders", None)
        .await
        .expect("connects");
    assert_eq!(show(&client, "work_mem").await, "8MB");
    let config_before = cluster
        .api::<ConfigMap>()
        .get("orders-config")
        .await
        .expect("the ConfigMap exists")
        .data;

    // Each bad change comes with a good one (work_mem), which must not be
    // applied either: a refusal is all or nothing.
    let bad_changes = [
        (
            "archive_command",
            format!("touch {}", marker.display()),
            "runs a shell command",
        ),
        (
            "shared_preload_libraries",
            "/tmp/evil.so".to_string(),
            "is a path",
        ),
        (
            "shared_bufers",
            "128MB".to_string(),
            "PostgreSQL 15 has no parameter",
        ),
        ("shared_buffers", "1".to_string(), "outside the valid range"),
        ("checkpoint_timeout", "5 weeks".to_string(), "not a unit"),
        ("wal_level", "maximal".to_string(), "not one of the values"),
    ];
    for (name, value, why) in &bad_changes {
        let mut parameters = serde_json::Map::new();
        parameters.insert("work_mem".into(), json!("16MB"));
        parameters.insert(name.to_string(), json!(value));
        cluster
            .patch_spec("orders", json!({ "parameters": parameters }))
            .await
            .expect("the patch is accepted by the API");
        let field = format!("spec.parameters.{name}");
        cluster
            .wait_for("orders", &format!("refused for {field}"), |db| {
                condition(db, "Ready").is_some_and(|(status, reason, message)| {
                    status == "False"
                        && reason == "InvalidParameter"
                        && message.contains(&field)
                        && message.contains(why)
                })
            })
            .await
            .unwrap_or_else(|f| panic!("{f}"));
        // Each refusal is a Warning. Repeats of one reason form one Event
        // series (Kubernetes' Event semantics): the first names its field,
        // the later ones count up; the Ready condition names each field.
        let nth = 1 + bad_changes
            .iter()
            .position(|(n, _, _)| n == name)
            .unwrap_or(0);
        cluster
            .wait_for_event(
                "orders",
                &format!("Warning InvalidParameter number {nth}"),
                |e| {
                    let count = e
                        .rsplit_once(" (x")
                        .and_then(|(_, n)| n.trim_end_matches(')').parse::<usize>().ok())
                        .unwrap_or(1);
                    e.starts_with("Warning InvalidParameter: spec.parameters.archive_command")
                        && count >= nth
                },
            )
            .await
            .unwrap_or_else(|f| panic!("{f}"));
        let config_now = cluster
            .api::<ConfigMap>()
            .get("orders-config")
            .await
            .expect("the ConfigMap exists")
            .data;
        assert_eq!(config_now, config_before, "{name}: nothing was applied");
        parameters.insert("work_mem".into(), json!("8MB"));
        parameters.insert(name.to_string(), serde_json::Value::Null);
        cluster
            .patch_spec("orders", json!({ "parameters": parameters }))
            .await
            .expect("the bad change is undone");
        cluster
            .wait_for("orders", "Ready again", ready)
            .await
            .unwrap_or_else(|f| panic!("{f}"));
    }
    // The server never restarted with any of it.
    assert_eq!(show(&client, "work_mem").await, "8MB");
    assert!(!show(&client, "archive_command").await.contains("touch"));
    assert!(!marker.exists(), "no command of the spec ran");
    drop(client);
    operator.stop().await;
    cluster.finish().await;
}

#[tokio::test]
async fn a_server_that_will_not_start_says_why_in_degraded_and_a_warning() {
    let Some((cluster, operator)) = start().await else {
        return;
    };
    // Each value is valid on its own; together PostgreSQL refuses to start.
    cluster
        .api::<PostgresDB>()
        .create(
            &PostParams::default(),
            &DbBuilder::manifest("orders")
                .version("15")
                .parameter("wal_level", "minimal")
                .parameter("max_wal_senders", "5")
                .build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    let reason =
        "FATAL: WAL streaming (max_wal_senders > 0) requires wal_level \"replica\" or \"logical\"";
    cluster
        .wait_for("orders", "Degraded with the server's reason", |db| {
            condition(db, "Degraded")
                .is_some_and(|(status, _, message)| status == "True" && message.contains(reason))
        })
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    cluster
        .wait_for_event("orders", "a Warning with the server's reason", |e| {
            e.starts_with("Warning") && e.contains(reason)
        })
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    let pod = cluster.api::<Pod>().get("orders-0").await.expect("the pod");
    let status = pod.spec.expect("a spec").containers[0]
        .termination_message_policy
        .clone();
    assert_eq!(status.as_deref(), Some("FallbackToLogsOnError"));
    operator.stop().await;
    cluster.finish().await;
}

#[tokio::test]
async fn a_malformed_image_is_refused_and_never_ready_and_a_simulated_container_says_so() {
    let Some((cluster, operator)) = start().await else {
        return;
    };
    // The schema refuses it, naming the field.
    let refused = cluster
        .api::<PostgresDB>()
        .create(
            &PostParams::default(),
            &DbBuilder::manifest("orders").image("Postgres:15").build(),
        )
        .await
        .expect_err("a malformed image is refused");
    assert!(refused.to_string().contains("spec.image"), "{refused}");

    // A pod with one (from anywhere) is never created, never Ready.
    let pods: Api<Pod> = cluster.api();
    let pod = |name: &str, image: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": image}]}
        }))
        .expect("a pod")
    };
    pods.create(&PostParams::default(), &pod("malformed", "Postgres:15"))
        .await
        .expect("the API accepts the pod");
    pods.create(&PostParams::default(), &pod("web", "nginx:1.27"))
        .await
        .expect("the API accepts the pod");
    cluster
        .wait_for_object::<Pod>("malformed", "waiting with InvalidImageName", |p| {
            let statuses = p
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.container_statuses.as_ref());
            statuses.is_some_and(|cs| {
                cs.iter().any(|c| {
                    !c.ready
                        && c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.reason.as_deref())
                            == Some("InvalidImageName")
                })
            })
        })
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    cluster
        .wait_for_event("web", "the container is simulated", |e| {
            e.starts_with("Normal Simulated") && e.contains("nothing runs")
        })
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let malformed = pods.get("malformed").await.expect("the pod");
    let ready = malformed
        .status
        .and_then(|s| s.conditions)
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert!(!ready, "a pod with a malformed image never becomes Ready");
    operator.stop().await;
    cluster.finish().await;
}

#[tokio::test]
async fn a_major_change_is_refused_before_anything_moves_when_the_new_major_lacks_a_parameter() {
    let Some((cluster, operator)) = start_level(LevelId::Two, &[15, 16]).await else {
        return;
    };
    // vacuum_defer_cleanup_age is a setting of 15, removed in 16.
    cluster
        .api::<PostgresDB>()
        .create(
            &PostParams::default(),
            &DbBuilder::manifest("orders")
                .version("15")
                .parameter("vacuum_defer_cleanup_age", "10")
                .build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("orders", "Ready", ready)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    let sts_api = cluster.api::<k8s_openapi::api::apps::v1::StatefulSet>();
    let generation = sts_api
        .get("orders")
        .await
        .expect("the StatefulSet")
        .metadata
        .generation;
    cluster
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("the spec is patched");
    let field = "spec.parameters.vacuum_defer_cleanup_age";
    cluster
        .wait_for("orders", "refused for the new major", |db| {
            condition(db, "Ready").is_some_and(|(status, reason, message)| {
                status == "False"
                    && reason == "InvalidParameter"
                    && message.contains(field)
                    && message.contains("PostgreSQL 16 has no parameter")
            })
        })
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    cluster.settle("orders").await.expect("settles");
    let sts = sts_api.get("orders").await.expect("the StatefulSet");
    assert_eq!(
        sts.metadata.generation, generation,
        "the StatefulSet is untouched"
    );
    let jobs = cluster
        .api::<k8s_openapi::api::batch::v1::Job>()
        .list(&Default::default())
        .await
        .expect("lists Jobs");
    assert!(jobs.items.is_empty(), "no migration Job started");
    let client = connect_to(&cluster, Role::Superuser, "orders", None)
        .await
        .expect("connects");
    assert!(show(&client, "server_version").await.starts_with("15."));
    assert_eq!(show(&client, "vacuum_defer_cleanup_age").await, "10");
    drop(client);
    operator.stop().await;
    cluster.finish().await;
}

#[test]
fn the_parameter_tables_match_the_installed_postgresql_binaries() {
    if PostgresConfig::default().binaries.server(15).is_err() {
        eprintln!("skipped: no PostgreSQL binaries");
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/generate-parameter-tables.sh"
    );
    let output = std::process::Command::new(script)
        .arg("--check")
        .output()
        .expect("the generator runs");
    assert!(
        output.status.success(),
        "a table is stale:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
