//! Level 4's alerts and dashboard, checked by the real tools and applied
//! on the sandbox:
//! - `promtool check rules` accepts the rule file, and `promtool test
//!   rules` runs the unit tests of `deploy/monitoring/alerts.test.yaml`,
//!   which cover every alert both ways (firing above its threshold after
//!   its `for`, silent below it). promtool comes from Debian's `prometheus`
//!   package (`scripts/install-tools.sh`); without it these tests fail,
//!   they never skip; every query of the dashboard is PromQL promtool
//!   accepts (with Grafana's variables substituted);
//! - the monitoring companion applies the dashboard ConfigMap in the
//!   operator's namespace, and the PrometheusRule once
//!   `monitoring.coreos.com/v1` PrometheusRule is served (a minimal CRD
//!   installed by the test), writes nothing more at rest, and repairs an
//!   edited dashboard.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use level4_insights::insights::monitoring::{
    self, DASHBOARD_KEY, DASHBOARD_NAME, RULE_NAME, alerts, dashboard::DASHBOARD_JSON,
    prometheus_rule_resource,
};
use serde_json::{Value, json};
use shared::capability::Level;
use shared::runner::{self, RunOptions};
use tests::harness::TestCluster;
use tokio::sync::oneshot;

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// Runs promtool with `args`; panics (never skips) when it is missing.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(monitoring_dir())
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run promtool ({error}): install Debian's `prometheus` package (scripts/install-tools.sh does, or `apt-get install prometheus`)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let text = promtool(&["check", "rules", "alerts.yaml"]);
    let count = alerts::alerts().len();
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "{text}"
    );
}

#[test]
fn promtool_accepts_the_rules_of_the_prometheus_rule_the_operator_applies() {
    let spec = monitoring::prometheus_rule("pgdb-system").value["spec"].clone();
    let file = std::env::temp_dir().join(format!("pgdb-rule-{}.yaml", std::process::id()));
    std::fs::write(
        &file,
        serde_yaml::to_string(&spec).expect("the rules render"),
    )
    .expect("a temporary file");
    let text = promtool(&["check", "rules", file.to_str().expect("a UTF-8 path")]);
    let _ = std::fs::remove_file(&file);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_alert_fires_above_its_threshold_after_its_for_and_stays_silent_below() {
    promtool(&["test", "rules", "alerts.test.yaml"]);
}

#[test]
fn the_promtool_tests_cover_every_alert_before_and_after_its_for() {
    let text = std::fs::read_to_string(monitoring_dir().join("alerts.test.yaml"))
        .expect("deploy/monitoring/alerts.test.yaml");
    let tests: Value = serde_yaml::from_str(&text).expect("YAML");
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in tests["tests"].as_array().expect("tests") {
        for case in test["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap_or_default().to_string();
            if case["exp_alerts"].as_array().is_some_and(|a| a.is_empty()) {
                silent.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    for alert in alerts::alerts() {
        assert!(
            firing.contains(alert.name),
            "no test sees {} fire",
            alert.name
        );
        assert!(
            silent.contains(alert.name),
            "no test sees {} silent before its `for`",
            alert.name
        );
    }
}

#[test]
fn every_dashboard_query_is_promql_that_promtool_accepts() {
    let dashboard: Value = serde_json::from_str(DASHBOARD_JSON).expect("the dashboard is JSON");
    // Grafana's variables as a query of every database would have them.
    let rules: Vec<Value> = monitoring::dashboard::expressions(&dashboard)
        .iter()
        .enumerate()
        .map(|(index, query)| {
            let expr = query
                .expr
                .replace("$__rate_interval", "2m")
                .replace("$namespace", ".*")
                .replace("$postgresdb", ".*");
            json!({"record": format!("dashboard:query{index}"), "expr": expr})
        })
        .collect();
    let count = rules.len();
    let file = std::env::temp_dir().join(format!("pgdb-dashboard-{}.yaml", std::process::id()));
    let groups = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(
        &file,
        serde_yaml::to_string(&groups).expect("the queries render"),
    )
    .expect("a temporary file");
    let text = promtool(&["check", "rules", file.to_str().expect("a UTF-8 path")]);
    let _ = std::fs::remove_file(&file);
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "{text}"
    );
}

fn level_with_monitoring() -> Level {
    let mut level = level1_install::level();
    level.companions.push(monitoring::companion());
    level
}

/// What the sandbox needs to serve `monitoring.coreos.com/v1`
/// PrometheusRule: the prometheus-operator's CRD without its schema.
fn prometheus_rule_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "prometheusrules.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "kind": "PrometheusRule",
                "listKind": "PrometheusRuleList",
                "plural": "prometheusrules",
                "singular": "prometheusrule",
            },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                }},
            }],
        },
    }))
    .expect("a CRD")
}

async fn dashboard(cluster: &TestCluster) -> Option<ConfigMap> {
    cluster
        .api::<ConfigMap>()
        .get_opt(DASHBOARD_NAME)
        .await
        .ok()
        .flatten()
}

fn rule_api(cluster: &TestCluster) -> Api<DynamicObject> {
    Api::namespaced_with(
        cluster.client(),
        cluster.namespace(),
        &prometheus_rule_resource(),
    )
}

async fn rule(cluster: &TestCluster) -> Result<Option<DynamicObject>, kube::Error> {
    rule_api(cluster).get_opt(RULE_NAME).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitoring_companion_applies_the_dashboard_and_the_rule_once_its_crd_is_served() {
    let cluster = TestCluster::start()
        .await
        .expect("a cluster")
        .with_budget(Duration::from_secs(60));
    let rules_served = rule_api(&cluster)
        .list(&ListParams::default().limit(1))
        .await
        .is_ok();
    let (stop, stopped) = oneshot::channel::<()>();
    let options = RunOptions {
        namespace: Some(cluster.namespace().to_string()),
        operator_namespace: Some(cluster.namespace().to_string()),
        metrics_interval: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let operator = tokio::spawn(runner::run(
        level_with_monitoring(),
        cluster.client(),
        options,
        async move {
            let _ = stopped.await;
        },
    ));

    let applied = cluster
        .eventually(
            cluster.budget(),
            "the dashboard ConfigMap is applied",
            || async { Ok(dashboard(&cluster).await) },
        )
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    assert_eq!(
        applied
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("grafana_dashboard")),
        Some(&"1".to_string())
    );
    assert_eq!(
        applied.data.as_ref().and_then(|d| d.get(DASHBOARD_KEY)),
        Some(&DASHBOARD_JSON.to_string())
    );

    if !rules_served {
        // Served nowhere yet: the operator runs on, without the rule.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!operator.is_finished(), "the operator stopped");
        let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
        crds.patch(
            "prometheusrules.monitoring.coreos.com",
            &PatchParams::apply("pgdb-tests").force(),
            &Patch::Apply(&prometheus_rule_crd()),
        )
        .await
        .expect("the PrometheusRule CRD is installed");
    }
    let applied_rule = cluster
        .eventually(
            cluster.budget(),
            "the PrometheusRule is applied",
            || async { Ok(rule(&cluster).await.ok().flatten()) },
        )
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    assert_eq!(applied_rule.data["spec"], alerts::rule_groups());

    // At rest: several passes, no write.
    let versions = |d: &ConfigMap, r: &DynamicObject| {
        (
            d.metadata.resource_version.clone(),
            r.metadata.resource_version.clone(),
        )
    };
    let before = versions(&applied, &applied_rule);
    let patches = || {
        cluster.sandbox_handle().map(|sandbox| {
            let counters = sandbox.counters();
            counters.get("patch", "configmaps") + counters.get("patch", "prometheusrules")
        })
    };
    let patches_before = patches();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(patches(), patches_before, "applied at rest (six passes)");
    let now_dashboard = dashboard(&cluster).await.expect("the dashboard");
    let now_rule = rule(&cluster).await.ok().flatten().expect("the rule");
    assert_eq!(
        versions(&now_dashboard, &now_rule),
        before,
        "written at rest"
    );

    // Someone edits the dashboard: it is repaired.
    cluster
        .api::<ConfigMap>()
        .patch(
            DASHBOARD_NAME,
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": DASHBOARD_NAME},
                "data": {DASHBOARD_KEY: "{}"},
            })),
        )
        .await
        .expect("the edit");
    cluster
        .eventually(
            cluster.budget(),
            "the edited dashboard is repaired",
            || async {
                Ok(dashboard(&cluster).await.filter(|d| {
                    d.data.as_ref().and_then(|d| d.get(DASHBOARD_KEY))
                        == Some(&DASHBOARD_JSON.to_string())
                }))
            },
        )
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));

    let _ = stop.send(());
    let outcome = tokio::time::timeout(Duration::from_secs(30), operator)
        .await
        .expect("the operator stops")
        .expect("the operator's task ends");
    assert!(outcome.is_ok(), "{outcome:?}");
    cluster.finish().await;
}
