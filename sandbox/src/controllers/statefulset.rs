//! The StatefulSet controller: stable, ordered pods with their own volumes.
//!
//! Pod `<set>-<i>` is created for each ordinal below `spec.replicas`, with a
//! PersistentVolumeClaim `<template>-<set>-<i>` per volumeClaimTemplate.
//! Under the default `OrderedReady` policy, pod `i` is created only once pods
//! `0..i` are Running and Ready, and scale-down removes the highest ordinal
//! first, one at a time. Claims are kept on scale-down and on deletion (the
//! default `Retain` policy). Each distinct pod template is a revision stored
//! as a ControllerRevision; pods carry it in the `controller-revision-hash`
//! label. A `RollingUpdate` replaces pods not at the update revision from
//! the highest ordinal down to `partition`, waiting for each to be Ready.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::queue::{Controller, Outcome};
use super::{MANAGER, controlled_by, controller_keys, controller_ref, event_key, pod_ready};
use crate::cluster::{Cluster, DeleteOptions, Sub, WriteOptions};
use crate::meta::{is_deleting, name_of, namespace_of, uid_of};
use crate::store::{Event, ObjectKey};

/// Keyed by StatefulSet; its pods and revisions lead back to it through
/// their controller reference.
pub struct StatefulSetController;

impl Controller for StatefulSetController {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "statefulset"
    }

    fn keys(&self, _c: &Cluster, e: &Event, out: &mut Vec<ObjectKey>) {
        match e.key.as_str() {
            "apps/statefulsets" => out.push(event_key(e)),
            "/pods" | "apps/controllerrevisions" | "/persistentvolumeclaims" => {
                controller_keys(e, "StatefulSet", out)
            }
            _ => {}
        }
    }

    fn all(&self, c: &Cluster) -> Vec<ObjectKey> {
        c.store.keys("apps/statefulsets", None)
    }

    fn reconcile(&self, c: &Cluster, key: &ObjectKey) -> Outcome {
        sync(c, &key.0, &key.1)
    }
}

/// A short, stable hash of the pod template (the revision's identity).
fn template_hash(template: &Value) -> String {
    let digest = Sha256::digest(template.to_string().as_bytes());
    // Lowercase alphanumerics, like upstream's SafeEncodeString output.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest
        .iter()
        .take(10)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn ordinal(set: &str, pod: &Value) -> Option<i64> {
    name_of(pod)
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn revision_label(pod: &Value) -> &str {
    pod.pointer("/metadata/labels/controller-revision-hash")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn ensure_revision(c: &Cluster, set: &Value, revision: &str, template: &Value, number: i64) {
    let Ok(rt) = c.rt("apps", "controllerrevisions") else {
        return;
    };
    let ns = namespace_of(set);
    if c.store.contains(&rt.key(), ns, revision) {
        return;
    }
    let mut labels = set
        .pointer("/spec/selector/matchLabels")
        .cloned()
        .unwrap_or(json!({}));
    labels["controller.kubernetes.io/hash"] =
        json!(revision.rsplit('-').next().unwrap_or_default());
    let cr = json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": revision, "namespace": ns, "labels": labels, "ownerReferences": [controller_ref(set)]},
        "data": {"spec": {"template": template}},
        "revision": number,
    });
    let _ = c.create(&rt, ns, cr, &WriteOptions::manager(MANAGER));
}

fn template_of(c: &Cluster, ns: &str, revision: &str) -> Option<Value> {
    let rt = c.rt("apps", "controllerrevisions").ok()?;
    c.store
        .get(&rt.key(), ns, revision)?
        .pointer("/data/spec/template")
        .cloned()
}

fn new_pod(set: &Value, template: &Value, revision: &str, i: i64) -> Value {
    let set_name = name_of(set);
    let pod_name = format!("{set_name}-{i}");
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    let mut labels = meta.get("labels").cloned().unwrap_or(json!({}));
    labels["controller-revision-hash"] = json!(revision);
    labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
    labels["apps.kubernetes.io/pod-index"] = json!(i.to_string());
    meta["labels"] = labels;
    meta["name"] = json!(pod_name);
    meta["namespace"] = json!(namespace_of(set));
    meta["ownerReferences"] = json!([controller_ref(set)]);
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    spec["hostname"] = json!(pod_name);
    if let Some(svc) = set
        .pointer("/spec/serviceName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        spec["subdomain"] = json!(svc);
    }
    let vcts = set
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !vcts.is_empty() {
        let mut volumes = spec
            .get("volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for t in &vcts {
            let claim = name_of(t);
            volumes.retain(|v| v["name"].as_str() != Some(claim));
            volumes.push(json!({"name": claim, "persistentVolumeClaim": {"claimName": format!("{claim}-{set_name}-{i}")}}));
        }
        spec["volumes"] = json!(volumes);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

fn ensure_claims(c: &Cluster, set: &Value, i: i64) {
    let Ok(rt) = c.rt("", "persistentvolumeclaims") else {
        return;
    };
    let ns = namespace_of(set);
    let set_name = name_of(set);
    let delete_with_set = set
        .pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
        .and_then(Value::as_str)
        == Some("Delete");
    for t in set
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let name = format!("{}-{set_name}-{i}", name_of(&t));
        if c.store.get(&rt.key(), ns, &name).is_some() {
            continue;
        }
        let mut labels = t.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
        if let Some(m) = set
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
        {
            for (k, v) in m {
                labels[k] = v.clone();
            }
        }
        let mut meta = json!({"name": name, "namespace": ns, "labels": labels});
        if delete_with_set {
            meta["ownerReferences"] = json!([controller_ref(set)]);
        }
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": t["spec"]});
        let _ = c.create(&rt, ns, pvc, &WriteOptions::manager(MANAGER));
    }
}

/// Reconciles one StatefulSet from its own pods and revisions.
fn sync(c: &Cluster, ns: &str, name: &str) -> Outcome {
    let (Ok(set_rt), Ok(pod_rt)) = (c.rt("apps", "statefulsets"), c.rt("", "pods")) else {
        return Outcome::Done;
    };
    let Some(set) = c.store.get(&set_rt.key(), ns, name) else {
        return Outcome::Done;
    };
    let mut outcome = Outcome::Done;
    {
        if is_deleting(&set) {
            return Outcome::Done;
        }
        let ns = namespace_of(&set).to_string();
        let set_name = name_of(&set).to_string();
        let uid = uid_of(&set).to_string();
        let spec = &set["spec"];
        let replicas = spec["replicas"].as_i64().unwrap_or(1);
        let parallel = spec["podManagementPolicy"].as_str() == Some("Parallel");
        let rolling =
            spec.pointer("/updateStrategy/type").and_then(Value::as_str) != Some("OnDelete");
        let partition = spec
            .pointer("/updateStrategy/rollingUpdate/partition")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let template = spec.get("template").cloned().unwrap_or(json!({}));
        let update_revision = format!("{set_name}-{}", template_hash(&template));
        let revisions = c
            .store
            .owned("apps/controllerrevisions", &uid)
            .into_iter()
            .filter(|r| controlled_by(r, &uid))
            .collect::<Vec<_>>();
        let next_number = revisions
            .iter()
            .filter_map(|r| r["revision"].as_i64())
            .max()
            .unwrap_or(0)
            + 1;
        ensure_revision(c, &set, &update_revision, &template, next_number);
        let mut current_revision = set
            .pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .unwrap_or(&update_revision)
            .to_string();
        // The update revision's template is the spec's: read a stored
        // revision only for an older one.
        let current_template = if current_revision == update_revision {
            template.clone()
        } else {
            template_of(c, &ns, &current_revision).unwrap_or_else(|| template.clone())
        };

        let mut pods: Vec<(i64, Value)> = c
            .store
            .owned(&pod_rt.key(), &uid)
            .into_iter()
            .filter(|p| controlled_by(p, &uid))
            .filter_map(|p| ordinal(&set_name, &p).map(|i| (i, p)))
            .collect();
        pods.sort_by_key(|(i, _)| *i);
        let find = |i: i64| pods.iter().find(|(o, _)| *o == i).map(|(_, p)| p);

        // Create missing pods (in order, one unready pod at a time unless Parallel).
        let mut blocked = false;
        for i in 0..replicas {
            match find(i) {
                Some(p) if is_deleting(p) => blocked = true,
                Some(p) => {
                    let phase = p
                        .pointer("/status/phase")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if matches!(phase, "Failed" | "Succeeded") {
                        let _ = c.delete(
                            &pod_rt,
                            &ns,
                            name_of(p),
                            &DeleteOptions {
                                grace_period: Some(0),
                                ..Default::default()
                            },
                        );
                        blocked = true;
                    } else if !pod_ready(p) && !parallel {
                        blocked = true;
                    }
                }
                None => {
                    let use_current =
                        rolling && current_revision != update_revision && i < partition;
                    let (tmpl, rev) = if use_current {
                        (&current_template, current_revision.as_str())
                    } else {
                        (&template, update_revision.as_str())
                    };
                    ensure_claims(c, &set, i);
                    if let Err(e) = c.create(
                        &pod_rt,
                        &ns,
                        new_pod(&set, tmpl, rev, i),
                        &WriteOptions::manager(MANAGER),
                    ) && e.code() != 409
                    {
                        outcome = Outcome::Retry;
                    }
                    if !parallel {
                        blocked = true;
                    }
                }
            }
            if blocked {
                break;
            }
        }

        // Scale down: OrderedReady from the highest ordinal, one at a time;
        // Parallel every condemned pod at once.
        let condemned: Vec<&(i64, Value)> = pods.iter().filter(|(i, _)| *i >= replicas).collect();
        if parallel {
            for (_, p) in condemned.iter().filter(|(_, p)| !is_deleting(p)) {
                let _ = c.delete(&pod_rt, &ns, name_of(p), &DeleteOptions::default());
            }
            blocked |= !condemned.is_empty();
        } else if !blocked && let Some((_, p)) = condemned.last() {
            if !is_deleting(p) {
                let _ = c.delete(&pod_rt, &ns, name_of(p), &DeleteOptions::default());
            }
            blocked = true;
        }

        // Rolling update: highest ordinal not at the update revision first.
        let all_ready = (0..replicas).all(|i| find(i).is_some_and(pod_ready));
        if rolling && !blocked && all_ready {
            let stale = (partition..replicas)
                .rev()
                .find_map(|i| find(i).filter(|p| revision_label(p) != update_revision));
            if let Some(p) = stale {
                let _ = c.delete(&pod_rt, &ns, name_of(p), &DeleteOptions::default());
            }
        }

        // Status.
        let live: Vec<&Value> = pods
            .iter()
            .map(|(_, p)| p)
            .filter(|p| !is_deleting(p))
            .collect();
        let ready = live.iter().filter(|p| pod_ready(p)).count();
        let updated = live
            .iter()
            .filter(|p| revision_label(p) == update_revision)
            .count();
        let mut current = live
            .iter()
            .filter(|p| revision_label(p) == current_revision)
            .count();
        if updated as i64 == replicas && ready as i64 == replicas && partition == 0 {
            current_revision = update_revision.clone();
            current = updated;
        }
        let status = json!({
            "observedGeneration": set.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "replicas": live.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update_revision,
            "collisionCount": 0,
        });
        if set.get("status") != Some(&status)
            && let Err(e) = c.modify(&set_rt, &ns, &set_name, Sub::Status, MANAGER, &move |s| {
                s["status"] = status.clone();
            })
            && e.code() != 404
        {
            outcome = Outcome::Retry;
        }
    }
    outcome
}
