//! Where a figure becomes a symptom: one definition, used by the
//! conditions ([`super::symptoms`]) and written into the alerts
//! ([`super::monitoring`]), so a condition and its alert agree.

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
/// database's backups are overdue; `None` when it has no backup schedule.
/// (Stub: H3 defines it from `spec.backup.schedule` and `status.backup`.)
pub fn backup_deadline(_db: &shared::PostgresDB) -> Option<jiff::Timestamp> {
    None
}
