//! A backup of three real rows is taken on demand and restored into a new
//! database (real PostgreSQL): Level 3 completes the backup, recording 3
//! rows, and the new database reports Ready with the restore verified and
//! the same 3 rows. Levels 1 and 2 take no backup (nothing serves
//! `PostgresDBBackup`) and create the new database empty, reporting
//! `spec.restore` as not implemented.
//!
//! The backup controller sets the backup's `status.phase` and
//! `status.summary`; the restore sets the new database's
//! `status.restore`. Both databases run PostgreSQL
//! [`super::BACKUP_VERSION`], whose client tools the sandbox has.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use shared::backup::{BackupPhase, RestorePhase, RestoreSpec};

use super::steps::{
    create_ready, create_ready_with_rows, finished_backup, is_settled, request_backup,
};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::connect::{Role, connect};
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

/// The backup taken.
const BACKUP: &str = "orders-manual";
/// The database restored into.
const RESTORED: &str = "orders-restored";

pub struct BackupRestored;

/// What the backup and the restore came to.
#[derive(Debug, PartialEq)]
pub struct RoundTrip {
    /// The backup's phase once it finished (or when the level left it).
    pub backup: Option<BackupPhase>,
    /// The rows the backup recorded.
    pub backup_rows: Option<i64>,
    /// The restored database's `status.restore.phase`.
    pub restore: Option<RestorePhase>,
    /// Whether the restored database became Ready.
    pub ready: bool,
    /// The rows of `items` in the restored database (`None`: no table).
    pub rows: Option<i64>,
}

impl fmt::Display for RoundTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backup {}{}; restore {}; {}; {}",
            self.backup
                .map_or("never taken".to_string(), |p| format!("{p:?}")),
            self.backup_rows
                .map(|r| format!(" ({r} rows)"))
                .unwrap_or_default(),
            self.restore
                .map_or("not done".to_string(), |p| format!("{p:?}")),
            if self.ready { "Ready" } else { "not Ready" },
            self.rows
                .map_or("no table items".to_string(), |r| format!("{r} rows"))
        )
    }
}

impl Scenario for BackupRestored {
    type Observation = RoundTrip;
    const NAME: &'static str = "BackupRestored";
    const TITLE: &'static str =
        "A backup of 3 rows is restored into a new database (real PostgreSQL)";

    fn expected(level: LevelId) -> RoundTrip {
        match level {
            LevelId::One | LevelId::Two => RoundTrip {
                backup: None,
                backup_rows: None,
                restore: None,
                ready: true,
                rows: None,
            },
            LevelId::Three | LevelId::Four | LevelId::Five => RoundTrip {
                backup: Some(BackupPhase::Completed),
                backup_rows: Some(3),
                restore: Some(RestorePhase::Verified),
                ready: true,
                rows: Some(3),
            },
        }
    }

    fn sandbox_config() -> sandbox::SandboxConfig {
        super::real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(180)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<RoundTrip>, Failed> {
        let operator = cluster.run_operator(level);
        create_ready_with_rows(cluster).await?;
        request_backup(cluster, BACKUP).await?;
        let taken = finished_backup(cluster, level, BACKUP).await?;
        let status = taken.and_then(|b| b.status).unwrap_or_default();
        let mut restored = DbBuilder::manifest(RESTORED)
            .version(super::BACKUP_VERSION)
            .build();
        restored.spec.restore = Some(RestoreSpec {
            from_backup: Some(BACKUP.into()),
            from_database: None,
        });
        create_ready(cluster, restored).await?;
        // A restored pod restarts once after Verified, without the restore
        // init container (a pod that never had one is already there).
        cluster
            .wait_for_object::<Pod>(
                &format!("{RESTORED}-0"),
                "ready without an init container",
                |pod| {
                    pod.is_some_and(|p| {
                        p.spec
                            .as_ref()
                            .is_some_and(|s| s.init_containers.as_ref().is_none_or(Vec::is_empty))
                            && p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| {
                                    c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                    })
                },
            )
            .await?;
        let restored = cluster.wait_for(RESTORED, "Ready", is_settled).await?;
        let rows = {
            let database = connect(cluster, Role::Owner, RESTORED)
                .await
                .ok_or_else(|| Failed::new("a Ready database has no Service or owner's Secret"))?;
            match database.query_one("SELECT count(*) FROM items", &[]).await {
                Ok(row) => Some(row.get::<_, i64>(0)),
                Err(error)
                    if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
                {
                    None
                }
                Err(error) => return Err(error).or_fail("count the restored rows"),
            }
        };
        operator.stop().await;
        Ok(Observed::Seen(RoundTrip {
            backup: status.phase,
            backup_rows: status.summary.map(|s| s.rows),
            restore: restored
                .status
                .as_ref()
                .and_then(|s| s.restore.as_ref())
                .map(|r| r.phase),
            ready: is_settled(&restored),
            rows,
        }))
    }
}
