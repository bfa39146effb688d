//! The RBAC in `deploy/base/rbac.yaml` grants what the operator does, no less.
//!
//! The sandbox does not enforce RBAC, but it notes every kind of request
//! each client makes (by its User-Agent). Level 2's binary, the most
//! capable level, runs through a whole life on real PostgreSQL (install,
//! reload, drift repair, a refused change, a major upgrade with its Job and
//! volumes, leader election) and every request it made must be allowed by
//! a rule of the ClusterRole or the leader-election Role. A permission
//! missing there would make the deployed operator fail on a real cluster.
//! Fails, saying how to install them, when the PostgreSQL 15 or 16
//! binaries are missing.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use shared::api::{PostgresDB, UpgradePhase};
use tests::builders::DbBuilder;
use tests::harness::{TestCluster, real_postgres};
use tests::levels::LevelId;

#[tokio::test]
async fn level2_uses_only_what_the_deployed_rbac_grants() {
    let config = real_postgres(&[15, 16]);
    let cluster = match TestCluster::sandbox(config).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
    };
    let namespace = cluster.namespace().to_string();
    // As deploy/base/operator.yaml runs it: with leader election. Inside a
    // cluster it reaches the databases directly, as here.
    let operator = cluster
        .run_binary_with(
            LevelId::Two,
            &[
                "--leader-elect",
                "--lease-namespace",
                &namespace,
                "--database-access",
                "direct",
            ],
        )
        .expect("the level2-upgrade binary starts");

    let mut db = DbBuilder::manifest("orders").version("15").build();
    db.spec.parameters.insert("work_mem".into(), "4MB".into());
    cluster
        .api::<PostgresDB>()
        .create(&PostParams::default(), &db)
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("orders", "Ready at 15", tests::scenarios::is_settled)
        .await
        .expect("waited");

    // A reload, a repaired deletion, and a refused change.
    cluster
        .patch_spec("orders", json!({"parameters": {"work_mem": "8MB"}}))
        .await
        .expect("patched");
    cluster
        .wait_for("orders", "work_mem applied", |db| {
            tests::scenarios::is_settled(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.configuration.as_ref())
                    .is_some_and(|c| c.applied)
        })
        .await
        .expect("waited");
    cluster
        .api::<StatefulSet>()
        .delete("orders", &DeleteParams::default())
        .await
        .expect("deletes the StatefulSet");
    cluster
        .wait_for_object::<StatefulSet>("orders", "the StatefulSet is back", |s| s.is_some())
        .await
        .expect("waited");
    cluster
        .wait_for(
            "orders",
            "Ready after the repair",
            tests::scenarios::is_settled,
        )
        .await
        .expect("waited");
    cluster
        .patch_spec("orders", json!({"storage": {"size": "512Mi"}}))
        .await
        .expect("patched");
    cluster
        .wait_for("orders", "the storage shrink refused", |db| {
            db.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "RefusedStorageShrink")
            })
        })
        .await
        .expect("waited");
    cluster
        .patch_spec("orders", json!({"storage": {"size": "1Gi"}}))
        .await
        .expect("patched");

    // A major upgrade: Job, volumes, fence, switch.
    cluster
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("patched");
    cluster
        .wait_for("orders", "upgraded to 16", |db| {
            db.status.as_ref().is_some_and(|s| {
                s.upgrade
                    .as_ref()
                    .is_some_and(|u| u.phase == UpgradePhase::Complete)
                    && s.current_version.as_deref() == Some("16")
            })
        })
        .await
        .expect("waited");
    operator.stop().await;

    let used = tests::rbac::requests_of(&cluster, LevelId::Two).expect("a sandbox cluster");
    eprintln!(
        "level2-upgrade made {} kinds of request: {:?}",
        used.len(),
        used.iter().map(tests::rbac::describe).collect::<Vec<_>>()
    );
    assert!(
        used.iter()
            .any(|r| r.resource == "jobs" && r.verb == "patch")
            && used.iter().any(|r| r.resource == "leases"),
        "the operator's requests were noted by its User-Agent: {used:?}"
    );
    let denied = tests::rbac::ungranted(&cluster, LevelId::Two);
    assert!(
        denied.is_empty(),
        "deploy/base/rbac.yaml does not grant: {denied:?}"
    );
    cluster.finish().await;
}
