//! Retention deleting a previous major's volume, end to end on real
//! PostgreSQL 14, 15 and 16: a database upgraded twice runs 16 on
//! `orders-data-16`, and `orders-data-15`, the operator's own volume of the
//! previous major, is kept for `spec.upgrade.retentionHours` and then
//! deleted with the second upgrade's dump. The claim template's
//! `data-orders-0` (14's data) is never deleted, and a volume whose own
//! deadline has not passed (the first upgrade's dump) stays. The rows
//! written at 14 are read at 16 before and after.
//!
//! Why 14: the migration Job's client tools are Debian's PostgreSQL 15
//! (docs/sandbox.md), whose pg_dumpall dumps a server of its major or an
//! older one, so the two migrations here are 14 to 15 and 15 to 16.
//!
//! `retentionHours` is whole hours, at least one, and the operator reads a
//! volume's deadline from its `retain-until` annotation at every reconcile
//! (docs/level2-upgrade.md, "Retention"). The test cannot wait an hour: it
//! checks that the annotations carry `status.upgrade.major.retainUntil`,
//! then moves them into the past, as the hour passing would.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use shared::api::{MajorUpgradeStatus, UpgradePhase};
use shared::keys::RETAIN_UNTIL_ANNOTATION;

use super::fixture::{Cluster, contents, database_with_rows, server_version};

/// Asks for `version` and waits until the major upgrade to it completed
/// and it serves; returns `status.upgrade.major` then.
async fn upgrade_to(cluster: &Cluster, version: &str) -> MajorUpgradeStatus {
    cluster
        .inner
        .patch_spec(
            "orders",
            json!({"version": version, "upgrade": {"allowMajor": true, "retentionHours": 1}}),
        )
        .await
        .unwrap_or_else(|e| panic!("asking for {version}: {e}"));
    cluster
        .wait_until(
            &format!("the upgrade to {version} completes and {version} is Ready"),
            || async {
                cluster.upgrade_phase().await == Some(UpgradePhase::Complete)
                    && cluster.ready_at(version).await
            },
        )
        .await;
    cluster
        .database()
        .await
        .and_then(|db| db.status?.upgrade?.major)
        .expect("status.upgrade.major")
}

async fn retain_until(cluster: &Cluster, claim: &str) -> Option<String> {
    cluster
        .api::<PersistentVolumeClaim>()
        .get(claim)
        .await
        .unwrap_or_else(|e| panic!("PVC {claim}: {e}"))
        .annotations()
        .get(RETAIN_UNTIL_ANNOTATION)
        .cloned()
}

async fn gone(cluster: &Cluster, claim: &str) -> bool {
    cluster
        .api::<PersistentVolumeClaim>()
        .get_opt(claim)
        .await
        .unwrap_or_else(|e| panic!("PVC {claim}: {e}"))
        .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_second_major_upgrade_retention_deletes_the_previous_majors_volume_and_keeps_the_claim_template()
 {
    let cluster = Cluster::start(&[14, 15, 16]).await;
    database_with_rows(&cluster, "14").await;
    let before = contents(&cluster).await;
    assert_eq!(before[..3], ["3", "one,two,three", "500"]);

    let first = upgrade_to(&cluster, "15").await;
    assert_eq!(
        (
            first.previous_data_volume.as_str(),
            first.data_volume.as_str()
        ),
        ("data-orders-0", "orders-data-15"),
        "14's data is the claim template's volume; 15 runs on a volume of the operator's"
    );
    let second = upgrade_to(&cluster, "16").await;
    assert_eq!(
        (
            second.previous_data_volume.as_str(),
            second.data_volume.as_str(),
            second.backup_volume.as_str()
        ),
        ("orders-data-15", "orders-data-16", "orders-backup-16"),
        "the second upgrade leaves 15's own volume and a dump of its own"
    );
    assert!(server_version(&cluster).await.starts_with("16"));
    assert_eq!(
        contents(&cluster).await,
        before,
        "every row survived two upgrades"
    );

    // Both of the second upgrade's kept volumes carry its deadline.
    let until = second
        .retain_until
        .as_ref()
        .expect("status.upgrade.major.retainUntil")
        .0
        .to_string();
    for claim in ["orders-data-15", "orders-backup-16"] {
        assert_eq!(
            retain_until(&cluster, claim).await.as_deref(),
            Some(until.as_str()),
            "PVC {claim}'s retain-until is status.upgrade.major.retainUntil"
        );
    }
    let first_dump_until = retain_until(&cluster, "orders-backup-15")
        .await
        .expect("the first upgrade's dump carries its own deadline");

    let past =
        json!({"metadata": {"annotations": {RETAIN_UNTIL_ANNOTATION: "2000-01-01T00:00:00Z"}}});
    for claim in ["orders-data-15", "orders-backup-16"] {
        cluster
            .api::<PersistentVolumeClaim>()
            .patch(claim, &PatchParams::default(), &Patch::Merge(&past))
            .await
            .unwrap_or_else(|e| panic!("moving PVC {claim}'s deadline: {e}"));
    }
    // A reconcile that began after the move has ended.
    cluster.inner.settle("orders").await.expect("settles");
    cluster
        .wait_until("15's volume and the second dump are deleted", || async {
            gone(&cluster, "orders-data-15").await && gone(&cluster, "orders-backup-16").await
        })
        .await;
    let events = cluster.inner.events("orders").await.expect("lists Events");
    let expired = events
        .iter()
        .find(|e| e.starts_with("Normal RetentionExpired"))
        .unwrap_or_else(|| panic!("an Event RetentionExpired:\n{}", events.join("\n")));
    assert!(
        expired.contains("orders-data-15 (a previous major's data)")
            && expired.contains("orders-backup-16 (the pre-upgrade dump)"),
        "the Event names both deleted PVCs: {expired}"
    );
    for claim in ["data-orders-0", "orders-data-16", "orders-backup-15"] {
        assert!(cluster.claim_exists(claim).await, "PVC {claim} is kept");
    }
    assert_eq!(
        retain_until(&cluster, "orders-backup-15").await,
        Some(first_dump_until),
        "the first dump keeps its own deadline"
    );
    assert!(cluster.ready_at("16").await, "16 still serves");
    assert_eq!(contents(&cluster).await, before, "every row still there");
    cluster.stop().await;
}
