//! A database is backed up every 10 seconds (a six-field schedule) with
//! `retention.keepLast: 2`, through a series of at least four backups on
//! real PostgreSQL; then the schedule is suspended. Level 3 keeps exactly
//! the two newest completed backups and deletes every older one. Levels 1
//! and 2 report `spec.backup` as not implemented and take no backup, though
//! a slot has passed.
//!
//! The run records every scheduled backup it sees Completed (by slot), so
//! what is kept at the end is ranked against the whole series: rank 1 is
//! the newest backup that completed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use kube::ResourceExt;
use shared::backup::{BackupPhase, BackupSpec, PostgresDBBackup, RetentionSpec};
use shared::keys::SCHEDULED_FOR_ANNOTATION;

use super::steps::{NAME, condition, create_ready, patch_spec};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

/// The schedule: every 10 seconds (six fields, seconds first).
const SCHEDULE: &str = "*/10 * * * * *";
/// `retention.keepLast`.
const KEEP_LAST: u32 = 2;
/// How many completed backups make the series.
const SERIES: usize = 4;

pub struct RetentionSeries;

/// What the series came to.
#[derive(Debug, PartialEq)]
pub struct Series {
    /// Whether `SpecImplemented` was True.
    pub implemented: bool,
    /// Whether at least [`SERIES`] scheduled backups completed (Levels 1
    /// and 2: whether any backup object exists after a slot passed).
    pub series_completed: bool,
    /// Whether any `PostgresDBBackup` exists at the end.
    pub created_any: bool,
    /// The completed backups still there at the end, by rank in the
    /// series (1: the newest).
    pub kept: Vec<usize>,
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.implemented {
            write!(f, "not implemented (SpecImplemented=False); ")?;
        }
        if !self.created_any {
            return write!(f, "no backup taken after a slot passed");
        }
        let ranks: Vec<String> = self.kept.iter().map(usize::to_string).collect();
        write!(
            f,
            "{} scheduled backups completed; kept {} (ranks {} from the newest), the others deleted",
            if self.series_completed {
                format!("{SERIES}+")
            } else {
                format!("fewer than {SERIES}")
            },
            super::count(self.kept.len(), "backup"),
            ranks.join(", ")
        )
    }
}

/// The slot a scheduled backup was taken for, in seconds.
fn slot(backup: &PostgresDBBackup) -> Result<i64, Failed> {
    backup
        .annotations()
        .get(SCHEDULED_FOR_ANNOTATION)
        .and_then(|text| text.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .ok_or_else(|| Failed::new(format!("{} has no slot", backup.name_any())))
}

async fn backups(cluster: &TestCluster) -> Result<Vec<PostgresDBBackup>, Failed> {
    Ok(cluster
        .api::<PostgresDBBackup>()
        .list(&Default::default())
        .await
        .or_fail("list the PostgresDBBackups")?
        .items)
}

fn phase(backup: &PostgresDBBackup) -> Option<BackupPhase> {
    backup.status.as_ref()?.phase
}

/// Adds the completed backups of `listed` to `seen` (slot → name).
fn record(seen: &Mutex<BTreeMap<i64, String>>, listed: &[PostgresDBBackup]) -> Result<(), Failed> {
    let mut seen = seen.lock().map_err(|_| Failed::new("a poll panicked"))?;
    for backup in listed {
        if phase(backup) == Some(BackupPhase::Completed) {
            seen.insert(slot(backup)?, backup.name_any());
        }
    }
    Ok(())
}

impl Scenario for RetentionSeries {
    type Observation = Series;
    const NAME: &'static str = "RetentionSeries";
    const TITLE: &'static str =
        "Backups every 10 s with `retention.keepLast: 2`, through a series of 4 (real PostgreSQL)";

    fn expected(level: LevelId) -> Series {
        match level {
            LevelId::One | LevelId::Two => Series {
                implemented: false,
                series_completed: false,
                created_any: false,
                kept: vec![],
            },
            LevelId::Three | LevelId::Four | LevelId::Five => Series {
                implemented: true,
                series_completed: true,
                created_any: true,
                kept: vec![1, 2],
            },
        }
    }

    fn sandbox_config() -> sandbox::SandboxConfig {
        super::real_postgres()
    }

    fn budget() -> Duration {
        // A first start and an initdb, then four backup Jobs one after the
        // other (one slot each at best) on a busy two-core machine.
        Duration::from_secs(180)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Series>, Failed> {
        let operator = cluster.run_operator(level);
        let mut db = DbBuilder::manifest(NAME)
            .version(super::BACKUP_VERSION)
            .build();
        db.spec.backup = Some(BackupSpec {
            schedule: Some(SCHEDULE.into()),
            retention: Some(RetentionSpec {
                keep_last: Some(KEEP_LAST),
                max_age: None,
            }),
            ..Default::default()
        });
        let db = create_ready(cluster, db).await?;
        let implemented =
            condition(&db, "SpecImplemented").is_none_or(|(status, _)| status == "True");
        let seen = Mutex::new(BTreeMap::new());
        if implemented {
            cluster
                .eventually(
                    cluster.budget(),
                    &format!("{SERIES} scheduled backups complete"),
                    || async {
                        record(&seen, &backups(cluster).await?)?;
                        let n = seen
                            .lock()
                            .map_err(|_| Failed::new("a poll panicked"))?
                            .len();
                        Ok((n >= SERIES).then_some(()))
                    },
                )
                .await?;
        } else {
            // Let a slot pass; then a reconcile that began after it ends.
            tokio::time::sleep(Duration::from_secs(11)).await;
        }
        patch_spec(cluster, serde_json::json!({"backup": {"suspend": true}})).await?;
        // The backup under way when the schedule stopped ends too.
        cluster
            .eventually(
                cluster.budget(),
                "no backup is pending or running",
                || async {
                    let listed = backups(cluster).await?;
                    record(&seen, &listed)?;
                    Ok(listed
                        .iter()
                        .all(|b| {
                            matches!(phase(b), Some(BackupPhase::Completed | BackupPhase::Failed))
                        })
                        .then_some(()))
                },
            )
            .await?;
        // Retention runs after each successful backup: a reconcile that
        // began after the last one ended has enforced it. The reconcile
        // that names the newest completed backup in status.backup issued
        // its deletions before that status write, which makes it a sync
        // point a cluster without the sandbox's request counters has too.
        if implemented {
            cluster
                .eventually(
                    cluster.budget(),
                    "status.backup names the newest completed backup",
                    || async {
                        let listed = backups(cluster).await?;
                        let newest = listed
                            .iter()
                            .filter(|b| phase(b) == Some(BackupPhase::Completed))
                            .filter_map(|b| {
                                let at = b.status.as_ref()?.completed_at.clone()?;
                                Some((at.0, b.name_any()))
                            })
                            .max()
                            .map(|(_, name)| name);
                        let db = cluster.database(NAME).await.or_fail("read the database")?;
                        let named = db
                            .and_then(|d| d.status)
                            .and_then(|s| s.backup)
                            .and_then(|b| b.last_successful_backup);
                        Ok((newest.is_some() && named == newest).then_some(()))
                    },
                )
                .await?;
        }
        cluster.settle(NAME).await?;
        let listed = backups(cluster).await?;
        record(&seen, &listed)?;
        let seen = seen
            .into_inner()
            .map_err(|_| Failed::new("a poll panicked"))?;
        let newest_first: Vec<&String> = seen.values().rev().collect();
        let mut kept: Vec<usize> = listed
            .iter()
            .filter(|b| b.metadata.deletion_timestamp.is_none())
            .filter(|b| phase(b) == Some(BackupPhase::Completed))
            .filter_map(|b| {
                let name = b.name_any();
                newest_first.iter().position(|n| **n == name).map(|k| k + 1)
            })
            .collect();
        kept.sort_unstable();
        operator.stop().await;
        Ok(Observed::Seen(Series {
            implemented,
            series_completed: seen.len() >= SERIES,
            created_any: !listed.is_empty(),
            kept,
        }))
    }
}
