//! The operator's metrics, served at `/metrics` from Level 4 on.
//!
//! Counters are kept by the core as it works (reconciles, applies, SQL
//! probes) and by companions (backups); the databases' own series come from
//! their latest [`crate::readings::DatabaseReading`]s, encoded by the
//! level's collector ([`crate::capability::Insights`]) at scrape time. A
//! scrape reads memory only: it never calls the API server or a database,
//! so its cost does not depend on how slow they are.
//!
//! The text is OpenMetrics (prometheus-client's encoder); names follow
//! Prometheus conventions: a `pgdb_operator_` prefix for the operator's
//! own series, base units in the name, `_total` on counters.
//!
//! Levels 1 to 3 serve no `/metrics`: the lesson of Level 4 is what the
//! operator tells a monitoring system.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::readings::Readings;

/// Labels of the reconcile counters and histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabels {
    /// The level's binary name ("level4-insights").
    pub level: String,
}

/// Labels of the reconcile failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The level's binary name.
    pub level: String,
    /// What failed, as [`crate::error::Error::reason`] names it.
    pub reason: String,
}

/// Labels of the applied-objects counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppliedLabels {
    /// The object's kind ("StatefulSet").
    pub kind: String,
    /// "create", "update" or "repair".
    pub change: String,
}

/// Labels of the counters by result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// "ok"/"error" for SQL probes, "completed"/"failed" for backups.
    pub result: String,
}

/// The operator's own counters.
#[derive(Clone, Debug)]
pub struct OperatorMetrics {
    reconciles: Family<LevelLabels, Counter>,
    reconcile_failures: Family<FailureLabels, Counter>,
    reconcile_duration: Family<LevelLabels, Histogram, fn() -> Histogram>,
    applied: Family<AppliedLabels, Counter>,
    sql_probes: Family<ResultLabels, Counter>,
    backups: Family<ResultLabels, Counter>,
}

fn reconcile_histogram() -> Histogram {
    // 5 ms to about 40 s: a reconcile at rest is a few reads; one that
    // waits on SQL or a slow API server takes seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 14,
    ))
}

impl OperatorMetrics {
    fn new() -> Self {
        Self {
            reconciles: Family::default(),
            reconcile_failures: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            applied: Family::default(),
            sql_probes: Family::default(),
            backups: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "pgdb_operator_reconciles",
            "Reconciles of PostgresDB objects run, by level",
            self.reconciles.clone(),
        );
        registry.register(
            "pgdb_operator_reconcile_failures",
            "Reconciles that failed, by level and reason",
            self.reconcile_failures.clone(),
        );
        registry.register_with_unit(
            "pgdb_operator_reconcile_duration",
            "How long reconciles took, by level",
            prometheus_client::registry::Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        registry.register(
            "pgdb_operator_applied_objects",
            "Objects the operator wrote, by kind and change (create, update, repair)",
            self.applied.clone(),
        );
        registry.register(
            "pgdb_operator_sql_probes",
            "Questions asked of databases by reconciles, by result (ok, error)",
            self.sql_probes.clone(),
        );
        registry.register(
            "pgdb_operator_backups",
            "Backups the backup controller finished, by result (completed, failed)",
            self.backups.clone(),
        );
    }

    /// Creates the series every operator of `level` has, at zero, so that
    /// a rate or an increase over them is defined from the first scrape,
    /// before anything happened (failures by reason appear with the first
    /// failure: their reasons are not known in advance).
    pub fn initialise(&self, level: &str) {
        let labels = LevelLabels {
            level: level.to_string(),
        };
        // The guards are dropped at once: creating the series is the point.
        drop(self.reconciles.get_or_create(&labels));
        drop(self.reconcile_duration.get_or_create(&labels));
        for result in ["ok", "error"] {
            drop(self.sql_probes.get_or_create(&ResultLabels {
                result: result.to_string(),
            }));
        }
        for result in ["completed", "failed"] {
            drop(self.backups.get_or_create(&ResultLabels {
                result: result.to_string(),
            }));
        }
    }

    /// Counts one reconcile of `level` that took `seconds`; `failure` is
    /// the reason when it failed.
    pub fn reconciled(&self, level: &str, seconds: f64, failure: Option<&str>) {
        let labels = LevelLabels {
            level: level.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(seconds);
        if let Some(reason) = failure {
            self.reconcile_failures
                .get_or_create(&FailureLabels {
                    level: level.to_string(),
                    reason: reason.to_string(),
                })
                .inc();
        }
    }

    /// Counts one object written: `change` is "create", "update" or "repair".
    pub fn applied(&self, kind: &str, change: &str) {
        self.applied
            .get_or_create(&AppliedLabels {
                kind: kind.to_string(),
                change: change.to_string(),
            })
            .inc();
    }

    /// Counts one SQL probe answered (`ok`) or not.
    pub fn probed(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.sql_probes
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts one backup finished: `result` is "completed" or "failed".
    pub fn backup_finished(&self, result: &str) {
        self.backups
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }
}

/// Builds the collector that encodes the databases' readings as series.
pub type DatabaseSeries = fn(Arc<Readings>) -> Box<dyn prometheus_client::collector::Collector>;

/// Everything `/metrics` serves: the operator's counters, its process, and
/// the databases' readings as the level encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The operator's own counters, for the core and companions to count.
    pub operator: OperatorMetrics,
    /// The databases' latest readings, for the collector to fill.
    pub readings: Arc<Readings>,
}

impl Metrics {
    /// The metrics of a level whose databases' series `database_series`
    /// encodes from the readings.
    pub fn new(database_series: Option<DatabaseSeries>) -> Self {
        let mut registry = Registry::default();
        let operator = OperatorMetrics::new();
        operator.register(&mut registry);
        registry.register_collector(Box::new(crate::process::ProcessCollector));
        let readings = Arc::new(Readings::default());
        if let Some(series) = database_series {
            registry.register_collector(series(readings.clone()));
        }
        Self {
            registry,
            operator,
            readings,
        }
    }

    /// The OpenMetrics text of every series.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_s_series_exist_at_zero_before_anything_happened() {
        let metrics = Metrics::new(None);
        metrics.operator.initialise("level4-insights");
        let text = metrics.encode().expect("encodes");
        for line in [
            "pgdb_operator_reconciles_total{level=\"level4-insights\"} 0",
            "pgdb_operator_reconcile_duration_seconds_count{level=\"level4-insights\"} 0",
            "pgdb_operator_sql_probes_total{result=\"ok\"} 0",
            "pgdb_operator_sql_probes_total{result=\"error\"} 0",
            "pgdb_operator_backups_total{result=\"completed\"} 0",
            "pgdb_operator_backups_total{result=\"failed\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("pgdb_operator_reconcile_failures_total{"),
            "{text}"
        );
    }

    #[test]
    fn the_process_series_are_served_beside_the_operator_s() {
        let text = Metrics::new(None).encode().expect("encodes");
        if cfg!(target_os = "linux") {
            assert!(text.contains("process_cpu_seconds_total "), "{text}");
            assert!(text.contains("process_resident_memory_bytes "), "{text}");
        }
    }

    #[test]
    fn counters_are_named_with_total_and_durations_in_seconds() {
        let metrics = Metrics::new(None);
        metrics.operator.reconciled("level4-insights", 0.02, None);
        metrics
            .operator
            .reconciled("level4-insights", 0.5, Some("Kube"));
        metrics.operator.applied("StatefulSet", "create");
        metrics.operator.probed(false);
        metrics.operator.backup_finished("failed");
        let text = metrics.encode().expect("encodes");
        for line in [
            "pgdb_operator_reconciles_total{level=\"level4-insights\"} 2",
            "pgdb_operator_reconcile_failures_total{level=\"level4-insights\",reason=\"Kube\"} 1",
            "pgdb_operator_reconcile_duration_seconds_count{level=\"level4-insights\"} 2",
            "pgdb_operator_applied_objects_total{kind=\"StatefulSet\",change=\"create\"} 1",
            "pgdb_operator_sql_probes_total{result=\"error\"} 1",
            "pgdb_operator_backups_total{result=\"failed\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
