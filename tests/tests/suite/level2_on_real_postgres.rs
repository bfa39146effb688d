//! Level 2 speaks SQL to real servers on the sandbox's real-PostgreSQL
//! runtime: a parameter PostgreSQL can reload is applied without a restart,
//! one that needs a restart restarts the pod, and status says which.
//! Fails, saying how to install them, when no PostgreSQL 15 binaries are found.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use shared::api::{ConfigurationMethod, PostgresDB};
use tests::builders::DbBuilder;
use tests::connect::{Role, connect};
use tests::harness::{Operator, TestCluster, real_postgres};
use tests::levels::LevelId;

/// A sandbox running real PostgreSQL, Level 2 against it, and a Ready
/// database `orders` at version 15.
async fn ready_database() -> (TestCluster, Operator) {
    let cluster = TestCluster::sandbox(real_postgres(&[15]))
        .await
        .unwrap_or_else(|error| panic!("{}", shared::reconcile::error_chain(&error)));
    let operator = cluster.run_operator(LevelId::Two);
    cluster
        .create(&DbBuilder::manifest("orders").version("15").build())
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("orders", "Ready", tests::scenarios::is_settled)
        .await
        .expect("Ready");
    (cluster, operator)
}

async fn query_one(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn pod_uid(cluster: &TestCluster) -> String {
    cluster
        .api::<Pod>()
        .get("orders-0")
        .await
        .expect("the pod exists")
        .uid()
        .unwrap_or_default()
}

/// Waits until status.configuration reports `changed` applied by `method`.
async fn applied(cluster: &TestCluster, changed: &str, method: ConfigurationMethod) -> PostgresDB {
    cluster
        .wait_for(
            "orders",
            &format!("{changed} applied by {method:?}"),
            |db: &PostgresDB| {
                db.status
                    .as_ref()
                    .and_then(|s| s.configuration.as_ref())
                    .is_some_and(|c| {
                        c.applied && c.applied_by == method && c.changed == [changed.to_string()]
                    })
                    && tests::scenarios::is_settled(db)
            },
        )
        .await
        .expect("applied")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_postgresql_can_reload_is_applied_without_a_restart() {
    let (cluster, operator) = ready_database().await;
    let superuser = connect(&cluster, Role::Superuser, "orders")
        .await
        .expect("the sandbox's Service is reachable");
    let started = query_one(&superuser, "SELECT pg_postmaster_start_time()::text").await;
    let uid = pod_uid(&cluster).await;

    cluster
        .patch_spec(
            "orders",
            serde_json::json!({"parameters": {"work_mem": "8MB"}}),
        )
        .await
        .expect("patched");
    applied(&cluster, "work_mem", ConfigurationMethod::Reload).await;

    assert_eq!(query_one(&superuser, "SHOW work_mem").await, "8MB");
    assert_eq!(
        query_one(&superuser, "SELECT pg_postmaster_start_time()::text").await,
        started,
        "the server was not restarted"
    );
    assert_eq!(pod_uid(&cluster).await, uid, "the pod was not replaced");
    let reloaded = cluster
        .wait_for_event("orders", "ParametersReloaded", |e| {
            e.contains("ParametersReloaded")
        })
        .await
        .expect("an Event says the parameters were reloaded");
    assert!(reloaded.contains("work_mem"), "{reloaded}");

    // Later reconciles ask the server again while the pods run the
    // reloaded configuration; the sandbox's server reports its command-line
    // listen_addresses as pending a restart after the reload, which is not
    // a change of the user's to restart for.
    // Two whole reconciles, begun after the reload (the settle's touches
    // of the StatefulSet start them), ask again and decide.
    cluster.settle("orders").await.expect("settles");
    let restarting: Vec<String> = cluster
        .events("orders")
        .await
        .expect("lists Events")
        .into_iter()
        .filter(|e| e.contains("RestartingForParameters"))
        .collect();
    assert_eq!(
        restarting,
        Vec::<String>::new(),
        "no restart follows a reload"
    );
    assert_eq!(pod_uid(&cluster).await, uid, "the pod was not replaced");
    operator.stop().await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_that_needs_a_restart_restarts_the_server_and_is_applied() {
    let (cluster, operator) = ready_database().await;
    let started = {
        let superuser = connect(&cluster, Role::Superuser, "orders")
            .await
            .expect("reachable");
        query_one(&superuser, "SELECT pg_postmaster_start_time()::text").await
    };

    cluster
        .patch_spec(
            "orders",
            serde_json::json!({"parameters": {"max_connections": "50"}}),
        )
        .await
        .expect("patched");
    applied(&cluster, "max_connections", ConfigurationMethod::Restart).await;

    let superuser = connect(&cluster, Role::Superuser, "orders")
        .await
        .expect("reachable again");
    assert_eq!(query_one(&superuser, "SHOW max_connections").await, "50");
    assert_ne!(
        query_one(&superuser, "SELECT pg_postmaster_start_time()::text").await,
        started,
        "the server was restarted"
    );
    let events = cluster.events("orders").await.expect("lists Events");
    assert!(
        events
            .iter()
            .any(|e| e.contains("RestartingForParameters") && e.contains("max_connections")),
        "events: {events:?}"
    );
    operator.stop().await;
    cluster.finish().await;
}
