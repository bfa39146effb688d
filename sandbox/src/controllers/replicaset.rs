//! The ReplicaSet controller: keep `spec.replicas` interchangeable pods
//! running, as upstream's `pkg/controller/replicaset` does.
//!
//! A ReplicaSet owns the pods its controller reference names. Pods that
//! match its selector and have no controller are adopted (the reference is
//! added); pods it controls that no longer match are released (the
//! reference is removed). Pods that are terminating, Succeeded or Failed
//! are not counted: a replacement is created at once, as upstream does.
//! Missing pods are created from the template as `<rs>-<5 random>`; surplus
//! pods are deleted in upstream's order (unscheduled before scheduled,
//! Pending before Running, not ready before ready, ready for less time
//! before longer, more restarts before fewer, newer before older).
//!
//! Status: `replicas` (active pods), `fullyLabeledReplicas` (those carrying
//! every template label), `readyReplicas`, `availableReplicas` (Ready for
//! at least `minReadySeconds`), `observedGeneration`. While a pod is Ready
//! but not yet available, the set is looked at again when it becomes so.
//!
//! Each pod created or deleted is a Normal Event on the set
//! (`SuccessfulCreate` / `SuccessfulDelete`, from `replicaset-controller`).
//! A pod the API refuses (a missing ServiceAccount, say) sets the
//! `ReplicaFailure` condition (reason `FailedCreate` or `FailedDelete`, the
//! API's message) with a Warning Event `Error creating: ...`, and the set
//! retries with back-off; the condition goes once it manages its pods.
//!
//! Where it stops: no slow-start batches (pods are created in one pass),
//! no pod-deletion-cost annotation; the Warning Event is recorded when the
//! condition is set, not at every retry (so a failing set at rest writes
//! nothing).

use std::cmp::Reverse;
use std::time::Duration;

use serde_json::{Value, json};

use super::queue::{Controller, Outcome};
use super::{MANAGER, controlled_by, controller_keys, controller_ref, event_key, pod_ready};
use crate::cluster::{Cluster, DeleteOptions, Sub, WriteOptions};
use crate::meta::{is_deleting, name_of, namespace_of, uid_of};
use crate::registry::ResourceType;
use crate::selector::LabelSelector;
use crate::store::{Event, ObjectKey};

/// The storage key of ReplicaSets.
pub const RS_KEY: &str = "apps/replicasets";
const POD_KEY: &str = "/pods";
/// The condition a set carries while it cannot create or delete pods.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
/// How many pods one sync creates at most (upstream's `burstReplicas`).
const BURST: i64 = 500;

/// Keyed by ReplicaSet; its pods lead back to it through their controller
/// reference, and orphan pods to the sets whose selector matches them.
pub struct ReplicaSetController;

impl Controller for ReplicaSetController {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "replicaset"
    }

    fn keys(&self, c: &Cluster, e: &Event, out: &mut Vec<ObjectKey>) {
        match e.key.as_str() {
            RS_KEY => out.push(event_key(e)),
            POD_KEY => {
                controller_keys(e, "ReplicaSet", out);
                if e.kind != crate::store::EventType::Deleted && controller_of(&e.object).is_none()
                {
                    out.extend(selecting(c, RS_KEY, &e.object));
                }
            }
            _ => {}
        }
    }

    fn all(&self, c: &Cluster) -> Vec<ObjectKey> {
        c.store.keys(RS_KEY, None)
    }

    fn reconcile(&self, c: &Cluster, key: &ObjectKey) -> Outcome {
        sync(c, &key.0, &key.1)
    }
}

/// The component the ReplicaSet controller reports Events as.
const COMPONENT: &str = "replicaset-controller";

/// The type of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Records a Normal Event about `obj` from `component`, as upstream's
/// controllers' recorders do. Best effort: a failed write is dropped.
pub fn record_event(c: &Cluster, obj: &Value, reason: &str, message: &str, component: &str) {
    record(c, obj, EventType::Normal, reason, message, component);
}

/// Records an Event of type `ty` about `obj` from `component`.
pub fn record(
    c: &Cluster,
    obj: &Value,
    ty: EventType,
    reason: &str,
    message: &str,
    component: &str,
) {
    let Ok(rt) = c.rt("", "events") else {
        return;
    };
    let (ns, name) = (namespace_of(obj), name_of(obj));
    let now = crate::meta::now();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {
            "apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "name": name, "namespace": ns, "uid": uid_of(obj),
            "resourceVersion": obj.pointer("/metadata/resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": format!("{ty:?}"),
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let _ = c.create(&rt, ns, event, &WriteOptions::manager(component));
}

/// The uid of the object's controller, if it has one.
pub fn controller_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
        .and_then(|r| r["uid"].as_str())
}

/// The keys of the objects of `owner_key` in `obj`'s namespace whose
/// `spec.selector` selects it (candidates for adopting an orphan). Only the
/// orphan's namespace is read.
pub fn selecting(c: &Cluster, owner_key: &str, obj: &Value) -> Vec<ObjectKey> {
    let ns = namespace_of(obj);
    c.store
        .list(owner_key, Some(ns), None, None, &|o| {
            !is_deleting(o) && selector_of(o).is_some_and(|s| s.matches(obj))
        })
        .items
        .iter()
        .map(|o| (ns.to_string(), name_of(o).to_string()))
        .collect()
}

/// The object's `spec.selector`; `None` when it is missing or empty (an
/// empty selector adopts nothing).
pub fn selector_of(obj: &Value) -> Option<LabelSelector> {
    let sel = obj.pointer("/spec/selector").filter(|s| !s.is_null())?;
    let s = LabelSelector::from_label_selector(sel);
    (!s.is_empty()).then_some(s)
}

/// Adopts the orphans of kind `key` in `owner`'s namespace that its
/// selector matches and releases the dependents it controls that no longer
/// match, as upstream's `ControllerRefManager` does; gives back the
/// dependents it controls afterwards.
pub fn claim(c: &Cluster, rt: &ResourceType, owner: &Value) -> Vec<Value> {
    let uid = uid_of(owner);
    let ns = namespace_of(owner);
    let mut owned: Vec<Value> = c
        .store
        .owned(&rt.key(), uid)
        .into_iter()
        .filter(|o| controlled_by(o, uid))
        .collect();
    let Some(sel) = selector_of(owner) else {
        return owned;
    };
    if is_deleting(owner) {
        return owned;
    }
    owned.retain(|o| {
        if sel.matches(o) || is_deleting(o) {
            return true;
        }
        let _ = c.modify(rt, ns, name_of(o), Sub::Main, MANAGER, &|o| {
            if let Some(refs) = o
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r["uid"].as_str() != Some(uid));
            }
        });
        false
    });
    let pairs: Vec<(String, String)> = owner
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let owner_ref = controller_ref(owner);
    for orphan in c.store.labelled(&rt.key(), ns, &pairs) {
        if controller_of(&orphan).is_some() || is_deleting(&orphan) || !sel.matches(&orphan) {
            continue;
        }
        let adopted = c.modify(rt, ns, name_of(&orphan), Sub::Main, MANAGER, &|o| {
            if controller_of(o).is_some() {
                return;
            }
            let refs = crate::meta::meta_mut(o)
                .entry("ownerReferences")
                .or_insert_with(|| json!([]));
            if let Some(list) = refs.as_array_mut() {
                list.push(owner_ref.clone());
            }
        });
        if let Ok(o) = adopted
            && controlled_by(&o, uid)
        {
            owned.push(o);
        }
    }
    owned
}

/// Whether a pod counts toward its set: not terminating, not finished.
pub fn is_active(pod: &Value) -> bool {
    !is_deleting(pod)
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// Where a pod stands on the way to counting as available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Not Running and Ready.
    Unready,
    /// Ready, and available once this much more time has passed.
    ReadyFor(Duration),
    /// Ready for at least `minReadySeconds`.
    Available,
}

/// A pod's availability under `min_ready_seconds`, as upstream's
/// `podutil.IsPodAvailable` decides it from the Ready condition's
/// lastTransitionTime.
pub fn availability(pod: &Value, min_ready_seconds: i64, now: jiff::Timestamp) -> Availability {
    if !pod_ready(pod) {
        return Availability::Unready;
    }
    if min_ready_seconds <= 0 {
        return Availability::Available;
    }
    let since = ready_since(pod);
    let Some(since) = since else {
        return Availability::Available;
    };
    // A wait beyond the calendar never ends.
    let due = since
        .checked_add(jiff::SignedDuration::from_secs(min_ready_seconds))
        .unwrap_or(jiff::Timestamp::MAX);
    match (due - now).try_into() {
        Ok(left) if due > now => Availability::ReadyFor(left),
        _ => Availability::Available,
    }
}

fn ready_since(pod: &Value) -> Option<jiff::Timestamp> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .get("lastTransitionTime")?
        .as_str()?
        .parse()
        .ok()
}

fn new_pod(rs: &Value) -> Value {
    let tmpl = &rs["spec"]["template"];
    let mut meta = tmpl.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
        m.remove("creationTimestamp");
    }
    meta["generateName"] = json!(format!("{}-", name_of(rs)));
    meta["namespace"] = json!(namespace_of(rs));
    meta["ownerReferences"] = json!([controller_ref(rs)]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": tmpl["spec"]})
}

/// Upstream's deletion ranking (`controller.ActivePods` and its ranked
/// variant): the smallest key goes first.
fn deletion_rank(pod: &Value) -> impl Ord + use<> {
    let assigned = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready = pod_ready(pod);
    // Ready for less time goes first: a later transition sorts first.
    let since = if ready {
        Reverse(ready_since(pod))
    } else {
        Reverse(None)
    };
    let restarts: i64 = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s["restartCount"].as_i64())
        .max()
        .unwrap_or(0);
    let created = pod
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    (
        assigned,
        phase,
        ready,
        since,
        Reverse(restarts),
        Reverse(created),
        name_of(pod).to_string(),
    )
}

/// Reconciles one ReplicaSet from its own pods.
fn sync(c: &Cluster, ns: &str, name: &str) -> Outcome {
    let (Ok(rs_rt), Ok(pod_rt)) = (c.rt("apps", "replicasets"), c.rt("", "pods")) else {
        return Outcome::Done;
    };
    let Some(rs) = c.store.get(RS_KEY, ns, name) else {
        return Outcome::Done;
    };
    let mut outcome = Outcome::Done;
    let mut failure = None;
    let mut pods: Vec<Value> = claim(c, &pod_rt, &rs)
        .into_iter()
        .filter(is_active)
        .collect();
    let replicas = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let diff = pods.len() as i64 - replicas;
    if !is_deleting(&rs) {
        if diff < 0 {
            for _ in 0..(-diff).min(BURST) {
                match c.create(&pod_rt, ns, new_pod(&rs), &WriteOptions::manager(MANAGER)) {
                    Ok(p) => record_event(
                        c,
                        &rs,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", name_of(&p)),
                        COMPONENT,
                    ),
                    Err(e) => {
                        failure = Some(("FailedCreate", "Error creating", e.status().message));
                        outcome = Outcome::Retry;
                        break;
                    }
                }
            }
        } else if diff > 0 {
            pods.sort_by_key(deletion_rank);
            let condemned: Vec<Value> = pods.drain(..diff.min(BURST) as usize).collect();
            for p in &condemned {
                match c.delete(&pod_rt, ns, name_of(p), &DeleteOptions::default()) {
                    Ok(_) => record_event(
                        c,
                        &rs,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {}", name_of(p)),
                        COMPONENT,
                    ),
                    Err(e) if e.code() != 404 => {
                        failure = Some(("FailedDelete", "Error deleting", e.status().message));
                        outcome = Outcome::Retry;
                        pods.push(p.clone());
                    }
                    Err(_) => {}
                }
            }
        }
    }

    // The status counts the pods as they are now: those just deleted are
    // terminating and no longer count, so no reader sees a stale surplus.
    let now = jiff::Timestamp::now();
    let min_ready = rs
        .pointer("/spec/minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let template_labels = rs
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let mut ready = 0;
    let mut available = 0;
    for p in &pods {
        match availability(p, min_ready, now) {
            Availability::Unready => {}
            Availability::ReadyFor(left) => {
                ready += 1;
                // Look again when this pod becomes available.
                outcome = match outcome {
                    Outcome::After(d) => Outcome::After(d.min(left)),
                    Outcome::Done => Outcome::After(left),
                    Outcome::Retry => Outcome::Retry,
                };
            }
            Availability::Available => {
                ready += 1;
                available += 1;
            }
        }
    }
    let mut status = json!({"replicas": pods.len()});
    for (field, n) in [
        ("fullyLabeledReplicas", fully_labeled),
        ("readyReplicas", ready),
        ("availableReplicas", available),
    ] {
        if n > 0 {
            status[field] = json!(n);
        }
    }
    if let Some(g) = rs.pointer("/metadata/generation") {
        status["observedGeneration"] = g.clone();
    }
    let mut conditions: Vec<Value> = rs
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let shown = conditions.iter().position(|c| c["type"] == REPLICA_FAILURE);
    match (failure, shown) {
        // Upstream keeps the first failure's condition until the set
        // manages its pods again; the Event is recorded when it is set.
        (Some((reason, verb, message)), None) => {
            record(
                c,
                &rs,
                EventType::Warning,
                reason,
                &format!("{verb}: {message}"),
                COMPONENT,
            );
            conditions.push(json!({"type": REPLICA_FAILURE, "status": "True",
                "lastTransitionTime": crate::meta::now(), "reason": reason, "message": message}));
        }
        (None, Some(i)) => {
            conditions.remove(i);
        }
        _ => {}
    }
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    if rs.get("status") != Some(&status)
        && let Err(e) = c.modify(&rs_rt, ns, name, Sub::Status, MANAGER, &move |s| {
            s["status"] = status.clone();
        })
        && e.code() != 404
    {
        outcome = Outcome::Retry;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, ready: Option<&str>, created: &str) -> Value {
        let mut p = json!({"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": "sandbox"}, "status": {"phase": phase}});
        if let Some(t) = ready {
            p["status"]["conditions"] =
                json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]);
        }
        p
    }

    #[test]
    fn surplus_pods_are_deleted_not_ready_first_then_newest() {
        let mut pods = [
            pod(
                "old-ready",
                "Running",
                Some("2026-01-01T00:00:10Z"),
                "2026-01-01T00:00:00Z",
            ),
            pod("pending", "Pending", None, "2026-01-01T00:00:00Z"),
            pod(
                "new-ready",
                "Running",
                Some("2026-01-01T00:00:30Z"),
                "2026-01-01T00:00:20Z",
            ),
            pod("running-unready", "Running", None, "2026-01-01T00:00:00Z"),
        ];
        pods.sort_by_key(deletion_rank);
        let order: Vec<&str> = pods.iter().map(name_of).collect();
        assert_eq!(
            order,
            ["pending", "running-unready", "new-ready", "old-ready"]
        );
    }

    #[test]
    fn a_pod_is_available_only_after_min_ready_seconds() {
        let p = pod(
            "p",
            "Running",
            Some("2026-01-01T00:00:00Z"),
            "2026-01-01T00:00:00Z",
        );
        let at = |s: &str| s.parse::<jiff::Timestamp>().expect("a timestamp");
        assert_eq!(
            availability(&p, 10, at("2026-01-01T00:00:04Z")),
            Availability::ReadyFor(Duration::from_secs(6))
        );
        assert_eq!(
            availability(&p, 10, at("2026-01-01T00:00:10Z")),
            Availability::Available
        );
        assert_eq!(
            availability(&p, 0, at("2026-01-01T00:00:00Z")),
            Availability::Available
        );
        let unready = pod("u", "Running", None, "2026-01-01T00:00:00Z");
        assert_eq!(
            availability(&unready, 0, at("2026-01-01T00:00:00Z")),
            Availability::Unready
        );
    }
}
