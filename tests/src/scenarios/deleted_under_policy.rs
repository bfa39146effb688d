//! A database with a backup, a backup volume and a data volume is deleted
//! under `spec.deletionPolicy` Retain, then Delete: what goes with it.
//!
//! The backup object and the backup volume are made by the scenario, as
//! Level 3's backups would be (labelled as the database's), so the
//! scenario runs on every level: Levels 1 and 2 report the section as not
//! implemented and delete a database as they always do, keeping every
//! volume and backup.

use std::fmt;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use shared::api::PostgresDB;
use shared::backup::{DeletionPolicy, PostgresDBBackup};
use shared::finalizer::FINALIZER;
use shared::names::common_labels;
use shared::volumes::{claim_spec, template_claim};

use super::steps::{NAME, condition, create_ready};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

/// The backup the scenario makes before deleting the database.
pub const BACKUP: &str = "orders-manual";

/// What became of something after the database went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Still there, not being deleted.
    Kept,
    /// Gone, or being deleted.
    Deleted,
}

/// What deleting the database did.
#[derive(Debug, PartialEq)]
pub struct AfterDeletion {
    /// Whether `SpecImplemented` was True before the deletion.
    pub implemented: bool,
    /// Whether the database carried the deletion-policy finalizer.
    pub finalizer: bool,
    /// Whether the database is gone.
    pub gone: bool,
    /// The data volume (`data-orders-0`).
    pub data_volume: Fate,
    /// The backup volume (`orders-backups`).
    pub backup_volume: Fate,
    /// The `PostgresDBBackup` made before.
    pub backup: Fate,
}

impl fmt::Display for AfterDeletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fate = |fate: Fate| match fate {
            Fate::Kept => "kept",
            Fate::Deleted => "deleted",
        };
        write!(
            f,
            "{}{}; {}; data volume {}, backup volume {}, backup {}",
            if self.implemented {
                "implemented"
            } else {
                "not implemented (SpecImplemented=False)"
            },
            if self.finalizer {
                ", finalizer held"
            } else {
                ""
            },
            if self.gone {
                "database gone"
            } else {
                "database still there"
            },
            fate(self.data_volume),
            fate(self.backup_volume),
            fate(self.backup)
        )
    }
}

/// What a level that does not implement the section does: deletes the
/// database and keeps everything else.
pub fn not_implemented() -> AfterDeletion {
    AfterDeletion {
        implemented: false,
        finalizer: false,
        gone: true,
        data_volume: Fate::Kept,
        backup_volume: Fate::Kept,
        backup: Fate::Kept,
    }
}

/// Makes a `PostgresDBBackup` of the database and its backup volume, as
/// Level 3 labels them.
pub async fn make_backup_and_volume(cluster: &TestCluster) -> Result<(), Failed> {
    super::steps::request_backup(cluster, BACKUP).await?;
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

/// Deletes the database and waits until it is gone.
pub async fn delete_and_wait(cluster: &TestCluster) -> Result<(), Failed> {
    cluster
        .api::<PostgresDB>()
        .delete(NAME, &DeleteParams::default())
        .await
        .or_fail(format!("delete PostgresDB {NAME}"))?;
    cluster
        .eventually(cluster.budget(), "the PostgresDB is gone", || async {
            Ok(cluster.database(NAME).await?.is_none().then_some(()))
        })
        .await
}

/// The fate of the claim `name`.
pub async fn claim_fate(cluster: &TestCluster, name: &str) -> Result<Fate, Failed> {
    let claim = cluster
        .api::<PersistentVolumeClaim>()
        .get_opt(name)
        .await
        .or_fail(format!("read PVC {name}"))?;
    Ok(fate_of(claim.map(|c| c.metadata.deletion_timestamp)))
}

/// The fate of the backup `name`.
pub async fn backup_fate(cluster: &TestCluster, name: &str) -> Result<Fate, Failed> {
    let backup = cluster
        .api::<PostgresDBBackup>()
        .get_opt(name)
        .await
        .or_fail(format!("read PostgresDBBackup {name}"))?;
    Ok(fate_of(backup.map(|b| b.metadata.deletion_timestamp)))
}

fn fate_of<T>(deletion: Option<Option<T>>) -> Fate {
    match deletion {
        Some(None) => Fate::Kept,
        _ => Fate::Deleted,
    }
}

/// Creates the database under `policy`, makes a backup and a backup
/// volume, deletes the database, and reads what is left.
async fn run_under(
    cluster: &TestCluster,
    level: LevelId,
    policy: DeletionPolicy,
) -> Result<AfterDeletion, Failed> {
    let operator = cluster.run_operator(level);
    create_ready(
        cluster,
        DbBuilder::manifest(NAME).deletion_policy(policy).build(),
    )
    .await?;
    // Both are written by the same reconcile: the finalizer first, then status.
    let db = cluster
        .wait_for(NAME, "reporting SpecImplemented", |db| {
            condition(db, "SpecImplemented").is_some()
        })
        .await?;
    let implemented = condition(&db, "SpecImplemented").is_some_and(|(status, _)| status == "True");
    let finalizer = db.finalizers().iter().any(|f| f == FINALIZER);
    make_backup_and_volume(cluster).await?;
    delete_and_wait(cluster).await?;
    let after = AfterDeletion {
        implemented,
        finalizer,
        gone: true,
        data_volume: claim_fate(cluster, &template_claim(NAME, 0)).await?,
        backup_volume: claim_fate(cluster, &format!("{NAME}-backups")).await?,
        backup: backup_fate(cluster, BACKUP).await?,
    };
    operator.stop().await;
    Ok(after)
}

/// `deletionPolicy: Retain`.
pub struct DeletedRetain;

impl Scenario for DeletedRetain {
    type Observation = AfterDeletion;
    const NAME: &'static str = "DeletedRetain";
    const TITLE: &'static str =
        "It is deleted with `deletionPolicy: Retain` (a backup and a backup volume exist)";

    fn expected(level: LevelId) -> AfterDeletion {
        match level {
            LevelId::One | LevelId::Two => not_implemented(),
            LevelId::Three | LevelId::Four | LevelId::Five => AfterDeletion {
                implemented: true,
                ..not_implemented()
            },
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<AfterDeletion>, Failed> {
        Ok(Observed::Seen(
            run_under(cluster, level, DeletionPolicy::Retain).await?,
        ))
    }
}

/// `deletionPolicy: Delete`.
pub struct DeletedDelete;

impl Scenario for DeletedDelete {
    type Observation = AfterDeletion;
    const NAME: &'static str = "DeletedDelete";
    const TITLE: &'static str =
        "It is deleted with `deletionPolicy: Delete` (a backup and a backup volume exist)";

    fn expected(level: LevelId) -> AfterDeletion {
        match level {
            LevelId::One | LevelId::Two => not_implemented(),
            LevelId::Three | LevelId::Four | LevelId::Five => AfterDeletion {
                implemented: true,
                finalizer: true,
                gone: true,
                data_volume: Fate::Deleted,
                backup_volume: Fate::Deleted,
                backup: Fate::Deleted,
            },
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<AfterDeletion>, Failed> {
        Ok(Observed::Seen(
            run_under(cluster, level, DeletionPolicy::Delete).await?,
        ))
    }
}
