//! A PodDisruptionBudget for the database's pods.
//!
//! A budget limits voluntary disruptions: evictions, which `kubectl drain`,
//! cluster upgrades and the cluster autoscaler use to move pods off a
//! node. A database runs one pod, so `maxUnavailable: 1` would allow every
//! eviction and protect nothing. The budget here follows the choice
//! CloudNativePG makes for a cluster's primary, which it keeps also for a
//! single-instance cluster: `minAvailable: 1` over the database's pods, so
//! the serving pod is never evicted by a drain. Moving it is a decision a
//! person takes: CloudNativePG lifts its budget during a declared node
//! maintenance window; here, delete the pod (a deletion is not an
//! eviction; the StatefulSet recreates it where it can be scheduled), or
//! set `spec.paused` and delete the budget for the maintenance.
//!
//! One difference from CloudNativePG: `unhealthyPodEvictionPolicy:
//! AlwaysAllow`. A database pod that is not Ready serves no one, and
//! with the API's default policy its budget would still block the drain
//! that could reschedule it onto a healthy node.
//!
//! The budget selects the pods as the Services and the StatefulSet do
//! ([`level1_install::objects::selector_labels`]), so the Jobs of a major
//! upgrade or a backup, which carry only the instance label, are not
//! counted as replicas of the database.
//!
//! Where it stops: involuntary disruptions (a node failing) are outside any
//! budget; only the data volume protects against them.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{ApiResource, ObjectMeta};
use shared::PostgresDB;
use shared::capability::{Capability, Desired, Observed, Query};

/// The eviction policy for pods that are not Ready: always evictable.
pub const UNHEALTHY_POD_EVICTION_POLICY: &str = "AlwaysAllow";

/// The disruption-budget capability.
pub struct Disruption;

/// The budget of `db`'s pods, named after the database.
pub fn budget(db: &PostgresDB) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(db.name_any()),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            max_unavailable: None,
            selector: Some(LabelSelector {
                match_labels: Some(level1_install::objects::selector_labels(db)),
                match_expressions: None,
            }),
            unhealthy_pod_eviction_policy: Some(UNHEALTHY_POD_EVICTION_POLICY.into()),
        }),
        status: None,
    }
}

impl Capability for Disruption {
    fn name(&self) -> &'static str {
        "disruption"
    }

    fn owned_kinds(&self) -> Vec<ApiResource> {
        vec![ApiResource::erase::<PodDisruptionBudget>(&())]
    }

    fn observe(&self, db: &PostgresDB) -> Vec<Query> {
        vec![Query::named::<PodDisruptionBudget>(db.name_any())]
    }

    fn desire(
        &self,
        db: &PostgresDB,
        _observed: &Observed,
        _now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), shared::Error> {
        desired.add(&budget(db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::keys::{COMPONENT_LABEL, INSTANCE_LABEL};
    use shared::testing::{DbBuilder, ObservedBuilder, assert_reads_what_it_applies, at};

    fn database() -> PostgresDB {
        DbBuilder::named("orders").build()
    }

    #[test]
    fn the_only_pod_of_a_database_is_never_evicted_while_it_serves() {
        let budget = budget(&database());
        let spec = budget.spec.expect("a spec");
        assert_eq!(spec.min_available, Some(IntOrString::Int(1)));
        assert_eq!(spec.max_unavailable, None);
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
    }

    #[test]
    fn the_budget_selects_the_pods_the_statefulset_makes_and_not_jobs() {
        let db = database();
        let selector = budget(&db)
            .spec
            .and_then(|s| s.selector)
            .and_then(|s| s.match_labels)
            .expect("labels");
        let set = level1_install::objects::statefulset(
            &db,
            level1_install::version::PgVersion::parse("16.4").expect("a version"),
            None,
        );
        let pod_labels = set
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.labels)
            .expect("pod labels");
        for (key, value) in &selector {
            assert_eq!(pod_labels.get(key), Some(value), "{key}");
        }
        // A Job's pod carries the instance label and a component, not the
        // app labels the budget selects.
        assert!(selector.contains_key(INSTANCE_LABEL));
        assert!(!selector.contains_key(COMPONENT_LABEL));
        assert!(selector.len() > 1);
    }

    #[test]
    fn the_budget_is_read_before_it_is_applied() {
        let capabilities: Vec<Box<dyn Capability>> = vec![Box::new(Disruption)];
        assert_reads_what_it_applies(
            &capabilities,
            &database(),
            &ObservedBuilder::new().build(),
            at(0),
        );
    }
}
