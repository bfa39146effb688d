//! The databases' readings as Prometheus series, encoded on each scrape.
//!
//! `/metrics` registers [`DatabaseSeries`] beside the operator's own
//! counters; on every scrape it encodes the latest
//! [`DatabaseReading`] of every database kept in [`Readings`], so a scrape
//! reads memory only and costs the same whether the databases answer or
//! not. The names are the series contract of Level 4 (the alerts, the
//! dashboard and the end-to-end tests use them):
//!
//! | series | type | labels beyond `namespace`, `postgresdb`, `pod` |
//! |---|---|---|
//! | `pgdb_database_up` | gauge 1/0 | |
//! | `pgdb_database_info` | gauge 1 | `version` |
//! | `pgdb_database_server_version_num` | gauge | |
//! | `pgdb_database_connections` | gauge | `state` |
//! | `pgdb_database_max_connections` | gauge | |
//! | `pgdb_database_reserved_connections` | gauge | |
//! | `pgdb_database_transactions_committed_total` | counter | `datname` |
//! | `pgdb_database_transactions_rolled_back_total` | counter | `datname` |
//! | `pgdb_database_deadlocks_total` | counter | `datname` |
//! | `pgdb_database_size_bytes` | gauge | `datname` |
//! | `pgdb_database_oldest_transaction_age_seconds` | gauge | |
//! | `pgdb_database_xid_age` | gauge | |
//! | `pgdb_database_wal_bytes` | gauge | |
//! | `pgdb_database_volume_used_bytes` | gauge | |
//! | `pgdb_database_volume_capacity_bytes` | gauge | |
//! | `pgdb_database_last_backup_timestamp_seconds` | gauge | |
//! | `pgdb_database_last_backup_failed` | gauge 1/0 | |
//! | `pgdb_database_backup_deadline_timestamp_seconds` | gauge | |
//! | `pgdb_database_replication_lag_seconds` | gauge | `replica` |
//! | `pgdb_database_anomaly` | gauge 1/0 | `metric` |
//! | `pgdb_database_last_measurement_timestamp_seconds` | gauge | |
//!
//! Names follow Prometheus conventions: the base unit in the name (the
//! encoder appends it from the unit given, and writes a `# UNIT` line),
//! `_total` on counters. A figure that was not measured has no sample (a
//! server that did not answer has only `up 0`, its volume and backup
//! series); a database that is gone has none at all, since its reading is
//! forgotten ([`Readings::retain`]).
//!
//! The `namespace` and `pod` labels name the database, not the operator
//! that exports them: a scrape job needs `honor_labels: true` (the
//! ServiceMonitor's `honorLabels`) for them to win over the target's.
//!
//! Where it stops: it encodes what was measured; measuring is the
//! collector's ([`super::collector`]).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use shared::autopilot::anomaly::Metric;
use shared::readings::{DatabaseKey, DatabaseReading, Readings};

/// Encodes every database's latest reading on each scrape.
#[derive(Debug)]
pub struct DatabaseSeries(Arc<Readings>);

/// The collector `/metrics` registers for Level 4.
pub fn database_series(readings: Arc<Readings>) -> Box<dyn Collector> {
    Box::new(DatabaseSeries(readings))
}

/// One sample: extra labels and a value.
type Sample = (Vec<(&'static str, String)>, Value);

/// A sample's value.
#[derive(Clone, Copy, Debug)]
enum Value {
    Gauge(f64),
    Counter(u64),
}

/// One family of the contract: its name without unit or `_total`, help,
/// unit, type, and the samples of one reading.
struct Family {
    name: &'static str,
    presence: Presence,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: fn(&DatabaseReading) -> Vec<Sample>,
}

fn gauge(value: Option<f64>) -> Vec<Sample> {
    value
        .map(|v| vec![(Vec::new(), Value::Gauge(v))])
        .unwrap_or_default()
}

fn seconds(at: Option<jiff::Timestamp>) -> Option<f64> {
    at.map(|t| t.as_millisecond() as f64 / 1000.0)
}

fn flag(yes: bool) -> f64 {
    if yes { 1.0 } else { 0.0 }
}

fn up(r: &DatabaseReading) -> Option<&DatabaseReading> {
    r.is_up().then_some(r)
}

fn per_database(
    r: &DatabaseReading,
    value: fn(&shared::readings::DatabaseStats) -> Value,
) -> Vec<Sample> {
    let Some(r) = up(r) else {
        return Vec::new();
    };
    r.databases
        .iter()
        .map(|(datname, stats)| (vec![("datname", datname.clone())], value(stats)))
        .collect()
}

/// Whether a database whose server answered its measurement has a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Always.
    Always,
    /// Only with what it describes: a backup taken, a schedule, a replica.
    WhenDescribed,
}

/// Every database series by the name a query uses (the unit's suffix, a
/// counter's `_total`), and when a measured database has it: the one list
/// the dashboard's and the suite's checks read.
pub fn sample_names() -> Vec<(String, Presence)> {
    FAMILIES
        .iter()
        .map(|family| {
            let mut name = family.name.to_string();
            if let Some(unit) = &family.unit {
                name.push('_');
                name.push_str(unit.as_str());
            }
            if matches!(family.kind, MetricType::Counter) {
                name.push_str("_total");
            }
            (name, family.presence)
        })
        .collect()
}

/// The contract's families, in the order they are encoded.
const FAMILIES: &[Family] = &[
    Family {
        name: "pgdb_database_up",
        presence: Presence::Always,
        help: "Whether the database's server answered its last measurement (1) or not (0)",
        unit: None,
        kind: MetricType::Gauge,
        samples: |r| gauge(Some(flag(r.is_up()))),
    },
    Family {
        name: "pgdb_database_info",
        presence: Presence::Always,
        help: "The server's version (server_version), as a label; always 1",
        unit: None,
        kind: MetricType::Gauge,
        samples: |r| {
            up(r)
                .and_then(|r| r.server_version.clone())
                .map(|version| vec![(vec![("version", version)], Value::Gauge(1.0))])
                .unwrap_or_default()
        },
    },
    Family {
        name: "pgdb_database_server_version_num",
        presence: Presence::Always,
        help: "The server's version as a number (server_version_num, 150008 for 15.8)",
        unit: None,
        kind: MetricType::Gauge,
        samples: |r| gauge(up(r).and_then(|r| r.server_version_num).map(|n| n as f64)),
    },
    Family {
        name: "pgdb_database_connections",
        presence: Presence::Always,
        help: "Client connections by state (pg_stat_activity.state), the operator's own left out",
        unit: None,
        kind: MetricType::Gauge,
        samples: |r| {
            let Some(r) = up(r) else {
                return Vec::new();
            };
            r.connections
                .iter()
                .map(|(state, n)| (vec![("state", state.clone())], Value::Gauge(*n as f64)))
                .collect()
        },
    },
    Family {
        name: "pgdb_database_max_connections",
        presence: Presence::Always,
        help: "The server's max_connections",
        unit: None,
        kind: MetricType::Gauge,
        samples: |r| gauge(up(r).and_then(|r| r.max_connections).map(|n| n as f64)),
    },
    Family {
        name: "pgdb_database_reserved_connections",
        presence: Presence::Always,
        help: "Connections reserved for superusers (superuser_reserved_connections), which clients cannot use",
        unit: None,
        kind: MetricType::Gauge,
        samples: |r| gauge(up(r).and_then(|r| r.reserved_connections).map(|n| n as f64)),
    },
    Family {
        name: "pgdb_database_transactions_committed",
        presence: Presence::Always,
        help: "Transactions committed in each database (pg_stat_database.xact_commit)",
        unit: None,
        kind: MetricType::Counter,
        samples: |r| per_database(r, |s| Value::Counter(s.xact_commit)),
    },
    Family {
        name: "pgdb_database_transactions_rolled_back",
        presence: Presence::Always,
        help: "Transactions rolled back in each database (pg_stat_database.xact_rollback)",
        unit: None,
        kind: MetricType::Counter,
        samples: |r| per_database(r, |s| Value::Counter(s.xact_rollback)),
    },
    Family {
        name: "pgdb_database_deadlocks",
        presence: Presence::Always,
        help: "Deadlocks detected in each database (pg_stat_database.deadlocks)",
        unit: None,
        kind: MetricType::Counter,
        samples: |r| per_database(r, |s| Value::Counter(s.deadlocks)),
    },
    Family {
        name: "pgdb_database_size",
        presence: Presence::Always,
        help: "Size of each database (pg_database_size)",
        unit: Some(Unit::Bytes),
        kind: MetricType::Gauge,
        samples: |r| per_database(r, |s| Value::Gauge(s.size_bytes as f64)),
    },
    Family {
        name: "pgdb_database_oldest_transaction_age",
        presence: Presence::Always,
        help: "Age of the oldest open transaction of a client (0 when none is open)",
        unit: Some(Unit::Seconds),
        kind: MetricType::Gauge,
        samples: |r| gauge(up(r).and_then(|r| r.oldest_transaction_seconds)),
    },
    Family {
        name: "pgdb_database_xid_age",
        presence: Presence::Always,
        help: "Transactions since the oldest unfrozen XID of any database (max age(datfrozenxid)); wraparound comes at 2^31",
        unit: None,
        kind: MetricType::Gauge,
        samples: |r| gauge(up(r).and_then(|r| r.xid_age).map(|n| n as f64)),
    },
    Family {
        name: "pgdb_database_wal",
        presence: Presence::Always,
        help: "Bytes of write-ahead log in pg_wal",
        unit: Some(Unit::Bytes),
        kind: MetricType::Gauge,
        samples: |r| gauge(up(r).and_then(|r| r.wal_bytes).map(|n| n as f64)),
    },
    Family {
        name: "pgdb_database_volume_used",
        presence: Presence::Always,
        help: "Bytes used on the data volume, from the kubelet's volume stats",
        unit: Some(Unit::Bytes),
        kind: MetricType::Gauge,
        samples: |r| gauge(r.volume_used_bytes.map(|n| n as f64)),
    },
    Family {
        name: "pgdb_database_volume_capacity",
        presence: Presence::Always,
        help: "Capacity of the data volume, from the kubelet's volume stats",
        unit: Some(Unit::Bytes),
        kind: MetricType::Gauge,
        samples: |r| gauge(r.volume_capacity_bytes.map(|n| n as f64)),
    },
    Family {
        name: "pgdb_database_last_backup_timestamp",
        presence: Presence::WhenDescribed,
        help: "When the last successful backup completed, in Unix seconds",
        unit: Some(Unit::Seconds),
        kind: MetricType::Gauge,
        samples: |r| gauge(seconds(r.last_backup_time)),
    },
    Family {
        name: "pgdb_database_last_backup_failed",
        presence: Presence::WhenDescribed,
        help: "Whether the latest finished backup failed (1) or completed (0)",
        unit: None,
        kind: MetricType::Gauge,
        samples: |r| gauge(r.last_backup_failed.map(flag)),
    },
    Family {
        name: "pgdb_database_backup_deadline_timestamp",
        presence: Presence::WhenDescribed,
        help: "When, without a new successful backup, backups are overdue, in Unix seconds (absent without a schedule)",
        unit: Some(Unit::Seconds),
        kind: MetricType::Gauge,
        samples: |r| gauge(seconds(r.backup_deadline)),
    },
    Family {
        name: "pgdb_database_replication_lag",
        presence: Presence::WhenDescribed,
        help: "Replication lag of each replica",
        unit: Some(Unit::Seconds),
        kind: MetricType::Gauge,
        samples: |r| {
            r.replication_lag_seconds
                .iter()
                .map(|(replica, lag)| (vec![("replica", replica.clone())], Value::Gauge(*lag)))
                .collect()
        },
    },
    Family {
        name: "pgdb_database_anomaly",
        presence: Presence::WhenDescribed,
        help: "Whether the metric deviates from the database's learned baseline (1) or not (0), as status.autopilot.anomaly last said (Level 5, with spec.anomalyDetection)",
        unit: None,
        kind: MetricType::Gauge,
        samples: |r| {
            let Some(deviating) = &r.anomalies else {
                return Vec::new();
            };
            Metric::ALL
                .iter()
                .map(|metric| {
                    let anomalous = deviating.iter().any(|d| d == metric.name());
                    (
                        vec![("metric", metric.name().to_string())],
                        Value::Gauge(flag(anomalous)),
                    )
                })
                .collect()
        },
    },
    Family {
        name: "pgdb_database_last_measurement_timestamp",
        presence: Presence::Always,
        help: "When the database was last measured, in Unix seconds",
        unit: Some(Unit::Seconds),
        kind: MetricType::Gauge,
        samples: |r| gauge(seconds(Some(r.at))),
    },
];

fn encode_sample(
    family: &mut MetricEncoder<'_>,
    key: &DatabaseKey,
    reading: &DatabaseReading,
    extra: Vec<(&'static str, String)>,
    value: Value,
) -> Result<(), std::fmt::Error> {
    let mut labels: Vec<(&'static str, String)> = vec![
        ("namespace", key.0.clone()),
        ("postgresdb", key.1.clone()),
        ("pod", reading.pod.clone()),
    ];
    labels.extend(extra);
    let encoder = family.encode_family(&labels)?;
    match value {
        Value::Gauge(v) => ConstGauge::new(v).encode(encoder),
        Value::Counter(v) => ConstCounter::new(v).encode(encoder),
    }
}

impl Collector for DatabaseSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let readings = self.0.all();
        for family in FAMILIES {
            let samples: Vec<(&DatabaseKey, &DatabaseReading, Sample)> = readings
                .iter()
                .flat_map(|(key, reading)| {
                    (family.samples)(reading)
                        .into_iter()
                        .map(move |sample| (key, reading, sample))
                })
                .collect();
            // A family without a sample is left out entirely, as a gone
            // database leaves nothing behind.
            if samples.is_empty() {
                continue;
            }
            let mut metric = encoder.encode_descriptor(
                family.name,
                family.help,
                family.unit.as_ref(),
                family.kind,
            )?;
            for (key, reading, (extra, value)) in samples {
                encode_sample(&mut metric, key, reading, extra, value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shared::metrics::Metrics;
    use shared::readings::DatabaseStats;

    use super::*;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).expect("a valid instant")
    }

    fn measured() -> DatabaseReading {
        DatabaseReading {
            at: at(1_700_000_030),
            pod: "orders-0".into(),
            down: None,
            server_version: Some("15.8".into()),
            server_version_num: Some(150008),
            connections: BTreeMap::from([("active".into(), 2), ("idle".into(), 5)]),
            max_connections: Some(100),
            reserved_connections: Some(3),
            databases: BTreeMap::from([(
                "app".into(),
                DatabaseStats {
                    xact_commit: 42,
                    xact_rollback: 1,
                    deadlocks: 0,
                    size_bytes: 7_000_000,
                },
            )]),
            oldest_transaction_seconds: Some(12.5),
            xid_age: Some(1234),
            wal_bytes: Some(16_777_216),
            volume_used_bytes: Some(50_000_000),
            volume_capacity_bytes: Some(1_073_741_824),
            replication_lag_seconds: BTreeMap::from([("orders-1".into(), 0.5)]),
            last_backup_time: Some(at(1_700_000_000)),
            last_backup_failed: Some(false),
            backup_deadline: Some(at(1_700_090_000)),
            statements: None,
            anomalies: Some(vec!["transactionsPerSecond".into()]),
        }
    }

    fn encoded(readings: &[(&str, &str, DatabaseReading)]) -> String {
        let metrics = Metrics::new(Some(database_series));
        for (namespace, name, reading) in readings {
            metrics
                .readings
                .record((namespace.to_string(), name.to_string()), reading.clone());
        }
        metrics.encode().expect("encodes")
    }

    const LABELS: &str = "namespace=\"shop\",postgresdb=\"orders\",pod=\"orders-0\"";

    #[test]
    fn every_series_of_the_contract_is_named_with_its_unit_and_labelled_with_the_database() {
        let text = encoded(&[("shop", "orders", measured())]);
        for line in [
            format!("pgdb_database_up{{{LABELS}}} 1"),
            format!("pgdb_database_info{{{LABELS},version=\"15.8\"}} 1"),
            format!("pgdb_database_server_version_num{{{LABELS}}} 150008"),
            format!("pgdb_database_connections{{{LABELS},state=\"active\"}} 2"),
            format!("pgdb_database_connections{{{LABELS},state=\"idle\"}} 5"),
            format!("pgdb_database_max_connections{{{LABELS}}} 100"),
            format!("pgdb_database_reserved_connections{{{LABELS}}} 3"),
            format!("pgdb_database_transactions_committed_total{{{LABELS},datname=\"app\"}} 42"),
            format!("pgdb_database_transactions_rolled_back_total{{{LABELS},datname=\"app\"}} 1"),
            format!("pgdb_database_deadlocks_total{{{LABELS},datname=\"app\"}} 0"),
            format!("pgdb_database_size_bytes{{{LABELS},datname=\"app\"}} 7000000"),
            format!("pgdb_database_oldest_transaction_age_seconds{{{LABELS}}} 12.5"),
            format!("pgdb_database_xid_age{{{LABELS}}} 1234"),
            format!("pgdb_database_wal_bytes{{{LABELS}}} 16777216"),
            format!("pgdb_database_volume_used_bytes{{{LABELS}}} 50000000"),
            format!("pgdb_database_volume_capacity_bytes{{{LABELS}}} 1073741824"),
            format!("pgdb_database_last_backup_timestamp_seconds{{{LABELS}}} 1700000000"),
            format!("pgdb_database_last_backup_failed{{{LABELS}}} 0"),
            format!("pgdb_database_backup_deadline_timestamp_seconds{{{LABELS}}} 1700090000"),
            format!("pgdb_database_replication_lag_seconds{{{LABELS},replica=\"orders-1\"}} 0.5"),
            format!("pgdb_database_anomaly{{{LABELS},metric=\"transactionsPerSecond\"}} 1"),
            format!("pgdb_database_anomaly{{{LABELS},metric=\"rollbackRatio\"}} 0"),
            format!("pgdb_database_last_measurement_timestamp_seconds{{{LABELS}}} 1700000030"),
        ] {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
    }

    fn sample_names_in(text: &str) -> Vec<String> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .filter(|name| name.starts_with("pgdb_database_"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_listed_names_are_the_encoded_ones_and_always_means_without_backups_or_replicas() {
        let full = sample_names_in(&encoded(&[("shop", "orders", measured())]));
        let mut listed: Vec<String> = sample_names().into_iter().map(|(n, _)| n).collect();
        let mut encoded_names = full.clone();
        encoded_names.sort();
        encoded_names.dedup();
        listed.sort();
        assert_eq!(listed, encoded_names);

        let bare = DatabaseReading {
            replication_lag_seconds: BTreeMap::new(),
            last_backup_time: None,
            last_backup_failed: None,
            backup_deadline: None,
            anomalies: None,
            ..measured()
        };
        let mut present = sample_names_in(&encoded(&[("shop", "orders", bare)]));
        present.sort();
        present.dedup();
        let mut always: Vec<String> = sample_names()
            .into_iter()
            .filter(|(_, presence)| *presence == Presence::Always)
            .map(|(name, _)| name)
            .collect();
        always.sort();
        assert_eq!(always, present);
    }

    #[test]
    fn counters_are_typed_as_counters_and_units_are_declared() {
        let text = encoded(&[("shop", "orders", measured())]);
        for line in [
            "# TYPE pgdb_database_transactions_committed counter",
            "# TYPE pgdb_database_deadlocks counter",
            "# TYPE pgdb_database_up gauge",
            "# TYPE pgdb_database_size_bytes gauge",
            "# UNIT pgdb_database_size_bytes bytes",
            "# UNIT pgdb_database_oldest_transaction_age_seconds seconds",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_server_that_did_not_answer_is_up_0_without_sql_figures() {
        let mut down = DatabaseReading::down(at(1_700_000_030), "orders-0", "connection refused");
        down.volume_used_bytes = Some(10);
        down.volume_capacity_bytes = Some(100);
        down.last_backup_failed = Some(true);
        let text = encoded(&[("shop", "orders", down)]);
        assert!(
            text.contains(&format!("pgdb_database_up{{{LABELS}}} 0")),
            "{text}"
        );
        assert!(text.contains(&format!("pgdb_database_volume_used_bytes{{{LABELS}}} 10")));
        assert!(text.contains(&format!("pgdb_database_last_backup_failed{{{LABELS}}} 1")));
        for absent in [
            "pgdb_database_info",
            "pgdb_database_connections",
            "pgdb_database_max_connections",
            "pgdb_database_xid_age",
            "pgdb_database_size_bytes",
            "pgdb_database_oldest_transaction_age_seconds",
        ] {
            assert!(
                !text.contains(absent),
                "{absent} present for a server that is down:\n{text}"
            );
        }
    }

    #[test]
    fn a_database_that_is_gone_has_no_series_left() {
        let metrics = Metrics::new(Some(database_series));
        metrics
            .readings
            .record(("shop".into(), "orders".into()), measured());
        let mut gone = measured();
        gone.pod = "gone-0".into();
        metrics
            .readings
            .record(("shop".into(), "gone".into()), gone);
        metrics.readings.retain(|(_, name)| name != "gone");
        let text = metrics.encode().expect("encodes");
        assert!(!text.contains("postgresdb=\"gone\""), "{text}");
        assert!(text.contains("postgresdb=\"orders\""), "{text}");
    }

    #[test]
    fn a_series_without_any_sample_is_not_declared() {
        let mut reading = measured();
        reading.replication_lag_seconds.clear();
        reading.backup_deadline = None;
        let text = encoded(&[("shop", "orders", reading)]);
        assert!(!text.contains("pgdb_database_replication_lag"), "{text}");
        assert!(!text.contains("pgdb_database_backup_deadline"), "{text}");
        let text = encoded(&[]);
        assert!(!text.contains("pgdb_database_"), "{text}");
    }

    #[test]
    fn the_series_of_two_databases_share_one_family_each() {
        let mut other = measured();
        other.pod = "billing-0".into();
        let text = encoded(&[("shop", "orders", measured()), ("shop", "billing", other)]);
        assert_eq!(
            text.matches("# TYPE pgdb_database_up gauge").count(),
            1,
            "{text}"
        );
        assert!(text.contains(
            "pgdb_database_up{namespace=\"shop\",postgresdb=\"billing\",pod=\"billing-0\"} 1"
        ));
        // The OpenMetrics text parses as one family per name.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        let mut unique = families.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(families.len(), unique.len(), "{text}");
    }
}
