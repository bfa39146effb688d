//! Services by role, and the role labels they select on.
//!
//! - `<name>` (Level 1's read-write Service) selects the pod labelled
//!   `role: primary`, and nothing at all while the decision fences it (no
//!   serving primary): its selector then also requires [`FENCE_LABEL`],
//!   which no pod carries, as Level 2's write fence does;
//! - `<name>-ro` selects the pods labelled `role: replica`;
//! - `<name>-r` selects every instance (Level 1's selector labels).
//!
//! The role label is the operator's, set on each existing pod by a
//! server-side apply of its metadata alone: `primary` on the serving
//! primary, `replica` on every other pod, including a fenced old primary,
//! so a Service never selects two primaries. The pod template does not
//! carry it: a pod the StatefulSet recreates has no role until the
//! operator gives it one.
//!
//! All of this exists in instance mode only; a single-instance database
//! keeps Level 1's Services as they are.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use level1_install::api::{Names, PORT};
use shared::api::PostgresDB;
use shared::capability::{Desired, Observed};
use shared::error::Error;
use shared::ext::PodExt;
use shared::keys::{FENCE_LABEL, ROLE_LABEL, ROLE_PRIMARY, ROLE_REPLICA};
use shared::names::common_labels;

use crate::autopilot::names::HaNames;

/// The value of [`FENCE_LABEL`] on a fenced read-write Service.
pub const FENCED_BY: &str = "failover";

/// The labels selecting every instance (Level 1's selector labels).
pub fn instance_labels(db: &PostgresDB) -> BTreeMap<String, String> {
    let mut labels = common_labels(&db.name_any());
    labels.remove(shared::keys::MANAGED_BY_LABEL);
    labels
}

/// The selector of the read-write Service: the serving primary's role,
/// or, fenced, a label no pod carries.
pub fn primary_selector(db: &PostgresDB, serving: Option<&str>) -> BTreeMap<String, String> {
    let mut selector = instance_labels(db);
    selector.insert(ROLE_LABEL.into(), ROLE_PRIMARY.into());
    if serving.is_none() {
        selector.insert(FENCE_LABEL.into(), FENCED_BY.into());
    }
    selector
}

fn service(name: &str, selector: BTreeMap<String, String>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("postgres".into()),
                port: PORT,
                target_port: Some(IntOrString::String("postgres".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The read-only Service: the replicas.
pub fn read_only_service(db: &PostgresDB) -> Service {
    let mut selector = instance_labels(db);
    selector.insert(ROLE_LABEL.into(), ROLE_REPLICA.into());
    service(&HaNames::of(db).read_only, selector)
}

/// The any-instance Service.
pub fn any_service(db: &PostgresDB) -> Service {
    service(&HaNames::of(db).any, instance_labels(db))
}

/// The role of `pod` under a decision serving `serving`.
pub fn role_of(pod: &str, serving: Option<&str>) -> &'static str {
    if serving == Some(pod) {
        ROLE_PRIMARY
    } else {
        ROLE_REPLICA
    }
}

/// A pod's metadata with its role label alone, for a server-side apply.
pub fn role_patch(pod: &str, role: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(pod.into()),
            labels: Some(BTreeMap::from([(ROLE_LABEL.to_string(), role.to_string())])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The database's server pods (its StatefulSet's, not a Job's), existing
/// and not being deleted: the pods that get a role.
pub fn server_pods(db: &PostgresDB, observed: &Observed) -> Vec<Pod> {
    level2_upgrade::logins::server_pods(db, observed)
        .into_iter()
        .filter(|pod| !pod.is_deleting())
        .collect()
}

/// Adds the Services by role, fences or points the read-write one, and
/// labels each existing pod with its role.
pub fn desire(
    db: &PostgresDB,
    observed: &Observed,
    serving: Option<&str>,
    desired: &mut Desired,
) -> Result<(), Error> {
    let selector = primary_selector(db, serving);
    desired.modify::<Service>(&Names::of(db).primary, |svc| {
        if let Some(spec) = svc.spec.as_mut() {
            spec.selector = Some(selector);
        }
    })?;
    desired.add(&read_only_service(db))?;
    desired.add(&any_service(db))?;
    for pod in server_pods(db, observed) {
        let name = pod.name_any();
        desired.add_unowned(&role_patch(&name, role_of(&name, serving)))?;
    }
    Ok(())
}
