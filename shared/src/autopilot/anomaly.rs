//! `spec.anomalyDetection` and `status.autopilot.anomaly`: a baseline the
//! operator learns of each database, and the deviations from it.
//!
//! The five metrics learned are named by [`Metric`]; their names are the
//! `metric` label of `pgdb_database_anomaly` on `/metrics` and the
//! `metric` of a [`Deviation`]. The model itself is Level 5's
//! (`level5-autopilot`, `autopilot::anomaly`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the baseline is learned and when a deviation counts (Level 5).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnomalyDetectionSpec {
    /// Seconds between two samples the baseline learns from.
    #[serde(default = "AnomalyDetectionSpec::default_interval")]
    #[schemars(range(min = 5, max = 3600))]
    pub interval_seconds: u32,
    /// Samples learned before any verdict (the warm-up).
    #[serde(default = "AnomalyDetectionSpec::default_warm_up")]
    #[schemars(range(min = 5, max = 10080))]
    pub warm_up_samples: u32,
    /// How far from the learned mean a sample must be, in standard
    /// deviations, to deviate.
    #[serde(default = "AnomalyDetectionSpec::default_threshold")]
    #[schemars(range(min = 2, max = 10))]
    pub threshold_sigmas: u32,
    /// Consecutive deviating samples before the `Anomaly` condition is set.
    #[serde(default = "AnomalyDetectionSpec::default_sustain")]
    #[schemars(range(min = 1, max = 100))]
    pub sustain_samples: u32,
}

impl AnomalyDetectionSpec {
    fn default_interval() -> u32 {
        60
    }
    fn default_warm_up() -> u32 {
        60
    }
    fn default_threshold() -> u32 {
        4
    }
    fn default_sustain() -> u32 {
        3
    }
}

/// A metric the baseline learns, each measured by the operator (Level 4's
/// collector) on the primary.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    /// Commits and rollbacks per second, every database of the server.
    TransactionsPerSecond,
    /// Client connections running a statement (`state = 'active'`).
    ActiveConnections,
    /// Mean execution time of the statements run since the previous
    /// sample, in milliseconds (from `pg_stat_statements`, when the
    /// extension is installed and loaded).
    MeanQueryMilliseconds,
    /// Deadlocks detected per minute.
    DeadlocksPerMinute,
    /// Rollbacks over all transactions ended since the previous sample
    /// (0 to 1).
    RollbackRatio,
}

impl Metric {
    /// Every metric, in the order they are reported.
    pub const ALL: [Metric; 5] = [
        Metric::TransactionsPerSecond,
        Metric::ActiveConnections,
        Metric::MeanQueryMilliseconds,
        Metric::DeadlocksPerMinute,
        Metric::RollbackRatio,
    ];

    /// The metric's name, as status and `/metrics` spell it
    /// ("transactionsPerSecond").
    pub fn name(self) -> &'static str {
        match self {
            Metric::TransactionsPerSecond => "transactionsPerSecond",
            Metric::ActiveConnections => "activeConnections",
            Metric::MeanQueryMilliseconds => "meanQueryMilliseconds",
            Metric::DeadlocksPerMinute => "deadlocksPerMinute",
            Metric::RollbackRatio => "rollbackRatio",
        }
    }

    /// The metric named `name`, if there is one.
    pub fn named(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The baseline's state and the deviations seen (the baseline itself is
/// kept in the ConfigMap `<name>-baseline`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnomalyStatus {
    /// Whether the warm-up is over and verdicts are given.
    pub warm: bool,
    /// Whether a week of history exists, so each sample is judged against
    /// what was learned at the same hour of the week (UTC) rather than
    /// against the recent past alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_hour_of_week: bool,
    /// The metrics deviating now, beyond the sustain count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deviations: Vec<Deviation>,
}

/// A metric outside its expected range.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deviation {
    /// The metric ("transactionsPerSecond", "activeConnections",
    /// "meanQueryMilliseconds", "deadlocksPerMinute", "rollbackRatio").
    pub metric: String,
    /// The value observed, as text (rounded).
    pub observed: String,
    /// The range expected, as text ("12.0 to 30.5").
    pub expected: String,
    /// Since when it deviates.
    pub since: Time,
}
