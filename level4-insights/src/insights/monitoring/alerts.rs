//! The symptom-based alerts: what is wrong for the people who use a
//! database, not which internal figure moved.
//!
//! Each [`Alert`] is one Prometheus alerting rule over the series of the
//! contract (`pgdb_database_*`, `pgdb_operator_*`). Its threshold is the
//! constant of [`super::super::thresholds`] that the matching condition
//! uses, written into the expression here, so an alert and its condition
//! agree. Every alert carries a `severity` label (`critical`: the database
//! is out of service or about to be; `warning`: it needs a human today)
//! and the annotations `summary`, `description` and `runbook_url`, which
//! points at `docs/runbooks/<Alert>.md` (Meaning, Impact, Diagnosis,
//! Mitigation).
//!
//! Database alerts aggregate `by (namespace, postgresdb, pod)`: those are
//! the labels an alert carries, and a series scraped twice (two jobs) does
//! not make it fire twice. The `for` of each rule is the time a symptom
//! must last before anyone is paged; `deploy/monitoring/alerts.test.yaml`
//! proves, with `promtool test rules`, that each alert fires above its
//! threshold after its `for` and stays silent below it.
//!
//! Where it stops: the alerts say what is wrong; the runbooks say what to
//! do. Routing (who is paged for which severity) is Alertmanager's.

use serde_json::{Value, json};

use super::super::thresholds;

/// Where `docs/runbooks/` of this repository is published: an alert's
/// `runbook_url` is this followed by `<Alert>.md`. The project's domain is
/// the one of its API group (`pgdb.example.com`); a fork publishing its
/// docs elsewhere changes this one constant and regenerates
/// `deploy/monitoring/`.
pub const RUNBOOK_BASE_URL: &str = "https://pgdb.example.com/docs/runbooks/";

/// The name of the rule group in the PrometheusRule and the rule file.
pub const GROUP_NAME: &str = "pgdb-operator.alerts";

/// How far back the operator alert looks for reconcile failures: longer
/// than the longest retry delay of a failing reconcile (5 minutes, see
/// `shared::error::retry_delay`), so a database whose reconciles keep
/// failing keeps the count above zero.
pub const RECONCILE_FAILURE_WINDOW: &str = "10m";

/// How urgent an alert is: its `severity` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The database is out of service, or soon will be: act now.
    Critical,
    /// Service degrades or protection is missing: act today.
    Warning,
}

impl Severity {
    /// The label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// One alerting rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// The alert's name (`alertname`), also its runbook's file name.
    pub name: &'static str,
    /// The PromQL expression: a result is a symptom.
    pub expr: String,
    /// How long the expression must hold before the alert fires
    /// (Prometheus duration).
    pub for_: &'static str,
    /// The `severity` label.
    pub severity: Severity,
    /// One line, with the database's name.
    pub summary: String,
    /// What is wrong and what it means, in a few sentences.
    pub description: String,
}

/// The labels identifying one database's server in a database alert.
const BY_DATABASE: &str = "namespace, postgresdb, pod";

/// "namespace/postgresdb", as the annotations write it.
const DATABASE: &str = "{{ $labels.namespace }}/{{ $labels.postgresdb }}";

/// Every alert the operator installs, in the order of the runbooks' index.
pub fn alerts() -> Vec<Alert> {
    vec![
        Alert {
            name: "PostgresDBDown",
            expr: format!("max by ({BY_DATABASE}) (pgdb_database_up) == 0"),
            for_: "5m",
            severity: Severity::Critical,
            summary: format!("PostgresDB {DATABASE} is down."),
            description: format!(
                "The server of PostgresDB {DATABASE} (pod {{{{ $labels.pod }}}}) has not answered \
                 the operator's measurements for 5 minutes: clients cannot use the database."
            ),
        },
        Alert {
            name: "PostgresDBConnectionsNearLimit",
            expr: format!(
                "100 * sum by ({BY_DATABASE}) (max by ({BY_DATABASE}, state) (pgdb_database_connections))\n  \
                 / on ({BY_DATABASE})\n  \
                 max by ({BY_DATABASE}) (pgdb_database_max_connections - pgdb_database_reserved_connections)\n  \
                 >= {}",
                thresholds::CONNECTIONS_PERCENT
            ),
            for_: "5m",
            severity: Severity::Warning,
            summary: format!(
                "PostgresDB {DATABASE} uses {{{{ $value | printf \"%.0f\" }}}}% of its connections."
            ),
            description: format!(
                "Client connections of PostgresDB {DATABASE} (pod {{{{ $labels.pod }}}}) have been at \
                 {{{{ $value | printf \"%.0f\" }}}}% of those clients may open (max_connections minus \
                 the reserved ones) for 5 minutes; at 100% new connections are refused. Threshold: {}%.",
                thresholds::CONNECTIONS_PERCENT
            ),
        },
        Alert {
            name: "PostgresDBStorageNearlyFull",
            expr: format!(
                "100 * max by ({BY_DATABASE}) (pgdb_database_volume_used_bytes / pgdb_database_volume_capacity_bytes)\n  \
                 >= {}",
                thresholds::STORAGE_PERCENT
            ),
            for_: "5m",
            severity: Severity::Warning,
            summary: format!(
                "The volume of PostgresDB {DATABASE} is {{{{ $value | printf \"%.0f\" }}}}% full."
            ),
            description: format!(
                "The data volume of PostgresDB {DATABASE} (pod {{{{ $labels.pod }}}}) has been \
                 {{{{ $value | printf \"%.0f\" }}}}% full for 5 minutes. When it is full the server \
                 stops accepting writes and may shut down. Threshold: {}%.",
                thresholds::STORAGE_PERCENT
            ),
        },
        Alert {
            name: "PostgresDBBackupOverdue",
            expr: format!(
                "time() - max by ({BY_DATABASE}) (pgdb_database_backup_deadline_timestamp_seconds) > 0"
            ),
            for_: "10m",
            severity: Severity::Warning,
            summary: format!("PostgresDB {DATABASE} has no recent successful backup."),
            description: format!(
                "PostgresDB {DATABASE} has had no successful backup within the interval its \
                 schedule (spec.backup.schedule) expects: it is {{{{ $value | humanizeDuration }}}} \
                 past its deadline. Data written since the last backup cannot be restored from a backup."
            ),
        },
        Alert {
            name: "PostgresDBBackupFailed",
            expr: format!("max by ({BY_DATABASE}) (pgdb_database_last_backup_failed) > 0"),
            for_: "1m",
            severity: Severity::Warning,
            summary: format!("The latest backup of PostgresDB {DATABASE} failed."),
            description: format!(
                "The latest finished backup of PostgresDB {DATABASE} failed; the alert clears \
                 when a backup completes. Until then the newest restorable backup is older than planned."
            ),
        },
        Alert {
            name: "PostgresDBLongRunningTransaction",
            expr: format!(
                "max by ({BY_DATABASE}) (pgdb_database_oldest_transaction_age_seconds) >= {}",
                thresholds::TRANSACTION_SECONDS
            ),
            for_: "1m",
            severity: Severity::Warning,
            summary: format!(
                "PostgresDB {DATABASE} has a transaction open for {{{{ $value | humanizeDuration }}}}."
            ),
            description: format!(
                "A transaction in PostgresDB {DATABASE} (pod {{{{ $labels.pod }}}}) has been open for \
                 {{{{ $value | humanizeDuration }}}}. While it is open, vacuum cannot remove the rows it \
                 may still see, and the locks it holds block others. Threshold: {} seconds.",
                thresholds::TRANSACTION_SECONDS
            ),
        },
        Alert {
            name: "PostgresDBXidWraparoundRisk",
            expr: format!(
                "max by ({BY_DATABASE}) (pgdb_database_xid_age) >= {}",
                thresholds::XID_AGE
            ),
            for_: "5m",
            severity: Severity::Critical,
            summary: format!(
                "PostgresDB {DATABASE} is {{{{ $value | humanize }}}} transactions from its oldest unfrozen one."
            ),
            description: format!(
                "The oldest unfrozen transaction ID of PostgresDB {DATABASE} (pod {{{{ $labels.pod }}}}) \
                 is {{{{ $value | humanize }}}} transactions old: freezing (vacuum) is not keeping up. \
                 At about 2.1 billion the server stops assigning transaction IDs and refuses writes. \
                 Threshold: {} (2^30).",
                thresholds::XID_AGE
            ),
        },
        Alert {
            name: "PostgresDBReplicationLag",
            expr: format!(
                "max by ({BY_DATABASE}, replica) (pgdb_database_replication_lag_seconds) >= {}",
                thresholds::REPLICATION_LAG_SECONDS
            ),
            for_: "5m",
            severity: Severity::Warning,
            summary: format!(
                "Replica {{{{ $labels.replica }}}} of PostgresDB {DATABASE} lags {{{{ $value | humanizeDuration }}}} behind."
            ),
            description: format!(
                "Replica {{{{ $labels.replica }}}} of PostgresDB {DATABASE} has been more than {} seconds \
                 behind its primary for 5 minutes. Reads from it are stale, and a failover to it would \
                 lose the transactions it has not replayed.",
                thresholds::REPLICATION_LAG_SECONDS
            ),
        },
        Alert {
            name: "PgdbOperatorReconcileErrors",
            expr: format!(
                "sum by (namespace, level, reason) (increase(pgdb_operator_reconcile_failures_total[{RECONCILE_FAILURE_WINDOW}])) > 0"
            ),
            for_: "15m",
            severity: Severity::Warning,
            summary: "The PostgresDB operator's reconciles keep failing ({{ $labels.reason }})."
                .to_string(),
            description: "Reconciles of the PostgresDB operator ({{ $labels.level }} in namespace \
                 {{ $labels.namespace }}) have been failing for 15 minutes, with reason \
                 {{ $labels.reason }}: changes to the databases concerned are not carried out, and \
                 their status is not kept up to date."
                .to_string(),
        },
    ]
}

/// An alert's `runbook_url`.
pub fn runbook_url(name: &str) -> String {
    format!("{RUNBOOK_BASE_URL}{name}.md")
}

/// One alert as a Prometheus rule (the same in a rule file and in a
/// PrometheusRule's `spec.groups[].rules`).
pub fn rule(alert: &Alert) -> Value {
    json!({
        "alert": alert.name,
        "expr": alert.expr,
        "for": alert.for_,
        "labels": {"severity": alert.severity.as_str()},
        "annotations": {
            "summary": alert.summary,
            "description": alert.description,
            "runbook_url": runbook_url(alert.name),
        },
    })
}

/// The rule groups: a Prometheus rule file's content, and a
/// PrometheusRule's `spec`.
pub fn rule_groups() -> Value {
    let rules: Vec<Value> = alerts().iter().map(rule).collect();
    json!({"groups": [{"name": GROUP_NAME, "rules": rules}]})
}
