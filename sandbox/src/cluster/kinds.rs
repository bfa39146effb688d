//! The write path's per-kind special cases, in one place: what admitting,
//! creating, storing or deleting an object of one kind does beyond the
//! generic steps (`create`, `update`, `delete`).
//! Each kind with special behaviour has one [`KindRules`] implementation
//! and one arm in [`rules`]; adding a kind touches only this file. A
//! built-in kind's defaults and validation rules are [`crate::builtin`]'s,
//! a custom resource's schema [`crate::schema`]'s, and what controllers do
//! with stored objects is theirs.

use serde_json::{Value, json};

use super::Cluster;
use crate::error::Result;
use crate::meta::{self, name_of};
use crate::registry::ResourceType;
use crate::scheduling::{self, Placement};

/// The sandbox's one node, where pods that fit are scheduled.
pub const NODE_NAME: &str = "sandbox";

/// What the write path does differently for the objects of one kind.
/// Every hook defaults to nothing special.
pub trait KindRules: Sync {
    /// Admission after defaulting, before the built-in validation rules.
    fn admit(&self, _rt: &ResourceType, _obj: &mut Value) -> Result<()> {
        Ok(())
    }
    /// Validation after the built-in rules, failing with its own error.
    fn validate(&self, _obj: &Value) -> Result<()> {
        Ok(())
    }
    /// Create-time changes, after the server-set metadata and before
    /// admission.
    fn on_create(&self, _c: &Cluster, _obj: &mut Value) -> Result<()> {
        Ok(())
    }
    /// After an object was stored by a create or an update.
    fn after_write(&self, _c: &Cluster, _obj: &Value) {}
    /// After an object was removed from the store.
    fn after_delete(&self, _c: &Cluster, _obj: &Value) {}
    /// The grace period a delete gives an object (`requested`: the
    /// request's `gracePeriodSeconds`); 0 deletes without one.
    fn deletion_grace(&self, _obj: &Value, _requested: Option<i64>) -> i64 {
        0
    }
    /// `Some` for kinds whose objects a delete only marks, whatever their
    /// finalizers: the status the marked object gets.
    fn terminating_status(&self) -> Option<Value> {
        None
    }
    /// Whether an object marked for deletion stays until the kubelet has
    /// stopped it.
    fn waits_for_kubelet(&self, _obj: &Value) -> bool {
        false
    }
}

/// The rules of `rt`'s kind.
pub fn rules(rt: &ResourceType) -> &'static dyn KindRules {
    if rt.crd {
        return &CustomResources;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => &Pods,
        ("", "services") => &Services,
        ("", "namespaces") => &Namespaces,
        ("batch", "jobs") => &Jobs,
        ("apiextensions.k8s.io", "customresourcedefinitions") => &CustomResourceDefinitions,
        _ => &Plain,
    }
}

/// Kinds with nothing special.
struct Plain;
impl KindRules for Plain {}

/// Whether a pod has not finished (its phase is neither Succeeded nor Failed).
fn pod_running(obj: &Value) -> bool {
    !matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// Pods: bound at creation when they fit, deleted gracefully by the
/// kubelet.
struct Pods;
impl KindRules for Pods {
    fn on_create(&self, c: &Cluster, obj: &mut Value) -> Result<()> {
        // The scheduler's first attempt, in the create itself: a pod that
        // fits is bound at once; one that does not stays unbound, for the
        // scheduler loop to report and retry.
        if scheduling::unbound(obj) {
            let nodes = c.store.list("/nodes", None, None, None, &|_| true).items;
            if let Placement::Node(node) = scheduling::place(obj, &nodes)
                && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("nodeName".into(), json!(node));
            }
        }
        Ok(())
    }

    /// A running pod gets the requested grace period, else its spec's
    /// `terminationGracePeriodSeconds` (30 by default); a finished one
    /// none, nor does one no node runs (upstream's `CheckGracefulDelete`).
    fn deletion_grace(&self, obj: &Value, requested: Option<i64>) -> i64 {
        let spec_grace = obj
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        if pod_running(obj) && !scheduling::unbound(obj) {
            requested.unwrap_or(spec_grace).max(0)
        } else {
            0
        }
    }

    /// Pods bound to a node are deleted gracefully: the kubelet stops the
    /// containers and then removes the object.
    fn waits_for_kubelet(&self, obj: &Value) -> bool {
        obj.pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0
            && pod_running(obj)
    }
}

/// Jobs: the selector the API server generates at creation. Unless
/// `spec.manualSelector` is true, the Job's selector matches its own uid
/// (`batch.kubernetes.io/controller-uid`), and its pod template carries
/// that label and `batch.kubernetes.io/job-name`, plus the legacy
/// `controller-uid` and `job-name`, as upstream's `generateSelector` gives
/// them; so `kubectl logs job/NAME` finds the Job's pods, not others with
/// the template's labels.
struct Jobs;
impl KindRules for Jobs {
    fn on_create(&self, _c: &Cluster, obj: &mut Value) -> Result<()> {
        if obj.pointer("/spec/manualSelector") == Some(&json!(true)) {
            return Ok(());
        }
        let uid = crate::meta::uid_of(obj).to_string();
        let name = name_of(obj).to_string();
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let template = spec.entry("template").or_insert(json!({}));
        if let Some(t) = template.as_object_mut() {
            let meta = t.entry("metadata").or_insert(json!({}));
            if let Some(m) = meta.as_object_mut() {
                let labels = m.entry("labels").or_insert(json!({}));
                if let Some(l) = labels.as_object_mut() {
                    for (key, value) in [
                        ("batch.kubernetes.io/controller-uid", &uid),
                        ("batch.kubernetes.io/job-name", &name),
                        ("controller-uid", &uid),
                        ("job-name", &name),
                    ] {
                        l.insert(key.into(), json!(value));
                    }
                }
            }
        }
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
        Ok(())
    }
}

/// Services: a ClusterIP at creation.
struct Services;
impl KindRules for Services {
    fn on_create(&self, c: &Cluster, obj: &mut Value) -> Result<()> {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
            && spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            // A runtime that serves Services hands out addresses it
            // can listen on; otherwise the address is only a name.
            let ip = c.runtime.allocate_service_ip().unwrap_or_else(|| {
                format!(
                    "10.96.{}.{}",
                    rand::random_range(0..255u8),
                    rand::random_range(1..255u8)
                )
            });
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        Ok(())
    }
}

/// Namespaces: a delete marks them `Terminating`; the namespace controller
/// empties and then removes them.
struct Namespaces;
impl KindRules for Namespaces {
    fn terminating_status(&self) -> Option<Value> {
        Some(json!({"phase": "Terminating"}))
    }
}

/// CustomResourceDefinitions: validated, given their status, and serving
/// (or no longer serving) their kind.
struct CustomResourceDefinitions;
impl KindRules for CustomResourceDefinitions {
    fn validate(&self, obj: &Value) -> Result<()> {
        crate::schema::validate_crd(obj)
    }

    fn on_create(&self, _c: &Cluster, obj: &mut Value) -> Result<()> {
        crate::schema::validate_crd(obj)?;
        let status = crate::schema::crd_status(obj);
        if let Some(o) = obj.as_object_mut() {
            o.insert("status".into(), status);
        }
        Ok(())
    }

    fn after_write(&self, c: &Cluster, obj: &Value) {
        let types = crate::schema::crd_types(obj);
        let (group, plural) = crd_key(obj);
        c.registry.set_crd(group, plural, types);
    }

    /// Deleting a CRD deletes its objects and stops serving them.
    fn after_delete(&self, c: &Cluster, obj: &Value) {
        let (group, plural) = crd_key(obj);
        if let Some(crt) = c.registry.by_key(group, plural) {
            let page = c.store.list(&crt.key(), None, None, None, &|_| true);
            for o in page.items {
                let _ = c
                    .store
                    .delete(&crt.key(), meta::namespace_of(&o), name_of(&o), None);
            }
        }
        c.registry.remove_crd(group, plural);
    }
}

/// The group and plural a CRD serves.
fn crd_key(crd: &Value) -> (&str, &str) {
    let at = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or_default();
    (at("/spec/group"), at("/spec/names/plural"))
}

/// Objects of kinds a CRD defines: admitted against the CRD's schema.
struct CustomResources;
impl KindRules for CustomResources {
    fn admit(&self, rt: &ResourceType, obj: &mut Value) -> Result<()> {
        crate::schema::admit(rt, obj)
    }
}
