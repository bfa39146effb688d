use std::path::PathBuf;

use kube::api::DynamicObject;
use serde_json::{Value, json};
use shared::apply::Change;

use super::alerts::{Severity, alerts, runbook_url};
use super::dashboard::{DASHBOARD_JSON, contract_series, expressions, series_named};
use super::*;
use crate::insights::thresholds;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn alert(name: &str) -> alerts::Alert {
    alerts()
        .into_iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no alert {name}"))
}

/// The number an alert's expression compares with, after its last `>=`,
/// `==` or `>`.
fn threshold_of(expr: &str) -> u64 {
    let (_, number) = expr
        .rsplit_once(">=")
        .or_else(|| expr.rsplit_once("=="))
        .or_else(|| expr.rsplit_once('>'))
        .unwrap_or_else(|| panic!("no comparison in {expr}"));
    number
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{expr} does not end with a number"))
}

#[test]
fn the_operator_installs_the_alerts_of_the_contract() {
    let names: Vec<_> = alerts().iter().map(|a| a.name).collect();
    assert_eq!(
        names,
        [
            "PostgresDBDown",
            "PostgresDBConnectionsNearLimit",
            "PostgresDBStorageNearlyFull",
            "PostgresDBBackupOverdue",
            "PostgresDBBackupFailed",
            "PostgresDBLongRunningTransaction",
            "PostgresDBXidWraparoundRisk",
            "PostgresDBReplicationLag",
            "PgdbOperatorReconcileErrors",
        ]
    );
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_runbook_url() {
    for alert in alerts() {
        let rule = alerts::rule(&alert);
        assert_eq!(rule["alert"], alert.name);
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{}: {}",
            alert.name,
            rule["labels"]
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{} has no {key}",
                alert.name
            );
        }
        assert_eq!(
            rule["annotations"]["runbook_url"].as_str(),
            Some(format!("{}{}.md", alerts::RUNBOOK_BASE_URL, alert.name).as_str())
        );
        assert!(runbook_url(alert.name).ends_with(&format!("/{}.md", alert.name)));
        assert!(
            alert.for_.ends_with('m') && alert.for_ != "0m",
            "{} fires only after a while",
            alert.name
        );
    }
    assert_eq!(alert("PostgresDBDown").severity, Severity::Critical);
    assert_eq!(
        alert("PostgresDBXidWraparoundRisk").severity,
        Severity::Critical
    );
}

#[test]
fn every_alert_has_a_runbook_with_meaning_impact_diagnosis_and_mitigation() {
    for alert in alerts() {
        let path = repository().join(format!("docs/runbooks/{}.md", alert.name));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no runbook {}: {e}", path.display()));
        assert!(
            text.starts_with(&format!("# {}\n", alert.name)),
            "{} opens with its alert's name",
            path.display()
        );
        let headings: Vec<_> = text
            .lines()
            .filter_map(|line| line.strip_prefix("## "))
            .collect();
        assert_eq!(
            headings,
            ["Meaning", "Impact", "Diagnosis", "Mitigation"],
            "{}",
            path.display()
        );
        let diagnosis = text
            .split("## Diagnosis")
            .nth(1)
            .and_then(|rest| rest.split("## Mitigation").next())
            .unwrap_or_default();
        assert!(
            diagnosis.contains("```sh\nkubectl "),
            "{}'s Diagnosis gives commands to run",
            path.display()
        );
    }
    let index = std::fs::read_to_string(repository().join("docs/runbooks/README.md"))
        .expect("the runbooks' index");
    for alert in alerts() {
        assert!(
            index.contains(&format!("({}.md)", alert.name)),
            "the index links {}",
            alert.name
        );
    }
}

#[test]
fn the_alert_thresholds_are_the_conditions_thresholds() {
    let expected = [
        (
            "PostgresDBConnectionsNearLimit",
            thresholds::CONNECTIONS_PERCENT,
        ),
        ("PostgresDBStorageNearlyFull", thresholds::STORAGE_PERCENT),
        (
            "PostgresDBLongRunningTransaction",
            thresholds::TRANSACTION_SECONDS,
        ),
        ("PostgresDBXidWraparoundRisk", thresholds::XID_AGE),
        (
            "PostgresDBReplicationLag",
            thresholds::REPLICATION_LAG_SECONDS,
        ),
        // Down, a failed backup, an overdue backup, failing reconciles:
        // the symptom is any of it.
        ("PostgresDBDown", 0),
        ("PostgresDBBackupFailed", 0),
        ("PostgresDBBackupOverdue", 0),
        ("PgdbOperatorReconcileErrors", 0),
    ];
    for (name, threshold) in expected {
        assert_eq!(threshold_of(&alert(name).expr), threshold, "{name}");
    }
    // A condition is True at its threshold: so is the alert.
    for name in [
        "PostgresDBConnectionsNearLimit",
        "PostgresDBStorageNearlyFull",
        "PostgresDBLongRunningTransaction",
        "PostgresDBXidWraparoundRisk",
        "PostgresDBReplicationLag",
    ] {
        assert!(alert(name).expr.contains(">= "), "{name}");
    }
}

#[test]
fn the_alerts_use_only_series_of_the_contract() {
    for alert in alerts() {
        let series = series_named(&alert.expr);
        assert!(!series.is_empty(), "{}", alert.name);
        for name in series {
            assert!(
                contract_series().contains(&name),
                "{} uses {name}, which is not a series of the contract",
                alert.name
            );
        }
    }
}

#[test]
fn a_description_states_the_for_of_its_alert() {
    for alert in alerts() {
        let minutes = alert.for_.trim_end_matches('m');
        let said = format!("for {minutes} minutes");
        if alert.description.contains("for ") && alert.description.contains(" minutes") {
            assert!(
                alert.description.contains(&said),
                "{}: {:?} does not say {said:?}",
                alert.name,
                alert.description
            );
        }
    }
}

#[test]
fn the_committed_monitoring_files_match_the_rust_alerts() {
    let directory = repository().join("deploy/monitoring");
    let update = std::env::var_os("PGDB_UPDATE_MONITORING").is_some();
    for (name, content) in files::rendered().expect("the rules render") {
        let path = directory.join(name);
        if update {
            std::fs::write(&path, &content).expect("deploy/monitoring is writable");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == content,
            "deploy/monitoring/{name} is out of date; regenerate it with `{}`",
            files::REGENERATE
        );
    }
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD_JSON).expect("the dashboard is JSON")
}

#[test]
fn the_dashboard_imports_as_is_with_a_datasource_namespace_and_postgresdb_variables() {
    let dashboard = dashboard();
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        dashboard["id"].is_null(),
        "an imported dashboard gets its id from Grafana"
    );
    assert!(
        dashboard.get("__inputs").is_none(),
        "no import-time inputs: the datasource is a variable"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    for name in ["namespace", "postgresdb"] {
        let v = variable(name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
    }
    let mut ids = Vec::new();
    fn each_panel(list: &Value, f: &mut dyn FnMut(&Value)) {
        for panel in list.as_array().into_iter().flatten() {
            f(panel);
            each_panel(&panel["panels"], f);
        }
    }
    each_panel(&dashboard["panels"], &mut |panel| {
        ids.push(panel["id"].as_u64().expect("every panel has an id"));
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "panel {} queries the chosen datasource",
                panel["title"]
            );
            assert!(
                panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "panel {} has a query",
                panel["title"]
            );
        }
    });
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "panel ids are unique");
}

#[test]
fn every_dashboard_query_uses_only_series_of_the_contract() {
    let queries = expressions(&dashboard());
    assert!(queries.len() > 10);
    for query in &queries {
        let series = series_named(&query.expr);
        assert!(!series.is_empty(), "{}: {}", query.place, query.expr);
        for name in series {
            assert!(
                contract_series().contains(&name),
                "{} uses {name}, which is not a series of the contract: {}",
                query.place,
                query.expr
            );
        }
        if query.expr.contains("pgdb_database_") && !query.place.starts_with("variable") {
            assert!(
                query.expr.contains("namespace=~\"$namespace\"")
                    && query.expr.contains("postgresdb=~\"$postgresdb\""),
                "{} follows the variables: {}",
                query.place,
                query.expr
            );
        }
    }
}

#[test]
fn every_series_of_the_contract_has_a_panel() {
    let used: Vec<String> = expressions(&dashboard())
        .iter()
        .filter(|q| !q.place.starts_with("variable"))
        .flat_map(|q| series_named(&q.expr))
        .collect();
    for series in contract_series() {
        // A histogram is drawn from its buckets.
        if series.ends_with("_sum") || series.ends_with("_count") {
            continue;
        }
        assert!(used.contains(&series), "no panel shows {series}");
    }
}

fn live(desired: &DesiredObject) -> DynamicObject {
    let mut value = desired.value.clone();
    value["metadata"]["uid"] = json!("uid-1");
    value["metadata"]["resourceVersion"] = json!("7");
    serde_json::from_value(value).expect("a live object")
}

#[test]
fn both_objects_are_created_when_missing_and_the_rule_is_served() {
    let seen = Seen {
        rule: RuleSeen::Served(None),
        dashboard: None,
    };
    let plan: Vec<_> = plan("ops", &seen)
        .into_iter()
        .map(|(d, c)| (d.resource.kind, d.name, c))
        .collect();
    assert_eq!(
        plan,
        [
            ("ConfigMap".into(), DASHBOARD_NAME.into(), Change::Create),
            ("PrometheusRule".into(), RULE_NAME.into(), Change::Create),
        ]
    );
}

#[test]
fn only_the_dashboard_is_applied_while_the_rule_is_not_served() {
    let seen = Seen {
        rule: RuleSeen::Unserved,
        dashboard: None,
    };
    let plan = plan("ops", &seen);
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].0.name, DASHBOARD_NAME);
}

#[test]
fn nothing_is_written_at_rest() {
    let seen = Seen {
        rule: RuleSeen::Served(Some(Box::new(live(&prometheus_rule("ops"))))),
        dashboard: Some(live(&dashboard_config_map("ops"))),
    };
    assert_eq!(plan("ops", &seen), Vec::new());
}

#[test]
fn an_edited_dashboard_is_repaired_and_an_older_rule_is_updated() {
    let mut dashboard = live(&dashboard_config_map("ops"));
    dashboard.data["data"][DASHBOARD_KEY] = json!("{}");
    let mut rule = live(&prometheus_rule("ops"));
    rule.metadata
        .annotations
        .get_or_insert_default()
        .insert(APPLIED_HASH_ANNOTATION.into(), "older".into());
    let seen = Seen {
        rule: RuleSeen::Served(Some(Box::new(rule))),
        dashboard: Some(dashboard),
    };
    let changes: Vec<_> = plan("ops", &seen).into_iter().map(|(_, c)| c).collect();
    assert_eq!(changes, [Change::Repair, Change::Update]);
}

#[test]
fn the_objects_carry_the_names_labels_and_key_of_the_contract() {
    let rule = prometheus_rule("ops");
    assert_eq!(rule.value["metadata"]["name"], "pgdb-operator-alerts");
    assert_eq!(rule.value["metadata"]["namespace"], "ops");
    assert_eq!(rule.value["spec"], alerts::rule_groups());
    let dashboard = dashboard_config_map("ops");
    assert_eq!(
        dashboard.value["metadata"]["name"],
        "pgdb-operator-dashboard"
    );
    assert_eq!(dashboard.value["metadata"]["namespace"], "ops");
    assert_eq!(
        dashboard.value["metadata"]["labels"]["grafana_dashboard"],
        "1"
    );
    assert_eq!(dashboard.value["data"]["pgdb.json"], DASHBOARD_JSON);
    assert!(!rule.owned && !dashboard.owned, "no database owns them");
}
