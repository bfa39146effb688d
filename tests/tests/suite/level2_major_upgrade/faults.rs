//! A major upgrade's faults end to end on real PostgreSQL 15 and 16: a
//! verification difference rolls the upgrade back, and the documented
//! retry (the running version, then the new one again) completes with a
//! Job of its own while the failed attempt's is pruned; an operator killed
//! while the migration Job runs is followed by one that completes the same
//! Job; retention then deletes the pre-upgrade dump; changing
//! `spec.version` back while the Job runs cancels the upgrade.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use shared::api::UpgradePhase;
use shared::keys::RETAIN_UNTIL_ANNOTATION;
use tests::connect::{Role, login};
use tests::levels::LevelId;

use super::fixture::{Cluster, contents, database_at_15_with_rows, scalar, server_version};

/// The upgrade Job's pod and its log so far, when it has one.
async fn job_log(cluster: &Cluster) -> Option<(String, String)> {
    let pods = cluster.api::<Pod>();
    let pod = pods
        .list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| p.name_any().starts_with("orders-upgrade-"))?;
    let log = pods.logs(&pod.name_any(), &Default::default()).await.ok()?;
    Some((pod.name_any(), log))
}

async fn upgrade_job(cluster: &Cluster) -> Option<Job> {
    cluster
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find(|j| j.name_any().starts_with("orders-upgrade-"))
}

async fn events(cluster: &Cluster) -> Vec<String> {
    cluster.inner.events("orders").await.expect("lists Events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_dump_missed_fails_the_verification_and_rolls_back_losing_nothing_and_a_retry_completes()
 {
    let cluster = Cluster::start(&[15, 16]).await;
    database_at_15_with_rows(&cluster).await;
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("CREATE TABLE ticks (n bigint PRIMARY KEY)")
        .await
        .expect("the owner creates a table");
    drop(owner);
    // A client connected to the pod itself that turns the fence's default
    // off for its sessions (docs/level2-upgrade.md, Limits): its inserts
    // go on through the dump, so the old server holds rows the dump lacks.
    let mut login = login(&cluster.inner, Role::Owner, "orders", None)
        .await
        .expect("the owner's login");
    login.options("-c default_transaction_read_only=off");
    let (acknowledged, _failures) = cluster.upgrade_under_a_direct_writer(login).await;
    assert_eq!(
        cluster.upgrade_phase().await,
        Some(UpgradePhase::RolledBack),
        "the write the dump missed fails the upgrade\n{}",
        cluster.diagnose().await
    );
    let db = cluster.database().await.expect("the database");
    let up = db.status.and_then(|s| s.upgrade).expect("status.upgrade");
    let major = up.major.expect("status.upgrade.major");
    let failure = major.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("verification failed") && failure.contains("ticks"),
        "status.upgrade.major.failure names the verification and the table: {failure}"
    );
    cluster
        .wait_until(
            "Progressing=False, reason MajorUpgradeRolledBack",
            || async {
                cluster
                    .condition("Progressing")
                    .await
                    .is_some_and(|(s, r, m)| {
                        s == "False"
                            && r == "MajorUpgradeRolledBack"
                            && m.contains("verification failed")
                    })
            },
        )
        .await;
    let job = cluster
        .api::<Job>()
        .get(&major.job)
        .await
        .expect("the failed Job is kept");
    assert!(
        job.status.and_then(|s| s.failed).unwrap_or(0) > 0,
        "the Job failed"
    );
    let (_, log) = job_log(&cluster)
        .await
        .expect("the Job's pod and log are kept");
    assert!(
        log.contains("verification failed") && log.contains("ticks"),
        "the Job's log shows the difference:\n{log}"
    );
    // The old server serves again, read-write, with every acknowledged row.
    cluster
        .wait_until("15 serves again, writes resumed", || async {
            cluster.ready_at("15").await
                && events(&cluster)
                    .await
                    .iter()
                    .any(|e| e.contains("WritesResumed"))
        })
        .await;
    let events = events(&cluster).await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Warning MajorUpgradeRolledBack")),
        "a Warning MajorUpgradeRolledBack:\n{}",
        events.join("\n")
    );
    assert!(server_version(&cluster).await.starts_with("15"));
    let owner = cluster.connect_as("orders-credentials", None).await;
    let lost = super::direct_writer::lost_inserts(&owner, &acknowledged).await;
    assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");
    owner
        .batch_execute("INSERT INTO items VALUES (4, 'four')")
        .await
        .expect("15 takes writes again");
    drop(owner);
    // Nothing is deleted by a rollback.
    for claim in ["data-orders-0", "orders-backup-16", "orders-data-16"] {
        assert!(cluster.claim_exists(claim).await, "PVC {claim} is kept");
    }

    // The retry the docs describe: the running version, the cause fixed
    // (the writer is gone), the new version again. A new attempt runs a
    // new Job on the volume the failed one left incomplete, and the
    // earlier attempt's Job is pruned.
    let failed_job = major.job.clone();
    let before = contents(&cluster).await;
    cluster
        .inner
        .patch_spec("orders", json!({"version": "15"}))
        .await
        .expect("the spec is patched");
    cluster
        .wait_until("15 is the settled version again", || async {
            cluster
                .database()
                .await
                .is_some_and(|db| tests::scenarios::steps::is_settled_at(&db, "15"))
        })
        .await;
    cluster
        .inner
        .patch_spec("orders", json!({"version": "16"}))
        .await
        .expect("the spec is patched");
    cluster
        .wait_until("the retry completes and 16 is Ready", || async {
            cluster.upgrade_phase().await == Some(UpgradePhase::Complete)
                && cluster.ready_at("16").await
        })
        .await;
    let retried = cluster
        .database()
        .await
        .and_then(|db| db.status?.upgrade?.major)
        .expect("status.upgrade.major");
    assert_ne!(retried.job, failed_job, "the retry ran a Job of its own");
    assert_eq!(contents(&cluster).await, before, "every row reached 16");
    cluster
        .wait_until("the failed attempt's Job is pruned", || async {
            cluster
                .api::<Job>()
                .get_opt(&failed_job)
                .await
                .expect("reads the Job")
                .is_none_or(|j| j.metadata.deletion_timestamp.is_some())
        })
        .await;
    let events = cluster.inner.events("orders").await.expect("lists Events");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Normal Pruned") && e.contains(&failed_job)),
        "an Event Pruned names the earlier attempt's Job:\n{}",
        events.join("\n")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_while_the_migration_job_runs_is_followed_by_one_that_completes_it_then_retention_deletes_the_dump()
 {
    let mut cluster = Cluster::start(&[15, 16]).await;
    database_at_15_with_rows(&cluster).await;
    // Enough rows that the Job's dump, restore and verification last
    // seconds, so the kill lands while it runs.
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute(
            "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS digest FROM generate_series(1, 1500000) g",
        )
        .await
        .expect("the owner writes many rows");
    let bulk = scalar(&owner, "SELECT count(*) FROM bulk").await;
    drop(owner);
    let before = contents(&cluster).await;

    cluster
        .inner
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true, "retentionHours": 1}}),
        )
        .await
        .expect("the spec is patched");
    // Killed once the Job has dumped and is restoring: mid-Job.
    cluster
        .wait_until("the migration Job is restoring", || async {
            job_log(&cluster)
                .await
                .is_some_and(|(_, log)| log.contains("restoring the dump"))
        })
        .await;
    let killed = cluster.operator.take().expect("the first operator runs");
    let killed_instance = killed.instance().expect("in-process").to_string();
    killed.kill().await;
    let job = upgrade_job(&cluster).await.expect("the Job exists");
    let (pod, log) = job_log(&cluster).await.expect("the Job's pod");
    eprintln!("killed the operator while pod {pod} logged:\n{log}");
    assert!(
        job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) == 0
            && job.status.as_ref().and_then(|s| s.failed).unwrap_or(0) == 0
            && !log.contains("verified "),
        "the Job was still running when the operator died: {:?}\n{log}",
        job.status
    );
    // Restarted as a process of its own: nothing of the first survives.
    cluster.operator = Some(
        cluster
            .inner
            .run_binary(LevelId::Two)
            .expect("Level 2's binary starts"),
    );
    // The restarted operator runs while the Job still does: it carries
    // on with a migration it did not see start.
    let restarted = cluster.operator.as_ref().expect("the restarted operator");
    cluster
        .wait_until("the restarted operator runs its controller", || async {
            restarted
                .output()
                .and_then(Result::ok)
                .is_some_and(|out| out.contains("controller running"))
        })
        .await;
    let job_then = upgrade_job(&cluster).await.expect("the Job exists");
    let status = job_then.status.clone().unwrap_or_default();
    assert!(
        job_then.uid() == job.uid()
            && status.succeeded.unwrap_or(0) == 0
            && status.failed.unwrap_or(0) == 0,
        "the Job still runs when the restarted operator starts: {status:?}"
    );
    cluster
        .wait_until("the upgrade completes and 16 is Ready", || async {
            cluster.upgrade_phase().await == Some(UpgradePhase::Complete)
                && cluster.ready_at("16").await
        })
        .await;
    let db = cluster.database().await.expect("the database");
    let major = db
        .status
        .and_then(|s| s.upgrade)
        .and_then(|u| u.major)
        .expect("status.upgrade.major");
    assert_eq!(
        major.job,
        job.name_any(),
        "the Job that ran through the kill is the one that completed"
    );
    let completed = cluster.api::<Job>().get(&major.job).await.expect("the Job");
    assert_eq!(completed.uid(), job.uid(), "the same Job, not a new one");
    assert_eq!(completed.status.and_then(|s| s.succeeded), Some(1));
    let verified = major.verified.clone().unwrap_or_default();
    assert!(
        verified.contains(&format!("{} rows", 505 + bulk.parse::<u64>().unwrap_or(0))),
        "the verification counted every row ({bulk} in bulk): {verified}"
    );
    let complete = cluster
        .inner
        .event_objects("orders")
        .await
        .expect("lists Events")
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("MajorUpgradeComplete"))
        .expect("an Event MajorUpgradeComplete");
    assert_ne!(
        complete.reporting_instance.as_deref(),
        Some(killed_instance.as_str()),
        "the operator started after the kill completed the upgrade"
    );
    assert!(server_version(&cluster).await.starts_with("16"));
    assert_eq!(contents(&cluster).await, before, "every row survived");

    // Retention: spec.upgrade.retentionHours is whole hours (at least 1),
    // and the operator reads the deadline from the volume's retain-until
    // annotation at every reconcile. The test cannot wait an hour: it
    // moves that deadline into the past, as the hour passing would.
    let claims = cluster.api::<PersistentVolumeClaim>();
    let backup = claims
        .get("orders-backup-16")
        .await
        .expect("the dump's PVC");
    let until = backup
        .annotations()
        .get(RETAIN_UNTIL_ANNOTATION)
        .cloned()
        .expect("the dump's PVC carries its retention");
    let retain_until = major.retain_until.as_ref().expect("retainUntil").0;
    assert_eq!(
        until,
        retain_until.to_string(),
        "the annotation is status.upgrade.major.retainUntil"
    );
    let past =
        json!({"metadata": {"annotations": {RETAIN_UNTIL_ANNOTATION: "2000-01-01T00:00:00Z"}}});
    claims
        .patch(
            "orders-backup-16",
            &PatchParams::default(),
            &Patch::Merge(&past),
        )
        .await
        .expect("the deadline is moved");
    // A reconcile that began after the move has ended.
    cluster.inner.settle("orders").await.expect("settles");
    cluster
        .wait_until("the dump's PVC is deleted", || async {
            claims
                .get_opt("orders-backup-16")
                .await
                .expect("reads the PVC")
                .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
        })
        .await;
    let events = events(&cluster).await;
    let expired = events
        .iter()
        .find(|e| e.starts_with("Normal RetentionExpired"))
        .unwrap_or_else(|| panic!("an Event RetentionExpired:\n{}", events.join("\n")));
    assert!(
        expired.contains("orders-backup-16") && expired.contains("data-orders-0 is kept"),
        "the Event names the deleted PVC and the kept one: {expired}"
    );
    for claim in ["data-orders-0", "orders-data-16"] {
        assert!(cluster.claim_exists(claim).await, "PVC {claim} is kept");
    }
    assert!(cluster.ready_at("16").await, "16 still serves");
    assert_eq!(contents(&cluster).await, before, "every row still there");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_version_back_while_the_job_runs_cancels_the_upgrade_and_15_serves_again() {
    let cluster = Cluster::start(&[15, 16]).await;
    database_at_15_with_rows(&cluster).await;
    // Enough rows that the Job is still at work when the spec changes.
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute(
            "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS digest FROM generate_series(1, 1500000) g",
        )
        .await
        .expect("the owner writes many rows");
    drop(owner);
    let before = contents(&cluster).await;
    cluster
        .inner
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("the spec is patched");
    cluster
        .wait_until("the migration Job is restoring", || async {
            job_log(&cluster)
                .await
                .is_some_and(|(_, log)| log.contains("restoring the dump"))
        })
        .await;
    cluster
        .inner
        .patch_spec("orders", json!({"version": "15"}))
        .await
        .expect("the spec is patched back");
    cluster
        .wait_until("the upgrade is rolled back as cancelled", || async {
            cluster.upgrade_phase().await == Some(UpgradePhase::RolledBack)
        })
        .await;
    let major = cluster
        .database()
        .await
        .and_then(|db| db.status?.upgrade?.major)
        .expect("status.upgrade.major");
    let failure = major.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("cancelled") && failure.contains("spec.version"),
        "the failure says the spec cancelled it: {failure}"
    );
    cluster
        .wait_until("15 serves again, writes resumed", || async {
            cluster.ready_at("15").await
                && events(&cluster)
                    .await
                    .iter()
                    .any(|e| e.contains("WritesResumed"))
        })
        .await;
    assert!(server_version(&cluster).await.starts_with("15"));
    assert_eq!(
        contents(&cluster).await,
        before,
        "every row is where it was"
    );
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("INSERT INTO items VALUES (4, 'four')")
        .await
        .expect("15 takes writes again");
    drop(owner);
    cluster.stop().await;
}
