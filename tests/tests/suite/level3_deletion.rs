//! Level 3's `spec.deletionPolicy` on the sandbox (docs/level3-lifecycle.md):
//! Retain keeps the data volume and the backups and never puts the
//! finalizer on the database; Delete takes the backups, the data volume
//! and the backup volume with the database; BackupThenDelete keeps the
//! data while its final backup is Failed (the simulated runtime's Job
//! leaves no summary) and takes it again once that backup is deleted;
//! changing the policy to Retain then lets the database go with its data. The core's rules around the finalizer: Level 2 taking over
//! removes it (and deleting then keeps the data, as Level 2 does), and a
//! paused database being deleted waits until it is resumed. And, on real
//! PostgreSQL with the backup controller, BackupThenDelete end to end: the
//! final backup holds the rows, the data volume goes, the backups and the
//! backup volume stay, and a new database restored from the deleted one
//! has the same rows.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use shared::api::PostgresDB;
use shared::backup::{
    BackupPhase, DeletionPolicy, PostgresDBBackup, PostgresDBBackupSpec, RestorePhase, RestoreSpec,
};
use shared::finalizer::FINALIZER;
use shared::names::common_labels;
use shared::volumes::{claim_spec, template_claim};
use tests::builders::DbBuilder;
use tests::connect::{Role, connect};
use tests::harness::{Failed, OrFail, TestCluster, ensure, real_postgres};
use tests::levels::LevelId;
use tests::scenarios::is_settled;

const NAME: &str = "orders";

async fn sandbox() -> Result<TestCluster, Failed> {
    TestCluster::start()
        .await
        .or_fail("start a sandbox with the simulated runtime")
}

/// Creates `orders` under `policy` with Level 3 running, and waits until
/// it is Ready.
async fn ready_database(
    cluster: &TestCluster,
    policy: Option<DeletionPolicy>,
) -> Result<PostgresDB, Failed> {
    let mut builder = DbBuilder::manifest(NAME);
    if let Some(policy) = policy {
        builder = builder.deletion_policy(policy);
    }
    cluster
        .create(&builder.build())
        .await
        .or_fail("create the PostgresDB")?;
    cluster.wait_for(NAME, "Ready", is_settled).await
}

/// A `PostgresDBBackup` of `orders` labelled as its backups are.
async fn create_backup(cluster: &TestCluster, name: &str) -> Result<(), Failed> {
    let mut backup = PostgresDBBackup::new(
        name,
        PostgresDBBackupSpec {
            database: NAME.into(),
        },
    );
    backup.metadata.labels = Some(common_labels(NAME));
    cluster
        .api::<PostgresDBBackup>()
        .create(&PostParams::default(), &backup)
        .await
        .or_fail(format!("create PostgresDBBackup {name}"))?;
    Ok(())
}

/// The backup volume, made by hand as Level 3's backup access would.
async fn create_backup_volume(cluster: &TestCluster) -> Result<(), Failed> {
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(format!("{NAME}-backups")),
            labels: Some(common_labels(NAME)),
            ..Default::default()
        },
        spec: Some(claim_spec("1Gi", None)),
        ..Default::default()
    };
    cluster
        .api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &claim)
        .await
        .or_fail("create the backup volume")?;
    Ok(())
}

async fn delete_database(cluster: &TestCluster) -> Result<(), Failed> {
    cluster
        .api::<PostgresDB>()
        .delete(NAME, &DeleteParams::default())
        .await
        .or_fail(format!("delete PostgresDB {NAME}"))?;
    Ok(())
}

async fn database_gone(cluster: &TestCluster) -> Result<(), Failed> {
    cluster
        .eventually(cluster.budget(), "the PostgresDB is gone", || async {
            Ok(cluster.database(NAME).await?.is_none().then_some(()))
        })
        .await
}

async fn claim(cluster: &TestCluster, name: &str) -> Result<Option<PersistentVolumeClaim>, Failed> {
    cluster
        .api::<PersistentVolumeClaim>()
        .get_opt(name)
        .await
        .or_fail(format!("read PVC {name}"))
}

async fn backup_names(cluster: &TestCluster) -> Result<Vec<String>, Failed> {
    let mut names: Vec<String> = cluster
        .api::<PostgresDBBackup>()
        .list(&Default::default())
        .await
        .or_fail("list the PostgresDBBackups")?
        .items
        .iter()
        .map(|b| b.name_any())
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn retain_never_adds_the_finalizer_and_keeps_the_data_volume_and_the_backups()
-> Result<(), Failed> {
    let cluster = sandbox().await?;
    let operator = cluster.run_operator(LevelId::Three);
    let db = ready_database(&cluster, Some(DeletionPolicy::Retain)).await?;
    ensure(db.finalizers().is_empty(), || {
        format!("Retain needs no finalizer: {:?}", db.finalizers())
    })?;
    create_backup(&cluster, "orders-manual").await?;
    let data = template_claim(NAME, 0);
    let uid = claim(&cluster, &data).await?.map(|c| c.uid());
    ensure(uid.is_some(), || format!("PVC {data} exists"))?;
    delete_database(&cluster).await?;
    database_gone(&cluster).await?;
    let kept = claim(&cluster, &data).await?;
    ensure(
        kept.as_ref().map(|c| c.uid()) == uid
            && kept.is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        || format!("PVC {data} is kept as it was"),
    )?;
    ensure(backup_names(&cluster).await? == ["orders-manual"], || {
        "the backup is kept".into()
    })?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn delete_takes_the_backups_the_data_volume_and_the_backup_volume_with_the_database()
-> Result<(), Failed> {
    let cluster = sandbox().await?;
    let operator = cluster.run_operator(LevelId::Three);
    ready_database(&cluster, Some(DeletionPolicy::Delete)).await?;
    cluster
        .wait_for(NAME, "carrying the deletion-policy finalizer", |db| {
            db.finalizers().iter().any(|f| f == FINALIZER)
        })
        .await?;
    create_backup(&cluster, "orders-manual").await?;
    create_backup_volume(&cluster).await?;
    delete_database(&cluster).await?;
    database_gone(&cluster).await?;
    for name in [template_claim(NAME, 0), format!("{NAME}-backups")] {
        let left = claim(&cluster, &name).await?;
        ensure(
            left.as_ref()
                .is_none_or(|c| c.metadata.deletion_timestamp.is_some()),
            || format!("PVC {name} is deleted: {left:?}"),
        )?;
    }
    ensure(backup_names(&cluster).await?.is_empty(), || {
        "the backups are deleted".into()
    })?;
    let events = cluster.events(NAME).await?;
    for reason in ["BackupsDeleted", "VolumesDeleted", "Finalized"] {
        ensure(
            events
                .iter()
                .any(|e| e.starts_with(&format!("Normal {reason}"))),
            || format!("an Event {reason}: {events:?}"),
        )?;
    }
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn backup_then_delete_keeps_the_data_while_its_final_backup_failed_and_takes_it_again()
-> Result<(), Failed> {
    let cluster = sandbox().await?;
    let operator = cluster.run_operator(LevelId::Three);
    ready_database(&cluster, Some(DeletionPolicy::BackupThenDelete)).await?;
    cluster
        .wait_for(NAME, "carrying the deletion-policy finalizer", |db| {
            db.finalizers().iter().any(|f| f == FINALIZER)
        })
        .await?;
    create_backup(&cluster, "orders-manual").await?;
    delete_database(&cluster).await?;
    let final_backup = cluster
        .eventually(cluster.budget(), "a final backup is requested", || async {
            Ok(backup_names(&cluster)
                .await?
                .into_iter()
                .find(|n| n.starts_with("orders-final-")))
        })
        .await?;
    let data = template_claim(NAME, 0);

    // The simulated runtime's Job ends with no summary: the backup
    // controller fails the backup, and the data is kept.
    cluster
        .wait_for_event(NAME, "Warning FinalBackupFailed", |e| {
            e.starts_with("Warning FinalBackupFailed") && e.contains("no readable summary")
        })
        .await?;
    ensure(
        claim(&cluster, &data)
            .await?
            .is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        || format!("PVC {data} is kept while the final backup failed"),
    )?;
    ensure(cluster.database(NAME).await?.is_some(), || {
        "the database waits for its final backup".into()
    })?;

    // Deleting the failed backup takes it again: a new object.
    let first = cluster
        .api::<PostgresDBBackup>()
        .get(&final_backup)
        .await
        .or_fail("read the final backup")?
        .uid();
    cluster
        .api::<PostgresDBBackup>()
        .delete(&final_backup, &DeleteParams::default())
        .await
        .or_fail("delete the failed final backup")?;
    cluster
        .wait_for_object::<PostgresDBBackup>(&final_backup, "taken again", |b| {
            b.is_some_and(|b| b.uid() != first)
        })
        .await?;

    // Changing one's mind: Retain lets the database go, keeping everything.
    cluster
        .api::<PostgresDB>()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"deletionPolicy": "Retain"}})),
        )
        .await
        .or_fail("set spec.deletionPolicy to Retain")?;
    database_gone(&cluster).await?;
    ensure(
        claim(&cluster, &data)
            .await?
            .is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        || format!("PVC {data} is kept under Retain"),
    )?;
    let names = backup_names(&cluster).await?;
    ensure(
        names.contains(&final_backup) && names.iter().any(|n| n == "orders-manual"),
        || format!("every backup is kept: {names:?}"),
    )?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn a_lower_level_taking_over_removes_the_finalizer_and_deleting_then_keeps_the_data()
-> Result<(), Failed> {
    let cluster = sandbox().await?;
    let level3 = cluster.run_operator(LevelId::Three);
    ready_database(&cluster, Some(DeletionPolicy::Delete)).await?;
    cluster
        .wait_for(NAME, "carrying the deletion-policy finalizer", |db| {
            db.finalizers().iter().any(|f| f == FINALIZER)
        })
        .await?;
    level3.stop().await;
    let level2 = cluster.run_operator(LevelId::Two);
    cluster
        .wait_for(NAME, "without the finalizer under Level 2", |db| {
            db.finalizers().is_empty()
        })
        .await?;
    let data = template_claim(NAME, 0);
    let uid = claim(&cluster, &data).await?.map(|c| c.uid());
    delete_database(&cluster).await?;
    database_gone(&cluster).await?;
    let kept = claim(&cluster, &data).await?;
    ensure(
        uid.is_some()
            && kept.as_ref().map(|c| c.uid()) == uid
            && kept.is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        || format!("PVC {data} is kept as Level 2 keeps it"),
    )?;
    level2.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn a_paused_database_being_deleted_waits_until_it_is_resumed() -> Result<(), Failed> {
    let cluster = sandbox().await?;
    let operator = cluster.run_operator(LevelId::Three);
    ready_database(&cluster, Some(DeletionPolicy::Delete)).await?;
    cluster
        .wait_for(NAME, "carrying the deletion-policy finalizer", |db| {
            db.finalizers().iter().any(|f| f == FINALIZER)
        })
        .await?;
    cluster
        .patch_spec(NAME, serde_json::json!({"paused": true}))
        .await
        .or_fail("pause the database")?;
    delete_database(&cluster).await?;
    // Two reconciles of the deleting database have begun and ended.
    cluster.settle(NAME).await?;
    let data = template_claim(NAME, 0);
    ensure(
        cluster.database(NAME).await?.is_some()
            && claim(&cluster, &data)
                .await?
                .is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        || "the paused database and its volume wait".into(),
    )?;
    cluster
        .patch_spec(NAME, serde_json::json!({"paused": false}))
        .await
        .or_fail("resume the database")?;
    database_gone(&cluster).await?;
    let left = claim(&cluster, &data).await?;
    ensure(
        left.as_ref()
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some()),
        || format!("PVC {data} is deleted once resumed: {left:?}"),
    )?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

/// `SELECT count(*)::text, sum(id)::text, max(name)` of `items` in the
/// application database of `db`.
async fn items(cluster: &TestCluster, db: &str) -> Result<Vec<String>, Failed> {
    let owner = connect(cluster, Role::Owner, db)
        .await
        .ok_or_else(|| Failed::new(format!("could not connect to {db} as its owner")))?;
    let row = owner
        .query_one(
            "SELECT count(*)::text, sum(id)::text, max(name) FROM items",
            &[],
        )
        .await
        .or_fail(format!("read the items of {db}"))?;
    Ok((0..3).map(|i| row.get::<_, String>(i)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_then_delete_on_real_postgresql_keeps_a_final_backup_of_the_rows_that_restores()
-> Result<(), Failed> {
    let cluster = TestCluster::sandbox(real_postgres(&[15]))
        .await
        .or_fail("start a sandbox running PostgreSQL 15")?
        .with_budget(std::time::Duration::from_secs(180));
    let operator = cluster.run_operator(LevelId::Three);
    let db = DbBuilder::manifest(NAME)
        .version("15")
        .deletion_policy(DeletionPolicy::BackupThenDelete)
        .build();
    cluster.create(&db).await.or_fail("create the PostgresDB")?;
    cluster.wait_for(NAME, "Ready", is_settled).await?;
    let owner = connect(&cluster, Role::Owner, NAME)
        .await
        .ok_or_else(|| Failed::new("could not connect as the owner"))?;
    owner
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, name text);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;",
        )
        .await
        .or_fail("write rows")?;
    drop(owner);
    let before = items(&cluster, NAME).await?;
    // The final backup's role is set up while the database lives: once
    // deleting, the reconcile runs only the finalize steps.
    cluster
        .wait_for_event(NAME, "Normal BackupRoleReady", |e| {
            e.starts_with("Normal BackupRoleReady")
        })
        .await?;

    delete_database(&cluster).await?;
    database_gone(&cluster).await?;
    let names = backup_names(&cluster).await?;
    let final_backup = names
        .iter()
        .find(|n| n.starts_with("orders-final-"))
        .cloned()
        .ok_or_else(|| Failed::new(format!("no final backup among {names:?}")))?;
    let backup = cluster
        .api::<PostgresDBBackup>()
        .get(&final_backup)
        .await
        .or_fail(format!("read {final_backup}"))?;
    let status = backup.status.clone().unwrap_or_default();
    ensure(status.phase == Some(BackupPhase::Completed), || {
        format!("the final backup is Completed: {status:?}")
    })?;
    ensure(status.summary.as_ref().map(|s| s.rows) == Some(500), || {
        format!("the final backup holds the 500 rows: {status:?}")
    })?;
    let data = template_claim(NAME, 0);
    let left = claim(&cluster, &data).await?;
    ensure(
        left.as_ref()
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some()),
        || format!("PVC {data} is deleted: {left:?}"),
    )?;
    let volume = claim(&cluster, &format!("{NAME}-backups")).await?;
    ensure(
        volume
            .as_ref()
            .is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        || format!("the backup volume is kept: {volume:?}"),
    )?;

    // A new database restored from the deleted one has the same rows.
    let mut restored = DbBuilder::manifest("reborn").version("15").build();
    restored.spec.restore = Some(RestoreSpec {
        from_backup: None,
        from_database: Some(NAME.into()),
    });
    cluster
        .create(&restored)
        .await
        .or_fail("create the restored PostgresDB")?;
    cluster
        .wait_for("reborn", "restored from the final backup and Ready", |db| {
            is_settled(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.restore.as_ref())
                    .is_some_and(|r| r.phase == RestorePhase::Verified && r.backup == final_backup)
        })
        .await?;
    let after = items(&cluster, "reborn").await?;
    ensure(after == before, || {
        format!("the same rows: {before:?} before, {after:?} restored")
    })?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}
