//! One measurement of one database, as pure functions: what to measure
//! ([`plan`], from the objects the reflectors hold) and what was measured
//! ([`reading`], from the answer of [`COLLECT_SQL`] and the kubelet's
//! stats). The collector's loop ([`super`]) does the I/O between them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use level1_install::api::{Names, PORT};
use shared::api::PostgresDB;
use shared::backup::{BackupPhase, PostgresDBBackup};
use shared::ext::PodExt;
use shared::readings::{DatabaseKey, DatabaseReading, DatabaseStats, StatementStats};
use shared::sql::{SqlAnswer, SqlTarget};

use super::stats::NodesStats;
use crate::insights::thresholds;

/// The statement asked of every server on each measurement: one constant
/// statement, every column text (see the file for its rows).
pub const COLLECT_SQL: &str = include_str!("collect.sql");

/// States of `pg_stat_activity.state` a client backend may be in: each is
/// reported, at 0 when no connection is in it, so the series of a database
/// do not come and go with its clients.
pub const CONNECTION_STATES: [&str; 6] = [
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
];

/// What to measure of one database, and what is already known without
/// measuring (its backups, from the objects).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The database.
    pub key: DatabaseKey,
    /// The pod measured: the primary, ordinal 0.
    pub pod: String,
    /// The node the pod runs on, whose kubelet knows its volume.
    pub node: Option<String>,
    /// The pod's data claim.
    pub claim: String,
    /// The login to the pod, or why there is none (the pod does not run,
    /// the Secret is missing): then the database is down.
    pub target: Result<SqlTarget, String>,
    /// When the last successful backup completed.
    pub last_backup_time: Option<jiff::Timestamp>,
    /// Whether the latest finished backup failed.
    pub last_backup_failed: Option<bool>,
    /// When backups become overdue.
    pub backup_deadline: Option<jiff::Timestamp>,
    /// The metrics Level 5's anomaly detection reports deviating in the
    /// database's status, or `None` without `spec.anomalyDetection`.
    pub anomalies: Option<Vec<String>>,
}

/// The superuser's login to `pod` (Level 1's Secret), or why there is none.
pub fn superuser_target(pod: Option<&Pod>, secret: Option<&Secret>) -> Result<SqlTarget, String> {
    let pod = pod.ok_or("the pod does not exist")?;
    if pod.is_deleting() {
        return Err("the pod is being deleted".into());
    }
    let status = pod.status.as_ref().ok_or("the pod has no status yet")?;
    if status.phase.as_deref() != Some("Running") {
        return Err(format!(
            "the pod is {}",
            status.phase.as_deref().unwrap_or("not running")
        ));
    }
    let ip = status.pod_ip.clone().ok_or("the pod has no IP yet")?;
    let secret = secret.ok_or("the superuser's Secret does not exist")?;
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or(format!("the superuser's Secret has no {key}"))
    };
    Ok(SqlTarget {
        pod: pod.name_any(),
        pod_ip: Some(ip),
        port: u16::try_from(PORT).unwrap_or(5432),
        user: text("username")?,
        password: text("password")?,
        database: "postgres".into(),
    })
}

/// What to measure of `db`, given its primary pod, its superuser Secret
/// and its backups (any order), at `now`.
pub fn plan(
    db: &PostgresDB,
    pod: Option<&Pod>,
    secret: Option<&Secret>,
    backups: &[&PostgresDBBackup],
) -> Plan {
    let names = Names::of(db);
    let namespace = db.namespace().unwrap_or_default();
    let last_backup_time = db
        .status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.last_successful_at.as_ref())
        .map(|t| t.0);
    let finished = backups
        .iter()
        .filter_map(|b| {
            let status = b.status.as_ref()?;
            let phase = status.phase?;
            matches!(phase, BackupPhase::Completed | BackupPhase::Failed).then(|| {
                (
                    status.completed_at.as_ref().map(|t| t.0),
                    b.name_any(),
                    phase,
                )
            })
        })
        .max_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Plan {
        key: (namespace, db.name_any()),
        pod: names.pod(shared::ha::primary_ordinal(db)),
        node: pod
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.clone()),
        claim: names.data_claim(shared::ha::primary_ordinal(db)),
        target: superuser_target(pod, secret),
        last_backup_time,
        last_backup_failed: finished.map(|(_, _, phase)| phase == BackupPhase::Failed),
        backup_deadline: thresholds::backup_deadline(db),
        anomalies: anomalies(db),
    }
}

/// The metrics `status.autopilot.anomaly` reports deviating, when
/// `spec.anomalyDetection` is set and a level that implements it wrote
/// that status (Level 5; a lower level reports the section as not
/// implemented and writes none). The collector only passes the status on
/// to `/metrics`, so a scrape never reads the API server.
pub fn anomalies(db: &PostgresDB) -> Option<Vec<String>> {
    db.spec.anomaly_detection.as_ref()?;
    let anomaly = db.status.as_ref()?.autopilot.as_ref()?.anomaly.as_ref()?;
    Some(
        anomaly
            .deviations
            .iter()
            .map(|d| d.metric.clone())
            .collect(),
    )
}

fn number<T: std::str::FromStr>(value: Option<&Option<String>>) -> Option<T> {
    value?.as_deref()?.trim().parse().ok()
}

/// The reading of `plan`'s database taken `at`: the server's answer to
/// [`COLLECT_SQL`] (or why there is none), the volume from `stats`.
pub fn reading(
    plan: &Plan,
    answer: &SqlAnswer,
    stats: &NodesStats,
    at: jiff::Timestamp,
) -> DatabaseReading {
    let mut reading = match answer {
        Ok(rows) => parse(rows),
        Err(why) => DatabaseReading {
            down: Some(why.clone()),
            ..Default::default()
        },
    };
    reading.at = at;
    reading.pod = plan.pod.clone();
    if let Some((used, capacity)) = plan
        .node
        .as_ref()
        .and_then(|node| stats.get(node))
        .and_then(|summary| summary.claim_usage(&plan.key.0, &plan.pod, &plan.claim))
    {
        reading.volume_used_bytes = Some(used);
        reading.volume_capacity_bytes = Some(capacity);
    }
    reading.last_backup_time = plan.last_backup_time;
    reading.last_backup_failed = plan.last_backup_failed;
    reading.backup_deadline = plan.backup_deadline;
    reading.anomalies = plan.anomalies.clone();
    reading
}

/// A reading of the rows [`COLLECT_SQL`] returns; a row it does not know
/// is ignored, a value that does not parse is left unknown.
pub fn parse(rows: &[Vec<Option<String>>]) -> DatabaseReading {
    let mut reading = DatabaseReading {
        connections: CONNECTION_STATES
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect(),
        ..Default::default()
    };
    let mut databases = BTreeMap::new();
    for row in rows {
        let kind = row.first().and_then(|k| k.as_deref());
        let name = row.get(1).and_then(|n| n.clone());
        let (a, b, c, d) = (row.get(2), row.get(3), row.get(4), row.get(5));
        match kind {
            Some("server") => {
                reading.server_version = a.and_then(|v| v.clone());
                reading.server_version_num = number(b);
                reading.max_connections = number(c);
                reading.reserved_connections = number(d);
            }
            Some("connections") => {
                if let (Some(state), Some(count)) = (name, number(a)) {
                    reading.connections.insert(state, count);
                }
            }
            Some("database") => {
                if let Some(datname) = name {
                    databases.insert(
                        datname,
                        DatabaseStats {
                            xact_commit: number(a).unwrap_or(0),
                            xact_rollback: number(b).unwrap_or(0),
                            deadlocks: number(c).unwrap_or(0),
                            size_bytes: number(d).unwrap_or(0),
                        },
                    );
                }
            }
            Some("oldest_transaction") => reading.oldest_transaction_seconds = number(a),
            Some("xid_age") => reading.xid_age = number(a),
            Some("wal") => reading.wal_bytes = number(a),
            Some("replication") => {
                if let (Some(replica), Some(lag)) = (name, number(a)) {
                    reading.replication_lag_seconds.insert(replica, lag);
                }
            }
            // Sums are NULL while the extension has tracked no statement.
            Some("statements") => {
                reading.statements = Some(StatementStats {
                    calls: number(a).unwrap_or(0),
                    total_execution_milliseconds: number(b).unwrap_or(0.0),
                });
            }
            _ => {}
        }
    }
    reading.databases = databases;
    reading
}

#[cfg(test)]
mod tests {
    use shared::backup::{PostgresDBBackupSpec, PostgresDBBackupStatus};
    use shared::testing::{DbBuilder, PodBuilder, login_secret};

    use super::super::stats::Summary;
    use super::*;

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    fn rows() -> Vec<Vec<Option<String>>> {
        vec![
            row(&[
                Some("server"),
                None,
                Some("15.8"),
                Some("150008"),
                Some("100"),
                Some("3"),
            ]),
            row(&[
                Some("connections"),
                Some("active"),
                Some("2"),
                None,
                None,
                None,
            ]),
            row(&[
                Some("connections"),
                Some("idle"),
                Some("4"),
                None,
                None,
                None,
            ]),
            row(&[
                Some("database"),
                Some("app"),
                Some("40"),
                Some("2"),
                Some("1"),
                Some("7654321"),
            ]),
            row(&[
                Some("database"),
                Some("postgres"),
                Some("9"),
                Some("0"),
                Some("0"),
                Some("7000000"),
            ]),
            row(&[
                Some("oldest_transaction"),
                None,
                Some("12.25"),
                None,
                None,
                None,
            ]),
            row(&[Some("xid_age"), None, Some("731"), None, None, None]),
            row(&[Some("wal"), None, Some("16777216"), None, None, None]),
            row(&[
                Some("replication"),
                Some("orders-1"),
                Some("0.25"),
                None,
                None,
                None,
            ]),
        ]
    }

    #[test]
    fn the_answer_of_collect_sql_becomes_a_reading() {
        let reading = parse(&rows());
        assert_eq!(reading.server_version.as_deref(), Some("15.8"));
        assert_eq!(reading.server_version_num, Some(150008));
        assert_eq!(reading.max_connections, Some(100));
        assert_eq!(reading.reserved_connections, Some(3));
        assert_eq!(reading.connections.get("active"), Some(&2));
        assert_eq!(reading.connections.get("idle"), Some(&4));
        assert_eq!(reading.connections.get("idle in transaction"), Some(&0));
        assert_eq!(reading.total_connections(), 6);
        assert_eq!(
            reading.databases.get("app"),
            Some(&DatabaseStats {
                xact_commit: 40,
                xact_rollback: 2,
                deadlocks: 1,
                size_bytes: 7_654_321
            })
        );
        assert_eq!(reading.oldest_transaction_seconds, Some(12.25));
        assert_eq!(reading.xid_age, Some(731));
        assert_eq!(reading.wal_bytes, Some(16_777_216));
        assert_eq!(reading.replication_lag_seconds.get("orders-1"), Some(&0.25));
        assert!(reading.is_up());
        assert_eq!(reading.statements, None, "no pg_stat_statements, no row");
    }

    #[test]
    fn pg_stat_statements_totals_are_read_when_the_server_has_them() {
        let mut rows = rows();
        rows.push(row(&[
            Some("statements"),
            None,
            Some("1234"),
            Some("5678.5"),
            None,
            None,
        ]));
        assert_eq!(
            parse(&rows).statements,
            Some(StatementStats {
                calls: 1234,
                total_execution_milliseconds: 5678.5
            })
        );
        let mut untracked = super::tests::rows();
        untracked.push(row(&[Some("statements"), None, None, None, None, None]));
        assert_eq!(
            parse(&untracked).statements,
            Some(StatementStats::default())
        );
    }

    #[test]
    fn collect_sql_is_one_statement_of_text_columns() {
        let code: String = COLLECT_SQL
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!code.contains(';'), "more than one statement:\n{code}");
        for kind in [
            "'server'",
            "'connections'",
            "'database'",
            "'oldest_transaction'",
            "'xid_age'",
            "'wal'",
            "'replication'",
            "'statements'",
        ] {
            assert!(code.contains(kind), "{kind} is not asked");
        }
    }

    fn database() -> PostgresDB {
        DbBuilder::named("orders").build()
    }

    fn running_pod() -> Pod {
        PodBuilder::named("orders-0")
            .node("node-1")
            .phase("Running")
            .ip("127.0.1.7")
            .build()
    }

    fn superuser() -> Secret {
        login_secret("orders-superuser", "postgres", "s3cret")
    }

    fn backup(name: &str, phase: BackupPhase, completed: i64) -> PostgresDBBackup {
        let mut backup = PostgresDBBackup::new(
            name,
            PostgresDBBackupSpec {
                database: "orders".into(),
            },
        );
        backup.status = Some(PostgresDBBackupStatus {
            phase: Some(phase),
            completed_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(completed).expect("an instant"),
            )),
            ..Default::default()
        });
        backup
    }

    #[test]
    fn the_anomalies_are_passed_on_only_where_level_5_reported_them() {
        use shared::autopilot::AutopilotStatus;
        use shared::autopilot::anomaly::{AnomalyDetectionSpec, AnomalyStatus, Deviation};
        let spec: AnomalyDetectionSpec = serde_json::from_str("{}").expect("the defaults");
        let deviating = AnomalyStatus {
            warm: true,
            by_hour_of_week: false,
            deviations: vec![Deviation {
                metric: "activeConnections".into(),
                observed: "4 active connections".into(),
                expected: "0 to 2".into(),
                since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
            }],
        };
        let reported = DbBuilder::named("orders")
            .anomaly_detection(spec.clone())
            .autopilot_status(AutopilotStatus {
                anomaly: Some(deviating),
                ..Default::default()
            })
            .build();
        assert_eq!(
            anomalies(&reported),
            Some(vec!["activeConnections".to_string()])
        );
        // Level 4 serving the spec writes no such status: no series.
        let unimplemented = DbBuilder::named("orders").anomaly_detection(spec).build();
        assert_eq!(anomalies(&unimplemented), None);
        assert_eq!(anomalies(&database()), None);
    }

    #[test]
    fn a_running_primary_with_its_secret_is_measured_as_the_superuser() {
        let pod = running_pod();
        let secret = superuser();
        let plan = plan(&database(), Some(&pod), Some(&secret), &[]);
        assert_eq!(plan.key, ("shop".to_string(), "orders".to_string()));
        assert_eq!(plan.pod, "orders-0");
        assert_eq!(plan.node.as_deref(), Some("node-1"));
        assert_eq!(plan.claim, "data-orders-0");
        let target = plan.target.expect("a target");
        assert_eq!(target.pod_ip.as_deref(), Some("127.0.1.7"));
        assert_eq!(target.user, "postgres");
        assert_eq!(target.password, "s3cret");
        assert_eq!(plan.last_backup_failed, None);
    }

    #[test]
    fn a_database_without_a_running_pod_or_its_secret_is_down_saying_why() {
        let secret = superuser();
        let pending = PodBuilder::named("orders-0").phase("Pending").build();
        let why = |pod: Option<&Pod>, secret: Option<&Secret>| {
            plan(&database(), pod, secret, &[])
                .target
                .expect_err("no target")
        };
        assert_eq!(why(None, Some(&secret)), "the pod does not exist");
        assert_eq!(why(Some(&pending), Some(&secret)), "the pod is Pending");
        assert_eq!(
            why(Some(&running_pod()), None),
            "the superuser's Secret does not exist"
        );
        let plan = plan(&database(), None, None, &[]);
        let reading = reading(
            &plan,
            &Err("the pod does not exist".into()),
            &NodesStats::new(),
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert!(!reading.is_up());
        assert_eq!(reading.pod, "orders-0");
    }

    #[test]
    fn the_latest_finished_backup_says_whether_backups_fail() {
        let pod = running_pod();
        let old_failure = backup("b1", BackupPhase::Failed, 100);
        let success = backup("b2", BackupPhase::Completed, 200);
        let mut running = backup("b3", BackupPhase::Running, 0);
        running.status.as_mut().expect("status").completed_at = None;
        let plan_of = |backups: &[&PostgresDBBackup]| plan(&database(), Some(&pod), None, backups);
        assert_eq!(
            plan_of(&[&old_failure, &success, &running]).last_backup_failed,
            Some(false)
        );
        let new_failure = backup("b4", BackupPhase::Failed, 300);
        assert_eq!(
            plan_of(&[&success, &new_failure]).last_backup_failed,
            Some(true)
        );
        assert_eq!(plan_of(&[&running]).last_backup_failed, None);
    }

    #[test]
    fn the_volume_comes_from_the_kubelet_of_the_pods_node_even_when_the_server_is_down() {
        let pod = running_pod();
        let plan = plan(&database(), Some(&pod), Some(&superuser()), &[]);
        let summary: Summary = serde_json::from_value(serde_json::json!({"pods": [
            {"podRef": {"name": "orders-0", "namespace": "shop"},
             "volume": [{"name": "data", "usedBytes": 10, "capacityBytes": 100,
                         "pvcRef": {"name": "data-orders-0", "namespace": "shop"}}]}
        ]}))
        .expect("a summary");
        let stats = NodesStats::from([("node-1".to_string(), summary)]);
        let down: SqlAnswer = Err("connection refused".into());
        let reading = reading(&plan, &down, &stats, jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(reading.down.as_deref(), Some("connection refused"));
        assert_eq!(reading.volume_used_bytes, Some(10));
        assert_eq!(reading.volume_capacity_bytes, Some(100));
        let unknown = super::reading(
            &plan,
            &down,
            &NodesStats::new(),
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(unknown.volume_used_bytes, None);
    }
}
