//! A sample of the five metrics from two readings of Level 4's collector:
//! the server's cumulative counters (transactions, rollbacks, deadlocks,
//! statement calls and time) are kept in the baseline from one sample to
//! the next, and the rates are their differences over the time between
//! the two readings; active connections are read as they are.
//!
//! Where it stops: the counters are PostgreSQL's cumulative statistics,
//! which a backend publishes when it flushes them, not at each commit: a
//! busy backend of PostgreSQL 15 was seen to publish its transactions
//! about a minute apart under a steady load (and every one of them when it
//! exits), so transactions per second follow a load arriving on
//! long-lived connections late and in steps; active connections, read
//! from `pg_stat_activity` as they are, follow it at once. Counters that
//! went backwards (statistics reset, a
//! restarted server, another pod measured after a failover) give no rates
//! for that sample, only new counters to start from; a server that did not
//! answer gives no sample.

use serde::{Deserialize, Serialize};
use shared::autopilot::anomaly::Metric;
use shared::readings::DatabaseReading;

use super::model::Sample;

/// The cumulative counters of one reading, summed over the server's
/// databases.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// When the reading was taken (ms since the epoch).
    pub at: i64,
    /// The pod measured.
    pub pod: String,
    /// `xact_commit`.
    pub commits: u64,
    /// `xact_rollback`.
    pub rollbacks: u64,
    /// `deadlocks`.
    pub deadlocks: u64,
    /// `pg_stat_statements`' calls, when it is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    /// `pg_stat_statements`' total execution time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_milliseconds: Option<f64>,
}

impl Counters {
    /// The counters of `reading`; `None` when the server did not answer.
    pub fn of(reading: &DatabaseReading) -> Option<Self> {
        if !reading.is_up() {
            return None;
        }
        let sum = |field: fn(&shared::readings::DatabaseStats) -> u64| {
            reading.databases.values().map(field).sum::<u64>()
        };
        Some(Self {
            at: reading.at.as_millisecond(),
            pod: reading.pod.clone(),
            commits: sum(|d| d.xact_commit),
            rollbacks: sum(|d| d.xact_rollback),
            deadlocks: sum(|d| d.deadlocks),
            calls: reading.statements.as_ref().map(|s| s.calls),
            execution_milliseconds: reading
                .statements
                .as_ref()
                .map(|s| s.total_execution_milliseconds),
        })
    }

    /// Whether `self` continues `earlier`: the same pod, later, and no
    /// counter went backwards.
    fn continues(&self, earlier: &Counters) -> bool {
        self.pod == earlier.pod
            && self.at > earlier.at
            && self.commits >= earlier.commits
            && self.rollbacks >= earlier.rollbacks
            && self.deadlocks >= earlier.deadlocks
    }
}

/// The sample between the counters `earlier` and the reading `now` (whose
/// counters are `current`), or `None` when they do not continue each
/// other.
pub fn between(
    earlier: &Counters,
    current: &Counters,
    reading: &DatabaseReading,
) -> Option<Sample> {
    if !current.continues(earlier) {
        return None;
    }
    let seconds = (current.at - earlier.at) as f64 / 1000.0;
    let commits = (current.commits - earlier.commits) as f64;
    let rollbacks = (current.rollbacks - earlier.rollbacks) as f64;
    let ended = commits + rollbacks;
    let mut sample = Sample {
        at: current.at,
        ..Default::default()
    };
    let mut put = |metric: Metric, value: f64| {
        if value.is_finite() {
            sample.values.insert(metric, value);
        }
    };
    put(Metric::TransactionsPerSecond, ended / seconds);
    put(
        Metric::ActiveConnections,
        reading.connections.get("active").copied().unwrap_or(0) as f64,
    );
    put(
        Metric::DeadlocksPerMinute,
        (current.deadlocks - earlier.deadlocks) as f64 * 60.0 / seconds,
    );
    if ended > 0.0 {
        put(Metric::RollbackRatio, rollbacks / ended);
    }
    if let (Some(calls), Some(time), Some(earlier_calls), Some(earlier_time)) = (
        current.calls,
        current.execution_milliseconds,
        earlier.calls,
        earlier.execution_milliseconds,
    ) && calls > earlier_calls
        && time >= earlier_time
    {
        put(
            Metric::MeanQueryMilliseconds,
            (time - earlier_time) / (calls - earlier_calls) as f64,
        );
    }
    Some(sample)
}
