//! Fixtures for the levels' unit tests, and the checks every level's
//! capabilities must pass.
//!
//! One builder makes `PostgresDB` objects ([`DbBuilder`]) and one makes what
//! a reconcile observed ([`ObservedBuilder`]), so each level's tests say
//! only what differs from a plain database. [`assert_reads_what_it_applies`]
//! checks the invariant the core relies on to write nothing at rest: every
//! object a capability applies is one its `observe` queries read first.
//! Compiled with the `testing` feature, which the level crates enable for
//! their tests only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStatus, Pod, PodCondition, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::{ByteString, Resource as OpenApiResource};
use kube::Resource;
use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use serde::Serialize;

use crate::api::{
    PostgresDB, PostgresDBSpec, PostgresDBStatus, ResourcesSpec, StorageSpec, UpgradeSpec,
    UpgradeStatus,
};
use crate::capability::{Capability, Desired, Observed, QuerySelector};
use crate::names::common_labels;
use crate::sql::SqlAnswer;

/// The uid of every database [`DbBuilder`] builds.
pub const DB_UID: &str = "uid-1";

/// The instant `seconds` after the Unix epoch.
pub fn at(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).expect("a valid time")
}

/// Builds a `PostgresDB`: by default `shop/<name>` asking for 16.4 on 1Gi,
/// generation 1, with no status.
#[derive(Clone, Debug)]
pub struct DbBuilder {
    db: PostgresDB,
}

impl DbBuilder {
    /// A database named `name`.
    pub fn named(name: &str) -> Self {
        let spec = PostgresDBSpec {
            version: "16.4".into(),
            image: None,
            storage: StorageSpec {
                size: "1Gi".into(),
                storage_class_name: None,
                auto_grow: None,
            },
            resources: ResourcesSpec::default_for_database(),
            database: Default::default(),
            parameters: BTreeMap::new(),
            paused: false,
            upgrade: None,
            backup: None,
            restore: None,
            deletion_policy: None,
            instances: None,
            primary: None,
            failover: None,
            replication: None,
            autoscaling: None,
            tuning: None,
            anomaly_detection: None,
        };
        let mut db = PostgresDB::new(name, spec);
        db.metadata.namespace = Some("shop".into());
        db.metadata.uid = Some(DB_UID.into());
        db.metadata.generation = Some(1);
        Self { db }
    }

    /// A database named `name` as a user's manifest has it, for creating
    /// in a cluster: without the namespace, uid and generation the API
    /// server and the request give it.
    pub fn manifest(name: &str) -> Self {
        let mut builder = Self::named(name);
        builder.db.metadata.namespace = None;
        builder.db.metadata.uid = None;
        builder.db.metadata.generation = None;
        builder
    }

    /// `spec.version`.
    pub fn version(mut self, version: &str) -> Self {
        self.db.spec.version = version.into();
        self
    }

    /// `spec.image`.
    pub fn image(mut self, image: &str) -> Self {
        self.db.spec.image = Some(image.into());
        self
    }

    /// `spec.storage.size`.
    pub fn storage(mut self, size: &str) -> Self {
        self.db.spec.storage.size = size.into();
        self
    }

    /// One of `spec.parameters`.
    pub fn parameter(mut self, name: &str, value: &str) -> Self {
        self.db.spec.parameters.insert(name.into(), value.into());
        self
    }

    /// `spec.paused: true`.
    pub fn paused(mut self) -> Self {
        self.db.spec.paused = true;
        self
    }

    /// `spec.upgrade`.
    pub fn upgrade(mut self, upgrade: Option<UpgradeSpec>) -> Self {
        self.db.spec.upgrade = upgrade;
        self
    }

    /// `spec.deletionPolicy`.
    pub fn deletion_policy(mut self, policy: crate::backup::DeletionPolicy) -> Self {
        self.db.spec.deletion_policy = Some(policy);
        self
    }

    /// Being deleted since `at`, carrying the core's deletion finalizer
    /// (see the `finalizer` module) and resourceVersion "7".
    pub fn being_deleted(mut self, at: jiff::Timestamp) -> Self {
        self.db.metadata.deletion_timestamp = Some(Time(at));
        self.db.metadata.finalizers = Some(vec![crate::keys::DELETION_POLICY_FINALIZER.into()]);
        self.db.metadata.resource_version = Some("7".into());
        self
    }

    /// `status.currentVersion` (the status exists, empty otherwise, even
    /// when `version` is `None`).
    pub fn running(mut self, version: Option<&str>) -> Self {
        self.status().current_version = version.map(String::from);
        self
    }

    /// `status.upgrade`.
    pub fn upgrade_status(mut self, upgrade: UpgradeStatus) -> Self {
        self.status().upgrade = Some(upgrade);
        self
    }

    /// `spec.backup`.
    pub fn backup(mut self, backup: crate::backup::BackupSpec) -> Self {
        self.db.spec.backup = Some(backup);
        self
    }

    /// `metadata.creationTimestamp`.
    pub fn created(mut self, at: jiff::Timestamp) -> Self {
        self.db.metadata.creation_timestamp = Some(Time(at));
        self
    }

    /// `status.backup`.
    pub fn backup_status(mut self, summary: crate::backup::BackupSummary) -> Self {
        self.status().backup = Some(summary);
        self
    }

    /// `status.conditions`, as an earlier reconcile wrote them.
    pub fn conditions(
        mut self,
        conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    ) -> Self {
        self.status().conditions = conditions;
        self
    }

    /// `status.insights`, as an earlier reconcile wrote it.
    pub fn insights(mut self, insights: crate::api::InsightsStatus) -> Self {
        self.status().insights = Some(insights);
        self
    }

    fn status(&mut self) -> &mut PostgresDBStatus {
        self.db.status.get_or_insert_with(Default::default)
    }

    /// The database.
    /// `spec.instances`.
    pub fn instances(mut self, instances: i32) -> Self {
        self.db.spec.instances = Some(instances);
        self
    }

    /// `spec.primary`.
    pub fn primary(mut self, pod: &str) -> Self {
        self.db.spec.primary = Some(pod.to_string());
        self
    }

    /// `spec.failover`.
    pub fn failover(mut self, failover: crate::ha::FailoverSpec) -> Self {
        self.db.spec.failover = Some(failover);
        self
    }

    /// `spec.replication`.
    pub fn replication(mut self, replication: crate::ha::ReplicationSpec) -> Self {
        self.db.spec.replication = Some(replication);
        self
    }

    /// `spec.autoscaling`.
    pub fn autoscaling(
        mut self,
        autoscaling: crate::autopilot::autoscaling::AutoscalingSpec,
    ) -> Self {
        self.db.spec.autoscaling = Some(autoscaling);
        self
    }

    /// `spec.storage.autoGrow`.
    pub fn auto_grow(mut self, auto_grow: crate::autopilot::autogrow::AutoGrowSpec) -> Self {
        self.db.spec.storage.auto_grow = Some(auto_grow);
        self
    }

    /// `spec.tuning`.
    pub fn tuning(mut self, tuning: crate::autopilot::tuning::Tuning) -> Self {
        self.db.spec.tuning = Some(tuning);
        self
    }

    /// `spec.anomalyDetection`.
    pub fn anomaly_detection(
        mut self,
        anomaly: crate::autopilot::anomaly::AnomalyDetectionSpec,
    ) -> Self {
        self.db.spec.anomaly_detection = Some(anomaly);
        self
    }

    /// `status.autopilot`.
    pub fn autopilot_status(mut self, autopilot: crate::autopilot::AutopilotStatus) -> Self {
        self.db
            .status
            .get_or_insert_with(Default::default)
            .autopilot = Some(autopilot);
        self
    }

    /// `status.currentPrimary`.
    pub fn current_primary(mut self, pod: &str) -> Self {
        self.db
            .status
            .get_or_insert_with(Default::default)
            .current_primary = Some(pod.to_string());
        self
    }

    /// `status.highAvailability`.
    pub fn high_availability(mut self, ha: crate::ha::HighAvailabilityStatus) -> Self {
        self.db
            .status
            .get_or_insert_with(Default::default)
            .high_availability = Some(ha);
        self
    }

    pub fn build(self) -> PostgresDB {
        self.db
    }
}

/// An object as the API server returns it to the reconcile.
pub fn raw<K: Serialize>(object: &K) -> DynamicObject {
    serde_json::from_value(serde_json::to_value(object).expect("serialises")).expect("an object")
}

/// Adds `object` to what was observed (replacing one of the same kind and name).
pub fn put<K>(observed: &mut Observed, object: &K)
where
    K: Resource<DynamicType = ()> + Serialize,
{
    observed.insert(&ApiResource::erase::<K>(&()), raw(object));
}

/// Builds what a reconcile observed: objects and SQL answers.
#[derive(Clone, Debug, Default)]
pub struct ObservedBuilder {
    observed: Observed,
}

impl ObservedBuilder {
    /// Nothing observed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an object.
    pub fn with<K>(mut self, object: &K) -> Self
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        put(&mut self.observed, object);
        self
    }

    /// Adds the answer to the SQL probe named `name`.
    pub fn sql(mut self, name: &str, answer: SqlAnswer) -> Self {
        self.observed.insert_sql(name, answer);
        self
    }

    /// The database's latest reading.
    pub fn reading(mut self, reading: crate::readings::DatabaseReading) -> Self {
        self.observed.set_reading(Some(reading));
        self
    }

    /// The spec as the user wrote it, beside an effective spec that differs.
    pub fn written_spec(mut self, spec: crate::api::PostgresDBSpec) -> Self {
        self.observed.set_written_spec(spec);
        self
    }

    /// A list of kind `K` answered 404: the API server does not serve it.
    pub fn unserved<K: Resource<DynamicType = ()>>(mut self) -> Self {
        self.observed.mark_unserved(&ApiResource::erase::<K>(&()));
        self
    }

    /// Every object of kind `K` carrying the database's instance label was
    /// listed (those added with [`ObservedBuilder::with`] were found).
    pub fn listed<K: Resource<DynamicType = ()>>(mut self) -> Self {
        self.observed.mark_listed(&ApiResource::erase::<K>(&()));
        self
    }

    /// The namespace the operator runs in.
    pub fn operator_namespace(mut self, namespace: &str) -> Self {
        self.observed.set_operator_namespace(namespace);
        self
    }

    /// What was observed.
    pub fn build(self) -> Observed {
        self.observed
    }
}

/// A Secret holding `username` and `password`, as Level 1 generates them.
pub fn login_secret(name: &str, username: &str, password: &str) -> Secret {
    Secret {
        metadata: meta(name),
        data: Some(BTreeMap::from([
            ("username".into(), ByteString(username.as_bytes().to_vec())),
            ("password".into(), ByteString(password.as_bytes().to_vec())),
        ])),
        ..Default::default()
    }
}

/// Metadata with a name (in namespace `shop`, where [`DbBuilder`]'s databases live).
pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("shop".into()),
        ..Default::default()
    }
}

/// Builds a Pod.
#[derive(Clone, Debug)]
pub struct PodBuilder {
    pod: Pod,
}

impl PodBuilder {
    /// A pod named `name`, without status.
    pub fn named(name: &str) -> Self {
        Self {
            pod: Pod {
                metadata: meta(name),
                ..Default::default()
            },
        }
    }

    /// A label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }

    /// Owned by the StatefulSet (or other owner of `kind`) named `name`.
    pub fn owned_by<K: OpenApiResource>(mut self, name: &str) -> Self {
        self.pod
            .metadata
            .owner_references
            .get_or_insert_with(Default::default)
            .push(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: K::API_VERSION.into(),
                    kind: K::KIND.into(),
                    name: name.into(),
                    uid: format!("{name}-uid"),
                    ..Default::default()
                },
            );
        self
    }

    fn status(&mut self) -> &mut PodStatus {
        self.pod.status.get_or_insert_with(Default::default)
    }

    /// `status.phase`.
    pub fn phase(mut self, phase: &str) -> Self {
        self.status().phase = Some(phase.into());
        self
    }

    /// `status.podIP`.
    pub fn ip(mut self, ip: &str) -> Self {
        self.status().pod_ip = Some(ip.into());
        self
    }

    /// The Ready condition.
    pub fn ready(mut self, ready: bool) -> Self {
        self.status()
            .conditions
            .get_or_insert_with(Default::default)
            .push(PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            });
        self
    }

    /// A container's status, in `state`.
    pub fn container(mut self, name: &str, state: ContainerState) -> Self {
        self.status()
            .container_statuses
            .get_or_insert_with(Default::default)
            .push(ContainerStatus {
                name: name.into(),
                state: Some(state),
                ..Default::default()
            });
        self
    }

    /// `spec.nodeName`: scheduled on `node`.
    pub fn node(mut self, node: &str) -> Self {
        self.pod.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
        self
    }

    /// Being deleted.
    pub fn deleting(mut self) -> Self {
        self.pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0)));
        self
    }

    /// The pod.
    pub fn build(self) -> Pod {
        self.pod
    }
}

/// What the core would read after applying `desired`: every desired object
/// as the API server would return it.
pub fn observed_after(desired: &Desired) -> Observed {
    let mut observed = Observed::default();
    for object in desired.objects() {
        let mut value = object.value.clone();
        value["metadata"]["resourceVersion"] = "1".into();
        observed.insert(
            &object.resource,
            serde_json::from_value(value).expect("an object"),
        );
    }
    observed
}

/// Checks that every object `capabilities` apply for `db`, given what was
/// `observed` at `now`, is one their `observe` queries read: the core
/// skips a write only when it has read the object and found it equal, so
/// an object applied without being read is written at every reconcile.
pub fn assert_reads_what_it_applies(
    capabilities: &[Box<dyn Capability>],
    db: &PostgresDB,
    observed: &Observed,
    now: jiff::Timestamp,
) {
    let mut desired = Desired::default();
    for capability in capabilities {
        capability
            .desire(db, observed, now, &mut desired)
            .unwrap_or_else(|e| panic!("{} does not desire: {e}", capability.name()));
    }
    let queries: Vec<_> = capabilities.iter().flat_map(|c| c.observe(db)).collect();
    for object in desired.objects() {
        let read = queries.iter().any(|q| {
            q.resource == object.resource
                && match &q.selector {
                    QuerySelector::Name(name) => *name == object.name,
                    QuerySelector::Instance => true,
                    QuerySelector::InstanceOf(_) => false,
                }
        });
        assert!(
            read,
            "{} {} is applied but never read, so it would be written at every reconcile",
            object.resource.kind, object.name
        );
    }
}

/// Builds an observed child of kind `K` as the operator makes its children
/// for the database `shop/orders` that `DbBuilder::named("orders")` builds:
/// the database's labels and a controller reference to it.
#[derive(Clone, Debug)]
pub struct ChildBuilder {
    resource: ApiResource,
    meta: ObjectMeta,
}

impl ChildBuilder {
    /// A child named `name`, with the uid `uid-<name>`.
    pub fn of<K: Resource<DynamicType = ()>>(name: &str) -> Self {
        let database = DbBuilder::named("orders").build();
        Self {
            resource: ApiResource::erase::<K>(&()),
            meta: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(common_labels("orders")),
                owner_references: database.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
        }
    }

    /// Controlled by the object of kind `O` named `name` with `uid` instead.
    pub fn controlled_by<O: Resource<DynamicType = ()>>(mut self, name: &str, uid: &str) -> Self {
        self.meta.owner_references = Some(vec![OwnerReference {
            api_version: O::api_version(&()).into(),
            kind: O::kind(&()).into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            ..Default::default()
        }]);
        self
    }

    /// With the label `key` set to `value`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.meta
            .labels
            .get_or_insert_default()
            .insert(key.into(), value.into());
        self
    }

    /// Without the label `key`.
    pub fn without_label(mut self, key: &str) -> Self {
        if let Some(labels) = self.meta.labels.as_mut() {
            labels.remove(key);
        }
        self
    }

    /// With the annotation `key` set to `value`.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.meta
            .annotations
            .get_or_insert_default()
            .insert(key.into(), value.into());
        self
    }

    /// Being deleted (a deletionTimestamp is set).
    pub fn being_deleted(mut self) -> Self {
        self.meta.deletion_timestamp = Some(Time(at(1_767_225_600)));
        self
    }

    /// Its metadata, for building a typed object.
    pub fn meta(&self) -> ObjectMeta {
        self.meta.clone()
    }

    /// The object, as a reconcile observes it.
    pub fn build(self) -> DynamicObject {
        let mut object = DynamicObject::new("", &self.resource);
        object.metadata = self.meta;
        object
    }
}
