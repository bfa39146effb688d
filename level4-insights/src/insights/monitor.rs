//! A ServiceMonitor per database, when `monitoring.coreos.com/v1` is
//! served, and the `MonitoringConfigured` condition that says whether it is.
//!
//! The Prometheus Operator scrapes what ServiceMonitors select. The
//! databases' series are served by the operator itself (at `/metrics`,
//! from the collector's readings), so each database's ServiceMonitor
//! selects the operator's metrics Service (label
//! `app.kubernetes.io/name: pgdb-operator`, port `metrics`, in the
//! operator's namespace) and keeps only that database's series (a
//! `keep` on its `namespace` and `postgresdb` labels). `honorLabels` keeps
//! the `namespace` and `pod` labels the operator exports instead of the
//! target's. The operator's own series are scraped by the operator's own
//! ServiceMonitor (deploy/monitoring/), not these.
//!
//! The ServiceMonitor is a kind another project defines: a cluster without
//! the Prometheus Operator does not serve it. It is therefore listed in
//! [`Capability::observe`] (a list answering 404 marks it unserved,
//! [`Observed::is_served`]) and neither owned nor watched (a watch of an
//! unserved kind would fail forever): when it is not served nothing is
//! applied and `MonitoringConfigured` is False with reason
//! `MonitoringAPIUnavailable`. Installing the API later is noticed at the
//! database's next reconcile (any change, a reading's summary changing, or
//! the periodic re-check). The ServiceMonitor is owned by the database, so
//! it goes with it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, ObjectMeta};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use shared::PostgresDB;
use shared::capability::{
    ApplyReport, Capability, Desired, Observed, Query, StatusDraft, describe,
};
use shared::conditions::Assessment;
use shared::names::common_labels;
use shared::runner::DEFAULT_OPERATOR_NAMESPACE;

/// The condition saying whether the database's ServiceMonitor is applied.
pub const MONITORING_CONFIGURED: &str = "MonitoringConfigured";
/// Its reason when `monitoring.coreos.com/v1` ServiceMonitor is not served.
pub const API_UNAVAILABLE: &str = "MonitoringAPIUnavailable";
/// The label key and value of the operator's metrics Service.
pub const METRICS_SERVICE_LABEL: (&str, &str) = ("app.kubernetes.io/name", "pgdb-operator");
/// The name of the metrics Service's port.
pub const METRICS_PORT: &str = "metrics";
/// The path the operator serves its metrics at.
pub const METRICS_PATH: &str = "/metrics";

/// A `monitoring.coreos.com/v1` ServiceMonitor, with the fields this
/// operator sets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceMonitor {
    /// Its metadata.
    pub metadata: ObjectMeta,
    /// What to scrape.
    pub spec: ServiceMonitorSpec,
}

/// What a ServiceMonitor scrapes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// The Services whose endpoints are scraped.
    pub selector: LabelSelector,
    /// The namespaces those Services are looked for in.
    #[serde(default)]
    pub namespace_selector: NamespaceSelector,
    /// How each selected endpoint is scraped.
    #[serde(default)]
    pub endpoints: Vec<ScrapeEndpoint>,
}

/// Namespaces a ServiceMonitor selects Services in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// These namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_names: Vec<String>,
}

/// One scraped port of the selected Services.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrapeEndpoint {
    /// The Service port's name.
    pub port: String,
    /// The HTTP path.
    pub path: String,
    /// Whether the scraped series' own labels win over the target's.
    #[serde(default)]
    pub honor_labels: bool,
    /// Relabelings of the scraped series, before they are stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_relabelings: Vec<Relabeling>,
}

/// A Prometheus relabeling rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relabeling {
    /// The labels whose values, joined by `separator`, are matched.
    pub source_labels: Vec<String>,
    /// What joins them.
    pub separator: String,
    /// The (fully anchored) regular expression matched.
    pub regex: String,
    /// `keep`: drop the series that do not match.
    pub action: String,
}

impl Resource for ServiceMonitor {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "ServiceMonitor".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "monitoring.coreos.com".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "servicemonitors".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `text` with the regular expression's special characters escaped, so it
/// matches itself only.
fn regex_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The ServiceMonitor of `db`: named as the database, in its namespace,
/// selecting the operator's metrics Service in `operator_namespace` and
/// keeping only this database's series.
pub fn service_monitor(db: &PostgresDB, operator_namespace: &str) -> ServiceMonitor {
    let name = db.name_any();
    let namespace = db.namespace().unwrap_or_default();
    let (key, value) = METRICS_SERVICE_LABEL;
    ServiceMonitor {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: db.namespace(),
            labels: Some(common_labels(&name)),
            ..Default::default()
        },
        spec: ServiceMonitorSpec {
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
                ..Default::default()
            },
            namespace_selector: NamespaceSelector {
                match_names: vec![operator_namespace.to_string()],
            },
            endpoints: vec![ScrapeEndpoint {
                port: METRICS_PORT.into(),
                path: METRICS_PATH.into(),
                honor_labels: true,
                metric_relabelings: vec![Relabeling {
                    source_labels: vec!["namespace".into(), "postgresdb".into()],
                    separator: ";".into(),
                    regex: format!("{};{}", regex_literal(&namespace), regex_literal(&name)),
                    action: "keep".into(),
                }],
            }],
        },
    }
}

/// The kind, as the core lists it.
fn resource() -> ApiResource {
    ApiResource::erase::<ServiceMonitor>(&())
}

/// `MonitoringConfigured`, from whether the kind is served and whether the
/// database's ServiceMonitor exists or was just applied.
pub fn monitoring_configured(
    db: &PostgresDB,
    observed: &Observed,
    applied: &ApplyReport,
) -> Assessment {
    let name = db.name_any();
    if !observed.is_served(&resource()) {
        return Assessment::no(
            API_UNAVAILABLE,
            "monitoring.coreos.com/v1 ServiceMonitor is not served (the Prometheus Operator's \
             CRDs are not installed): no ServiceMonitor is applied; the database's series are \
             still at the operator's /metrics",
        )
        .announce();
    }
    let wanted = format!("ServiceMonitor/{name}");
    let just_applied = applied
        .created
        .iter()
        .chain(&applied.updated)
        .chain(&applied.repaired)
        .any(|reference| describe(reference) == wanted);
    if just_applied || observed.raw(&resource(), &name).is_some() {
        Assessment::yes(
            "ServiceMonitorApplied",
            format!(
                "ServiceMonitor {name} selects the operator's metrics Service \
                 ({}={}, port {METRICS_PORT}) and keeps this database's series",
                METRICS_SERVICE_LABEL.0, METRICS_SERVICE_LABEL.1
            ),
        )
        .announce()
    } else {
        Assessment::no(
            "ServiceMonitorNotApplied",
            format!("ServiceMonitor {name} is not applied yet"),
        )
        .announce()
    }
}

/// The monitor capability.
pub struct Monitor;

impl Capability for Monitor {
    fn name(&self) -> &'static str {
        "monitor"
    }

    fn observe(&self, _db: &PostgresDB) -> Vec<Query> {
        // Listed, not owned: an unserved kind answers 404 to a list, which
        // the core records instead of failing (see the module's docs).
        vec![Query::labelled::<ServiceMonitor>()]
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), shared::Error> {
        if !observed.is_served(&resource()) {
            return Ok(());
        }
        let namespace = observed
            .operator_namespace()
            .unwrap_or(DEFAULT_OPERATOR_NAMESPACE);
        desired.add(&service_monitor(db, namespace))
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        status.conditions.set(
            MONITORING_CONFIGURED,
            monitoring_configured(db, observed, applied),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testing::{ChildBuilder, DbBuilder, ObservedBuilder, assert_reads_what_it_applies};

    fn orders() -> PostgresDB {
        DbBuilder::named("orders").build()
    }

    fn desired(observed: &Observed) -> Desired {
        let mut desired = Desired::default();
        Monitor
            .desire(&orders(), observed, shared::testing::at(0), &mut desired)
            .expect("desires");
        desired
    }

    #[test]
    fn a_served_api_gets_a_service_monitor_selecting_the_operator_s_metrics_service() {
        let observed = ObservedBuilder::new()
            .listed::<ServiceMonitor>()
            .operator_namespace("pgdb-system")
            .build();
        let desired = desired(&observed);
        let [object] = desired.objects() else {
            panic!("one object: {:?}", desired.objects());
        };
        let value = &object.value;
        assert_eq!(value["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(value["kind"], "ServiceMonitor");
        assert_eq!(value["metadata"]["name"], "orders");
        assert_eq!(value["metadata"]["namespace"], "shop");
        assert!(object.owned, "the ServiceMonitor goes with its database");
        assert_eq!(
            value["metadata"]["labels"]["app.kubernetes.io/instance"],
            "orders"
        );
        let spec = &value["spec"];
        assert_eq!(
            spec["selector"]["matchLabels"]["app.kubernetes.io/name"],
            "pgdb-operator"
        );
        assert_eq!(
            spec["namespaceSelector"]["matchNames"],
            serde_json::json!(["pgdb-system"])
        );
        let endpoint = &spec["endpoints"][0];
        assert_eq!(endpoint["port"], "metrics");
        assert_eq!(endpoint["path"], "/metrics");
        assert_eq!(endpoint["honorLabels"], true);
        assert_eq!(
            endpoint["metricRelabelings"],
            serde_json::json!([{
                "sourceLabels": ["namespace", "postgresdb"],
                "separator": ";",
                "regex": "shop;orders",
                "action": "keep"
            }])
        );
        assert_reads_what_it_applies(
            &[Box::new(Monitor)],
            &orders(),
            &observed,
            shared::testing::at(0),
        );
    }

    #[test]
    fn without_a_namespace_from_the_core_the_default_operator_namespace_is_selected() {
        let desired = desired(&Observed::default());
        assert_eq!(
            desired.objects()[0].value["spec"]["namespaceSelector"]["matchNames"][0],
            DEFAULT_OPERATOR_NAMESPACE
        );
    }

    #[test]
    fn an_unserved_api_gets_no_service_monitor_and_the_condition_says_why() {
        let observed = ObservedBuilder::new().unserved::<ServiceMonitor>().build();
        assert!(desired(&observed).objects().is_empty());
        let condition = monitoring_configured(&orders(), &observed, &ApplyReport::default());
        assert!(!condition.is_true());
        assert_eq!(condition.reason, API_UNAVAILABLE);
        assert!(
            !condition.is_warning(),
            "a missing optional API is no failure"
        );
    }

    #[test]
    fn the_condition_is_true_once_the_service_monitor_is_applied_or_found() {
        let listed = ObservedBuilder::new().listed::<ServiceMonitor>().build();
        let none = monitoring_configured(&orders(), &listed, &ApplyReport::default());
        assert_eq!(none.reason, "ServiceMonitorNotApplied");
        let desired = desired(&listed);
        let created = ApplyReport {
            created: vec![desired.objects()[0].reference()],
            ..Default::default()
        };
        assert!(monitoring_configured(&orders(), &listed, &created).is_true());
        let mut found = ObservedBuilder::new().listed::<ServiceMonitor>().build();
        found.insert(
            &resource(),
            ChildBuilder::of::<ServiceMonitor>("orders").build(),
        );
        assert!(monitoring_configured(&orders(), &found, &ApplyReport::default()).is_true());
    }

    #[test]
    fn the_keep_rule_matches_the_names_literally() {
        assert_eq!(regex_literal("a.b-c"), "a\\.b-c");
        assert_eq!(regex_literal("orders"), "orders");
    }
}
