//! A database holding three rows is deleted with
//! `deletionPolicy: BackupThenDelete` on real PostgreSQL: Level 3 takes a
//! last backup, waits for it to complete, then deletes the data volume;
//! the backup and the backup volume stay.
//!
//! Level 3's backup controller takes the final `PostgresDBBackup`
//! (status.phase Completed, status.summary.rows counts the rows) into the
//! backup volume. Levels 1 and 2 report `spec.deletionPolicy` as not
//! implemented and delete the database as they always do, keeping its
//! data volume. The database runs PostgreSQL [`super::BACKUP_VERSION`],
//! whose client tools the sandbox has.

use std::fmt;

use kube::ResourceExt;
use shared::backup::{BackupPhase, DeletionPolicy, PostgresDBBackup};
use shared::volumes::template_claim;

use super::deleted_under_policy::{Fate, claim_fate, delete_and_wait};
use super::steps::{NAME, condition, create_ready, write_three_rows};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct DeletedBackupThenDelete;

/// What deleting the database did.
#[derive(Debug, PartialEq)]
pub enum LastBackup {
    /// The level does not implement the section: nothing was backed up.
    NotImplemented {
        /// The data volume.
        data_volume: Fate,
    },
    /// A final backup was taken.
    Taken {
        /// Its phase.
        phase: Option<BackupPhase>,
        /// The rows it recorded.
        rows: Option<i64>,
        /// The data volume.
        data_volume: Fate,
        /// The backup volume.
        backup_volume: Fate,
    },
}

impl fmt::Display for LastBackup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fate = |fate: &Fate| match fate {
            Fate::Kept => "kept",
            Fate::Deleted => "deleted",
        };
        match self {
            LastBackup::NotImplemented { data_volume } => write!(
                f,
                "not implemented (SpecImplemented=False); no backup taken; data volume {}",
                fate(data_volume)
            ),
            LastBackup::Taken {
                phase,
                rows,
                data_volume,
                backup_volume,
            } => write!(
                f,
                "final backup {}{}; then data volume {}, backup volume {}",
                phase.map_or("not started".to_string(), |p| format!("{p:?}")),
                rows.map(|r| format!(" ({r} rows)")).unwrap_or_default(),
                fate(data_volume),
                fate(backup_volume)
            ),
        }
    }
}

impl Scenario for DeletedBackupThenDelete {
    type Observation = LastBackup;
    const NAME: &'static str = "DeletedBackupThenDelete";
    const TITLE: &'static str =
        "It is deleted with `deletionPolicy: BackupThenDelete` (real PostgreSQL, 3 rows)";

    fn expected(level: LevelId) -> LastBackup {
        match level {
            LevelId::One | LevelId::Two => LastBackup::NotImplemented {
                data_volume: Fate::Kept,
            },
            LevelId::Three | LevelId::Four | LevelId::Five => LastBackup::Taken {
                phase: Some(BackupPhase::Completed),
                rows: Some(3),
                data_volume: Fate::Deleted,
                backup_volume: Fate::Kept,
            },
        }
    }

    fn sandbox_config() -> sandbox::SandboxConfig {
        super::real_postgres()
    }

    fn budget() -> std::time::Duration {
        std::time::Duration::from_secs(180)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<LastBackup>, Failed> {
        let operator = cluster.run_operator(level);
        let db = create_ready(
            cluster,
            // PostgreSQL 15: the sandbox's client tools (pg_dumpall) are
            // 15's, and pg_dumpall refuses a newer server.
            DbBuilder::manifest(NAME)
                .version(super::BACKUP_VERSION)
                .deletion_policy(DeletionPolicy::BackupThenDelete)
                .build(),
        )
        .await?;
        write_three_rows(cluster).await?;
        let implemented =
            condition(&db, "SpecImplemented").is_some_and(|(status, _)| status == "True");
        delete_and_wait(cluster).await?;
        let data_volume = claim_fate(cluster, &template_claim(NAME, 0)).await?;
        let observed = if implemented {
            let last = cluster
                .api::<PostgresDBBackup>()
                .list(&Default::default())
                .await
                .or_fail("list the PostgresDBBackups")?
                .items
                .into_iter()
                .find(|b| b.name_any().starts_with(&format!("{NAME}-final-")));
            let status = last.and_then(|b| b.status).unwrap_or_default();
            LastBackup::Taken {
                phase: status.phase,
                rows: status.summary.map(|s| s.rows),
                data_volume,
                backup_volume: claim_fate(cluster, &format!("{NAME}-backups")).await?,
            }
        } else {
            LastBackup::NotImplemented { data_volume }
        };
        operator.stop().await;
        Ok(Observed::Seen(observed))
    }
}
