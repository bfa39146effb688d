//! A database holding three rows is backed up, then given `spec.restore`
//! from that backup (real PostgreSQL): restoring into a database that
//! already holds data is refused, naming the field
//! (`RefusedRestoreIntoExistingData`), and the rows stay. Levels 1 and 2
//! take no backup, report `spec.restore` as not implemented and keep
//! serving the rows.
//!
//! The backup is a real, Completed one on Level 3, so the refusal is the
//! one about existing data, not one about the backup. The verdict is read
//! after further reconciles (on the sandbox), so a refusal that a later
//! reconcile carries out anyway shows.

use std::fmt;
use std::time::Duration;

use shared::backup::{BackupPhase, PostgresDBBackup};

use super::steps::{NAME, condition, create_ready_with_rows, patch_spec, request_backup, rows};
use super::{Observed, Scenario};
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

/// The backup taken, then asked for.
const BACKUP: &str = "orders-manual";

pub struct RestoreIntoNonEmpty;

/// What the level made of the restore asked for.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Not implemented: `SpecImplemented=False`, still Ready.
    NotImplemented { rows: Option<i64> },
    /// Refused: Ready=False with a `Refused…` reason (given) naming
    /// `spec.restore`.
    Refused { reason: String, rows: Option<i64> },
    /// Something else: the Ready condition's reason.
    Other {
        ready_reason: String,
        rows: Option<i64>,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows =
            |r: &Option<i64>| r.map_or("table gone".to_string(), |n| format!("{n} rows kept"));
        match self {
            Verdict::NotImplemented { rows: r } => write!(
                f,
                "not implemented (SpecImplemented=False); still Ready; {}",
                rows(r)
            ),
            Verdict::Refused { reason, rows: r } => write!(
                f,
                "refused: Ready=False, {reason}, naming spec.restore; {}",
                rows(r)
            ),
            Verdict::Other {
                ready_reason,
                rows: r,
            } => write!(f, "Ready reason {ready_reason}; {}", rows(r)),
        }
    }
}

impl Scenario for RestoreIntoNonEmpty {
    type Observation = Verdict;
    const NAME: &'static str = "RestoreIntoNonEmpty";
    const TITLE: &'static str =
        "`spec.restore` is set on a database holding 3 rows (real PostgreSQL)";

    fn expected(level: LevelId) -> Verdict {
        match level {
            LevelId::One | LevelId::Two => Verdict::NotImplemented { rows: Some(3) },
            LevelId::Three | LevelId::Four | LevelId::Five => Verdict::Refused {
                reason: "RefusedRestoreIntoExistingData".into(),
                rows: Some(3),
            },
        }
    }

    fn sandbox_config() -> sandbox::SandboxConfig {
        super::real_postgres()
    }

    fn budget() -> Duration {
        // A first start, an initdb and a backup Job on real PostgreSQL.
        Duration::from_secs(150)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Verdict>, Failed> {
        let operator = cluster.run_operator(level);
        create_ready_with_rows(cluster).await?;
        request_backup(cluster, BACKUP).await?;
        if level >= LevelId::Three {
            cluster
                .wait_for_object::<PostgresDBBackup>(BACKUP, "Completed", |b| {
                    b.and_then(|b| b.status.as_ref()?.phase) == Some(BackupPhase::Completed)
                })
                .await?;
        }
        let generation = patch_spec(
            cluster,
            serde_json::json!({"restore": {"fromBackup": BACKUP}}),
        )
        .await?;
        let observed_restore = |db: &shared::api::PostgresDB| {
            db.status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .is_some_and(|g| g >= generation)
        };
        cluster
            .wait_for(NAME, "observed with spec.restore", observed_restore)
            .await?;
        // Reconciles that begin after the first answer (on the sandbox):
        // a refusal stands in each of them, it is not carried out by the
        // next one.
        cluster.settle(NAME).await?;
        let db = cluster
            .wait_for(NAME, "observed with spec.restore", observed_restore)
            .await?;
        let rows = rows(cluster).await?;
        let implemented =
            condition(&db, "SpecImplemented").is_none_or(|(status, _)| status == "True");
        let (ready_status, ready_reason) = condition(&db, "Ready").unwrap_or_default();
        let ready_message = db
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let verdict = if !implemented && ready_status == "True" {
            Verdict::NotImplemented { rows }
        } else if ready_status == "False"
            && ready_reason.starts_with("Refused")
            && ready_message.contains("spec.restore")
        {
            Verdict::Refused {
                reason: ready_reason,
                rows,
            }
        } else {
            Verdict::Other { ready_reason, rows }
        };
        operator.stop().await;
        Ok(Observed::Seen(verdict))
    }
}
