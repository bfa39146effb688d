//! The garbage collector: ownerReferences tie dependents to owners.
//!
//! * **Background** (the default): the owner goes at once; dependents whose
//!   owners are all gone are then deleted.
//! * **Foreground**: the owner gets the `foregroundDeletion` finalizer and
//!   stays (with a deletionTimestamp) until its dependents are gone.
//! * **Orphan**: the owner gets the `orphan` finalizer; the collector removes
//!   the ownerReferences from its dependents, then the finalizer.

use serde_json::Value;

use super::queue::{Controller, Outcome};
use crate::cluster::{Cluster, DeleteOptions, Sub};
use crate::meta::{finalizers, is_deleting, name_of, namespace_of, uid_of};
use crate::store::{Event, EventType};

/// Keyed by uid. An object with owners is looked at when it changes (its
/// owners may already be gone); a deleted object's dependents (now
/// perhaps dangling) and owners (perhaps waiting in foreground deletion
/// for it) are looked at when it goes; an object being deleted is looked
/// at for its orphan and foreground finalizers.
pub struct GarbageCollector;

impl Controller for GarbageCollector {
    type Key = String;

    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    fn keys(&self, c: &Cluster, e: &Event, out: &mut Vec<String>) {
        let uid = uid_of(&e.object);
        let owners = owner_uids(&e.object);
        if e.kind == EventType::Deleted {
            out.extend(c.store.dependent_uids(uid));
            out.extend(owners);
        } else {
            if is_deleting(&e.object) {
                out.push(uid.to_string());
                // A foreground owner learns here that a dependent is going.
                out.extend(owners);
            } else if !owners.is_empty() {
                out.push(uid.to_string());
            }
        }
    }

    fn all(&self, c: &Cluster) -> Vec<String> {
        c.store
            .uids_where(&|o| is_deleting(o) || o.pointer("/metadata/ownerReferences").is_some())
    }

    fn reconcile(&self, c: &Cluster, uid: &String) -> Outcome {
        sync(c, uid);
        Outcome::Done
    }
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn group_plural(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

fn drop_finalizer(c: &Cluster, key: &str, obj: &Value, finalizer: &str) {
    let (g, p) = group_plural(key);
    let Ok(rt) = c.rt(g, p) else { return };
    let f = finalizer.to_string();
    let _ = c.modify(
        &rt,
        namespace_of(obj),
        name_of(obj),
        Sub::Main,
        "garbage-collector",
        &move |o| {
            if let Some(list) = o
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                list.retain(|x| x.as_str() != Some(f.as_str()));
            }
        },
    );
}

/// Collects one object if it is dangling, and carries out its orphan or
/// foreground deletion if it is being deleted.
fn sync(c: &Cluster, uid: &str) {
    // Most objects looked at are neither dangling nor being deleted: read
    // their owners and state in place, and copy only one being deleted.
    let Some((key, ns, name, owners, deleting)) = c.store.read_by_uid(uid, |key, obj| {
        (
            key.to_string(),
            namespace_of(obj).to_string(),
            name_of(obj).to_string(),
            owner_uids(obj),
            is_deleting(obj),
        )
    }) else {
        return;
    };
    // Dangling: every owner is gone (the real collector also checks the
    // owner's uid, so a re-created owner with the same name does not count).
    if !owners.is_empty() && !deleting && owners.iter().all(|u| c.store.locate_uid(u).is_none()) {
        let (g, p) = group_plural(&key);
        if let Ok(rt) = c.rt(g, p) {
            let _ = c.delete(&rt, &ns, &name, &DeleteOptions::default());
        }
    }
    if !deleting {
        return;
    }
    let Some((key, obj)) = c.store.get_by_uid(uid) else {
        return;
    };
    let (key, obj) = (&key, &obj);
    {
        let fins = finalizers(obj);
        let deps = c.store.dependents(uid);
        if fins.iter().any(|f| f == "orphan") {
            let uid = uid_of(obj).to_string();
            for (dkey, dep) in &deps {
                let (g, p) = group_plural(dkey);
                let Ok(rt) = c.rt(g, p) else { continue };
                let u = uid.clone();
                let _ = c.modify(
                    &rt,
                    namespace_of(dep),
                    name_of(dep),
                    Sub::Main,
                    "garbage-collector",
                    &move |o| {
                        if let Some(refs) = o
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            refs.retain(|r| r["uid"].as_str() != Some(u.as_str()));
                        }
                        if o.pointer("/metadata/ownerReferences")
                            .and_then(Value::as_array)
                            .is_some_and(Vec::is_empty)
                            && let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut)
                        {
                            m.remove("ownerReferences");
                        }
                    },
                );
            }
            drop_finalizer(c, key, obj, "orphan");
        } else if fins.iter().any(|f| f == "foregroundDeletion") {
            if deps.is_empty() {
                drop_finalizer(c, key, obj, "foregroundDeletion");
                return;
            }
            for (dkey, dep) in deps.iter().filter(|(_, d)| !is_deleting(d)) {
                let (g, p) = group_plural(dkey);
                if let Ok(rt) = c.rt(g, p) {
                    let opts = DeleteOptions {
                        propagation: Some("Foreground".into()),
                        ..Default::default()
                    };
                    let _ = c.delete(&rt, namespace_of(dep), name_of(dep), &opts);
                }
            }
        }
    }
}
