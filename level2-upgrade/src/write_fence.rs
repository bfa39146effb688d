//! A major upgrade's write fence inside the old server, and its removal on
//! a rollback.
//!
//! The fenced Service stops clients that connect through it, not one that
//! connects to the pod itself. Such a client's write, made after the
//! migration Job verified the copy and before the new major takes over,
//! would be acknowledged by the old server and missing from the new one. So
//! the Job, before it dumps, makes the old server refuse writes:
//! `ALTER SYSTEM SET default_transaction_read_only = on` (kept in
//! `postgresql.auto.conf`, so a restart keeps it too), a reload, and the end
//! of every client session. Every write the old server acknowledged is then
//! in the dump.
//!
//! A rollback brings the old server back with the fence still in place.
//! While the last major upgrade stands rolled back, this module asks the
//! server whether the fence is set or still in effect, and resets it
//! (`ALTER SYSTEM RESET`) and reloads, so the old server takes writes again.
//!
//! The fence is a default, not a lock: a client that asks for a read-write
//! transaction explicitly (`BEGIN READ WRITE`) is not stopped. Its writes
//! before the verification make the verification fail; after it, they are
//! not carried over.

use shared::api::{PostgresDB, UpgradePhase};
use shared::capability::Observed;
use shared::sql::{SqlAction, SqlAnswer, SqlProbe};

use crate::major::Progress;
use crate::server;

/// Name of the probe asking the old server about the fence.
pub const PROBE: &str = "write_fence";
/// Whether `postgresql.auto.conf` holds the fence (first column), and
/// whether the running configuration took the setting from it (second).
pub const PROBE_STATEMENT: &str = "SELECT \
     (EXISTS (SELECT 1 FROM pg_file_settings WHERE name = 'default_transaction_read_only' \
              AND sourcefile LIKE '%/postgresql.auto.conf'))::text, \
     (EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_transaction_read_only' \
              AND sourcefile LIKE '%/postgresql.auto.conf'))::text";
/// Event reason: the fence was removed from `postgresql.auto.conf`.
pub const REMOVED: &str = "WriteFenceRemoved";
/// Event reason: the configuration was reloaded without the fence.
pub const WRITES_RESUMED: &str = "WritesResumed";

/// How the fence stands on the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FenceState {
    /// `postgresql.auto.conf` sets `default_transaction_read_only`.
    pub in_file: bool,
    /// The running configuration took the setting from that file.
    pub in_effect: bool,
}

impl FenceState {
    /// The state the probe's answer shows; `None` when the server did not
    /// answer (unknown: nothing is done).
    pub fn from_answer(answer: Option<&SqlAnswer>) -> Option<Self> {
        let row = answer?.as_ref().ok()?.first()?;
        let flag = |i: usize| row.get(i)?.as_deref().map(|v| v == "true");
        Some(Self {
            in_file: flag(0)?,
            in_effect: flag(1)?,
        })
    }
}

/// Whether the fence must be looked for: the last major upgrade was rolled
/// back, so the server that runs is the one the migration fenced.
fn rolled_back(progress: &Progress) -> bool {
    progress.phase() == Some(UpgradePhase::RolledBack)
}

/// The probe of the fence, asked of the primary while the last major
/// upgrade stands rolled back.
pub fn probes(db: &PostgresDB, observed: &Observed, progress: &Progress) -> Vec<SqlProbe> {
    if !rolled_back(progress) {
        return Vec::new();
    }
    server::primary_target(db, observed)
        .map(|target| SqlProbe {
            name: PROBE.into(),
            target,
            statement: PROBE_STATEMENT,
        })
        .into_iter()
        .collect()
}

/// The statements that lift the fence the probe found: a reset of the file
/// and a reload, or only the reload when the file no longer holds it (an
/// earlier reset whose reload failed).
pub fn actions(db: &PostgresDB, observed: &Observed, progress: &Progress) -> Vec<SqlAction> {
    let Some((up, _)) = progress.parts().filter(|_| rolled_back(progress)) else {
        return Vec::new();
    };
    let Some(state) = FenceState::from_answer(observed.sql(PROBE)) else {
        return Vec::new();
    };
    let Some(target) = server::primary_target(db, observed) else {
        return Vec::new();
    };
    let mut actions = Vec::new();
    if state.in_file {
        actions.push(SqlAction {
            target: target.clone(),
            statement: "ALTER SYSTEM RESET default_transaction_read_only",
            reason: REMOVED.into(),
            message: format!(
                "removed the write fence (default_transaction_read_only) that the migration to {} set on {}",
                up.to_version, up.from_version
            ),
        });
    }
    if state.in_file || state.in_effect {
        actions.push(SqlAction {
            target,
            statement: "SELECT pg_reload_conf()::text",
            reason: WRITES_RESUMED.into(),
            message: format!(
                "reloaded the configuration without the write fence: {} takes writes again",
                up.from_version
            ),
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{db, observed_pod};

    fn progress(phase: UpgradePhase) -> Progress {
        Progress {
            upgrade: Some(crate::major_tests::upgrade(phase)),
            recorded: true,
            transition: None,
        }
    }

    fn server_says(in_file: bool, in_effect: bool) -> Observed {
        let mut observed = observed_pod(None);
        observed.insert_sql(
            PROBE,
            Ok(vec![vec![
                Some(in_file.to_string()),
                Some(in_effect.to_string()),
            ]]),
        );
        observed
    }

    fn statements(actions: &[SqlAction]) -> Vec<&str> {
        actions.iter().map(|a| a.statement).collect()
    }

    #[test]
    fn the_fence_is_looked_for_only_while_the_last_major_upgrade_stands_rolled_back() {
        let db = db("16", Some("15"));
        let observed = observed_pod(None);
        for phase in [
            UpgradePhase::Migrating,
            UpgradePhase::Switching,
            UpgradePhase::Complete,
        ] {
            assert!(
                probes(&db, &observed, &progress(phase)).is_empty(),
                "{phase:?}"
            );
        }
        let none = Progress {
            upgrade: None,
            recorded: true,
            transition: None,
        };
        assert!(probes(&db, &observed, &none).is_empty());
        let asked = probes(&db, &observed, &progress(UpgradePhase::RolledBack));
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].target.pod, "orders-0");
        assert_eq!(asked[0].statement, PROBE_STATEMENT);
    }

    #[test]
    fn a_rolled_back_server_still_fenced_is_reset_then_reloaded() {
        let db = db("16", Some("15"));
        let actions = actions(
            &db,
            &server_says(true, true),
            &progress(UpgradePhase::RolledBack),
        );
        assert_eq!(
            statements(&actions),
            [
                "ALTER SYSTEM RESET default_transaction_read_only",
                "SELECT pg_reload_conf()::text"
            ]
        );
        assert_eq!(actions[0].reason, REMOVED);
        assert_eq!(actions[1].reason, WRITES_RESUMED);
        assert!(actions[1].message.contains("15 takes writes again"));
    }

    #[test]
    fn a_reset_whose_reload_failed_is_reloaded_again() {
        let db = db("16", Some("15"));
        let actions = actions(
            &db,
            &server_says(false, true),
            &progress(UpgradePhase::RolledBack),
        );
        assert_eq!(statements(&actions), ["SELECT pg_reload_conf()::text"]);
    }

    #[test]
    fn nothing_is_run_when_the_fence_is_gone_the_server_did_not_answer_or_no_rollback_stands() {
        let db = db("16", Some("15"));
        let rolled_back = progress(UpgradePhase::RolledBack);
        assert!(actions(&db, &server_says(false, false), &rolled_back).is_empty());
        let mut silent = observed_pod(None);
        silent.insert_sql(PROBE, Err("connection refused".into()));
        assert!(actions(&db, &silent, &rolled_back).is_empty());
        assert!(actions(&db, &observed_pod(None), &rolled_back).is_empty());
        assert!(
            actions(
                &db,
                &server_says(true, true),
                &progress(UpgradePhase::Migrating)
            )
            .is_empty(),
            "the migration's own fence stays while it runs"
        );
    }
}
