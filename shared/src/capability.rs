//! The extension point: what a level contributes to a reconcile.
//!
//! A level is an ordered list of capabilities. Each reconcile reads the
//! world once (the queries every capability asks for), then asks each
//! capability in turn to check the spec, to add to (or adjust) the desired
//! objects, and to assess status. All three steps are pure functions of the
//! `PostgresDB`, what was observed and the reconcile's clock (one instant,
//! read once per reconcile), so they are unit-tested without a cluster, and
//! the core does the I/O.
//!
//! A level is the level below it plus its own capabilities: level N-1's
//! list, unchanged and first, then level N's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject};
use kube::core::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{PostgresDB, PostgresDBStatus};
use crate::conditions::Assessments;
use crate::error::Error;
use crate::sql::{SqlAction, SqlAnswer, SqlProbe};

/// The type of an Event (Normal or Warning), as Kubernetes spells it.
pub use kube::runtime::events::EventType;

/// Something a capability needs to read before it can decide.
#[derive(Clone, Debug)]
pub struct Query {
    /// The kind of object.
    pub resource: ApiResource,
    /// Which objects of that kind, in the database's namespace.
    pub selector: QuerySelector,
}

/// Which objects a [`Query`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuerySelector {
    /// One object by name (found even when its labels were edited away).
    Name(String),
    /// Every object carrying the database's instance label.
    Instance,
    /// Every object carrying another database's instance label (the
    /// backups of the database a restore reads from, which may be deleted).
    /// Such objects are observed beside the database's own, so a capability
    /// reading them tells them apart by what they are for.
    InstanceOf(String),
}

impl Query {
    /// Read one object of kind `K` by name.
    pub fn named<K: Resource<DynamicType = ()>>(name: impl Into<String>) -> Self {
        Self {
            resource: ApiResource::erase::<K>(&()),
            selector: QuerySelector::Name(name.into()),
        }
    }

    /// Read every object of kind `K` labelled as belonging to the database.
    pub fn labelled<K: Resource<DynamicType = ()>>() -> Self {
        Self {
            resource: ApiResource::erase::<K>(&()),
            selector: QuerySelector::Instance,
        }
    }

    /// Read every object of kind `K` labelled as belonging to another
    /// database, `db_name`, of the same namespace.
    pub fn labelled_for<K: Resource<DynamicType = ()>>(db_name: impl Into<String>) -> Self {
        Self {
            resource: ApiResource::erase::<K>(&()),
            selector: QuerySelector::InstanceOf(db_name.into()),
        }
    }
}

/// Key of an observed or desired object: group, kind and name.
pub type ObjectKey = (String, String, String);

fn key_of(resource: &ApiResource, name: &str) -> ObjectKey {
    (
        resource.group.clone(),
        resource.kind.clone(),
        name.to_string(),
    )
}

/// What the reconcile read from the cluster, by kind and name.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    objects: BTreeMap<ObjectKey, DynamicObject>,
    queried: Vec<ObjectKey>,
    /// Kinds (group, kind) listed by the database's instance label.
    listed: Vec<(String, String)>,
    sql: BTreeMap<String, SqlAnswer>,
    reading: Option<crate::readings::DatabaseReading>,
    /// Kinds (group, kind) the API server does not serve: a list of them
    /// answered 404.
    unserved: Vec<(String, String)>,
    operator_namespace: Option<String>,
    /// The spec as the user wrote it, when the level acts on an effective
    /// spec that differs from it ([`Level::effective_spec`]).
    written_spec: Option<Box<crate::api::PostgresDBSpec>>,
}

impl Observed {
    /// Records an object read from the cluster.
    pub fn insert(&mut self, resource: &ApiResource, object: DynamicObject) {
        let name = object.metadata.name.clone().unwrap_or_default();
        self.objects.insert(key_of(resource, &name), object);
    }

    /// Records that an object was looked for by name (whether found or not).
    pub fn mark_queried(&mut self, resource: &ApiResource, name: &str) {
        self.queried.push(key_of(resource, name));
    }

    /// Whether the reconcile looked for this object, so its absence means
    /// it does not exist.
    pub fn was_queried(&self, resource: &ApiResource, name: &str) -> bool {
        let key = key_of(resource, name);
        self.queried.contains(&key) || self.objects.contains_key(&key)
    }

    /// Records that every object of this kind carrying the database's
    /// instance label was listed, so an unlisted one does not exist.
    pub fn mark_listed(&mut self, resource: &ApiResource) {
        self.listed
            .push((resource.group.clone(), resource.kind.clone()));
    }

    /// Whether the reconcile listed this kind by the instance label.
    pub fn was_listed(&self, resource: &ApiResource) -> bool {
        self.listed
            .iter()
            .any(|(group, kind)| *group == resource.group && *kind == resource.kind)
    }

    /// Records that the API server does not serve this kind (a list of it
    /// answered 404: its CRD is not installed).
    pub fn mark_unserved(&mut self, resource: &ApiResource) {
        self.unserved
            .push((resource.group.clone(), resource.kind.clone()));
    }

    /// Whether the API server serves this kind: true unless a list of it
    /// answered 404 in this reconcile. A capability that applies a kind
    /// another project defines (a ServiceMonitor) lists it in its
    /// [`Capability::observe`] and reads this before adding one, so a
    /// cluster without that API is reported, not an error loop.
    pub fn is_served(&self, resource: &ApiResource) -> bool {
        !self
            .unserved
            .iter()
            .any(|(group, kind)| *group == resource.group && *kind == resource.kind)
    }

    /// Records the namespace the operator runs in.
    pub fn set_operator_namespace(&mut self, namespace: impl Into<String>) {
        self.operator_namespace = Some(namespace.into());
    }

    /// Records the spec as the user wrote it (the core does, when the
    /// effective spec differs from it).
    pub fn set_written_spec(&mut self, spec: crate::api::PostgresDBSpec) {
        self.written_spec = Some(Box::new(spec));
    }

    /// The spec as the user wrote it, when the capabilities were given an
    /// effective spec that differs from it; `None` when they are the same.
    /// For the capability that explains the difference (status saying
    /// `spec.instances` is 2 but the autoscaler runs 4).
    pub fn written_spec(&self) -> Option<&crate::api::PostgresDBSpec> {
        self.written_spec.as_deref()
    }

    /// The namespace the operator runs in (where its metrics Service is),
    /// when the core said so.
    pub fn operator_namespace(&self) -> Option<&str> {
        self.operator_namespace.as_deref()
    }

    /// Every observed object of this kind, as the API server returned it.
    pub fn all_raw<'a>(
        &'a self,
        resource: &'a ApiResource,
    ) -> impl Iterator<Item = &'a DynamicObject> + 'a {
        self.objects
            .iter()
            .filter(|((group, kind, _), _)| *group == resource.group && *kind == resource.kind)
            .map(|(_, raw)| raw)
    }

    /// The object as the API server returned it.
    pub fn raw(&self, resource: &ApiResource, name: &str) -> Option<&DynamicObject> {
        self.objects.get(&key_of(resource, name))
    }

    /// The object of kind `K` named `name`, if it exists.
    pub fn get<K>(&self, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let raw = self.raw(&ApiResource::erase::<K>(&()), name)?;
        typed(raw)
    }

    /// Records the answer to a [`SqlProbe`].
    pub fn insert_sql(&mut self, name: impl Into<String>, answer: SqlAnswer) {
        self.sql.insert(name.into(), answer);
    }

    /// The answer to the probe named `name`: absent when it was not asked
    /// (no server to ask yet), an error when the server could not answer.
    pub fn sql(&self, name: &str) -> Option<&SqlAnswer> {
        self.sql.get(name)
    }

    /// Records the database's latest reading (Level 4 on).
    pub fn set_reading(&mut self, reading: Option<crate::readings::DatabaseReading>) {
        self.reading = reading;
    }

    /// The database's latest reading, when the level measures databases
    /// and one was taken since the operator started: absent means unknown.
    pub fn reading(&self) -> Option<&crate::readings::DatabaseReading> {
        self.reading.as_ref()
    }

    /// Every observed object of kind `K`, by name.
    pub fn all<K>(&self) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let resource = ApiResource::erase::<K>(&());
        self.objects
            .iter()
            .filter(|((group, kind, _), _)| *group == resource.group && *kind == resource.kind)
            .filter_map(|(_, raw)| typed(raw))
            .collect()
    }
}

fn typed<K: DeserializeOwned>(raw: &DynamicObject) -> Option<K> {
    let value = serde_json::to_value(raw).ok()?;
    match serde_json::from_value(value) {
        Ok(object) => Some(object),
        Err(error) => {
            tracing::warn!(%error, name = raw.metadata.name, "observed object does not deserialize");
            None
        }
    }
}

/// One object the reconcile wants to exist, as a server-side apply body.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObject {
    /// Its kind.
    pub resource: ApiResource,
    /// Its name.
    pub name: String,
    /// The fields this operator owns, with apiVersion and kind.
    pub value: serde_json::Value,
    /// Whether the `PostgresDB` owns it (garbage-collected with it). Data
    /// volumes are not owned, so deleting a database keeps its data.
    pub owned: bool,
    /// Whether it is the operator's record of what it learned (Level 5's
    /// baseline), not something the spec asks for: writing it is neither
    /// progress (Progressing) nor news (an Event), see [`Desired::add_record`].
    pub record: bool,
}

impl DesiredObject {
    /// A reference to the object, for Events.
    pub fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.resource.api_version.clone()),
            kind: Some(self.resource.kind.clone()),
            name: Some(self.name.clone()),
            namespace: self.value["metadata"]["namespace"]
                .as_str()
                .map(String::from),
            ..Default::default()
        }
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        key_of(&self.resource, &self.name)
    }
}

/// An Event a capability wants published about the database.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// Normal, or Warning for something a user should look at.
    pub type_: EventType,
    /// CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
    /// The child the Event is about, when there is one. The Event recorder
    /// counts repeats of an Event by reason and related object, so this keeps
    /// "created the Secret" and "created the Service" two Events.
    pub related: Option<ObjectReference>,
}

/// The desired state being assembled by the capabilities, in order.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    objects: Vec<DesiredObject>,
    kept: Vec<ObjectKey>,
    deletions: Vec<Deletion>,
    sql: Vec<SqlAction>,
    /// Events to publish with this reconcile.
    pub notes: Vec<Note>,
}

/// What the capabilities desire, taken apart for the apply step.
#[derive(Clone, Debug, Default)]
pub struct DesiredParts {
    /// Objects to apply, in order.
    pub objects: Vec<DesiredObject>,
    /// Objects to delete, after the applies.
    pub deletions: Vec<Deletion>,
    /// Statements to run, after the deletions.
    pub sql: Vec<SqlAction>,
    /// Events to publish.
    pub notes: Vec<Note>,
}

/// An object to delete: one a capability wants deleted (a pod stuck on a
/// bad revision), or an orphan the core prunes (see the `prune` module).
/// Deletions are rare and explicit: everything else converges by apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Deletion {
    /// Its kind.
    pub resource: ApiResource,
    /// Its name, in the database's namespace.
    pub name: String,
    /// Why, for the log and the Event.
    pub reason: String,
    /// The uid of the object the decision was made on, when known: the
    /// delete carries it as a precondition, so an object recreated under
    /// the same name since is left alone.
    pub uid: Option<String>,
    /// Who asked for the deletion.
    pub origin: DeletionOrigin,
    /// The grace period to ask for, in seconds, when not the object's own
    /// (`Some(0)`: a pod whose processes do not answer is removed at once,
    /// as `kubectl delete --grace-period=0 --force` does).
    pub grace_period_seconds: Option<u32>,
}

/// Who asked for a [`Deletion`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionOrigin {
    /// A capability, through [`Desired::delete`]; its Event is its own note.
    Capability,
    /// The core's pruning of an object no capability desires; the core
    /// publishes a `Pruned` Event once the object is deleted.
    Prune,
}

impl Desired {
    /// Adds an object owned by the database.
    pub fn add<K>(&mut self, object: &K) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        self.push(object, true, false)
    }

    /// Adds an object that must outlive the database (a data volume).
    pub fn add_unowned<K>(&mut self, object: &K) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        self.push(object, false, false)
    }

    /// Adds an object owned by the database that records what the operator
    /// learned of it (Level 5's anomaly baseline, rewritten at every
    /// sample): applied like any other, but its writes are reported in
    /// [`ApplyReport::recorded`], so they neither make the database
    /// Progressing nor publish an Event.
    pub fn add_record<K>(&mut self, object: &K) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        self.push(object, true, true)
    }

    fn push<K>(&mut self, object: &K, owned: bool, record: bool) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let resource = ApiResource::erase::<K>(&());
        let name = object.meta().name.clone().ok_or_else(|| Error::Desired {
            what: format!("a {} without a name", resource.kind),
        })?;
        let mut value = serde_json::to_value(object).map_err(|source| Error::Serialize {
            what: name.clone(),
            source,
        })?;
        value["apiVersion"] = resource.api_version.clone().into();
        value["kind"] = resource.kind.clone().into();
        self.objects.retain(|o| o.key() != key_of(&resource, &name));
        self.objects.push(DesiredObject {
            resource,
            name,
            value,
            owned,
            record,
        });
        Ok(())
    }

    /// Changes an object an earlier capability added (a later level adjusts
    /// what a lower level builds instead of rebuilding it).
    pub fn modify<K>(&mut self, name: &str, change: impl FnOnce(&mut K)) -> Result<bool, Error>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let key = key_of(&ApiResource::erase::<K>(&()), name);
        let Some(slot) = self.objects.iter_mut().find(|o| o.key() == key) else {
            return Ok(false);
        };
        let mut object: K =
            serde_json::from_value(slot.value.clone()).map_err(|source| Error::Serialize {
                what: name.to_string(),
                source,
            })?;
        change(&mut object);
        let mut value = serde_json::to_value(&object).map_err(|source| Error::Serialize {
            what: name.to_string(),
            source,
        })?;
        value["apiVersion"] = slot.resource.api_version.clone().into();
        value["kind"] = slot.resource.kind.clone().into();
        slot.value = value;
        Ok(true)
    }

    /// Publishes an Event with this reconcile.
    pub fn note(&mut self, type_: EventType, reason: &str, message: impl Into<String>) {
        self.notes.push(Note {
            type_,
            reason: reason.to_string(),
            message: message.into(),
            related: None,
        });
    }

    /// The objects, in the order they were added (the order they are applied).
    pub fn objects(&self) -> &[DesiredObject] {
        &self.objects
    }

    /// Takes the objects out, for the apply step.
    pub fn into_parts(self) -> DesiredParts {
        DesiredParts {
            objects: self.objects,
            deletions: self.deletions,
            sql: self.sql,
            notes: self.notes,
        }
    }

    /// Asks for a SQL statement to run after the objects are applied.
    pub fn run_sql(&mut self, action: SqlAction) {
        self.sql.push(action);
    }

    /// The SQL statements asked for so far.
    pub fn sql(&self) -> &[SqlAction] {
        &self.sql
    }

    /// Asks for an object of kind `K` to be deleted, saying why.
    pub fn delete<K: Resource<DynamicType = ()>>(&mut self, name: &str, reason: impl Into<String>) {
        self.deletions.push(Deletion {
            resource: ApiResource::erase::<K>(&()),
            name: name.to_string(),
            reason: reason.into(),
            uid: None,
            origin: DeletionOrigin::Capability,
            grace_period_seconds: None,
        });
    }

    /// Asks for an observed object of kind `K` to be deleted, saying why: the
    /// delete carries the uid it was observed with as a precondition, so an
    /// object recreated under the same name since is left alone.
    pub fn delete_observed<K: Resource<DynamicType = ()>>(
        &mut self,
        name: &str,
        uid: Option<String>,
        reason: impl Into<String>,
    ) {
        self.delete_observed_with_grace::<K>(name, uid, None, reason);
    }

    /// As [`Desired::delete_observed`], with a grace period of
    /// `grace_period_seconds` instead of the object's own when given: 0
    /// removes a pod whose processes do not answer (a frozen node) without
    /// waiting for them to stop.
    pub fn delete_observed_with_grace<K: Resource<DynamicType = ()>>(
        &mut self,
        name: &str,
        uid: Option<String>,
        grace_period_seconds: Option<u32>,
        reason: impl Into<String>,
    ) {
        self.deletions.push(Deletion {
            resource: ApiResource::erase::<K>(&()),
            name: name.to_string(),
            reason: reason.into(),
            uid,
            origin: DeletionOrigin::Capability,
            grace_period_seconds,
        });
    }

    /// Keeps an existing object of kind `K` as it is: not applied, and not
    /// pruned although no capability adds it (a finished Job kept as
    /// evidence).
    pub fn keep<K: Resource<DynamicType = ()>>(&mut self, name: &str) {
        self.kept.push(key_of(&ApiResource::erase::<K>(&()), name));
    }

    /// The objects kept as they are so far.
    pub fn kept(&self) -> &[ObjectKey] {
        &self.kept
    }

    /// The deletions asked for so far.
    pub fn deletions(&self) -> &[Deletion] {
        &self.deletions
    }
}

/// A reason a spec cannot be served, naming the field at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    /// The path of the field, as in `kubectl explain` (`spec.storage.size`).
    pub field: String,
    /// CamelCase reason used in the Ready condition and the Event,
    /// starting with "Invalid" or "Refused" ("InvalidVersion", "RefusedStorageShrink").
    pub reason: String,
    /// What is wrong and what would be accepted.
    pub message: String,
    /// The refusal rests on what was observed (a replica that does not
    /// stream), which can change without an edit of the spec: the database
    /// is looked at again soon ([`crate::reconcile::RECHECK`]) instead of
    /// at the periodic resync.
    pub observed: bool,
}

impl SpecProblem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, reason: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.to_string(),
            message: message.into(),
            observed: false,
        }
    }

    /// The same problem, resting on what was observed ([`SpecProblem::observed`]).
    pub fn from_observation(mut self) -> Self {
        self.observed = true;
        self
    }
}

/// The status a reconcile is assembling: fields and condition assessments.
#[derive(Clone, Debug, Default)]
pub struct StatusDraft {
    /// The time of this reconcile, read once before anything is decided and
    /// the same instant [`Capability::desire`] was given (passed in, so
    /// assessments stay pure functions).
    pub now: jiff::Timestamp,
    /// The status fields other than phase, conditions and observedGeneration,
    /// which the core fills in.
    pub fields: PostgresDBStatus,
    /// What the capabilities concluded about each condition.
    pub conditions: Assessments,
    /// The reconcile was refused (a spec problem): nothing was applied, so
    /// an assessment reports what it observes but records no plan as
    /// started (a record would make the next reconcile carry it on).
    pub refused: bool,
    /// The earliest instant a capability asked to be reconciled again at
    /// (a schedule's next slot), whatever else happens meanwhile; see
    /// [`StatusDraft::wake_at`].
    pub wake_at: Option<jiff::Timestamp>,
}

impl StatusDraft {
    /// Asks for a reconcile at `at` at the latest: the core requeues for
    /// the earliest instant asked, or sooner for its own reasons. Nothing
    /// is kept in memory but the requeue itself, so a restarted operator
    /// computes the instant again from what it reads.
    pub fn wake_at(&mut self, at: jiff::Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |earlier| earlier.min(at)));
    }
}

/// What the apply step did in this reconcile, for the status assessment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApplyReport {
    /// Objects created.
    pub created: Vec<ObjectReference>,
    /// Objects changed because the desired state changed.
    pub updated: Vec<ObjectReference>,
    /// Objects put back because something else changed them.
    pub repaired: Vec<ObjectReference>,
    /// Objects deleted on a capability's request.
    pub deleted: Vec<ObjectReference>,
    /// Orphans the core pruned. Reported by their `Pruned` Events; removing
    /// an orphan does not make the database Progressing.
    pub pruned: Vec<ObjectReference>,
    /// Records written ([`DesiredObject::record`]): not progress, no Event.
    pub recorded: Vec<ObjectReference>,
    /// Reasons of the SQL actions that ran.
    pub sql_ran: Vec<String>,
    /// Reasons of the SQL actions that failed.
    pub sql_failed: Vec<String>,
}

/// `Kind/name` of a reference, for Events and logs.
pub fn describe(reference: &ObjectReference) -> String {
    format!(
        "{}/{}",
        reference.kind.as_deref().unwrap_or_default(),
        reference.name.as_deref().unwrap_or_default()
    )
}

impl ApplyReport {
    /// Whether the reconcile wrote any object.
    pub fn wrote_anything(&self) -> bool {
        !(self.created.is_empty()
            && self.updated.is_empty()
            && self.repaired.is_empty()
            && self.deleted.is_empty())
    }
}

/// What a capability's finalize step concluded about a database being
/// deleted (see [`Capability::finalize`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finalized {
    /// Nothing is left to do before the database may go.
    Done,
    /// Something must happen first; why, in words for the log and Events
    /// ("waiting for PostgresDBBackup orders-final-… to complete").
    Pending(String),
}

impl Finalized {
    /// Whether the step is done.
    pub fn is_done(&self) -> bool {
        matches!(self, Finalized::Done)
    }
}

/// One tier of operational knowledge a level adds.
///
/// Every method but `name` has a default that does nothing, so a
/// capability only writes what it contributes.
pub trait Capability: Send + Sync + 'static {
    /// Short name for logs ("install", "upgrade").
    fn name(&self) -> &'static str;

    /// The spec sections (see [`crate::api::PostgresDBSpec::sections_in_use`])
    /// this capability implements.
    fn sections(&self) -> &'static [&'static str] {
        &[]
    }

    /// Kinds of children this capability creates; the runner watches them
    /// (only those carrying the operator's labels) so that a change to one
    /// triggers its database's reconcile, and each reconcile lists them by
    /// the instance label and prunes the database's children of these kinds
    /// that no capability desires any more (see the `prune` module).
    fn owned_kinds(&self) -> Vec<ApiResource> {
        Vec::new()
    }

    /// Kinds this capability reads and may create or delete but that the
    /// `PostgresDB` does not own (a `PostgresDBBackup` outlives its
    /// database). The runner watches them (only those carrying the
    /// operator's labels), and a change to one triggers the reconcile of the
    /// database its instance label names. They are never pruned: the
    /// capability lists them itself in [`Capability::observe`] and deletes
    /// one only by asking ([`Desired::delete_observed`]).
    fn watched_kinds(&self) -> Vec<ApiResource> {
        Vec::new()
    }

    /// What to read from the cluster before deciding. Every object the
    /// capability adds to the desired state must be read here, so the core
    /// can tell when applying it would change nothing and skip the write.
    fn observe(&self, _db: &PostgresDB) -> Vec<Query> {
        Vec::new()
    }

    /// Questions for the database, asked after the objects are read and
    /// before anything is decided; their answers are in [`Observed::sql`].
    /// Only ask a server that exists (a pod with an IP).
    fn sql_probes(&self, _db: &PostgresDB, _observed: &Observed) -> Vec<SqlProbe> {
        Vec::new()
    }

    /// Reasons the spec cannot be served given what exists. Any problem
    /// stops the reconcile before it writes to a child.
    fn validate(&self, _db: &PostgresDB, _observed: &Observed) -> Vec<SpecProblem> {
        Vec::new()
    }

    /// Adds objects to, or adjusts objects in, the desired state. `now` is
    /// the reconcile's clock, read once: the same instant reaches
    /// [`Capability::assess`] (as [`StatusDraft::now`]), so a time derived
    /// in both steps (a retention deadline) is the same value.
    fn desire(
        &self,
        _db: &PostgresDB,
        _observed: &Observed,
        _now: jiff::Timestamp,
        _desired: &mut Desired,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// Fills in status from what was observed and what this reconcile applied.
    fn assess(
        &self,
        _db: &PostgresDB,
        _observed: &Observed,
        _applied: &ApplyReport,
        _status: &mut StatusDraft,
    ) {
    }

    /// Whether deleting `db` needs this capability's [`Capability::finalize`]
    /// step first. When any capability says so, the core puts
    /// [`crate::keys::DELETION_POLICY_FINALIZER`] on the database, and takes
    /// it off again once none does (see the `finalizer` module). A pure
    /// function of the spec: no capability of Levels 1 and 2 asks, so their
    /// databases never carry the finalizer.
    fn needs_finalizer(&self, _db: &PostgresDB) -> bool {
        false
    }

    /// The cleanup before a database being deleted may go: called instead
    /// of `validate`, `desire` and `assess` while `metadata.deletionTimestamp`
    /// is set and the database carries the finalizer. Like `desire` it adds
    /// objects, deletions and notes to `desired` (the core applies them),
    /// and it says whether it is done; the finalizer comes off when every
    /// capability is. Done by default, and for a capability that does not
    /// (or no longer) need the finalizer.
    fn finalize(
        &self,
        _db: &PostgresDB,
        _observed: &Observed,
        _now: jiff::Timestamp,
        _desired: &mut Desired,
    ) -> Result<Finalized, Error> {
        Ok(Finalized::Done)
    }
}

/// A level of the operator: a name and the capabilities it is made of.
///
/// A level is the level below it plus its own capabilities: level N-1's
/// list, unchanged and first, then level N's.
pub struct Level {
    /// 1 to 5.
    pub number: u8,
    /// The binary's and crate's name ("level1-install").
    pub name: &'static str,
    /// Lower levels' capabilities first, this level's last.
    pub capabilities: Vec<Box<dyn Capability>>,
    /// Controllers of other kinds run beside the `PostgresDB` reconcile,
    /// under the same leadership and shutdown (Level 3's backup
    /// controller); lower levels' first, like the capabilities.
    pub companions: Vec<Companion>,
    /// What the level tells a monitoring system, from Level 4 on: with it
    /// the operator serves `/metrics` (its own counters and the databases'
    /// series) and keeps the databases' readings for the reconcile (see
    /// the `metrics` and `readings` modules). `None` below Level 4.
    pub insights: Option<Insights>,
    /// The spec the capabilities act on, from the spec as written and what
    /// status records of the level's own decisions ([`as_written`] below
    /// Level 5). Level 5 decides some values itself (the instance count,
    /// the volume size, derived and rolled-back parameters) and records
    /// them in `status.autopilot`; every capability, lower levels' too,
    /// then carries them out as if the spec said so, while the spec itself
    /// is never edited. Pure: the same database gives the same spec.
    pub effective_spec: fn(&PostgresDB) -> PostgresDB,
}

/// The spec as the user wrote it: the effective spec of every level below
/// Level 5.
pub fn as_written(db: &PostgresDB) -> PostgresDB {
    db.clone()
}

/// What a level that serves metrics contributes to them.
#[derive(Clone, Copy, Debug)]
pub struct Insights {
    /// Encodes the databases' latest readings as series, on each scrape.
    pub database_series: crate::metrics::DatabaseSeries,
}

/// What a companion controller is given to run with.
#[derive(Clone)]
pub struct CompanionContext {
    /// The API client.
    pub client: kube::Client,
    /// The one namespace watched, or all when `None`.
    pub namespace: Option<String>,
    /// The level's server-side apply field manager.
    pub field_manager: String,
    /// The Event reporter's instance (the operator's pod name), if any.
    pub instance: Option<String>,
    /// Cancelled when the operator stops or loses leadership: the
    /// companion finishes what it is doing and returns.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The metrics, when the level serves them: the counters a companion
    /// keeps and the readings a collector fills.
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// The namespace the operator runs in (`POD_NAMESPACE`, the Lease's),
    /// where operator-wide objects (a PrometheusRule) go.
    pub operator_namespace: String,
    /// How often a collector measures each database.
    pub metrics_interval: std::time::Duration,
    /// How the operator reaches databases for SQL (as the reconcile does).
    pub database_access: crate::sql::DatabaseAccess,
}

/// What a companion controller's run returns.
pub type CompanionRun =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>>;

/// A controller of another kind, run by the runner beside the `PostgresDB`
/// reconcile: started once leadership is held, stopped with it. A
/// companion that fails stops the operator with its error.
pub struct Companion {
    /// Short name for logs ("backups").
    pub name: &'static str,
    /// Runs the controller until `shutdown` is cancelled.
    pub run: fn(CompanionContext) -> CompanionRun,
}

impl std::fmt::Debug for Companion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Companion")
            .field("name", &self.name)
            .finish()
    }
}

impl Level {
    /// The server-side apply field manager of this level.
    pub fn field_manager(&self) -> String {
        format!("pgdb-{}", self.name)
    }

    /// Every query the capabilities ask for, without duplicates.
    pub fn queries(&self, db: &PostgresDB) -> Vec<Query> {
        let mut queries: Vec<Query> = Vec::new();
        for query in self.capabilities.iter().flat_map(|c| c.observe(db)) {
            let seen = queries
                .iter()
                .any(|q| q.resource == query.resource && q.selector == query.selector);
            if !seen {
                queries.push(query);
            }
        }
        queries
    }

    /// Every SQL probe the capabilities ask for.
    pub fn sql_probes(&self, db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
        let mut probes: Vec<SqlProbe> = Vec::new();
        for probe in self
            .capabilities
            .iter()
            .flat_map(|c| c.sql_probes(db, observed))
        {
            if !probes.iter().any(|p| p.name == probe.name) {
                probes.push(probe);
            }
        }
        probes
    }

    /// Whether any capability needs to finalize `db` before it goes.
    pub fn needs_finalizer(&self, db: &PostgresDB) -> bool {
        self.capabilities.iter().any(|c| c.needs_finalizer(db))
    }

    /// The spec sections the database uses that no capability of this
    /// level implements.
    pub fn unimplemented_sections(&self, db: &PostgresDB) -> Vec<&'static str> {
        unimplemented_sections(
            &db.spec.sections_in_use(),
            self.capabilities
                .iter()
                .flat_map(|c| c.sections().iter().copied()),
        )
    }
}

/// The sections in use that are not among the implemented ones.
pub fn unimplemented_sections(
    in_use: &[&'static str],
    implemented: impl IntoIterator<Item = &'static str>,
) -> Vec<&'static str> {
    let implemented: Vec<&str> = implemented.into_iter().collect();
    in_use
        .iter()
        .copied()
        .filter(|s| !implemented.contains(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn config_map(name: &str, key: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some([(key.to_string(), "v".to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_section_no_capability_implements_is_reported() {
        let missing = unimplemented_sections(&["backup", "upgrade"], ["upgrade"]);
        assert_eq!(missing, ["backup"]);
        assert!(unimplemented_sections(&["upgrade"], ["upgrade"]).is_empty());
    }

    #[test]
    fn adding_an_object_twice_keeps_the_later_one() {
        let mut desired = Desired::default();
        desired.add(&config_map("a", "first")).expect("serialises");
        desired.add(&config_map("a", "second")).expect("serialises");
        assert_eq!(desired.objects().len(), 1);
        assert_eq!(desired.objects()[0].value["data"]["second"], "v");
        assert_eq!(desired.objects()[0].value["kind"], "ConfigMap");
        assert_eq!(desired.objects()[0].value["apiVersion"], "v1");
    }

    #[test]
    fn a_later_capability_can_adjust_an_object_an_earlier_one_added() {
        let mut desired = Desired::default();
        desired.add(&config_map("a", "k")).expect("serialises");
        let found = desired
            .modify::<ConfigMap>("a", |cm| {
                cm.data
                    .get_or_insert_default()
                    .insert("extra".into(), "x".into());
            })
            .expect("round-trips");
        assert!(found);
        assert_eq!(desired.objects()[0].value["data"]["extra"], "x");
        assert!(
            !desired
                .modify::<ConfigMap>("absent", |_| {})
                .expect("no error")
        );
    }

    #[test]
    fn the_earliest_wake_up_asked_for_wins() {
        let mut draft = StatusDraft::default();
        assert_eq!(draft.wake_at, None);
        let later = jiff::Timestamp::from_second(200).expect("valid");
        let sooner = jiff::Timestamp::from_second(100).expect("valid");
        draft.wake_at(later);
        draft.wake_at(sooner);
        draft.wake_at(later);
        assert_eq!(draft.wake_at, Some(sooner));
    }

    #[test]
    fn an_observed_object_is_deleted_only_with_the_uid_it_was_seen_with() {
        let mut desired = Desired::default();
        desired.delete_observed::<ConfigMap>("a", Some("uid-a".into()), "expired");
        let deletion = &desired.deletions()[0];
        assert_eq!(deletion.uid.as_deref(), Some("uid-a"));
        assert_eq!(deletion.origin, DeletionOrigin::Capability);
        assert_eq!(deletion.reason, "expired");
    }

    #[test]
    fn observed_objects_are_found_by_kind_and_name() {
        let mut observed = Observed::default();
        let resource = ApiResource::erase::<ConfigMap>(&());
        let raw: DynamicObject =
            serde_json::from_value(serde_json::to_value(config_map("a", "k")).expect("serialises"))
                .expect("parses");
        observed.insert(&resource, raw);
        assert!(observed.get::<ConfigMap>("a").is_some());
        assert!(observed.get::<ConfigMap>("b").is_none());
        assert_eq!(observed.all::<ConfigMap>().len(), 1);
        assert!(observed.was_queried(&resource, "a"));
    }
}
