//! Pruning on the sandbox: a child the operator made that no capability
//! desires any more is deleted with a `Pruned` Event, while look-alikes it
//! does not control and volumes stay; and Level 1 taking over from Level 2
//! after a real major upgrade deletes no volume and not the upgrade's Job.
//! The second test needs the PostgreSQL 15 and 16 binaries and is skipped,
//! with a note, without them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServicePort};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use shared::api::{PostgresDB, UpgradePhase};
use shared::names::common_labels;
use tests::builders::DbBuilder;
use tests::harness::{Failed, OrFail, TestCluster, WAIT, real_postgres};
use tests::levels::LevelId;
use tests::scenarios::is_settled;

/// A real major upgrade on a busy two-core machine takes longer than [`WAIT`].
const UPGRADE_WAIT: Duration = Duration::from_secs(180);

async fn create_ready(cluster: &TestCluster, db: PostgresDB) -> PostgresDB {
    let name = db.name_any();
    if let Err(error) = cluster.create(&db).await {
        panic!("{}", shared::reconcile::error_chain(&error));
    }
    cluster
        .wait_for(&name, "Ready", is_settled)
        .await
        .unwrap_or_else(|failed| panic!("{failed}"))
}

/// Metadata of an object labelled for `orders`, controlled by `owner`.
fn metadata(name: &str, owner: Option<OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(common_labels("orders")),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    }
}

/// A controller reference to `object`, as the operator or a controller sets it.
fn controller<K: Resource<DynamicType = ()>>(object: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into(),
        kind: K::kind(&()).into(),
        name: object.name_any(),
        uid: object.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

fn config_map(name: &str, owner: Option<OwnerReference>) -> ConfigMap {
    ConfigMap {
        metadata: metadata(name, owner),
        data: Some(BTreeMap::from([("left".to_string(), "over".to_string())])),
        ..Default::default()
    }
}

fn service(name: &str, owner: Option<OwnerReference>) -> Service {
    Service {
        metadata: metadata(name, owner),
        spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 9187,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn claim(name: &str, owner: Option<OwnerReference>) -> PersistentVolumeClaim {
    let mut claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("a PVC");
    claim.metadata = metadata(name, owner);
    claim
}

/// The `Pruned` Events about `orders`, as (related kind, related name, note).
async fn pruned_events(cluster: &TestCluster) -> Result<Vec<(String, String, String)>, Failed> {
    Ok(cluster
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .or_fail("list Events")?
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("Pruned")
                && e.type_.as_deref() == Some("Normal")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("orders")
        })
        .map(|e| {
            let related = e.related.unwrap_or_default();
            (
                related.kind.unwrap_or_default(),
                related.name.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect())
}

/// Waits until `name` of kind `K` is gone, and for its `Pruned` Event.
async fn wait_pruned<K>(cluster: &TestCluster, name: &str)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    cluster
        .wait_for_object::<K>(name, "pruned", |o| o.is_none())
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    let kind = K::kind(&()).to_string();
    cluster
        .eventually(
            WAIT,
            &format!("a Pruned Event related to {kind}/{name}"),
            || async {
                let events = pruned_events(cluster).await?;
                Ok(events
                    .iter()
                    .any(|(k, n, note)| {
                        *k == kind && n == name && note.contains(&format!("{kind}/{name}"))
                    })
                    .then_some(()))
            },
        )
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
}

#[tokio::test]
async fn a_child_no_capability_desires_is_pruned_with_an_event_and_look_alikes_stay() {
    let cluster = match TestCluster::start().await {
        Ok(cluster) => cluster,
        Err(error) => panic!("no cluster: {}", shared::reconcile::error_chain(&error)),
    };
    let operator = cluster.run_operator(LevelId::One);
    let db = create_ready(&cluster, DbBuilder::manifest("orders").build()).await;
    let sts = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("the StatefulSet");
    let post = PostParams::default();
    // Look-alikes first: labelled for the database, but made by hand or
    // controlled by the StatefulSet; and a volume the database controls.
    cluster
        .api::<ConfigMap>()
        .create(&post, &config_map("orders-by-hand", None))
        .await
        .expect("created");
    cluster
        .api::<ConfigMap>()
        .create(
            &post,
            &config_map("orders-of-the-statefulset", Some(controller(&sts))),
        )
        .await
        .expect("created");
    cluster
        .api::<PersistentVolumeClaim>()
        .create(&post, &claim("orders-extra-data", Some(controller(&db))))
        .await
        .expect("created");
    // Then what the operator would have made: labelled and controlled by
    // the database, and desired by no capability of Level 1.
    cluster
        .api::<ConfigMap>()
        .create(&post, &config_map("orders-leftover", Some(controller(&db))))
        .await
        .expect("created");
    cluster
        .api::<Service>()
        .create(&post, &service("orders-metrics", Some(controller(&db))))
        .await
        .expect("created");

    wait_pruned::<ConfigMap>(&cluster, "orders-leftover").await;
    wait_pruned::<Service>(&cluster, "orders-metrics").await;

    for name in [
        "orders-by-hand",
        "orders-of-the-statefulset",
        "orders-config",
    ] {
        assert!(
            cluster
                .api::<ConfigMap>()
                .get_opt(name)
                .await
                .expect("reads")
                .is_some(),
            "ConfigMap {name} is kept"
        );
    }
    let volume = cluster
        .api::<PersistentVolumeClaim>()
        .get_opt("orders-extra-data")
        .await
        .expect("reads");
    assert!(
        volume.is_some_and(|v| v.metadata.deletion_timestamp.is_none()),
        "a volume is never pruned"
    );
    // A reconcile that began after the prunes has ended: nothing else goes.
    cluster
        .settle("orders")
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    let pruned: Vec<String> = pruned_events(&cluster)
        .await
        .unwrap_or_else(|failed| panic!("{failed}"))
        .into_iter()
        .map(|(kind, name, _)| format!("{kind}/{name}"))
        .collect();
    assert_eq!(
        pruned.len(),
        2,
        "only the two orphans were pruned: {pruned:?}"
    );
    operator.stop().await;
    let denied = tests::rbac::ungranted(&cluster, LevelId::One);
    assert!(
        denied.is_empty(),
        "deploy/base/rbac.yaml does not grant: {denied:?}"
    );
    cluster.finish().await;
}

/// Waits up to [`UPGRADE_WAIT`] for `orders` to satisfy `check`.
async fn wait_long(cluster: &TestCluster, what: &str, check: impl Fn(&PostgresDB) -> bool) {
    cluster
        .eventually(UPGRADE_WAIT, &format!("orders is {what}"), || async {
            Ok(cluster.database("orders").await?.filter(|db| check(db)))
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
}

/// Every PVC in the namespace, by name, with its uid and whether it is
/// being deleted.
async fn volumes(cluster: &TestCluster) -> BTreeMap<String, (String, bool)> {
    cluster
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await
        .expect("lists PVCs")
        .items
        .into_iter()
        .map(|c| {
            (
                c.name_any(),
                (
                    c.uid().unwrap_or_default(),
                    c.metadata.deletion_timestamp.is_some(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn level1_taking_over_from_level2_after_a_major_upgrade_deletes_no_volume_and_no_job() {
    let config = real_postgres(&[15, 16]);
    let cluster = match TestCluster::sandbox(config).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
    };
    let level2 = cluster.run_operator(LevelId::Two);
    create_ready(
        &cluster,
        DbBuilder::manifest("orders").version("15").build(),
    )
    .await;
    cluster
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("patched");
    wait_long(&cluster, "upgraded to 16", |db| {
        is_settled(db)
            && db.status.as_ref().is_some_and(|s| {
                s.upgrade
                    .as_ref()
                    .is_some_and(|u| u.phase == UpgradePhase::Complete)
                    && s.current_version.as_deref() == Some("16")
            })
    })
    .await;
    let job = cluster
        .api::<PostgresDB>()
        .get("orders")
        .await
        .expect("the database")
        .status
        .and_then(|s| s.upgrade?.major)
        .map(|m| m.job)
        .expect("status.upgrade.major.job");
    // Level 2 keeps the Job its status names, finished as it is: a
    // reconcile that began after completion has ended and left it.
    cluster
        .settle("orders")
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    assert!(
        cluster
            .api::<Job>()
            .get_opt(&job)
            .await
            .expect("reads")
            .is_some(),
        "Level 2 kept its Job {job}"
    );
    level2.stop().await;
    let before = volumes(&cluster).await;
    for name in ["data-orders-0", "orders-data-16", "orders-backup-16"] {
        assert!(before.contains_key(name), "PVC {name} exists: {before:?}");
    }

    let level1 = cluster.run_operator(LevelId::One);
    // Proof that Level 1 prunes while it runs: an orphan it applies the
    // kind of goes. Whatever Level 1 deletes, it has decided by then.
    let db = cluster
        .api::<PostgresDB>()
        .get("orders")
        .await
        .expect("the database");
    cluster
        .api::<Service>()
        .create(
            &PostParams::default(),
            &service("orders-metrics", Some(controller(&db))),
        )
        .await
        .expect("created");
    wait_pruned::<Service>(&cluster, "orders-metrics").await;
    cluster
        .settle("orders")
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    let after = volumes(&cluster).await;
    level1.stop().await;
    assert_eq!(after, before, "every volume is kept, unchanged");
    assert!(
        cluster
            .api::<Job>()
            .get_opt(&job)
            .await
            .expect("reads")
            .is_some(),
        "Level 1 left Level 2's Job {job} alone"
    );
    for level in [LevelId::One, LevelId::Two] {
        let denied = tests::rbac::ungranted(&cluster, level);
        assert!(
            denied.is_empty(),
            "deploy/base/rbac.yaml does not grant {}: {denied:?}",
            level.name()
        );
    }
    cluster.finish().await;
}
