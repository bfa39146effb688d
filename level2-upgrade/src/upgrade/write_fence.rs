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
//! While the last major upgrade stands rolled back, or a minor rollout has
//! taken over since, this module asks the server whether the fence is set
//! or still in effect, and resets it (`ALTER SYSTEM RESET`) and reloads, so
//! the old server takes writes again.
//!
//! The fence is a default, not a lock: a client that asks for a read-write
//! transaction explicitly (`BEGIN READ WRITE`) is not stopped, and its
//! writes may miss the new major (see the chapter's limits).

use shared::api::{PostgresDB, UpgradePhase, UpgradeStatus};
use shared::capability::Observed;
use shared::sql::{SqlAction, SqlAnswer, SqlProbe};

use crate::logins;

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

/// Whether the server that runs may still hold a migration's fence: the
/// last major upgrade was rolled back, or a minor rollout has since taken
/// over `status.upgrade` (it may have begun before the fence was lifted,
/// and its restarts keep `postgresql.auto.conf`). A minor rollout asks the
/// servers for their version anyway, so the question costs no extra login
/// at rest; a rolled-back major upgrade is asked about at each reconcile.
fn may_be_fenced(db: &PostgresDB) -> Option<&UpgradeStatus> {
    let up = db.status.as_ref()?.upgrade.as_ref()?;
    match (up.phase, &up.major) {
        (UpgradePhase::RolledBack, Some(_)) | (UpgradePhase::Rolling, None) => Some(up),
        _ => None,
    }
}

/// The probe of the fence, asked of the primary while it may hold one.
pub fn probes(db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
    if may_be_fenced(db).is_none() {
        return Vec::new();
    }
    logins::primary_target(db, observed)
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
pub fn actions(db: &PostgresDB, observed: &Observed) -> Vec<SqlAction> {
    let Some(up) = may_be_fenced(db) else {
        return Vec::new();
    };
    let Some(state) = FenceState::from_answer(observed.sql(PROBE)) else {
        return Vec::new();
    };
    let Some(target) = logins::primary_target(db, observed) else {
        return Vec::new();
    };
    let server = match &up.major {
        Some(_) => up.from_version.clone(),
        None => format!("pod {}", target.pod),
    };
    let mut actions = Vec::new();
    if state.in_file {
        actions.push(SqlAction {
            target: target.clone(),
            statement: "ALTER SYSTEM RESET default_transaction_read_only",
            reason: REMOVED.into(),
            message: format!(
                "removed the write fence (default_transaction_read_only) that a major upgrade's migration set on {server}"
            ),
            settings: Default::default(),
        });
    }
    if state.in_file || state.in_effect {
        actions.push(SqlAction {
            target,
            statement: "SELECT pg_reload_conf()::text",
            reason: WRITES_RESUMED.into(),
            message: format!(
                "reloaded the configuration without the write fence: {server} takes writes again"
            ),
            settings: Default::default(),
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::observed_pod;

    /// orders, running 15, whose status.upgrade is `up`.
    fn db_with(up: Option<UpgradeStatus>) -> PostgresDB {
        let mut db = crate::tests::db("16", Some("15"));
        db.status.get_or_insert_with(Default::default).upgrade = up;
        db
    }

    /// The last major upgrade (15 to 16), in `phase`.
    fn major(phase: UpgradePhase) -> PostgresDB {
        db_with(Some(crate::upgrade::major::tests::upgrade(phase)))
    }

    /// A minor rollout that took over status.upgrade.
    fn minor_rollout() -> PostgresDB {
        let mut up = crate::upgrade::major::tests::upgrade(UpgradePhase::Rolling);
        up.major = None;
        up.from_version = "15.6".into();
        up.to_version = "15.7".into();
        db_with(Some(up))
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
    fn the_fence_is_looked_for_after_a_rolled_back_major_upgrade_and_during_a_minor_rollout() {
        let observed = observed_pod(None);
        for phase in [
            UpgradePhase::Migrating,
            UpgradePhase::Switching,
            UpgradePhase::Complete,
        ] {
            assert!(probes(&major(phase), &observed).is_empty(), "{phase:?}");
        }
        assert!(probes(&db_with(None), &observed).is_empty(), "at rest");
        for db in [major(UpgradePhase::RolledBack), minor_rollout()] {
            let asked = probes(&db, &observed);
            assert_eq!(asked.len(), 1);
            assert_eq!(asked[0].target.pod, "orders-0");
            assert_eq!(asked[0].statement, PROBE_STATEMENT);
        }
    }

    #[test]
    fn a_rolled_back_server_still_fenced_is_reset_then_reloaded() {
        let actions = actions(&major(UpgradePhase::RolledBack), &server_says(true, true));
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
    fn a_minor_rollout_that_began_before_the_fence_was_lifted_lifts_it() {
        let actions = actions(&minor_rollout(), &server_says(true, true));
        assert_eq!(actions.len(), 2);
        assert!(
            actions[1]
                .message
                .contains("pod orders-0 takes writes again")
        );
    }

    #[test]
    fn a_reset_whose_reload_failed_is_reloaded_again() {
        let actions = actions(&major(UpgradePhase::RolledBack), &server_says(false, true));
        assert_eq!(statements(&actions), ["SELECT pg_reload_conf()::text"]);
    }

    #[test]
    fn nothing_is_run_when_the_fence_is_gone_the_server_did_not_answer_or_no_rollback_stands() {
        let rolled_back = major(UpgradePhase::RolledBack);
        assert!(actions(&rolled_back, &server_says(false, false)).is_empty());
        let mut silent = observed_pod(None);
        silent.insert_sql(PROBE, Err("connection refused".into()));
        assert!(actions(&rolled_back, &silent).is_empty());
        assert!(actions(&rolled_back, &observed_pod(None)).is_empty());
        assert!(
            actions(&major(UpgradePhase::Migrating), &server_says(true, true)).is_empty(),
            "the migration's own fence stays while it runs"
        );
    }
}
