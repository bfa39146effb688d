//! The operator-wide monitoring objects: one PrometheusRule of
//! symptom-based alerts ([`alerts`]) and the Grafana dashboard's ConfigMap
//! ([`dashboard`]), in the operator's namespace.
//!
//! A companion (see `shared::capability::Companion`) keeps them there: on
//! start and then every metrics interval it reads both objects and
//! server-side applies the one that is missing, differs from what this
//! operator wants (the applied-hash annotation), or was changed by someone
//! else. At rest a pass is two reads and no write, and logs nothing.
//!
//! The PrometheusRule is only applied when `monitoring.coreos.com/v1`
//! PrometheusRule is served (the prometheus-operator's CRD is installed):
//! a list of it answering 404 means it is not. That is said once in the
//! log, and again only when it changes; the operator keeps running, and
//! applies the rule on the first pass after the CRD appears. The
//! dashboard's ConfigMap is always applied: Grafana's dashboard sidecar
//! picks up ConfigMaps labelled `grafana_dashboard: "1"`.
//!
//! The same rules and dashboard are in `deploy/monitoring/` for clusters
//! where they are installed by hand; a test checks those files against
//! this module ([`files`]).
//!
//! Where it stops: the objects are the operator's, not a database's, so no
//! database owns them and deleting the operator leaves them; the
//! ServiceMonitors that make Prometheus scrape each database are the
//! `monitor` capability's.

pub mod alerts;
pub mod dashboard;
pub mod files;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use serde_json::{Value, json};
use shared::apply::{self, Change};
use shared::capability::{Companion, CompanionContext, CompanionRun, DesiredObject};
use shared::keys::{APP_NAME_LABEL, APPLIED_HASH_ANNOTATION, COMPONENT_LABEL};
use shared::reconcile::error_chain;

/// The PrometheusRule's name.
pub const RULE_NAME: &str = "pgdb-operator-alerts";
/// The dashboard ConfigMap's name.
pub const DASHBOARD_NAME: &str = "pgdb-operator-dashboard";
/// The label Grafana's dashboard sidecar looks for, and its value.
pub const DASHBOARD_LABEL: (&str, &str) = ("grafana_dashboard", "1");
/// The dashboard's key in the ConfigMap (the file the sidecar writes).
pub const DASHBOARD_KEY: &str = "pgdb.json";
/// `app.kubernetes.io/name` of the operator's own objects (its metrics
/// Service carries the same).
pub const OPERATOR_NAME: &str = "pgdb-operator";
/// `app.kubernetes.io/component` of the monitoring objects.
pub const COMPONENT: &str = "monitoring";

/// The monitoring companion.
pub fn companion() -> Companion {
    Companion {
        name: "monitoring",
        run,
    }
}

/// The prometheus-operator's PrometheusRule resource.
pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: "PrometheusRule".into(),
        plural: "prometheusrules".into(),
    }
}

fn labels() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        (APP_NAME_LABEL, OPERATOR_NAME),
        (COMPONENT_LABEL, COMPONENT),
    ])
}

/// Adds the hash of `value` as the applied-hash annotation, so the next
/// pass can tell what it wants from what it applied last.
fn with_hash(resource: ApiResource, name: &str, mut value: Value) -> DesiredObject {
    let hash = apply::content_hash(&value);
    value["metadata"]["annotations"] = json!({ APPLIED_HASH_ANNOTATION: hash });
    DesiredObject {
        resource,
        name: name.to_string(),
        value,
        owned: false,
        record: false,
    }
}

/// The PrometheusRule of [`alerts::alerts`], in `namespace`.
pub fn prometheus_rule(namespace: &str) -> DesiredObject {
    with_hash(
        prometheus_rule_resource(),
        RULE_NAME,
        json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": RULE_NAME, "namespace": namespace, "labels": labels()},
            "spec": alerts::rule_groups(),
        }),
    )
}

/// The dashboard's ConfigMap, in `namespace`.
pub fn dashboard_config_map(namespace: &str) -> DesiredObject {
    let mut labels = labels();
    labels.insert(DASHBOARD_LABEL.0, DASHBOARD_LABEL.1);
    with_hash(
        apply::resource_of::<ConfigMap>(),
        DASHBOARD_NAME,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": DASHBOARD_NAME, "namespace": namespace, "labels": labels},
            "data": {DASHBOARD_KEY: dashboard::DASHBOARD_JSON},
        }),
    )
}

/// What one pass read of the PrometheusRule.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleSeen {
    /// `monitoring.coreos.com/v1` PrometheusRule is not served.
    Unserved,
    /// It is served; the operator's rule, if it exists.
    Served(Option<Box<DynamicObject>>),
}

/// What one pass read in the operator's namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// The PrometheusRule.
    pub rule: RuleSeen,
    /// The dashboard's ConfigMap, if it exists.
    pub dashboard: Option<DynamicObject>,
}

/// What to write, and why: the objects that are missing, differ from what
/// the operator wants, or were changed by someone else. Empty at rest.
pub fn plan(namespace: &str, seen: &Seen) -> Vec<(DesiredObject, Change)> {
    let mut writes = Vec::new();
    let mut consider = |desired: DesiredObject, live: Option<&DynamicObject>| {
        // `change_needed` only fails to serialise a live object it just
        // deserialised; apply it then, rather than never.
        let change = apply::change_needed(&desired, live).unwrap_or(Some(Change::Update));
        if let Some(change) = change {
            writes.push((desired, change));
        }
    };
    consider(dashboard_config_map(namespace), seen.dashboard.as_ref());
    if let RuleSeen::Served(live) = &seen.rule {
        consider(prometheus_rule(namespace), live.as_deref());
    }
    writes
}

/// Lists `name` of `resource` in `namespace` with a field selector: one
/// request that tells a missing object (an empty list) from a resource
/// that is not served (404), which a GET of the object cannot.
async fn read(
    context: &CompanionContext,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
) -> Result<Option<Option<DynamicObject>>, shared::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(context.client.clone(), namespace, resource);
    let params = ListParams::default().fields(&format!("metadata.name={name}"));
    match api.list(&params).await {
        Ok(list) => Ok(Some(list.items.into_iter().next())),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(source) => Err(shared::Error::Kube {
            action: format!("list {} {name} in {namespace}", resource.plural),
            source: Box::new(source),
        }),
    }
}

async fn observe(context: &CompanionContext) -> Result<Seen, shared::Error> {
    let namespace = &context.operator_namespace;
    let dashboard = read(
        context,
        &apply::resource_of::<ConfigMap>(),
        namespace,
        DASHBOARD_NAME,
    )
    .await?
    .flatten();
    let rule = match read(context, &prometheus_rule_resource(), namespace, RULE_NAME).await? {
        Some(live) => RuleSeen::Served(live.map(Box::new)),
        None => RuleSeen::Unserved,
    };
    Ok(Seen { rule, dashboard })
}

/// What the last pass found, so the log says each thing once.
#[derive(Clone, Debug, Default, PartialEq)]
struct Said {
    rule_served: Option<bool>,
    failure: Option<String>,
}

async fn pass(context: &CompanionContext, said: &mut Said) -> Result<(), shared::Error> {
    let namespace = &context.operator_namespace;
    let seen = observe(context).await?;
    let served = !matches!(seen.rule, RuleSeen::Unserved);
    if said.rule_served != Some(served) {
        if served {
            tracing::info!(
                namespace,
                rule = RULE_NAME,
                "monitoring.coreos.com/v1 PrometheusRule is served: the alerts are kept in it"
            );
        } else {
            tracing::info!(
                namespace,
                "monitoring.coreos.com/v1 PrometheusRule is not served (the prometheus-operator's CRDs are not installed): the alerts are not installed; they are also in deploy/monitoring/alerts.yaml"
            );
        }
        said.rule_served = Some(served);
    }
    for (desired, change) in plan(namespace, &seen) {
        apply::apply(&context.client, &context.field_manager, &desired).await?;
        let change = match change {
            Change::Create => "create",
            Change::Update => "update",
            Change::Repair => "repair",
        };
        if let Some(metrics) = &context.metrics {
            metrics.operator.applied(&desired.resource.kind, change);
        }
        tracing::info!(
            namespace,
            kind = desired.resource.kind,
            name = desired.name,
            change,
            "applied"
        );
    }
    Ok(())
}

fn run(context: CompanionContext) -> CompanionRun {
    Box::pin(async move {
        let mut said = Said::default();
        loop {
            match pass(&context, &mut said).await {
                Ok(()) => said.failure = None,
                Err(error) => {
                    // A failed pass (API server away, RBAC missing) is
                    // retried on the next one; the operator keeps running.
                    let chain = error_chain(&error);
                    if said.failure.as_ref() != Some(&chain) {
                        tracing::warn!(error = %chain, "monitoring objects not applied; retrying every interval");
                        said.failure = Some(chain);
                    }
                }
            }
            tokio::select! {
                _ = context.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(context.metrics_interval) => {}
            }
        }
    })
}
