//! Built-in controllers: what kube-controller-manager and the kubelet do.
//!
//! A controller is a loop: observe the current state, compare it with the
//! desired state written in objects, and act to close the gap. Each one
//! here is shaped like upstream's (see [`queue`]): store events become the
//! keys of the objects they affect, keys wait in a deduplicating work
//! queue, and one object at a time is reconciled from the store's indexes
//! (pods by owner, Services by selector, dependents by owner uid), so the
//! work per event is proportional to what the event touches, never to the
//! number of objects. A slow periodic resync enqueues every key, so the
//! loops stay level-triggered: a missed event cannot leave things stuck.
//! Writes go through the same [`Cluster`] path as client requests, and a
//! reconcile that finds nothing to do writes nothing, so the loops settle.
//!
//! All controllers run on one thread of their own with its own runtime,
//! so however busy they are, the API server's runtime keeps answering.

pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod kubelet;
pub mod namespace;
pub mod pvc;
pub mod queue;
pub mod replicaset;
pub mod scheduler;
pub mod statefulset;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::meta::namespace_of;
use crate::store::{Event, ObjectKey};

/// The one node pods are scheduled to (the write path binds a pod that
/// fits at creation; [`scheduler`] retries the others).
pub use crate::cluster::NODE_NAME;
/// The field manager controllers write as.
pub const MANAGER: &str = "kube-controller-manager";

/// How often every controller enqueues all its keys.
const RESYNC: Duration = Duration::from_secs(2);
/// The kubelet's relist, for runtimes that cannot name the pods that changed.
const KUBELET_RESYNC: Duration = Duration::from_millis(500);

/// The controllers' thread; stopping it ends every loop.
pub struct Controllers {
    stop: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Controllers {
    /// Ends every loop and waits (briefly) for the thread to finish.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            // Loops end at their next await; a reconcile in progress is short.
            let _ = t.join();
        }
    }
}

/// Starts every built-in controller on a thread of its own.
pub fn spawn_all(cluster: Arc<Cluster>) -> std::io::Result<Controllers> {
    let (tx, rx) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("sandbox-controllers".into())
        .spawn(move || {
            crate::metrics::mark_controller_thread();
            runtime.block_on(async move {
                let c = &cluster;
                let notify = c.runtime.changed();
                let loops = vec![
                    tokio::spawn(queue::run(
                        c.clone(),
                        namespace::NamespaceController,
                        rx.clone(),
                        None,
                        RESYNC,
                    )),
                    tokio::spawn(queue::run(
                        c.clone(),
                        gc::GarbageCollector,
                        rx.clone(),
                        None,
                        RESYNC,
                    )),
                    tokio::spawn(queue::run(
                        c.clone(),
                        statefulset::StatefulSetController,
                        rx.clone(),
                        None,
                        RESYNC,
                    )),
                    tokio::spawn(queue::run(
                        c.clone(),
                        replicaset::ReplicaSetController,
                        rx.clone(),
                        None,
                        RESYNC,
                    )),
                    tokio::spawn(queue::run(
                        c.clone(),
                        deployment::DeploymentController,
                        rx.clone(),
                        None,
                        RESYNC,
                    )),
                    tokio::spawn(queue::run(
                        c.clone(),
                        job::JobController,
                        rx.clone(),
                        None,
                        RESYNC,
                    )),
                    tokio::spawn(queue::run(
                        c.clone(),
                        pvc::VolumeBinder,
                        rx.clone(),
                        None,
                        RESYNC,
                    )),
                    tokio::spawn(queue::run(
                        c.clone(),
                        endpoints::EndpointsController,
                        rx.clone(),
                        None,
                        RESYNC,
                    )),
                    tokio::spawn(queue::run(
                        c.clone(),
                        scheduler::Scheduler,
                        rx.clone(),
                        None,
                        RESYNC,
                    )),
                    tokio::spawn(queue::run(
                        c.clone(),
                        kubelet::Kubelet,
                        rx.clone(),
                        Some(notify),
                        KUBELET_RESYNC,
                    )),
                ];
                for l in loops {
                    let _ = l.await;
                }
            });
        })?;
    Ok(Controllers {
        stop: Some(tx),
        thread: Some(thread),
    })
}

/// The `(namespace, name)` of an event's object.
pub fn event_key(e: &Event) -> ObjectKey {
    (e.namespace.clone(), e.name.clone())
}

/// The owners of kind `kind` that control an event's object, before or
/// after the change, as `(namespace, name)` keys.
pub fn controller_keys(e: &Event, kind: &str, out: &mut Vec<ObjectKey>) {
    for obj in std::iter::once(&e.object).chain(e.old.as_ref()) {
        if let Some(refs) = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        {
            for r in refs {
                if r["controller"].as_bool() == Some(true)
                    && r["kind"].as_str() == Some(kind)
                    && let Some(name) = r["name"].as_str()
                {
                    out.push((namespace_of(obj).to_string(), name.to_string()));
                }
            }
        }
    }
}

/// An ownerReference naming `owner` as the controller of a dependent.
pub fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether `obj` is controlled by the object with this uid.
pub fn controlled_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"].as_str() == Some(uid) && r["controller"].as_bool() == Some(true))
        })
}

/// Lists every object of a resource (in one namespace, or all).
pub fn list_all(c: &Cluster, group: &str, plural: &str, ns: Option<&str>) -> Vec<Value> {
    match c.rt(group, plural) {
        Ok(rt) => c.store.list(&rt.key(), ns, None, None, &|_| true).items,
        Err(_) => vec![],
    }
}

/// A pod is Running and its Ready condition is True.
pub fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

/// Copies a condition's lastTransitionTime from the old list when its
/// status did not change, so rewriting conditions is a no-op.
pub fn keep_transition_times(new: &mut Value, old: Option<&Value>) {
    let Some(list) = new.as_array_mut() else {
        return;
    };
    for c in list.iter_mut() {
        let prev = old
            .and_then(Value::as_array)
            .and_then(|o| o.iter().find(|p| p["type"] == c["type"]));
        if let Some(p) = prev
            && p["status"] == c["status"]
            && let Some(t) = p.get("lastTransitionTime")
        {
            c["lastTransitionTime"] = t.clone();
        }
    }
}
