//! What the operator last measured of each database's health, between
//! reconciles.
//!
//! From Level 4 on, a collector (a companion controller) asks every
//! database for its health figures on an interval (connections, the oldest
//! transaction, XID age, sizes) and reads its volume's usage from the
//! kubelet's stats. Each measurement is a [`DatabaseReading`], kept here,
//! in memory, until the next one replaces it. Two readers use it:
//! - the `/metrics` endpoint, which encodes the readings as series, so a
//!   scrape never reaches a database or the API server;
//! - the reconcile, which finds its database's reading in
//!   [`crate::capability::Observed::reading`], so conditions and
//!   `status.insights` stay pure functions of what was observed.
//!
//! A reading is an observation, not truth: a restarted operator has none
//! until the collector measures again, and the capabilities treat a
//! missing reading as "unknown". The reconcile of a database is triggered
//! when its reading's [`DatabaseReading::summary`] changes (a symptom
//! appears or clears), never on every measurement, so a database at rest
//! is not reconciled, and nothing is written, however often it is measured.
//! Readings of a database that is gone are forgotten ([`Readings::retain`]),
//! so its series disappear.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::api::PostgresDB;

/// One measurement of one database's server and volume.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatabaseReading {
    /// When it was taken.
    pub at: jiff::Timestamp,
    /// The pod measured.
    pub pod: String,
    /// Whether the server answered; when it did not, why (for the log and
    /// status), and every SQL figure below is `None`.
    pub down: Option<String>,
    /// `server_version` as the server reports it ("15.8").
    pub server_version: Option<String>,
    /// `server_version_num` (150008).
    pub server_version_num: Option<i64>,
    /// Client backends by `pg_stat_activity.state` ("active", "idle", ...),
    /// the operator's own sessions left out.
    pub connections: BTreeMap<String, u64>,
    /// `max_connections`.
    pub max_connections: Option<u64>,
    /// `superuser_reserved_connections`, which clients cannot use.
    pub reserved_connections: Option<u64>,
    /// Per database (`datname`): commits, rollbacks, deadlocks and size.
    pub databases: BTreeMap<String, DatabaseStats>,
    /// Age of the oldest open transaction, in seconds (0 when none is open).
    pub oldest_transaction_seconds: Option<f64>,
    /// The largest `age(datfrozenxid)`: transactions left before
    /// wraparound is 2^31 minus this.
    pub xid_age: Option<u64>,
    /// Bytes in `pg_wal`.
    pub wal_bytes: Option<u64>,
    /// The data volume's used bytes, from the kubelet's stats.
    pub volume_used_bytes: Option<u64>,
    /// The data volume's capacity in bytes, from the kubelet's stats.
    pub volume_capacity_bytes: Option<u64>,
    /// Replication lag per replica pod, in seconds (Level 5 fills it in).
    pub replication_lag_seconds: BTreeMap<String, f64>,
    /// When the last successful backup completed (from `status.backup`).
    pub last_backup_time: Option<jiff::Timestamp>,
    /// Whether the latest finished backup failed (from `status.backup`).
    pub last_backup_failed: Option<bool>,
    /// The instant after which, without a new successful backup, backups
    /// are overdue (None without a schedule): the same instant the
    /// BackupOverdue condition uses.
    pub backup_deadline: Option<jiff::Timestamp>,
    /// `pg_stat_statements`' cumulative calls and execution time, when the
    /// extension is installed in the database the operator connects to and
    /// loaded (`shared_preload_libraries`); `None` otherwise.
    pub statements: Option<StatementStats>,
    /// The metrics Level 5's anomaly detection reports deviating (from
    /// `status.autopilot.anomaly`, as the collector last saw the status):
    /// `None` when the database has no `spec.anomalyDetection`.
    pub anomalies: Option<Vec<String>>,
}

/// `pg_stat_statements`' totals over every statement it tracks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatementStats {
    /// `sum(calls)`.
    pub calls: u64,
    /// `sum(total_exec_time)`, in milliseconds.
    pub total_execution_milliseconds: f64,
}

/// Counters and size of one database in the server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatabaseStats {
    /// `pg_stat_database.xact_commit`.
    pub xact_commit: u64,
    /// `pg_stat_database.xact_rollback`.
    pub xact_rollback: u64,
    /// `pg_stat_database.deadlocks`.
    pub deadlocks: u64,
    /// `pg_database_size`.
    pub size_bytes: u64,
}

/// The coarse figures a reconcile acts on, quantised so that a database at
/// rest has the same summary from one measurement to the next: whole
/// percents, whole minutes. A reconcile is triggered when it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReadingSummary {
    /// Whether the server answered.
    pub up: bool,
    /// Client connections, all states.
    pub connections: u64,
    /// Connections clients may use (`max_connections` minus the reserved).
    pub usable_connections: Option<u64>,
    /// Volume used, in whole percent of its capacity.
    pub volume_used_percent: Option<u64>,
    /// Volume capacity in bytes.
    pub volume_capacity_bytes: Option<u64>,
    /// Oldest open transaction, in whole minutes.
    pub oldest_transaction_minutes: Option<u64>,
    /// XID age in whole percent of 2^31.
    pub xid_age_percent: Option<u64>,
}

impl DatabaseReading {
    /// A reading of a server that did not answer.
    pub fn down(at: jiff::Timestamp, pod: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            at,
            pod: pod.into(),
            down: Some(why.into()),
            ..Default::default()
        }
    }

    /// Whether the server answered.
    pub fn is_up(&self) -> bool {
        self.down.is_none()
    }

    /// Client connections in every state.
    pub fn total_connections(&self) -> u64 {
        self.connections.values().sum()
    }

    /// The quantised figures a reconcile acts on.
    pub fn summary(&self) -> ReadingSummary {
        let percent =
            |part: u64, whole: u64| part.saturating_mul(100).checked_div(whole).unwrap_or(0);
        ReadingSummary {
            up: self.is_up(),
            connections: self.total_connections(),
            usable_connections: self
                .max_connections
                .map(|max| max.saturating_sub(self.reserved_connections.unwrap_or(0))),
            volume_used_percent: self
                .volume_used_bytes
                .zip(self.volume_capacity_bytes)
                .map(|(used, capacity)| percent(used, capacity)),
            volume_capacity_bytes: self.volume_capacity_bytes,
            oldest_transaction_minutes: self
                .oldest_transaction_seconds
                .map(|seconds| (seconds.max(0.0) / 60.0) as u64),
            xid_age_percent: self.xid_age.map(|age| percent(age, 1 << 31)),
        }
    }
}

/// A database's key in [`Readings`]: namespace and name.
pub type DatabaseKey = (String, String);

/// The latest reading of every database, shared by the collector, the
/// `/metrics` endpoint and the reconcile.
#[derive(Debug)]
pub struct Readings {
    latest: RwLock<HashMap<DatabaseKey, DatabaseReading>>,
    changed: mpsc::UnboundedSender<ObjectRef<PostgresDB>>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<PostgresDB>>>>,
}

impl Default for Readings {
    fn default() -> Self {
        let (changed, receiver) = mpsc::unbounded_channel();
        Self {
            latest: RwLock::default(),
            changed,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl Readings {
    /// Keeps `reading` as the latest of the database `key`; when its
    /// summary differs from the previous reading's (or there was none),
    /// the database's reconcile is triggered.
    pub fn record(&self, key: DatabaseKey, reading: DatabaseReading) {
        let summary = reading.summary();
        let previous = {
            let mut latest = self
                .latest
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            latest.insert(key.clone(), reading)
        };
        if previous.map(|p| p.summary()) != Some(summary) {
            // Nobody listening (no controller running) is not an error.
            let _ = self.changed.send(ObjectRef::new(&key.1).within(&key.0));
        }
    }

    /// The latest reading of the database `key`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<DatabaseReading> {
        self.latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every latest reading, by database (for encoding series).
    pub fn all(&self) -> Vec<(DatabaseKey, DatabaseReading)> {
        let latest = self
            .latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<_> = latest.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Forgets the readings of databases for which `keep` is false (those
    /// that no longer exist), so their series disappear.
    pub fn retain(&self, mut keep: impl FnMut(&DatabaseKey) -> bool) {
        self.latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|key, _| keep(key));
    }

    /// The stream of databases whose summary changed, for the controller
    /// to reconcile; taken once (later calls get `None`).
    pub fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<ObjectRef<PostgresDB>>> {
        self.receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(connections: u64, used: u64) -> DatabaseReading {
        DatabaseReading {
            pod: "orders-0".into(),
            connections: [("idle".to_string(), connections)].into(),
            max_connections: Some(100),
            reserved_connections: Some(3),
            volume_used_bytes: Some(used),
            volume_capacity_bytes: Some(1000),
            ..Default::default()
        }
    }

    fn key() -> DatabaseKey {
        ("shop".into(), "orders".into())
    }

    #[test]
    fn a_database_is_reconciled_when_its_summary_changes_and_not_on_every_measurement() {
        let readings = Readings::default();
        let mut changes = readings.take_changes().expect("first take");
        readings.record(key(), reading(2, 100));
        assert_eq!(
            changes.try_recv().ok(),
            Some(ObjectRef::new("orders").within("shop"))
        );
        // A few bytes more on the volume: the same whole percent.
        readings.record(key(), reading(2, 104));
        assert!(
            changes.try_recv().is_err(),
            "a database at rest was triggered"
        );
        readings.record(key(), reading(3, 104));
        assert!(
            changes.try_recv().is_ok(),
            "a new connection was not noticed"
        );
        readings.record(key(), reading(3, 900));
        assert!(
            changes.try_recv().is_ok(),
            "a fuller volume was not noticed"
        );
    }

    #[test]
    fn the_readings_of_a_database_that_is_gone_are_forgotten() {
        let readings = Readings::default();
        readings.record(key(), reading(1, 1));
        readings.record(("shop".into(), "gone".into()), reading(1, 1));
        readings.retain(|(_, name)| name != "gone");
        assert!(readings.get("shop", "gone").is_none());
        assert!(readings.get("shop", "orders").is_some());
        assert_eq!(readings.all().len(), 1);
    }

    #[test]
    fn usable_connections_leave_out_the_reserved_ones() {
        assert_eq!(reading(1, 1).summary().usable_connections, Some(97));
        assert_eq!(reading(1, 500).summary().volume_used_percent, Some(50));
    }
}
