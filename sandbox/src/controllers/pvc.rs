//! Volume binding: every claim gets a volume of the size it asks for.
//!
//! A Pending PersistentVolumeClaim is bound to a freshly made
//! PersistentVolume `pvc-<claim uid>` (dynamic provisioning with one
//! imaginary storage class), and becomes `Bound` with `status.capacity`
//! equal to its request. Raising a bound claim's request expands it:
//! the volume and `status.capacity` follow, and the pod runtime raises the
//! volume's quota with it (`PodRuntime::volume_resized`: a volume the
//! volume-fill fault made full has room again). A volume whose claim is gone is
//! deleted (reclaim policy `Delete`).

use serde_json::{Value, json};

use super::MANAGER;
use super::queue::{Controller, Outcome};
use crate::cluster::{Cluster, DeleteOptions, Sub, WriteOptions};
use crate::meta::{name_of, namespace_of, uid_of};
use crate::store::{Event, EventType};

/// What the binder reconciles: a claim, or a volume (reclaimed once its
/// claim is gone).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Claim(String, String),
    Volume(String),
}

/// Keyed by claim and by volume; a volume's events lead to its claim, a
/// deleted claim's to its volume.
pub struct VolumeBinder;

const CLAIMS: &str = "/persistentvolumeclaims";
const VOLUMES: &str = "/persistentvolumes";

impl Controller for VolumeBinder {
    type Key = Key;

    fn name(&self) -> &'static str {
        "persistentvolume-binder"
    }

    fn keys(&self, _c: &Cluster, e: &Event, out: &mut Vec<Key>) {
        match e.key.as_str() {
            CLAIMS => {
                out.push(Key::Claim(e.namespace.clone(), e.name.clone()));
                if e.kind == EventType::Deleted {
                    out.push(Key::Volume(format!("pvc-{}", uid_of(&e.object))));
                }
            }
            VOLUMES => {
                out.push(Key::Volume(e.name.clone()));
                if let (Some(ns), Some(name)) = (
                    e.object
                        .pointer("/spec/claimRef/namespace")
                        .and_then(Value::as_str),
                    e.object
                        .pointer("/spec/claimRef/name")
                        .and_then(Value::as_str),
                ) {
                    out.push(Key::Claim(ns.into(), name.into()));
                }
            }
            _ => {}
        }
    }

    fn all(&self, c: &Cluster) -> Vec<Key> {
        let claims = c.store.keys(CLAIMS, None).into_iter();
        let volumes = c.store.keys(VOLUMES, None).into_iter();
        claims
            .map(|(ns, n)| Key::Claim(ns, n))
            .chain(volumes.map(|(_, n)| Key::Volume(n)))
            .collect()
    }

    fn reconcile(&self, c: &Cluster, key: &Key) -> Outcome {
        match key {
            Key::Claim(ns, name) => sync_claim(c, ns, name),
            Key::Volume(name) => sync_volume(c, name),
        }
        Outcome::Done
    }
}

/// Binds a Pending claim to a new volume, or grows a bound one's volume.
fn sync_claim(c: &Cluster, ns: &str, name: &str) {
    let (Ok(pvc_rt), Ok(pv_rt)) = (
        c.rt("", "persistentvolumeclaims"),
        c.rt("", "persistentvolumes"),
    ) else {
        return;
    };
    let Some(pvc) = c.store.get(CLAIMS, ns, name) else {
        return;
    };
    let pvc = &pvc;
    {
        let ns = namespace_of(pvc).to_string();
        let name = name_of(pvc).to_string();
        let request = pvc
            .pointer("/spec/resources/requests/storage")
            .cloned()
            .unwrap_or(json!("1Gi"));
        let modes = pvc
            .pointer("/spec/accessModes")
            .cloned()
            .unwrap_or(json!(["ReadWriteOnce"]));
        let pv_name = format!("pvc-{}", uid_of(pvc));
        let phase = pvc
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if phase != "Bound" {
            if c.store.get(&pv_rt.key(), "", &pv_name).is_none() {
                let pv = json!({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": "sandbox"}},
                    "spec": {
                        "capacity": {"storage": request},
                        "accessModes": modes,
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": pvc.pointer("/spec/storageClassName").cloned().unwrap_or(json!("standard")),
                        "volumeMode": pvc.pointer("/spec/volumeMode").cloned().unwrap_or(json!("Filesystem")),
                        "hostPath": {"path": format!("/var/lib/sandbox/{pv_name}")},
                        "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid_of(pvc)},
                    },
                    "status": {"phase": "Bound"},
                });
                let _ = c.create(&pv_rt, "", pv, &WriteOptions::manager(MANAGER));
            }
            let pv_for_claim = pv_name.clone();
            let _ = c.modify(&pvc_rt, &ns, &name, Sub::Main, MANAGER, &move |o| {
                o["spec"]["volumeName"] = json!(pv_for_claim);
                o["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = json!("yes");
            });
            let (req, m) = (request.clone(), modes.clone());
            let _ = c.modify(&pvc_rt, &ns, &name, Sub::Status, MANAGER, &move |o| {
                o["status"] =
                    json!({"phase": "Bound", "accessModes": m, "capacity": {"storage": req}});
            });
        } else if pvc.pointer("/status/capacity/storage") != Some(&request) {
            let grow = |o: &Value| {
                let q = |v: Option<&Value>| {
                    v.and_then(Value::as_str)
                        .and_then(crate::builtin::parse_quantity)
                        .unwrap_or(0.0)
                };
                q(Some(&request)) > q(o.pointer("/status/capacity/storage"))
            };
            if grow(pvc) {
                // The volume itself grows: a runtime enforcing a quota
                // raises it before the claim's new capacity is reported.
                if let Some(bytes) = request.as_str().and_then(crate::builtin::parse_quantity) {
                    c.runtime.volume_resized(&pv_name, bytes.max(0.0) as u64);
                }
                let req = request.clone();
                let _ = c.modify(&pv_rt, "", &pv_name, Sub::Main, MANAGER, &move |o| {
                    o["spec"]["capacity"]["storage"] = req.clone();
                });
                let req = request.clone();
                let _ = c.modify(&pvc_rt, &ns, &name, Sub::Status, MANAGER, &move |o| {
                    o["status"]["capacity"]["storage"] = req.clone();
                });
            }
        }
    }
}

/// Deletes a volume whose claim is gone (reclaim policy `Delete`).
fn sync_volume(c: &Cluster, name: &str) {
    let Ok(pv_rt) = c.rt("", "persistentvolumes") else {
        return;
    };
    let Some(pv) = c.store.get(VOLUMES, "", name) else {
        return;
    };
    let Some(claim_uid) = pv.pointer("/spec/claimRef/uid").and_then(Value::as_str) else {
        return;
    };
    if pv
        .pointer("/spec/persistentVolumeReclaimPolicy")
        .and_then(Value::as_str)
        == Some("Delete")
        && c.store.locate_uid(claim_uid).is_none()
    {
        let _ = c.delete(&pv_rt, "", name_of(&pv), &DeleteOptions::default());
    }
}
