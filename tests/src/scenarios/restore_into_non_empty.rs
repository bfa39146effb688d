//! A database holding three rows is given `spec.restore` (real
//! PostgreSQL): restoring into a database that already holds data is
//! refused, naming the field, and the rows stay. Levels 1 and 2 report
//! `spec.restore` as not implemented and keep serving the rows.
//!
//! Written against the restore's contract (a refusal is a `SpecProblem`
//! on `spec.restore`: Ready=False with a reason starting with "Refused");
//! listed in [`super::pending_merge`] until the level has the restore.

use std::fmt;
use std::time::Duration;

use super::steps::{NAME, condition, create_ready, patch_spec, rows, write_three_rows};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct RestoreIntoNonEmpty;

/// What the level made of the restore asked for.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Not implemented: `SpecImplemented=False`, still Ready.
    NotImplemented { rows: Option<i64> },
    /// Refused: Ready=False with a `Refused…` reason naming `spec.restore`.
    Refused { rows: Option<i64> },
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
            Verdict::Refused { rows: r } => {
                write!(f, "refused: Ready=False naming spec.restore; {}", rows(r))
            }
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
            LevelId::Three => Verdict::Refused { rows: Some(3) },
        }
    }

    fn sandbox_config() -> sandbox::SandboxConfig {
        super::real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(120)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Verdict>, Failed> {
        let operator = cluster.run_operator(level);
        create_ready(cluster, DbBuilder::manifest(NAME).build()).await?;
        write_three_rows(cluster).await?;
        let generation = patch_spec(
            cluster,
            serde_json::json!({"restore": {"fromBackup": "orders-any"}}),
        )
        .await?;
        let db = cluster
            .wait_for(NAME, "observed with spec.restore", |db| {
                db.status
                    .as_ref()
                    .and_then(|s| s.observed_generation)
                    .is_some_and(|g| g >= generation)
            })
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
            Verdict::Refused { rows }
        } else {
            Verdict::Other { ready_reason, rows }
        };
        operator.stop().await;
        Ok(Observed::Seen(verdict))
    }
}
