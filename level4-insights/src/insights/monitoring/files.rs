//! The monitoring files of `deploy/monitoring/` that are rendered from this
//! module: the alerts as a Prometheus rule file (`alerts.yaml`, what
//! `promtool` and a Prometheus without the prometheus-operator load) and
//! as the PrometheusRule object the operator applies
//! (`prometheus-rule.yaml`, for `kubectl apply`).
//!
//! They are committed, and a test fails when they differ from what this
//! module renders (like `deploy/base/crd.yaml`); regenerate them with
//! [`REGENERATE`]. The dashboard is the other way round: its committed JSON
//! is the source, included by [`super::dashboard`].

use super::{RULE_NAME, alerts, prometheus_rule};

/// How to rewrite the rendered files after changing the alerts.
pub const REGENERATE: &str =
    "PGDB_UPDATE_MONITORING=1 cargo test -p level4-insights the_committed_monitoring_files";

/// The namespace of `deploy/base/operator.yaml`, where the committed
/// PrometheusRule goes.
pub const DEPLOY_NAMESPACE: &str = "pgdb-system";

fn header(what: &str) -> String {
    format!(
        "# {what}\n# Rendered from level4-insights/src/insights/monitoring/alerts.rs; do not edit:\n#   {REGENERATE}\n"
    )
}

/// Every rendered file: its path under `deploy/monitoring/` and content.
pub fn rendered() -> Result<Vec<(&'static str, String)>, serde_yaml::Error> {
    let rule_file = serde_yaml::to_string(&alerts::rule_groups())?;
    let mut object = prometheus_rule(DEPLOY_NAMESPACE).value;
    if let Some(metadata) = object["metadata"].as_object_mut() {
        // The applied-hash is the operator's bookkeeping, not the manifest's.
        metadata.remove("annotations");
    }
    let object = serde_yaml::to_string(&object)?;
    Ok(vec![
        (
            "alerts.yaml",
            format!(
                "{}{rule_file}",
                header(
                    "The PostgresDB operator's alerts as a Prometheus rule file (`promtool check rules deploy/monitoring/alerts.yaml`)."
                )
            ),
        ),
        (
            "prometheus-rule.yaml",
            format!(
                "{}{object}",
                header(&format!(
                    "The PrometheusRule {RULE_NAME} the Level 4 operator applies in its namespace (`kubectl apply -f` it where the operator does not)."
                ))
            ),
        ),
    ])
}
