//! The scheduler loop: pods the write path could not bind at creation.
//!
//! A pod that fits is bound in its create ([`crate::scheduling`] decides,
//! the write path sets `spec.nodeName`). A pod that does not stays
//! `Pending` and unbound, and this loop does what kube-scheduler does with
//! it: the pod gets the condition `PodScheduled=False`, reason
//! `Unschedulable`, with the scheduler's message, and a Warning Event
//! `FailedScheduling` from `default-scheduler`. The pod is tried again
//! when it or a node changes, and at every resync; once a node can take
//! it, it is bound and the kubelet starts it.
//!
//! Where it stops: an Event is recorded when the message first appears or
//! changes, not at every retry (upstream's recorder would count the
//! repeats), so an unschedulable pod at rest writes nothing.

use serde_json::{Value, json};

use super::queue::{Controller, Outcome};
use super::{event_key, keep_transition_times};
use crate::cluster::{Cluster, Sub, WriteOptions};
use crate::meta::{is_deleting, name_of, namespace_of, uid_of};
use crate::scheduling::{Placement, place, unbound};
use crate::store::{Event, ObjectKey};

const PODS: &str = "/pods";
const NODES: &str = "/nodes";
/// The name the scheduler writes and reports Events as.
const SCHEDULER: &str = "default-scheduler";

/// Keyed by pod; a node's change re-enqueues every pod still waiting.
pub struct Scheduler;

impl Controller for Scheduler {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn keys(&self, c: &Cluster, e: &Event, out: &mut Vec<ObjectKey>) {
        match e.key.as_str() {
            PODS if waiting(&e.object) => out.push(event_key(e)),
            NODES => out.extend(self.all(c)),
            _ => {}
        }
    }

    fn all(&self, c: &Cluster) -> Vec<ObjectKey> {
        c.store
            .list(PODS, None, None, None, &waiting)
            .items
            .iter()
            .map(|p| (namespace_of(p).to_string(), name_of(p).to_string()))
            .collect()
    }

    fn reconcile(&self, c: &Cluster, key: &ObjectKey) -> Outcome {
        schedule(c, &key.0, &key.1)
    }
}

/// A pod the scheduler still has to place.
fn waiting(pod: &Value) -> bool {
    unbound(pod) && !is_deleting(pod)
}

fn nodes(c: &Cluster) -> Vec<Value> {
    c.store.list(NODES, None, None, None, &|_| true).items
}

/// Binds the pod, or records why it cannot be.
fn schedule(c: &Cluster, ns: &str, name: &str) -> Outcome {
    let Ok(rt) = c.rt("", "pods") else {
        return Outcome::Done;
    };
    let Some(pod) = c.store.get(PODS, ns, name) else {
        return Outcome::Done;
    };
    if !waiting(&pod) {
        return Outcome::Done;
    }
    let result = match place(&pod, &nodes(c)) {
        Placement::Node(node) => c.modify(&rt, ns, name, Sub::Main, SCHEDULER, &move |p| {
            if unbound(p) {
                p["spec"]["nodeName"] = json!(node);
            }
        }),
        Placement::Unschedulable(message) => {
            let first = unschedulable_message(&pod) != Some(message.as_str());
            let written = c.modify(&rt, ns, name, Sub::Status, SCHEDULER, &|p| {
                mark_unschedulable(p, &message);
            });
            if first && written.is_ok() {
                record_failed_scheduling(c, &pod, &message);
            }
            written
        }
    };
    match result {
        Err(e) if e.code() != 404 => Outcome::Retry,
        _ => Outcome::Done,
    }
}

/// The message of the pod's `PodScheduled=False` condition, if it has one.
fn unschedulable_message(pod: &Value) -> Option<&str> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")?
        .get("message")?
        .as_str()
}

/// Sets `PodScheduled=False` (reason `Unschedulable`) on a pod, keeping its
/// other conditions and the transition time of an unchanged status.
fn mark_unschedulable(pod: &mut Value, message: &str) {
    let status = &mut pod["status"];
    if !status.is_object() {
        *status = json!({});
    }
    status["phase"] = json!("Pending");
    let old = status.get("conditions").cloned();
    let mut conditions: Vec<Value> = old
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["type"] != "PodScheduled")
        .cloned()
        .collect();
    conditions.push(json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": crate::meta::now(),
    }));
    let mut conditions = Value::Array(conditions);
    keep_transition_times(&mut conditions, old.as_ref());
    status["conditions"] = conditions;
}

/// Records the Warning Event kube-scheduler records for a pod it cannot
/// place. Best effort, like upstream's recorder: a failed write is dropped.
fn record_failed_scheduling(c: &Cluster, pod: &Value, message: &str) {
    let Ok(rt) = c.rt("", "events") else {
        return;
    };
    let (ns, name) = (namespace_of(pod), name_of(pod));
    let now = crate::meta::now();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod",
            "name": name, "namespace": ns, "uid": uid_of(pod),
            "resourceVersion": pod.pointer("/metadata/resourceVersion"),
        },
        "reason": "FailedScheduling",
        "message": message,
        "type": "Warning",
        "action": "Scheduling",
        "source": {"component": SCHEDULER},
        "reportingComponent": SCHEDULER,
        "reportingInstance": SCHEDULER,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let _ = c.create(&rt, ns, event, &WriteOptions::manager(SCHEDULER));
}
