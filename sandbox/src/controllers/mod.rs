//! Built-in controllers: what kube-controller-manager and the kubelet do.
//!
//! A controller is a loop: observe the current state, compare it with the
//! desired state written in objects, and act to close the gap. Each loop
//! here wakes on store changes it cares about (and on a slow periodic
//! resync, or when a pass asked to be run again after a delay, for state
//! that changes with time alone), then reconciles *all* its objects from
//! scratch: level-triggered, so a missed event can never leave things stuck. Writes go through the
//! same [`Cluster`] path as client requests, and a reconcile that finds
//! nothing to do writes nothing, so the loops settle.

pub mod endpoints;
pub mod gc;
pub mod job;
pub mod kubelet;
pub mod namespace;
pub mod pvc;
pub mod statefulset;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::store::Event;

/// The one node every pod is scheduled to (the write path's, which
/// schedules pods at creation).
pub use crate::cluster::NODE_NAME;
/// The field manager controllers write as.
pub const MANAGER: &str = "kube-controller-manager";

type Interest = fn(&Event) -> bool;
/// One pass over all objects; `Some(d)` asks for another pass within `d`
/// even if nothing changes (upstream's `AddAfter` requeue).
type Reconcile = fn(&Cluster) -> Option<Duration>;

/// Runs one controller loop until shutdown.
fn spawn_loop(
    cluster: Arc<Cluster>,
    mut shutdown: watch::Receiver<bool>,
    interest: Interest,
    reconcile: Reconcile,
    extra: Option<Arc<Notify>>,
    resync: Duration,
) -> JoinHandle<()> {
    let mut rx = cluster.store.subscribe();
    tokio::spawn(async move {
        let requeue_at = |d: Option<Duration>| d.map(|d| tokio::time::Instant::now() + d);
        let mut requeue = requeue_at(reconcile(&cluster));
        let mut tick = tokio::time::interval(resync);
        tick.tick().await;
        loop {
            let notified = async {
                match &extra {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            // An instant, not a delay, so events that wake the loop without
            // a pass do not push the requeue back.
            let due = async {
                match requeue {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(e) if !interest(&e) => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = notified => {}
                _ = due => {}
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            // Coalesce a burst of changes into one pass.
            while rx.try_recv().is_ok() {}
            requeue = requeue_at(reconcile(&cluster));
        }
    })
}

fn key_is(e: &Event, keys: &[&str]) -> bool {
    keys.contains(&e.key.as_str())
}

/// Starts every built-in controller.
pub fn spawn_all(cluster: Arc<Cluster>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let resync = Duration::from_secs(2);
    let notify = cluster.runtime.changed();
    vec![
        spawn_loop(
            cluster.clone(),
            shutdown.clone(),
            namespace::interest,
            |c| {
                namespace::reconcile(c);
                None
            },
            None,
            resync,
        ),
        spawn_loop(
            cluster.clone(),
            shutdown.clone(),
            gc::interest,
            |c| {
                gc::reconcile(c);
                None
            },
            None,
            resync,
        ),
        spawn_loop(
            cluster.clone(),
            shutdown.clone(),
            |e| {
                key_is(
                    e,
                    &[
                        "apps/statefulsets",
                        "/pods",
                        "/persistentvolumeclaims",
                        "apps/controllerrevisions",
                    ],
                )
            },
            |c| {
                statefulset::reconcile(c);
                None
            },
            None,
            resync,
        ),
        spawn_loop(
            cluster.clone(),
            shutdown.clone(),
            |e| key_is(e, &["batch/jobs", "/pods"]),
            job::reconcile,
            None,
            resync,
        ),
        spawn_loop(
            cluster.clone(),
            shutdown.clone(),
            |e| key_is(e, &["/persistentvolumeclaims", "/persistentvolumes"]),
            |c| {
                pvc::reconcile(c);
                None
            },
            None,
            resync,
        ),
        spawn_loop(
            cluster.clone(),
            shutdown.clone(),
            |e| {
                key_is(
                    e,
                    &[
                        "/services",
                        "/pods",
                        "/endpoints",
                        "discovery.k8s.io/endpointslices",
                    ],
                )
            },
            |c| {
                endpoints::reconcile(c);
                None
            },
            None,
            resync,
        ),
        spawn_loop(
            cluster,
            shutdown,
            |e| key_is(e, &["/pods"]),
            |c| {
                kubelet::reconcile(c);
                None
            },
            Some(notify),
            Duration::from_millis(500),
        ),
    ]
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
