//! The Deployment controller: declarative updates of interchangeable pods
//! through ReplicaSets, as upstream's `pkg/controller/deployment` does.
//!
//! Each distinct pod template gets a ReplicaSet named
//! `<deployment>-<pod-template-hash>`, whose template and selector carry the
//! `pod-template-hash` label so the sets never share pods. The set whose
//! template equals the Deployment's (ignoring that label) is the *new* one;
//! the others are *old*. Every sync does one of:
//!
//! - a *scaling* event (a set's `desired-replicas` annotation differs from
//!   `spec.replicas`) or a paused Deployment: resize the sets in place,
//!   proportionally across the active sets during a rollout;
//! - `RollingUpdate`: grow the new set while the total stays within
//!   `replicas + maxSurge`, shrink old sets while the available pods stay
//!   at least `replicas - maxUnavailable` (unhealthy old pods first), both
//!   resolved from ints or percentages as upstream's fenceposts do
//!   (surge rounds up, unavailability down, never both zero);
//! - `Recreate`: scale every old set to zero, wait until no old pod is
//!   left, then create the new set at full size.
//!
//! Revisions: the new set's `deployment.kubernetes.io/revision` is one more
//! than the highest old revision (a rollback to an old template re-numbers
//! that set and records its former number in `revision-history`); the
//! Deployment carries its new set's revision. Once a rollout completes, old
//! sets scaled to zero beyond `revisionHistoryLimit` are deleted, oldest
//! revision first. Status: replicas, updated, ready, available and
//! unavailable counts summed from the sets, and the `Available` and
//! `Progressing` conditions with upstream's reasons, so `kubectl rollout
//! status|history|undo|pause|resume` work.
//!
//! Every resize of a set is a Normal `ScalingReplicaSet` Event on the
//! Deployment (`Scaled up replica set web-6d4c… to 3 from 1`), as
//! `kubectl describe deployment` shows.
//!
//! A set's `ReplicaFailure` condition (pods the API refuses) is copied to
//! the Deployment.
//!
//! Where it stops: no truncation of long set names, and the pod-template-hash
//! is an FNV-32a over the template's JSON (upstream hashes the Go struct's
//! printout, so the values differ from a real cluster's).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::queue::{Controller, Outcome};
use super::replicaset::{REPLICA_FAILURE, RS_KEY, claim, controller_of, record_event, selecting};
use super::{MANAGER, controller_keys, controller_ref, event_key, keep_transition_times};
use crate::cluster::{Cluster, DeleteOptions, Sub, WriteOptions};
use crate::meta::{is_deleting, name_of, namespace_of, now, uid_of};
use crate::registry::ResourceType;
use crate::store::{Event, EventType, ObjectKey};

/// The storage key of Deployments.
pub const DEPLOY_KEY: &str = "apps/deployments";
/// The label that keeps each template's pods apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a set (and of the Deployment, its new set's).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The revisions a set had before a rollback re-numbered it.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when the set was last sized.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `replicas + maxSurge` of the Deployment when the set was last sized.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Annotations never copied from a Deployment to its sets.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];
const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const PAUSED: &str = "DeploymentPaused";
const POD_KEY: &str = "/pods";
/// The component the Deployment controller reports Events as.
const COMPONENT: &str = "deployment-controller";

/// Keyed by Deployment; its sets lead back to it through their controller
/// reference, orphan sets to the Deployments whose selector matches them,
/// and deleted pods (a Recreate waits for them) through their set.
pub struct DeploymentController;

impl Controller for DeploymentController {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "deployment"
    }

    fn keys(&self, c: &Cluster, e: &Event, out: &mut Vec<ObjectKey>) {
        match e.key.as_str() {
            DEPLOY_KEY => out.push(event_key(e)),
            RS_KEY => {
                controller_keys(e, "Deployment", out);
                if e.kind != EventType::Deleted && controller_of(&e.object).is_none() {
                    out.extend(selecting(c, DEPLOY_KEY, &e.object));
                }
            }
            POD_KEY if e.kind == EventType::Deleted => {
                let mut sets = vec![];
                controller_keys(e, "ReplicaSet", &mut sets);
                for (ns, name) in sets {
                    if let Some(rs) = c.store.get(RS_KEY, &ns, &name) {
                        deployment_of(&rs, out);
                    }
                }
            }
            _ => {}
        }
    }

    fn all(&self, c: &Cluster) -> Vec<ObjectKey> {
        c.store.keys(DEPLOY_KEY, None)
    }

    fn reconcile(&self, c: &Cluster, key: &ObjectKey) -> Outcome {
        let (Ok(d_rt), Ok(rs_rt)) = (c.rt("apps", "deployments"), c.rt("apps", "replicasets"))
        else {
            return Outcome::Done;
        };
        let Some(d) = c.store.get(DEPLOY_KEY, &key.0, &key.1) else {
            return Outcome::Done;
        };
        let mut s = Sync {
            c,
            d_rt: &d_rt,
            rs_rt: &rs_rt,
            d,
            outcome: Outcome::Done,
        };
        s.run();
        s.outcome
    }
}

/// How a Deployment replaces pods, with its fenceposts resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Recreate,
    RollingUpdate {
        max_surge: i64,
        max_unavailable: i64,
    },
}

/// An int-or-percent scaled against `total` (upstream's
/// `GetScaledValueFromIntOrPercent`); `None` for a malformed value.
pub fn scaled(v: Option<&Value>, total: i64, round_up: bool, default: &str) -> Option<i64> {
    let v = v.cloned().unwrap_or_else(|| json!(default));
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let pct: i64 = v.as_str()?.strip_suffix('%')?.parse().ok()?;
    // Validation keeps both to int32; saturating, a stored value beyond
    // that (written before validation existed) cannot panic the loop.
    let n = pct.saturating_mul(total);
    Some(if round_up {
        n.saturating_add(99).div_euclid(100)
    } else {
        n.div_euclid(100)
    })
}

fn spec_replicas(o: &Value) -> i64 {
    o.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn status_int(o: &Value, field: &str) -> i64 {
    o.pointer(&format!("/status/{field}"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// The pods a set holds or will hold: the larger of its size and the
/// active pods its status counts. A scale-down its controller has not yet
/// carried out still counts, so the new set grows only once old pods are
/// gone and the pods a watch sees never exceed `replicas + maxSurge`
/// (upstream bounds the sets' sizes alone, so its pods can briefly exceed
/// it when the new set's scale-up is handled first).
fn pods_held(rs: &Value) -> i64 {
    spec_replicas(rs).max(status_int(rs, "replicas"))
}

fn annotation<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn created(o: &Value) -> &str {
    o.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A Deployment's strategy with maxSurge and maxUnavailable resolved
/// against its replicas (upstream's `ResolveFenceposts`).
pub fn strategy(d: &Value) -> Strategy {
    if d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
        return Strategy::Recreate;
    }
    let replicas = spec_replicas(d);
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let get = |f: &str| ru.and_then(|r| r.get(f)).filter(|v| !v.is_null());
    let max_surge = scaled(get("maxSurge"), replicas, true, "25%").unwrap_or(0);
    let mut max_unavailable = scaled(get("maxUnavailable"), replicas, false, "25%").unwrap_or(0);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Strategy::RollingUpdate {
        max_surge,
        max_unavailable,
    }
}

fn max_surge(d: &Value) -> i64 {
    match strategy(d) {
        Strategy::RollingUpdate { max_surge, .. } => max_surge,
        Strategy::Recreate => 0,
    }
}

/// Upstream's `MaxUnavailable`: zero for Recreate or no replicas, at most
/// the replicas.
fn max_unavailable(d: &Value) -> i64 {
    match strategy(d) {
        Strategy::RollingUpdate {
            max_unavailable, ..
        } if spec_replicas(d) > 0 => max_unavailable.min(spec_replicas(d)),
        _ => 0,
    }
}

/// The pod-template-hash of a template: FNV-32a over its JSON without
/// empty fields (and the collision count), encoded as upstream's `rand.SafeEncodeString` does.
pub fn template_hash(template: &Value, collision_count: i64) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut write = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    write(normalized(template).to_string().as_bytes());
    if collision_count > 0 {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(collision_count as u32).to_le_bytes());
        write(&buf);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// Whether two pod templates are equal but for the pod-template-hash
/// label, as upstream's `EqualIgnoreHash` compares them: semantically, so
/// a field that is null, empty or absent is the same (a template read back
/// from a set by kubectl carries `creationTimestamp: null` and
/// `resources: {}` where the Deployment's had nothing).
pub fn equal_ignoring_hash(a: &Value, b: &Value) -> bool {
    let strip = |t: &Value| {
        let mut t = normalized(t);
        if let Some(labels) = t
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove(HASH_LABEL);
        }
        t
    };
    strip(a) == strip(b)
}

/// A value without its null, empty-string, empty-list and empty-object
/// fields (what Go's zero values and `omitempty` make equal).
fn normalized(v: &Value) -> Value {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn set_condition(status: &mut Value, cond: Value) {
    let list = status
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(list) = list.and_then(Value::as_array_mut) else {
        return;
    };
    if let Some(cur) = list.iter().find(|c| c["type"] == cond["type"])
        && cur["status"] == cond["status"]
        && cur["reason"] == cond["reason"]
    {
        return;
    }
    let mut cond = cond;
    let mut old = Value::Null;
    if let Some(i) = list.iter().position(|c| c["type"] == cond["type"]) {
        old = json!([list.remove(i)]);
    }
    let mut one = json!([cond]);
    keep_transition_times(&mut one, Some(&old));
    cond = one[0].take();
    list.push(cond);
}

fn remove_condition(status: &mut Value, ty: &str) {
    if let Some(list) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        list.retain(|c| c["type"] != ty);
    }
}

fn condition<'a>(status: &'a Value, ty: &str) -> Option<&'a Value> {
    status
        .get("conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == ty)
}

fn new_condition(ty: &str, status: &str, reason: &str, message: String) -> Value {
    let t = now();
    json!({"type": ty, "status": status, "lastUpdateTime": t, "lastTransitionTime": t,
        "reason": reason, "message": message})
}

/// One Deployment's sync: the Deployment as last read and written, and
/// what the loop should do next.
struct Sync<'a> {
    c: &'a Cluster,
    d_rt: &'a ResourceType,
    rs_rt: &'a ResourceType,
    d: Value,
    outcome: Outcome,
}

/// A Deployment's sets: the new one (if it exists) and the old ones,
/// oldest first.
struct Sets {
    new: Option<Value>,
    old: Vec<Value>,
}

impl Sets {
    fn all(&self) -> impl Iterator<Item = &Value> {
        self.old.iter().chain(self.new.as_ref())
    }
    fn sum(&self, f: impl Fn(&Value) -> i64) -> i64 {
        self.all().map(f).sum()
    }
}

impl Sync<'_> {
    fn ns(&self) -> String {
        namespace_of(&self.d).to_string()
    }

    fn name(&self) -> String {
        name_of(&self.d).to_string()
    }

    fn replicas(&self) -> i64 {
        spec_replicas(&self.d)
    }

    fn failed(&mut self, e: &crate::error::Error) {
        if e.code() != 404 {
            self.outcome = Outcome::Retry;
        }
    }

    fn run(&mut self) {
        let sets = claim(self.c, self.rs_rt, &self.d);
        if is_deleting(&self.d) {
            let sets = self.split(sets);
            return self.sync_status(&sets);
        }
        self.check_paused_conditions();
        let paused = self.d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        if paused || self.is_scaling_event(&sets) {
            return self.scale_only(sets, paused);
        }
        match strategy(&self.d) {
            Strategy::Recreate => self.recreate(sets),
            Strategy::RollingUpdate { .. } => self.rolling(sets),
        }
    }

    /// The new set (the oldest whose template matches) and the old ones.
    fn split(&self, mut sets: Vec<Value>) -> Sets {
        sets.sort_by(|a, b| created(a).cmp(created(b)).then(name_of(a).cmp(name_of(b))));
        let template = self
            .d
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_default();
        let i = sets.iter().position(|rs| {
            rs.pointer("/spec/template")
                .is_some_and(|t| equal_ignoring_hash(t, &template))
        });
        let new = i.map(|i| sets.remove(i));
        Sets { new, old: sets }
    }

    /// Upstream's `getAllReplicaSetsAndSyncRevision`: finds (or, when
    /// `create`, creates) the new set and brings its revision and
    /// annotations, and the Deployment's revision, up to date.
    fn sets_with_revision(&mut self, sets: Vec<Value>, create: bool) -> Sets {
        let mut sets = self.split(sets);
        let new_revision = sets.old.iter().map(revision).max().unwrap_or(0) + 1;
        match sets.new.take() {
            Some(rs) => {
                let rs = self.sync_new_set(rs, new_revision);
                if condition(&self.d["status"], PROGRESSING).is_none() {
                    let cond = new_condition(
                        PROGRESSING,
                        "True",
                        "FoundNewReplicaSet",
                        format!("Found new replica set {:?}", name_of(&rs)),
                    );
                    self.write_condition(cond);
                }
                self.set_deployment_revision(&rs);
                sets.new = Some(rs);
            }
            None if create => {
                sets.new = self.create_new_set(&sets, new_revision);
                if let Some(rs) = &sets.new {
                    self.set_deployment_revision(rs);
                }
            }
            None => {}
        }
        sets
    }

    /// Copies the Deployment's annotations and `minReadySeconds` to its
    /// new set and raises its revision (a rollback keeps the former one in
    /// `revision-history`).
    fn sync_new_set(&mut self, rs: Value, new_revision: i64) -> Value {
        let d_annotations = self.d.pointer("/metadata/annotations").cloned();
        let min_ready = self.d.pointer("/spec/minReadySeconds").cloned();
        let update = move |rs: &mut Value| {
            let meta = crate::meta::meta_mut(rs);
            let a = meta.entry("annotations").or_insert_with(|| json!({}));
            if !a.is_object() {
                *a = json!({});
            }
            let Some(a) = a.as_object_mut() else { return };
            copy_annotations(d_annotations.as_ref(), a);
            let old: i64 = a
                .get(REVISION)
                .and_then(Value::as_str)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            if old < new_revision {
                a.insert(REVISION.into(), json!(new_revision.to_string()));
                if old > 0 {
                    let history = match a.get(REVISION_HISTORY).and_then(Value::as_str) {
                        Some(h) if !h.is_empty() => format!("{h},{old}"),
                        _ => old.to_string(),
                    };
                    a.insert(REVISION_HISTORY.into(), json!(history));
                }
            }
            let wanted = min_ready.as_ref().and_then(Value::as_i64).unwrap_or(0);
            let has = rs
                .pointer("/spec/minReadySeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if wanted != has {
                rs["spec"]["minReadySeconds"] = json!(wanted);
            }
        };
        let mut probe = rs.clone();
        update(&mut probe);
        if probe == rs {
            return rs;
        }
        let ns = self.ns();
        match self
            .c
            .modify(self.rs_rt, &ns, name_of(&rs), Sub::Main, MANAGER, &update)
        {
            Ok(updated) => updated,
            Err(e) => {
                self.failed(&e);
                rs
            }
        }
    }

    fn create_new_set(&mut self, sets: &Sets, new_revision: i64) -> Option<Value> {
        let template = self
            .d
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_default();
        let collisions = status_int(&self.d, "collisionCount");
        let hash = template_hash(&template, collisions);
        let mut rs_template = template;
        rs_template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = self
            .d
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or_default();
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let current: i64 = sets.sum(pods_held);
        let replicas = match strategy(&self.d) {
            Strategy::Recreate => self.replicas(),
            Strategy::RollingUpdate { max_surge, .. } => {
                (self.replicas() + max_surge - current).clamp(0, self.replicas())
            }
        };
        let mut annotations = Map::new();
        copy_annotations(self.d.pointer("/metadata/annotations"), &mut annotations);
        annotations.insert(REVISION.into(), json!(new_revision.to_string()));
        annotations.insert(DESIRED_REPLICAS.into(), json!(self.replicas().to_string()));
        annotations.insert(
            MAX_REPLICAS.into(),
            json!((self.replicas() + max_surge(&self.d)).to_string()),
        );
        let rs_name = format!("{}-{hash}", self.name());
        let mut spec = json!({"replicas": replicas, "selector": selector, "template": rs_template});
        if let Some(m) = self
            .d
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .filter(|m| *m > 0)
        {
            spec["minReadySeconds"] = json!(m);
        }
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name, "namespace": self.ns(),
                "labels": rs_template["metadata"]["labels"],
                "annotations": annotations,
                "ownerReferences": [controller_ref(&self.d)],
            },
            "spec": spec,
        });
        let ns = self.ns();
        match self
            .c
            .create(self.rs_rt, &ns, rs, &WriteOptions::manager(MANAGER))
        {
            Ok(rs) => {
                if replicas > 0 {
                    record_event(
                        self.c,
                        &self.d,
                        "ScalingReplicaSet",
                        &format!("Scaled up replica set {rs_name} to {replicas}"),
                        COMPONENT,
                    );
                }
                let cond = new_condition(
                    PROGRESSING,
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set {rs_name:?}"),
                );
                self.write_condition(cond);
                Some(rs)
            }
            Err(e) if e.code() == 409 => {
                // A set of that name with another template: a hash
                // collision. Count it, so the next hash differs.
                let existing = self.c.store.get(RS_KEY, &ns, &rs_name);
                let ours = existing.as_ref().is_some_and(|rs| {
                    super::controlled_by(rs, uid_of(&self.d))
                        && rs
                            .pointer("/spec/template")
                            .is_some_and(|t| equal_ignoring_hash(t, &self.d["spec"]["template"]))
                });
                if !ours {
                    let name = self.name();
                    let r = self
                        .c
                        .modify(self.d_rt, &ns, &name, Sub::Status, MANAGER, &|d| {
                            let n = status_int(d, "collisionCount");
                            d["status"]["collisionCount"] = json!(n + 1);
                        });
                    if let Ok(d) = r {
                        self.d = d;
                    }
                }
                self.outcome = Outcome::Retry;
                None
            }
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    fn set_deployment_revision(&mut self, rs: &Value) {
        let Some(rev) = annotation(rs, REVISION).map(str::to_string) else {
            return;
        };
        if annotation(&self.d, REVISION) == Some(rev.as_str()) {
            return;
        }
        let (ns, name) = (self.ns(), self.name());
        match self
            .c
            .modify(self.d_rt, &ns, &name, Sub::Main, MANAGER, &|d| {
                let meta = crate::meta::meta_mut(d);
                let a = meta.entry("annotations").or_insert_with(|| json!({}));
                if !a.is_object() {
                    *a = json!({});
                }
                a[REVISION] = json!(rev);
            }) {
            Ok(d) => self.d = d,
            Err(e) => self.failed(&e),
        }
    }

    /// Writes one condition into the Deployment's status at once (upstream
    /// does so when it creates or finds the new set).
    fn write_condition(&mut self, cond: Value) {
        let (ns, name) = (self.ns(), self.name());
        match self
            .c
            .modify(self.d_rt, &ns, &name, Sub::Status, MANAGER, &|d| {
                if !d["status"].is_object() {
                    d["status"] = json!({});
                }
                set_condition(&mut d["status"], cond.clone());
            }) {
            Ok(d) => self.d = d,
            Err(e) => self.failed(&e),
        }
    }

    /// Sets a set's replicas and its desired/max annotations; whether the
    /// size changed.
    fn scale_set(&mut self, rs: &mut Value, replicas: i64) -> bool {
        let desired = self.replicas().to_string();
        let max = (self.replicas() + max_surge(&self.d)).to_string();
        let size_changes = spec_replicas(rs) != replicas;
        let notes_change = annotation(rs, DESIRED_REPLICAS) != Some(desired.as_str())
            || annotation(rs, MAX_REPLICAS) != Some(max.as_str());
        if !size_changes && !notes_change {
            return false;
        }
        let ns = self.ns();
        match self
            .c
            .modify(self.rs_rt, &ns, name_of(rs), Sub::Main, MANAGER, &|rs| {
                rs["spec"]["replicas"] = json!(replicas);
                let meta = crate::meta::meta_mut(rs);
                let a = meta.entry("annotations").or_insert_with(|| json!({}));
                if !a.is_object() {
                    *a = json!({});
                }
                a[DESIRED_REPLICAS] = json!(desired);
                a[MAX_REPLICAS] = json!(max);
            }) {
            Ok(updated) => {
                if size_changes {
                    let (from, to) = (spec_replicas(rs), replicas);
                    let way = if to > from { "up" } else { "down" };
                    let name = name_of(rs);
                    let message = if from == 0 {
                        format!("Scaled {way} replica set {name} to {to}")
                    } else {
                        format!("Scaled {way} replica set {name} to {to} from {from}")
                    };
                    record_event(self.c, &self.d, "ScalingReplicaSet", &message, COMPONENT);
                }
                *rs = updated;
                size_changes
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    /// Upstream's `isScalingEvent`: an active set was sized for another
    /// `spec.replicas`.
    fn is_scaling_event(&mut self, sets: &[Value]) -> bool {
        let want = self.replicas().to_string();
        sets.iter()
            .filter(|rs| spec_replicas(rs) > 0)
            .any(|rs| annotation(rs, DESIRED_REPLICAS).is_some_and(|d| d != want))
    }

    /// A scaling event or a paused Deployment: resize without rolling.
    fn scale_only(&mut self, sets: Vec<Value>, paused: bool) {
        let mut sets = self.sets_with_revision(sets, false);
        self.scale(&mut sets);
        if paused {
            self.cleanup(&sets);
        }
        self.sync_status(&sets);
    }

    /// Upstream's `scale`: one active set takes the new size; a saturated
    /// new set empties the old ones; during a rolling update the sets grow
    /// or shrink in proportion to their size.
    fn scale(&mut self, sets: &mut Sets) {
        let want = self.replicas();
        let active: Vec<bool> = sets.all().map(|rs| spec_replicas(rs) > 0).collect();
        let n_active = active.iter().filter(|a| **a).count();
        let new_exists = sets.new.is_some();
        // Active or latest: the only active set, or with none active the
        // new set, else the newest old one.
        let target: Option<&mut Value> = match n_active {
            0 if new_exists => sets.new.as_mut(),
            0 => sets.old.last_mut(),
            1 => sets
                .old
                .iter_mut()
                .chain(sets.new.as_mut())
                .find(|rs| spec_replicas(rs) > 0),
            _ => None,
        };
        if let Some(rs) = target {
            if spec_replicas(rs) != want {
                let mut rs_copy = rs.clone();
                self.scale_set(&mut rs_copy, want);
                *rs = rs_copy;
            }
            return;
        }
        let saturated = sets.new.as_ref().is_some_and(|rs| {
            annotation(rs, DESIRED_REPLICAS) == Some(want.to_string().as_str())
                && spec_replicas(rs) == want
                && status_int(rs, "availableReplicas") == want
        });
        if saturated {
            let mut old = std::mem::take(&mut sets.old);
            for rs in old.iter_mut().filter(|rs| spec_replicas(rs) > 0) {
                self.scale_set(rs, 0);
            }
            sets.old = old;
            return;
        }
        if !matches!(strategy(&self.d), Strategy::RollingUpdate { .. }) {
            return;
        }
        let mut all: Vec<Value> = sets
            .all()
            .filter(|rs| spec_replicas(rs) > 0)
            .cloned()
            .collect();
        let total: i64 = all.iter().map(spec_replicas).sum();
        let to_add = want + max_surge(&self.d) - total;
        if to_add > 0 {
            // Larger first, newer first among equals.
            all.sort_by(|a, b| {
                spec_replicas(b)
                    .cmp(&spec_replicas(a))
                    .then(created(b).cmp(created(a)))
            });
        } else {
            // Larger first, older first among equals.
            all.sort_by(|a, b| {
                spec_replicas(b)
                    .cmp(&spec_replicas(a))
                    .then(created(a).cmp(created(b)))
            });
        }
        let mut added = 0;
        let mut sizes = vec![];
        for rs in &all {
            let p = self.proportion(rs, to_add, added);
            sizes.push(spec_replicas(rs) + p);
            added += p;
        }
        for (i, rs) in all.iter_mut().enumerate() {
            let mut size = sizes[i];
            if i == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_set(rs, size);
        }
        for rs in all {
            let uid = uid_of(&rs).to_string();
            for slot in sets.old.iter_mut().chain(sets.new.as_mut()) {
                if uid_of(slot) == uid {
                    *slot = rs.clone();
                }
            }
        }
    }

    /// Upstream's `getProportion`/`getReplicaSetFraction`.
    fn proportion(&self, rs: &Value, to_add: i64, added: i64) -> i64 {
        let size = spec_replicas(rs);
        if size == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = if self.replicas() == 0 {
            -size
        } else {
            let allowed_size = self.replicas() + max_surge(&self.d);
            let annotated = annotation(rs, MAX_REPLICAS)
                .and_then(|m| m.parse::<i64>().ok())
                .unwrap_or_else(|| status_int(&self.d, "replicas"));
            if annotated <= 0 {
                0
            } else {
                ((size * allowed_size) as f64 / annotated as f64).round() as i64 - size
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    fn rolling(&mut self, sets: Vec<Value>) {
        let mut sets = self.sets_with_revision(sets, true);
        if self.reconcile_new_set(&mut sets) || self.reconcile_old_sets(&mut sets) {
            return self.sync_rollout_status(&sets);
        }
        let status = self.calculate_status(&sets);
        if self.complete(&status) {
            self.cleanup(&sets);
        }
        self.sync_rollout_status(&sets);
    }

    /// Grows (or shrinks) the new set toward `spec.replicas` within
    /// `replicas + maxSurge` pods in all.
    fn reconcile_new_set(&mut self, sets: &mut Sets) -> bool {
        let want = self.replicas();
        let Some(mut new) = sets.new.take() else {
            return false;
        };
        let current = spec_replicas(&new);
        let target = if current >= want {
            want
        } else {
            let all: i64 = sets.old.iter().map(pods_held).sum::<i64>() + pods_held(&new);
            let max_total = want + max_surge(&self.d);
            if all >= max_total {
                current
            } else {
                current + (max_total - all).min(want - current)
            }
        };
        let scaled = target != current && self.scale_set(&mut new, target);
        sets.new = Some(new);
        scaled
    }

    /// Shrinks old sets while at least `replicas - maxUnavailable` pods
    /// stay available: first their unavailable pods, then available ones.
    fn reconcile_old_sets(&mut self, sets: &mut Sets) -> bool {
        let old_pods: i64 = sets.old.iter().map(spec_replicas).sum();
        if old_pods == 0 {
            return false;
        }
        let all_pods = sets.sum(spec_replicas);
        let min_available = self.replicas() - max_unavailable(&self.d);
        let new_unavailable = sets.new.as_ref().map_or(0, |rs| {
            spec_replicas(rs) - status_int(rs, "availableReplicas")
        });
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let mut old = std::mem::take(&mut sets.old);
        // Unhealthy replicas first, oldest set first.
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let size = spec_replicas(rs);
            let available = status_int(rs, "availableReplicas");
            if size == 0 || size <= available {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(size - available);
            self.scale_set(rs, size - n);
            cleaned += n;
        }
        sets.old = old;
        // Then available replicas, down to the minimum.
        let available = sets.sum(|rs| status_int(rs, "availableReplicas"));
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            let mut old = std::mem::take(&mut sets.old);
            for rs in old.iter_mut() {
                if scaled >= total {
                    break;
                }
                let size = spec_replicas(rs);
                if size == 0 {
                    continue;
                }
                let n = size.min(total - scaled);
                self.scale_set(rs, size - n);
                scaled += n;
            }
            sets.old = old;
        }
        cleaned + scaled > 0
    }

    fn recreate(&mut self, sets: Vec<Value>) {
        let mut sets = self.sets_with_revision(sets, false);
        let mut old = std::mem::take(&mut sets.old);
        let mut scaled_down = false;
        for rs in old.iter_mut().filter(|rs| spec_replicas(rs) > 0) {
            scaled_down |= self.scale_set(rs, 0);
        }
        sets.old = old;
        if scaled_down || self.old_pods_running(&sets) {
            return self.sync_rollout_status(&sets);
        }
        if sets.new.is_none() {
            let all: Vec<Value> = sets.old.clone();
            sets = self.sets_with_revision(all, true);
        }
        if let Some(mut new) = sets.new.take() {
            let want = self.replicas();
            self.scale_set(&mut new, want);
            sets.new = Some(new);
        }
        if self.complete(&self.d["status"].clone()) {
            self.cleanup(&sets);
        }
        self.sync_rollout_status(&sets);
    }

    /// Whether any pod of an old set is still there and not finished
    /// (terminating pods count: Recreate never overlaps old and new).
    fn old_pods_running(&self, sets: &Sets) -> bool {
        sets.old.iter().any(|rs| {
            status_int(rs, "replicas") > 0
                || self.c.store.owned(POD_KEY, uid_of(rs)).iter().any(|p| {
                    !matches!(
                        p.pointer("/status/phase").and_then(Value::as_str),
                        Some("Succeeded" | "Failed")
                    ) && controller_of(p) == Some(uid_of(rs))
                })
        })
    }

    /// Deletes old sets with no pods beyond `revisionHistoryLimit`, lowest
    /// revision first.
    fn cleanup(&mut self, sets: &Sets) {
        let Some(limit) = self
            .d
            .pointer("/spec/revisionHistoryLimit")
            .and_then(Value::as_i64)
        else {
            return;
        };
        let mut cleanable: Vec<&Value> = sets.old.iter().filter(|rs| !is_deleting(rs)).collect();
        let diff = cleanable.len() as i64 - limit;
        if diff <= 0 {
            return;
        }
        cleanable.sort_by_key(|rs| (revision(rs), created(rs).to_string()));
        let ns = self.ns();
        for rs in cleanable.into_iter().take(diff as usize) {
            let observed = status_int(rs, "observedGeneration");
            let generation = rs
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if status_int(rs, "replicas") != 0 || spec_replicas(rs) != 0 || generation > observed {
                continue;
            }
            if let Err(e) = self
                .c
                .delete(self.rs_rt, &ns, name_of(rs), &DeleteOptions::default())
            {
                self.failed(&e);
            }
        }
    }

    /// Upstream's `calculateStatus`: counts summed from the sets and the
    /// Available condition.
    fn calculate_status(&self, sets: &Sets) -> Value {
        let available = sets.sum(|rs| status_int(rs, "availableReplicas"));
        let mut status = self.d.get("status").cloned().unwrap_or_else(|| json!({}));
        if !status.is_object() {
            status = json!({});
        }
        for (field, n) in [
            ("replicas", sets.sum(|rs| status_int(rs, "replicas"))),
            (
                "updatedReplicas",
                sets.new.as_ref().map_or(0, |rs| status_int(rs, "replicas")),
            ),
            (
                "readyReplicas",
                sets.sum(|rs| status_int(rs, "readyReplicas")),
            ),
            ("availableReplicas", available),
            ("unavailableReplicas", (self.replicas() - available).max(0)),
            (
                "observedGeneration",
                self.d
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            ),
        ] {
            if n != 0 {
                status[field] = json!(n);
            } else if let Some(s) = status.as_object_mut() {
                s.remove(field);
            }
        }
        let cond = if available >= self.replicas() - max_unavailable(&self.d) {
            new_condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            new_condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        set_condition(&mut status, cond);
        status
    }

    /// Upstream's `DeploymentComplete`.
    fn complete(&self, status: &Value) -> bool {
        let want = self.replicas();
        status_of(status, "updatedReplicas") == want
            && status_of(status, "replicas") == want
            && status_of(status, "availableReplicas") == want
            && status_of(status, "observedGeneration")
                >= self
                    .d
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
    }

    fn progress_deadline(&self) -> Option<i64> {
        self.d
            .pointer("/spec/progressDeadlineSeconds")
            .and_then(Value::as_i64)
            .filter(|s| *s != i64::from(i32::MAX))
    }

    fn write_status(&mut self, status: Value) {
        if self.d.get("status") == Some(&status) {
            return;
        }
        let (ns, name) = (self.ns(), self.name());
        match self
            .c
            .modify(self.d_rt, &ns, &name, Sub::Status, MANAGER, &|d| {
                d["status"] = status.clone();
            }) {
            Ok(d) => self.d = d,
            Err(e) => self.failed(&e),
        }
    }

    fn sync_status(&mut self, sets: &Sets) {
        let status = self.calculate_status(sets);
        self.write_status(status);
    }

    /// Upstream's `syncRolloutStatus`: the counts, and the Progressing
    /// condition from how they moved since the last status.
    fn sync_rollout_status(&mut self, sets: &Sets) {
        let mut status = self.calculate_status(sets);
        let deadline = self.progress_deadline();
        if deadline.is_none() {
            remove_condition(&mut status, PROGRESSING);
        }
        let current = condition(&status, PROGRESSING).cloned();
        let already_complete = status_of(&status, "replicas")
            == status_of(&status, "updatedReplicas")
            && current
                .as_ref()
                .is_some_and(|c| c["reason"] == NEW_RS_AVAILABLE);
        let what = match &sets.new {
            Some(rs) => format!("ReplicaSet {:?}", name_of(rs)),
            None => format!("Deployment {:?}", self.name()),
        };
        if let Some(deadline) = deadline
            && !already_complete
        {
            if self.complete(&status) {
                set_condition(
                    &mut status,
                    new_condition(
                        PROGRESSING,
                        "True",
                        NEW_RS_AVAILABLE,
                        format!("{what} has successfully progressed."),
                    ),
                );
            } else if self.progressing(&status) {
                let mut cond = new_condition(
                    PROGRESSING,
                    "True",
                    "ReplicaSetUpdated",
                    format!("{what} is progressing."),
                );
                if let Some(cur) = current.as_ref().filter(|c| c["status"] == "True") {
                    cond["lastTransitionTime"] = cur["lastTransitionTime"].clone();
                }
                remove_condition(&mut status, PROGRESSING);
                set_condition(&mut status, cond);
            } else if timed_out(current.as_ref(), deadline) {
                set_condition(
                    &mut status,
                    new_condition(
                        PROGRESSING,
                        "False",
                        TIMED_OUT,
                        format!("{what} has timed out progressing."),
                    ),
                );
            }
        }
        // A set's failure to create or delete pods shows on the Deployment
        // (the new set's first, as upstream's `getReplicaFailures`).
        let failure = sets
            .new
            .iter()
            .chain(sets.old.iter())
            .find_map(|rs| condition(&rs["status"], REPLICA_FAILURE).cloned());
        match failure {
            Some(f) => {
                let mut cond = new_condition(
                    REPLICA_FAILURE,
                    f["status"].as_str().unwrap_or("True"),
                    f["reason"].as_str().unwrap_or_default(),
                    f["message"].as_str().unwrap_or_default().to_string(),
                );
                if let Some(t) = f.get("lastTransitionTime") {
                    cond["lastTransitionTime"] = t.clone();
                    cond["lastUpdateTime"] = t.clone();
                }
                set_condition(&mut status, cond);
            }
            None => remove_condition(&mut status, REPLICA_FAILURE),
        }
        // A rollout still under way is looked at again when its deadline
        // passes, even if nothing else changes.
        if let Some(deadline) = deadline
            && let Some(cur) = condition(&status, PROGRESSING)
            && !self.complete(&status)
            && cur["reason"] != TIMED_OUT
            && let Some(since) = cur["lastUpdateTime"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            // A deadline beyond the calendar is never due.
            let due = since
                .checked_add(jiff::SignedDuration::from_secs(deadline))
                .unwrap_or(jiff::Timestamp::MAX);
            let left: Duration = (due - jiff::Timestamp::now())
                .try_into()
                .unwrap_or(Duration::ZERO);
            let left = left.max(Duration::from_secs(1));
            if self.outcome == Outcome::Done {
                self.outcome = Outcome::After(left);
            }
        }
        self.write_status(status);
    }

    /// Upstream's `DeploymentProgressing`: more updated, ready or
    /// available pods, or fewer old ones, than the last status said.
    fn progressing(&self, status: &Value) -> bool {
        let old = &self.d["status"];
        let old_old = status_of(old, "replicas") - status_of(old, "updatedReplicas");
        let new_old = status_of(status, "replicas") - status_of(status, "updatedReplicas");
        status_of(status, "updatedReplicas") > status_of(old, "updatedReplicas")
            || new_old < old_old
            || status_of(status, "readyReplicas") > status_of(old, "readyReplicas")
            || status_of(status, "availableReplicas") > status_of(old, "availableReplicas")
    }

    /// Upstream's `checkPausedConditions`: pausing and resuming show in
    /// the Progressing condition (Unknown).
    fn check_paused_conditions(&mut self) {
        if self.progress_deadline().is_none() {
            return;
        }
        let cur = condition(&self.d["status"], PROGRESSING);
        if cur.is_some_and(|c| c["reason"] == TIMED_OUT) {
            return;
        }
        let paused_shown = cur.is_some_and(|c| c["reason"] == PAUSED);
        let paused = self.d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        let cond = if paused && !paused_shown {
            new_condition(
                PROGRESSING,
                "Unknown",
                PAUSED,
                "Deployment is paused".into(),
            )
        } else if !paused && paused_shown {
            new_condition(
                PROGRESSING,
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            )
        } else {
            return;
        };
        self.write_condition(cond);
    }
}

fn status_of(status: &Value, field: &str) -> i64 {
    status.get(field).and_then(Value::as_i64).unwrap_or(0)
}

/// Upstream's `DeploymentTimedOut`: no progress for the deadline since
/// the Progressing condition's last update.
fn timed_out(cond: Option<&Value>, deadline: i64) -> bool {
    let Some(cond) = cond else {
        return false;
    };
    if cond["reason"] == TIMED_OUT {
        return true;
    }
    if cond["reason"] == NEW_RS_AVAILABLE {
        return false;
    }
    let Some(from) = cond["lastUpdateTime"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return false;
    };
    from.checked_add(jiff::SignedDuration::from_secs(deadline))
        .is_ok_and(|due| due < jiff::Timestamp::now())
}

/// The Deployment controlling a set, as a key.
fn deployment_of(rs: &Value, out: &mut Vec<ObjectKey>) {
    for r in rs
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if r["controller"].as_bool() == Some(true)
            && r["kind"] == "Deployment"
            && let Some(name) = r["name"].as_str()
        {
            out.push((namespace_of(rs).to_string(), name.to_string()));
        }
    }
}

/// Copies a Deployment's annotations to a set, but for the controller's own.
fn copy_annotations(from: Option<&Value>, to: &mut Map<String, Value>) {
    for (k, v) in from.and_then(Value::as_object).into_iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || to.get(k) == Some(v) {
            continue;
        }
        to.insert(k.clone(), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, strategy: Value) -> Value {
        json!({"spec": {"replicas": replicas, "strategy": strategy}})
    }

    #[test]
    fn values_beyond_what_validation_admits_saturate_instead_of_panicking() {
        let huge = json!("92233720368547758%");
        assert_eq!(
            scaled(Some(&huge), 1000, true, "25%"),
            Some(i64::MAX.saturating_add(99).div_euclid(100))
        );
        let cond = json!({"reason": "ReplicaSetUpdated", "lastUpdateTime": "2026-01-01T00:00:00Z"});
        assert!(!timed_out(Some(&cond), 100_000_000_000_000));
        assert!(timed_out(Some(&cond), 60));
        let deployment = |spec: Value| {
            let rt = crate::registry::Registry::new()
                .by_key("apps", "deployments")
                .expect("deployments are served");
            let mut obj = json!({"metadata": {"name": "d"}, "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            }});
            for (k, v) in spec.as_object().into_iter().flatten() {
                obj["spec"][k] = v.clone();
            }
            crate::builtin::validate(&rt, &obj, None)
                .into_iter()
                .map(|c| c.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            deployment(json!({"progressDeadlineSeconds": 100_000_000_000_000_i64})),
            ["spec.progressDeadlineSeconds"]
        );
        assert_eq!(
            deployment(json!({"minReadySeconds": 30, "progressDeadlineSeconds": 30})),
            ["spec.progressDeadlineSeconds"]
        );
        assert_eq!(
            deployment(json!({"strategy": {"rollingUpdate": {"maxSurge": "92233720368547758%"}}})),
            ["spec.strategy.rollingUpdate.maxSurge"]
        );
        assert!(
            deployment(json!({"minReadySeconds": 5, "progressDeadlineSeconds": 600})).is_empty()
        );
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailability_down() {
        let d = deploy(10, json!({"type": "RollingUpdate"}));
        assert_eq!(
            strategy(&d),
            Strategy::RollingUpdate {
                max_surge: 3,
                max_unavailable: 2
            }
        );
        let d = deploy(
            1,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}}),
        );
        assert_eq!(
            strategy(&d),
            Strategy::RollingUpdate {
                max_surge: 0,
                max_unavailable: 1
            },
            "both zero: one pod may be unavailable"
        );
        assert_eq!(
            strategy(&deploy(3, json!({"type": "Recreate"}))),
            Strategy::Recreate
        );
    }

    #[test]
    fn the_template_hash_is_stable_and_ignores_only_empty_fields() {
        let t = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert_eq!(template_hash(&t, 0), template_hash(&t.clone(), 0));
        assert_ne!(template_hash(&t, 0), template_hash(&t, 1));
        let mut labelled = t.clone();
        labelled["metadata"]["labels"][HASH_LABEL] = json!("x");
        assert!(equal_ignoring_hash(&t, &labelled));
        let mut read_back = labelled.clone();
        read_back["metadata"]["creationTimestamp"] = Value::Null;
        read_back["spec"]["containers"][0]["resources"] = json!({});
        assert!(equal_ignoring_hash(&t, &read_back));
        let mut sparse = t.clone();
        sparse["metadata"]["creationTimestamp"] = Value::Null;
        assert_eq!(template_hash(&t, 0), template_hash(&sparse, 0));
        let mut other = t.clone();
        other["spec"]["containers"][0]["image"] = json!("j");
        assert!(!equal_ignoring_hash(&t, &other));
        assert!(
            template_hash(&t, 0)
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
    }
}
