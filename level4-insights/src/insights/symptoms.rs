//! Symptoms as conditions, Events on transitions and `status.insights`:
//! what a user without Prometheus sees of a database's health.
//!
//! Each symptom is a condition of negative polarity, like a Node's
//! `MemoryPressure`: True when the symptom is present, False when the
//! latest measurement shows it absent, Unknown when there is nothing to
//! judge by. Four come from the database's latest reading
//! ([`Observed::reading`], measured by the collector), one from the backups:
//! - `ConnectionsSaturated`: connections in use at or above
//!   [`thresholds::CONNECTIONS_PERCENT`] of those clients may open;
//! - `StorageNearlyFull`: the data volume at or above
//!   [`thresholds::STORAGE_PERCENT`] of its capacity;
//! - `LongRunningTransaction`: a transaction open for
//!   [`thresholds::TRANSACTION_SECONDS`] or longer;
//! - `XidWraparoundRisk`: an XID age at or above [`thresholds::XID_AGE`];
//! - `BackupOverdue`: the schedule's backup deadline
//!   ([`thresholds::backup_deadline`]) passed without a successful backup;
//!   the reconcile asks to be woken at the deadline, so the condition turns
//!   True on time with no reading at all.
//!
//! Each verdict is a pure function of one reading (or of the deadline and
//! the reconcile's clock). The symptoms never touch the phase or Ready: the
//! phase sums up Ready, Progressing and Degraded only, so a saturated but
//! healthy database stays Ready, and a symptom's True is a Warning Event,
//! not a failure.
//!
//! Quiet at rest: a condition's message says the threshold, never the
//! current figure, so it does not change while the symptom lasts; an Event
//! is published only when a symptom appears (a Warning) or clears (a
//! Normal Event, [`Assessment::announce`]), never on every measurement.
//! The figures themselves are in `status.insights`, quantised as the
//! readings' summary is (whole percents), and a reading whose summary did
//! not change does not even trigger a reconcile.
//!
//! Where it stops: a restarted operator has no reading until the collector
//! measures again; meanwhile each symptom keeps what the last measurement
//! concluded (read back from the status, as `status.insights` keeps its
//! figures), so a restart neither writes every status nor repeats the
//! Events. A database never measured is Unknown (`NotMeasured`), and one
//! whose server did not answer is Unknown (`DatabaseDown`) for the symptoms
//! SQL measures (its volume is still measured by the kubelet).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use shared::PostgresDB;
use shared::api::InsightsStatus;
use shared::capability::{ApplyReport, Capability, Observed, StatusDraft};
use shared::conditions::{Assessment, ConditionStatus};
use shared::readings::DatabaseReading;

use super::thresholds;

/// Connections in use reached [`thresholds::CONNECTIONS_PERCENT`] of those
/// clients may open.
pub const CONNECTIONS_SATURATED: &str = "ConnectionsSaturated";
/// The data volume reached [`thresholds::STORAGE_PERCENT`] of its capacity.
pub const STORAGE_NEARLY_FULL: &str = "StorageNearlyFull";
/// A transaction has been open for [`thresholds::TRANSACTION_SECONDS`].
pub const LONG_RUNNING_TRANSACTION: &str = "LongRunningTransaction";
/// The XID age reached [`thresholds::XID_AGE`].
pub const XID_WRAPAROUND_RISK: &str = "XidWraparoundRisk";
/// The backup deadline passed without a successful backup.
pub const BACKUP_OVERDUE: &str = "BackupOverdue";

/// The symptoms' condition types, in the order they are assessed.
pub const CONDITIONS: [&str; 5] = [
    CONNECTIONS_SATURATED,
    STORAGE_NEARLY_FULL,
    LONG_RUNNING_TRANSACTION,
    XID_WRAPAROUND_RISK,
    BACKUP_OVERDUE,
];

/// Reason of a symptom no measurement has judged yet.
pub const NOT_MEASURED: &str = "NotMeasured";
/// Reason of a SQL-measured symptom whose server did not answer.
pub const DATABASE_DOWN: &str = "DatabaseDown";

/// What one measurement says about one symptom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The symptom is present. The message names the threshold, not the
    /// figure, so it stays the same while the symptom lasts.
    Present {
        /// CamelCase reason of the condition and its Warning Event.
        reason: &'static str,
        /// What it means.
        message: String,
    },
    /// The symptom was measured and is absent.
    Absent {
        /// CamelCase reason of the condition and of the Event when the
        /// symptom clears.
        reason: &'static str,
        /// What was checked.
        message: String,
    },
    /// The measurement could not tell.
    Unknown {
        /// CamelCase reason.
        reason: &'static str,
        /// Why not.
        message: String,
    },
}

impl Verdict {
    fn present(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Present {
            reason,
            message: message.into(),
        }
    }

    fn absent(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Absent {
            reason,
            message: message.into(),
        }
    }

    fn unknown(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Unknown {
            reason,
            message: message.into(),
        }
    }

    fn down() -> Self {
        Self::unknown(
            DATABASE_DOWN,
            "the server did not answer the operator's last measurement",
        )
    }

    /// The condition this verdict sets: a Warning when present, an
    /// announced clearing when absent.
    pub fn assessment(self) -> Assessment {
        match self {
            Self::Present { reason, message } => Assessment::yes(reason, message).warn(),
            Self::Absent { reason, message } => Assessment::no(reason, message).announce(),
            Self::Unknown { reason, message } => Assessment::unknown(reason, message).announce(),
        }
    }
}

/// `part` in whole percent of `whole` (rounded down, as the readings'
/// summary rounds it), or `None` when `whole` is zero.
fn percent(part: u64, whole: u64) -> Option<u64> {
    part.saturating_mul(100).checked_div(whole)
}

/// `ConnectionsSaturated` from a reading: client connections in every
/// state against `max_connections` minus those reserved for superusers.
pub fn connections(reading: &DatabaseReading) -> Verdict {
    if !reading.is_up() {
        return Verdict::down();
    }
    let Some(usable) = reading.summary().usable_connections else {
        return Verdict::unknown(NOT_MEASURED, "max_connections was not measured");
    };
    let limit = thresholds::CONNECTIONS_PERCENT;
    match percent(reading.total_connections(), usable) {
        Some(used) if used < limit => Verdict::absent(
            "ConnectionsAvailable",
            format!("fewer than {limit}% of the {usable} connections clients may open are in use"),
        ),
        _ => Verdict::present(
            "ConnectionsNearLimit",
            format!(
                "{limit}% or more of the {usable} connections clients may open are in use; \
                 once all are, new clients are refused (see status.insights and pg_stat_activity)"
            ),
        ),
    }
}

/// `StorageNearlyFull` from a reading: the data volume's used bytes
/// against its capacity, as the kubelet reports them (measured even when
/// the server is down).
pub fn storage(reading: &DatabaseReading) -> Verdict {
    let (Some(used), Some(capacity)) = (reading.volume_used_bytes, reading.volume_capacity_bytes)
    else {
        return Verdict::unknown(
            NOT_MEASURED,
            "the data volume's usage was not measured (no volume stats from the kubelet)",
        );
    };
    let limit = thresholds::STORAGE_PERCENT;
    match percent(used, capacity) {
        None => Verdict::unknown(NOT_MEASURED, "the data volume reported no capacity"),
        Some(percent) if percent < limit => Verdict::absent(
            "VolumeHasSpace",
            format!("the data volume is less than {limit}% full"),
        ),
        Some(_) => Verdict::present(
            "VolumeNearlyFull",
            format!(
                "the data volume is {limit}% full or more; when it is full the server stops \
                 (grow spec.storage.size, or delete data)"
            ),
        ),
    }
}

/// `LongRunningTransaction` from a reading: the oldest open transaction's
/// age.
pub fn long_transaction(reading: &DatabaseReading) -> Verdict {
    if !reading.is_up() {
        return Verdict::down();
    }
    let Some(age) = reading.oldest_transaction_seconds else {
        return Verdict::unknown(NOT_MEASURED, "open transactions were not measured");
    };
    let limit = thresholds::TRANSACTION_SECONDS;
    if age < limit as f64 {
        Verdict::absent(
            "NoLongTransaction",
            format!("no transaction has been open for {limit} s"),
        )
    } else {
        Verdict::present(
            "TransactionOpenTooLong",
            format!(
                "a transaction has been open for {limit} s or more; it holds back vacuum and \
                 may hold locks (see pg_stat_activity.xact_start)"
            ),
        )
    }
}

/// `XidWraparoundRisk` from a reading: the largest `age(datfrozenxid)`.
pub fn xid_wraparound(reading: &DatabaseReading) -> Verdict {
    if !reading.is_up() {
        return Verdict::down();
    }
    let Some(age) = reading.xid_age else {
        return Verdict::unknown(NOT_MEASURED, "the XID age was not measured");
    };
    let limit = thresholds::XID_AGE;
    if age < limit {
        Verdict::absent(
            "XidAgeNormal",
            format!("every database's XID age is below {limit}"),
        )
    } else {
        Verdict::present(
            "XidAgeHigh",
            format!(
                "a database's XID age is {limit} or more, half way to the 2^31 at which the \
                 server stops accepting writes; freezing is failing (check autovacuum, long \
                 transactions and replication slots, then VACUUM FREEZE)"
            ),
        )
    }
}

/// `BackupOverdue` from the backup deadline and the reconcile's clock.
pub fn backup_overdue(deadline: Option<Timestamp>, now: Timestamp) -> Verdict {
    match deadline {
        None => Verdict::absent(
            "NotScheduled",
            "no backup schedule is active (spec.backup.schedule unset, invalid or suspended): \
             no backup is expected",
        ),
        Some(deadline) if now < deadline => Verdict::absent(
            "BackupRecent",
            format!("backups are on schedule: the next one is due to succeed by {deadline}"),
        ),
        Some(deadline) => Verdict::present(
            "NoRecentBackup",
            format!(
                "no backup succeeded by {deadline}, the schedule's deadline: a slot passed \
                 without a successful backup (see the PostgresDBBackups and their Jobs)"
            ),
        ),
    }
}

/// A symptom's condition: the verdict on the latest reading; without a
/// reading, what the previous measurement concluded (as the status
/// `previous` has it), or Unknown when there never was one.
pub fn assess_symptom(previous: &[Condition], type_: &str, verdict: Option<Verdict>) -> Assessment {
    if let Some(verdict) = verdict {
        return verdict.assessment();
    }
    match previous.iter().find(|c| c.type_ == type_) {
        Some(condition) => {
            let kept = Assessment::new(
                ConditionStatus::parse(&condition.status),
                &condition.reason,
                condition.message.clone(),
            );
            if kept.is_true() {
                kept.warn()
            } else {
                kept.announce()
            }
        }
        None => Verdict::unknown(
            NOT_MEASURED,
            "the operator has not measured the database yet",
        )
        .assessment(),
    }
}

/// A capacity in bytes as a quantity, to a tenth of the largest binary
/// unit it reaches ("1Gi", "9.8Gi"): for reading, not for arithmetic.
pub fn capacity_quantity(bytes: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    for (suffix, shift) in UNITS {
        let unit = 1u128 << shift;
        if u128::from(bytes) >= unit {
            let tenths = (u128::from(bytes) * 10 + unit / 2) / unit;
            return match tenths % 10 {
                0 => format!("{}{suffix}", tenths / 10),
                tenth => format!("{}.{tenth}{suffix}", tenths / 10),
            };
        }
    }
    bytes.to_string()
}

/// `status.insights`: the reading's key figures, quantised, and when the
/// last successful backup completed. Without a reading the figures of the
/// previous status are kept (a restarted operator has not measured yet);
/// `None` when there is nothing to say.
pub fn insights(
    reading: Option<&DatabaseReading>,
    previous: Option<&InsightsStatus>,
    last_backup: Option<Time>,
) -> Option<InsightsStatus> {
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut insights = match reading {
        Some(reading) => {
            let summary = reading.summary();
            InsightsStatus {
                connections: summary.up.then(|| as_i64(summary.connections)),
                max_connections: summary
                    .usable_connections
                    .filter(|_| summary.up)
                    .map(as_i64),
                storage_used_percent: summary.volume_used_percent.map(as_i64),
                storage_capacity: summary.volume_capacity_bytes.map(capacity_quantity),
                last_backup_time: None,
            }
        }
        None => previous.cloned().unwrap_or_default(),
    };
    insights.last_backup_time = last_backup;
    (insights != InsightsStatus::default()).then_some(insights)
}

/// The symptoms capability.
pub struct Symptoms;

impl Capability for Symptoms {
    fn name(&self) -> &'static str {
        "symptoms"
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        let previous = db.status.as_ref();
        let conditions = previous
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let reading = observed.reading();
        let measured = [
            (CONNECTIONS_SATURATED, reading.map(connections)),
            (STORAGE_NEARLY_FULL, reading.map(storage)),
            (LONG_RUNNING_TRANSACTION, reading.map(long_transaction)),
            (XID_WRAPAROUND_RISK, reading.map(xid_wraparound)),
        ];
        for (type_, verdict) in measured {
            status
                .conditions
                .set(type_, assess_symptom(conditions, type_, verdict));
        }
        // Level 3's backups capability has filled status.backup in this
        // reconcile already: the deadline follows the backup it names.
        let last_success = status
            .fields
            .backup
            .as_ref()
            .and_then(|b| b.last_successful_at.clone());
        let deadline = thresholds::backup_deadline_with(db, last_success.as_ref().map(|t| t.0));
        status.conditions.set(
            BACKUP_OVERDUE,
            backup_overdue(deadline, status.now).assessment(),
        );
        if let Some(deadline) = deadline.filter(|d| *d > status.now) {
            status.wake_at(deadline);
        }
        status.fields.insights = insights(
            reading,
            previous.and_then(|s| s.insights.as_ref()),
            last_success,
        );
    }
}

#[cfg(test)]
mod tests;
