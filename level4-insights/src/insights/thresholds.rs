//! Where a figure becomes a symptom: one definition, used by the
//! conditions ([`super::symptoms`]) and written into the alerts
//! ([`super::monitoring`]), so a condition and its alert agree.

use jiff::Timestamp;
use level3_lifecycle::lifecycle::backups::active_schedule;
use level3_lifecycle::lifecycle::backups::schedule::Schedule;
use shared::PostgresDB;

/// Connections in use, in percent of those clients may open, at which
/// connections are saturated.
pub const CONNECTIONS_PERCENT: u64 = 80;

/// Volume used, in percent of its capacity, at which storage is nearly full.
pub const STORAGE_PERCENT: u64 = 85;

/// Age, in seconds, at which an open transaction is long-running.
pub const TRANSACTION_SECONDS: u64 = 300;

/// XID age at which wraparound is a risk: half of the 2^31 transactions a
/// database can go without freezing (autovacuum forces freezing at
/// `autovacuum_freeze_max_age`, 200 million by default, so reaching this
/// means freezing is failing).
pub const XID_AGE: u64 = 1 << 30;

/// Replication lag, in seconds, at which a replica is lagging (Level 5).
pub const REPLICATION_LAG_SECONDS: u64 = 30;

/// The instant after which, without a new successful backup, the
/// database's backups are overdue; `None` when it has no backup schedule
/// (none set, suspended or invalid: no backup is expected).
///
/// Read from `spec.backup.schedule` (through Level 3's
/// [`active_schedule`]) and `status.backup.lastSuccessfulAt`: see
/// [`deadline_after`]. The BackupOverdue condition and the
/// `pgdb_database_backup_deadline_timestamp_seconds` series (which the
/// alert compares with `time()`) both use it.
pub fn backup_deadline(db: &PostgresDB) -> Option<Timestamp> {
    let last_success = db
        .status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.last_successful_at.as_ref())
        .map(|t| t.0);
    backup_deadline_with(db, last_success)
}

/// [`backup_deadline`], given when the last successful backup completed
/// (a reconcile passes the value it is about to write in `status.backup`).
pub fn backup_deadline_with(db: &PostgresDB, last_success: Option<Timestamp>) -> Option<Timestamp> {
    let schedule = active_schedule(db)?;
    let created = db.metadata.creation_timestamp.as_ref().map(|t| t.0);
    deadline_after(&schedule, last_success.or(created)?)
}

/// The deadline of a schedule whose last successful backup completed at
/// `since` (or, without one, whose database was created then): the first
/// slot after `since` is the backup expected next, and it has until the
/// slot after that to succeed. So one failed (or missed) slot makes the
/// backups overdue at the next one, and a backup that takes less than the
/// schedule's interval never does.
///
/// Where it stops: the moment a schedule was added is not recorded, so a
/// database that never had a successful backup counts from its creation,
/// and a schedule added to an old database is overdue until its first
/// backup succeeds (which the schedule takes at once).
pub fn deadline_after(schedule: &Schedule, since: Timestamp) -> Option<Timestamp> {
    let expected = schedule.next_after(since)?;
    schedule.next_after(expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use shared::backup::{BackupSpec, BackupSummary};
    use shared::testing::{DbBuilder, at};

    fn nightly() -> BackupSpec {
        BackupSpec {
            schedule: Some("0 3 * * *".into()),
            ..Default::default()
        }
    }

    fn utc(text: &str) -> Timestamp {
        text.parse().expect("an RFC 3339 time")
    }

    #[test]
    fn a_database_without_a_schedule_has_no_backup_deadline() {
        let db = DbBuilder::named("orders").created(at(0)).build();
        assert_eq!(backup_deadline(&db), None);
        let suspended = DbBuilder::named("orders")
            .created(at(0))
            .backup(BackupSpec {
                suspend: true,
                ..nightly()
            })
            .build();
        assert_eq!(backup_deadline(&suspended), None);
        let invalid = DbBuilder::named("orders")
            .created(at(0))
            .backup(BackupSpec {
                schedule: Some("0 25 * * *".into()),
                ..Default::default()
            })
            .build();
        assert_eq!(backup_deadline(&invalid), None);
    }

    #[test]
    fn the_backup_after_the_last_success_has_until_the_following_slot() {
        // Last success at 03:00:40 on the 1st: the 2nd's 03:00 backup is
        // expected, and overdue once the 3rd's slot passes without it.
        let db = DbBuilder::named("orders")
            .created(utc("2026-01-01T00:00:00Z"))
            .backup(nightly())
            .backup_status(BackupSummary {
                last_successful_at: Some(Time(utc("2026-01-01T03:00:40Z"))),
                ..Default::default()
            })
            .build();
        assert_eq!(backup_deadline(&db), Some(utc("2026-01-03T03:00:00Z")));
    }

    #[test]
    fn a_database_never_backed_up_counts_from_its_creation() {
        let db = DbBuilder::named("orders")
            .created(utc("2026-01-01T10:00:00Z"))
            .backup(nightly())
            .build();
        assert_eq!(backup_deadline(&db), Some(utc("2026-01-03T03:00:00Z")));
        // The value a reconcile is about to write wins over the status read.
        assert_eq!(
            backup_deadline_with(&db, Some(utc("2026-01-05T03:00:09Z"))),
            Some(utc("2026-01-07T03:00:00Z"))
        );
    }
}
