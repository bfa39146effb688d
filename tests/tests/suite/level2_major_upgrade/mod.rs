//! Level 2's major upgrades on the sandbox's real-PostgreSQL runtime: a
//! PostgresDB written at 15 is upgraded to 16 by a real pg_dumpall, initdb,
//! restore and verification, its rows survive, and the old volume and the
//! dump are kept; without `allowMajor` nothing is touched; a restore that
//! fails rolls back to the old server with its data, which takes writes
//! again; a client writing to the pod past the fenced Service loses no
//! write the old server acknowledged; a migration past its timeout is
//! stopped and rolled back (on the simulated runtime). A test fails,
//! saying how to install them, when the PostgreSQL 15 or 16 binaries are
//! missing (`scripts/install-postgres.sh`).
//!
//! The fixture is in [`fixture`]; the client writing past the Service in
//! [`direct_writer`]; a verification difference, a kill while the Job runs
//! and retention's end for the dump in [`faults`]; retention deleting a
//! previous major's own volume after a second upgrade (14, 15, then 16)
//! in [`retention`].

mod direct_writer;
mod faults;
mod fixture;
mod retention;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use sandbox::{RuntimeKind, SandboxConfig};
use serde_json::json;
use shared::api::{PostgresDB, UpgradePhase};
use tests::builders::DbBuilder;
use tests::connect::{Role, login};
use tests::harness::TestCluster;
use tests::levels::LevelId;

use fixture::{Cluster, contents, database_at_15_with_rows, server_version};

#[tokio::test]
async fn a_major_upgrade_moves_real_data_from_15_to_16_and_keeps_the_old_volume_and_the_dump() {
    let mut cluster = Cluster::start(&[15, 16]).await;
    database_at_15_with_rows(&cluster).await;
    let before = contents(&cluster).await;
    assert_eq!(before[..3], ["3", "one,two,three", "500"]);

    let began = Instant::now();
    cluster
        .inner
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("the spec is patched");
    // While migrating, the read-write Service selects no pod.
    cluster
        .wait_until("the migration starts with the Service fenced", || async {
            let fenced = cluster
                .api::<Service>()
                .get("orders")
                .await
                .ok()
                .and_then(|s| s.spec?.selector)
                .is_some_and(|s| s.contains_key("pgdb.example.com/fenced-by"));
            cluster.upgrade_phase().await == Some(UpgradePhase::Migrating) && fenced
        })
        .await;
    // The operator dies mid-migration; another one carries on from what
    // the cluster holds (status.upgrade, the Job, the volumes).
    if let Some(operator) = cluster.operator.take() {
        operator.kill().await;
    }
    cluster.operator = Some(cluster.inner.run_operator(LevelId::Two));
    cluster
        .wait_until("the upgrade completes and 16 is Ready", || async {
            cluster.upgrade_phase().await == Some(UpgradePhase::Complete)
                && cluster.ready_at("16").await
        })
        .await;
    eprintln!(
        "15 to 16 took {:.1?} from the spec change to Ready",
        began.elapsed()
    );

    let version = server_version(&cluster).await;
    assert!(
        version.starts_with("16"),
        "SHOW server_version is {version}"
    );
    assert_eq!(contents(&cluster).await, before, "every row survived");

    let db = cluster.database().await.expect("the database");
    let up = db.status.and_then(|s| s.upgrade).expect("status.upgrade");
    let major = up.major.expect("status.upgrade.major");
    eprintln!(
        "status.upgrade: {}",
        serde_json::to_string(&major).unwrap_or_default()
    );
    assert_eq!(
        (up.from_version.as_str(), up.to_version.as_str()),
        ("15", "16")
    );
    assert_eq!(major.previous_data_volume, "data-orders-0");
    assert_eq!(major.data_volume, "orders-data-16");
    assert_eq!(major.backup_volume, "orders-backup-16");
    assert!(major.retain_until.is_some());
    let verified = major.verified.clone().unwrap_or_default();
    for checked in [
        "3 tables, 505 rows",
        "1 sequences",
        "1 materialized views",
        "1 large objects",
    ] {
        assert!(verified.contains(checked), "{checked} in: {verified}");
    }
    for claim in ["data-orders-0", "orders-backup-16", "orders-data-16"] {
        assert!(cluster.claim_exists(claim).await, "PVC {claim} is kept");
    }
    let job = cluster.api::<Job>().get(&major.job).await.expect("the Job");
    assert_eq!(job.status.and_then(|s| s.succeeded), Some(1));
    let sts = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("the StatefulSet");
    let template = sts.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(template.containers[0].image.as_deref(), Some("postgres:16"));
    assert!(template.volumes.iter().flatten().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == "orders-data-16")
    }));
    let events = cluster.inner.events("orders").await.expect("lists Events");
    for reason in [
        "MajorUpgradeStarted",
        "MajorUpgradeVerified",
        "MajorUpgradeComplete",
    ] {
        assert!(
            events.iter().any(|e| e.contains(reason)),
            "an Event {reason}:\n{}",
            events.join("\n")
        );
    }
    // The rows can still be written to after the upgrade.
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("INSERT INTO items VALUES (4, 'four')")
        .await
        .expect("16 takes writes");
    drop(owner);

    // At rest after the upgrade, a whole reconcile writes nothing (the
    // first settle lets the upgrade's last reconciles end).
    cluster.inner.settle("orders").await.expect("settles");
    let writes = cluster
        .inner
        .settle("orders")
        .await
        .expect("settles")
        .expect("a sandbox");
    assert_eq!(writes.total(), 0, "writes at rest: {writes:?}");
    cluster.stop().await;
}

#[tokio::test]
async fn without_allow_major_a_major_change_is_refused_and_nothing_is_touched() {
    let cluster = Cluster::start(&[15]).await;
    database_at_15_with_rows(&cluster).await;
    let generation = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("the StatefulSet")
        .metadata
        .generation;
    cluster
        .inner
        .patch_spec("orders", json!({"version": "16"}))
        .await
        .expect("the spec is patched");
    cluster
        .wait_until("the change is refused", || async {
            cluster
                .condition("Ready")
                .await
                .is_some_and(|(status, reason, _)| {
                    status == "False" && reason == "RefusedMajorUpgrade"
                })
        })
        .await;
    let (_, _, message) = cluster.condition("Ready").await.expect("Ready");
    assert!(message.contains("allowMajor"), "{message}");
    // A reconcile that began after the refusal was written has ended.
    cluster.inner.settle("orders").await.expect("settles");
    let sts = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("the StatefulSet");
    assert_eq!(
        sts.metadata.generation, generation,
        "the StatefulSet is untouched"
    );
    assert_eq!(
        sts.spec
            .expect("spec")
            .template
            .spec
            .expect("pod spec")
            .containers[0]
            .image
            .as_deref(),
        Some("postgres:15")
    );
    let jobs = cluster
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .expect("lists");
    assert!(jobs.items.is_empty(), "no Job");
    let claims: Vec<String> = cluster
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await
        .expect("lists")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(claims, ["data-orders-0"]);
    assert!(server_version(&cluster).await.starts_with("15"));
    assert_eq!(contents(&cluster).await[0], "3");
    let events = cluster.inner.events("orders").await.expect("lists Events");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Warning RefusedMajorUpgrade")),
        "{}",
        events.join("\n")
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_migration_whose_restore_fails_rolls_back_and_the_old_data_serves_again() {
    let cluster = Cluster::start(&[15, 16]).await;
    database_at_15_with_rows(&cluster).await;
    // A setting 15 accepts and 16 no longer knows (renamed debug_parallel_query):
    // the dump carries it, and its restore into 16 fails.
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("ALTER DATABASE app SET force_parallel_mode = off")
        .await
        .expect("15 accepts the setting");
    drop(owner);
    let before = contents(&cluster).await;

    let began = Instant::now();
    cluster
        .inner
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("the spec is patched");
    cluster
        .wait_until(
            "the upgrade is rolled back and 15 is Ready again",
            || async {
                cluster.upgrade_phase().await == Some(UpgradePhase::RolledBack)
                    && cluster.ready_at("15").await
                    && cluster
                        .condition("Progressing")
                        .await
                        .is_some_and(|(_, reason, _)| reason == "MajorUpgradeRolledBack")
            },
        )
        .await;
    eprintln!(
        "the failed migration was rolled back in {:.1?}",
        began.elapsed()
    );

    let db = cluster.database().await.expect("the database");
    let up = db.status.and_then(|s| s.upgrade).expect("status.upgrade");
    let major = up.major.expect("status.upgrade.major");
    let failure = major.failure.clone().unwrap_or_default();
    eprintln!("failure: {failure}");
    assert!(
        failure.contains("force_parallel_mode") || failure.contains("kubectl logs job/"),
        "the failure says why, or where to read why: {failure}"
    );
    assert!(major.switched_at.is_none(), "rolled back before any switch");
    let (_, reason, message) = cluster.condition("Progressing").await.expect("Progressing");
    assert_eq!(reason, "MajorUpgradeRolledBack", "{message}");

    // The old server serves again, through the Service, with every row.
    let version = server_version(&cluster).await;
    assert!(
        version.starts_with("15"),
        "SHOW server_version is {version}"
    );
    assert_eq!(contents(&cluster).await, before);
    // The Job had made 15 read-only before it dumped; the rollback lifts that.
    cluster
        .wait_until("the write fence on 15 is lifted", || async {
            let events = cluster.inner.events("orders").await.expect("lists Events");
            ["WriteFenceRemoved", "WritesResumed"]
                .iter()
                .all(|reason| events.iter().any(|e| e.contains(reason)))
        })
        .await;
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("INSERT INTO items VALUES (4, 'four')")
        .await
        .expect("15 takes writes again");
    let service = cluster
        .api::<Service>()
        .get("orders")
        .await
        .expect("the Service");
    assert!(
        !service
            .spec
            .and_then(|s| s.selector)
            .is_some_and(|s| s.contains_key("pgdb.example.com/fenced-by"))
    );

    // The evidence stays.
    let job = cluster
        .api::<Job>()
        .get(&major.job)
        .await
        .expect("the Job is kept");
    assert_eq!(job.status.and_then(|s| s.failed), Some(1));
    assert!(cluster.claim_exists("orders-backup-16").await);
    assert!(cluster.claim_exists("data-orders-0").await);
    let events = cluster.inner.events("orders").await.expect("lists Events");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Warning MajorUpgradeRolledBack")),
        "{}",
        events.join("\n")
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_major_can_be_skipped_and_setting_the_previous_version_returns_to_the_kept_volume() {
    let cluster = Cluster::start(&[15, 17]).await;
    database_at_15_with_rows(&cluster).await;
    let before = contents(&cluster).await;

    let began = Instant::now();
    cluster
        .inner
        .patch_spec(
            "orders",
            json!({"version": "17", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("the spec is patched");
    cluster
        .wait_until("15 is upgraded to 17", || async {
            cluster.upgrade_phase().await == Some(UpgradePhase::Complete)
                && cluster.ready_at("17").await
        })
        .await;
    eprintln!("15 to 17 took {:.1?}", began.elapsed());
    assert!(server_version(&cluster).await.starts_with("17"));
    assert_eq!(contents(&cluster).await, before);
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("INSERT INTO items VALUES (4, 'written on 17')")
        .await
        .expect("17 takes writes");
    drop(owner);

    // Within the retention, the previous version is a way back, not a refused downgrade.
    let began = Instant::now();
    cluster
        .inner
        .patch_spec("orders", json!({"version": "15"}))
        .await
        .expect("the spec is patched");
    cluster
        .wait_until("15 serves its kept volume again", || async {
            cluster.upgrade_phase().await == Some(UpgradePhase::RolledBack)
                && cluster.ready_at("15").await
                && cluster
                    .condition("Progressing")
                    .await
                    .is_some_and(|(_, reason, _)| reason == "MajorUpgradeRolledBack")
        })
        .await;
    eprintln!("17 back to 15 took {:.1?}", began.elapsed());
    assert!(server_version(&cluster).await.starts_with("15"));
    assert_eq!(
        contents(&cluster).await,
        before,
        "the data as it was before the upgrade; what 17 wrote is on its own volume"
    );
    assert!(
        cluster.claim_exists("orders-data-17").await,
        "17's data is kept"
    );
    cluster
        .wait_until(
            "the write fence the migration set on 15 is lifted",
            || async {
                let events = cluster.inner.events("orders").await.expect("lists Events");
                events.iter().any(|e| e.contains("WritesResumed"))
            },
        )
        .await;
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("INSERT INTO items VALUES (5, 'written on 15 again')")
        .await
        .expect("15 takes writes again");
    drop(owner);
    let (_, reason, message) = cluster.condition("Progressing").await.expect("Progressing");
    assert_eq!(reason, "MajorUpgradeRolledBack");
    assert!(message.contains("orders-data-17"), "{message}");
    let (ready, ready_reason, _) = cluster.condition("Ready").await.expect("Ready");
    assert_eq!(
        (ready.as_str(), ready_reason.as_str()),
        ("True", "DatabaseReady")
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_client_writing_to_the_pod_past_the_fenced_service_loses_no_acknowledged_write() {
    let cluster = Cluster::start(&[15, 16]).await;
    database_at_15_with_rows(&cluster).await;
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("CREATE TABLE ticks (n bigint PRIMARY KEY)")
        .await
        .expect("the owner creates a table");
    drop(owner);
    let login = login(&cluster.inner, Role::Owner, "orders", None)
        .await
        .expect("the owner's login");
    let (acknowledged, failures) = cluster.upgrade_under_a_direct_writer(login).await;
    assert_eq!(
        cluster.upgrade_phase().await,
        Some(UpgradePhase::Complete),
        "writes to the pod during the migration must not fail it\n{}",
        cluster.diagnose().await
    );
    cluster
        .wait_until("16 is Ready", || cluster.ready_at("16"))
        .await;

    let owner = cluster.connect_as("orders-credentials", None).await;
    let lost = direct_writer::lost_inserts(&owner, &acknowledged).await;
    assert!(
        lost.is_empty(),
        "inserts 15 acknowledged and 16 does not have: {lost:?}"
    );
    assert!(
        failures.iter().any(|f| f.contains("read-only transaction")),
        "the old server refused, rather than accepted and lost, the writes made during the migration: {failures:#?}"
    );
    assert_eq!(contents(&cluster).await[..3], ["3", "one,two,three", "500"]);
    cluster.stop().await;
}

#[tokio::test]
async fn a_migration_that_outlives_its_timeout_is_stopped_and_rolled_back() {
    let config = SandboxConfig {
        runtime_kind: RuntimeKind::Simulated,
        ..Default::default()
    };
    let cluster = match TestCluster::sandbox(config).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
    };
    // The migration's pod runs for an hour, as a huge database's would.
    cluster
        .sandbox_handle()
        .and_then(|s| s.simulated_runtime())
        .expect("the simulated runtime")
        .add_exit_rule(sandbox::ExitRule {
            image_contains: None,
            pod_label: Some(("app.kubernetes.io/component".into(), "major-upgrade".into())),
            exit_code: 0,
            after: Duration::from_secs(3600),
        });
    let operator = cluster.run_operator(LevelId::Two);
    cluster
        .api::<PostgresDB>()
        .create(
            &PostParams::default(),
            &DbBuilder::manifest("orders").version("15").build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("orders", "Ready at 15", tests::scenarios::is_settled)
        .await
        .expect("Ready at 15");

    let began = Instant::now();
    cluster
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true, "migrationTimeoutSeconds": 10}}),
        )
        .await
        .expect("the spec is patched");
    let db = cluster
        .wait_for("orders", "the upgrade rolled back", |db| {
            db.status
                .as_ref()
                .and_then(|s| s.upgrade.as_ref())
                .is_some_and(|u| u.phase == UpgradePhase::RolledBack)
        })
        .await
        .expect("rolled back");
    let elapsed = began.elapsed();
    let major = db
        .status
        .and_then(|s| s.upgrade)
        .and_then(|u| u.major)
        .expect("status.upgrade.major");
    let failure = major.failure.unwrap_or_default();
    assert!(
        failure.contains("spec.upgrade.migrationTimeoutSeconds"),
        "{failure}"
    );
    // status.startTime has whole seconds, so the deadline may fall up to a
    // second before ten seconds after the Job's creation.
    assert!(
        elapsed >= Duration::from_secs(9),
        "not before the deadline: {elapsed:?}"
    );
    let job = cluster
        .api::<Job>()
        .get(&major.job)
        .await
        .expect("the Job is kept");
    let failed = job
        .status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    assert_eq!(
        failed.and_then(|c| c.reason).as_deref(),
        Some("DeadlineExceeded")
    );
    let job_pods = cluster
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("job-name={}", major.job)))
        .await
        .expect("lists pods");
    assert!(
        job_pods.items.is_empty(),
        "the migration's pod was stopped: {:?}",
        job_pods
            .items
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>()
    );
    cluster
        .wait_for("orders", "Ready at 15 again", |db| {
            tests::scenarios::is_settled(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.current_version.as_deref())
                    == Some("15")
        })
        .await
        .expect("Ready at 15 again");
    operator.stop().await;
    cluster.finish().await;
}
