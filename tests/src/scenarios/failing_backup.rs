//! A backup is asked for while another session holds an exclusive lock on
//! a table of the database (real PostgreSQL): Level 3's backup Job runs
//! pg_dump, which gives up after its lock wait (`--lock-wait-timeout`,
//! which pg_dump enforces as a statement timeout on its `LOCK TABLE`), and
//! the backup is Failed
//! with pg_dump's own error, while the database stays Ready with its rows.
//! Levels 1 and 2 take no backup (nothing serves `PostgresDBBackup`).
//!
//! The observation quotes what the backup's `status.error` says pg_dump
//! said (from `pg_dump: error:` to its `detail`), so the cell shows the
//! tool's words, read from the cluster.

use std::fmt;
use std::time::Duration;

use shared::backup::BackupPhase;

use super::steps::{
    create_ready_with_rows, current, finished_backup, is_settled, lock_items, request_backup, rows,
};
use super::{Observed, Scenario};
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

/// The backup asked for.
const BACKUP: &str = "orders-locked-out";

pub struct FailingBackup;

/// What became of the backup, and of the database.
#[derive(Debug, PartialEq)]
pub struct LockedOut {
    /// The backup's phase once it finished (or when the level left it).
    pub phase: Option<BackupPhase>,
    /// What `status.error` quotes of pg_dump: from `pg_dump: error:` up to
    /// pg_dump's `detail` line (`None`: no such words).
    pub pg_dump_said: Option<String>,
    /// Whether the database is still Ready and settled.
    pub ready: bool,
    /// The rows of `items`, read after the backup ended.
    pub rows: Option<i64>,
}

impl fmt::Display for LockedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backup {}{}; database {}; {}",
            self.phase
                .map_or("never taken".to_string(), |p| format!("{p:?}")),
            self.pg_dump_said
                .as_deref()
                .map(|said| format!(" (\"{said}\")"))
                .unwrap_or_default(),
            if self.ready { "Ready" } else { "not Ready" },
            self.rows
                .map_or("table gone".to_string(), |r| format!("{r} rows kept"))
        )
    }
}

/// pg_dump's own words in a backup's error: from `pg_dump: error:` to the
/// next `pg_dump:` line (its detail), trimmed.
pub fn pg_dump_said(error: &str) -> Option<String> {
    let (_, said) = error.split_once("pg_dump: error:")?;
    let said = said.split(" pg_dump: ").next().unwrap_or(said);
    Some(format!("pg_dump: error: {}", said.trim()))
}

impl Scenario for FailingBackup {
    type Observation = LockedOut;
    const NAME: &'static str = "FailingBackup";
    const TITLE: &'static str =
        "A backup meets a table another session holds locked (real PostgreSQL, 3 rows)";

    fn expected(level: LevelId) -> LockedOut {
        match level {
            LevelId::One | LevelId::Two => LockedOut {
                phase: None,
                pg_dump_said: None,
                ready: true,
                rows: Some(3),
            },
            LevelId::Three | LevelId::Four | LevelId::Five => LockedOut {
                phase: Some(BackupPhase::Failed),
                pg_dump_said: Some(
                    "pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout"
                        .into(),
                ),
                ready: true,
                rows: Some(3),
            },
        }
    }

    fn sandbox_config() -> sandbox::SandboxConfig {
        super::real_postgres()
    }

    fn budget() -> Duration {
        // A first start and an initdb, then a backup Job that waits out
        // pg_dump's 30 s lock wait, on a busy two-core machine.
        Duration::from_secs(150)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<LockedOut>, Failed> {
        let operator = cluster.run_operator(level);
        create_ready_with_rows(cluster).await?;
        // A session holding an exclusive lock on items for the whole backup.
        let holder = lock_items(cluster).await?;
        request_backup(cluster, BACKUP).await?;
        let taken = finished_backup(cluster, level, BACKUP).await?;
        holder
            .batch_execute("ROLLBACK")
            .await
            .or_fail("release the lock")?;
        let status = taken.and_then(|b| b.status).unwrap_or_default();
        let db = current(cluster).await?;
        let rows = rows(cluster).await?;
        operator.stop().await;
        Ok(Observed::Seen(LockedOut {
            phase: status.phase,
            pg_dump_said: status.error.as_deref().and_then(pg_dump_said),
            ready: is_settled(&db),
            rows,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_dump_s_words_are_cut_from_the_step_and_its_detail() {
        assert_eq!(
            pg_dump_said(
                "dumping database orders with pg_dump failed: pg_dump: error: query failed: \
                 ERROR:  canceling statement due to lock timeout pg_dump: detail: Query was: \
                 LOCK TABLE public.items IN ACCESS SHARE MODE"
            )
            .as_deref(),
            Some("pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout")
        );
        assert_eq!(pg_dump_said("the Job's pod was killed"), None);
    }
}
