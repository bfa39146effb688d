//! The `scale` subresource: the autoscaling/v1 Scale view of an object
//! whose kind declares one (StatefulSets, custom resources with a scale
//! subresource), and writing `spec.replicas` through it.

use serde_json::{Value, json};

use super::{Cluster, Sub, WriteOptions};
use crate::error::{Cause, Error, Result};
use crate::registry::ResourceType;
use crate::selector::LabelSelector;
use crate::store::rv_of;

impl Cluster {
    /// The autoscaling/v1 Scale view of an object.
    pub fn get_scale(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value> {
        let obj = self.get(rt, ns, name)?;
        let Some(scale) = &rt.scale else {
            return Err(Error::no_such_resource());
        };
        let ptr = |p: &str| p.replace('.', "/");
        let spec = obj
            .pointer(&ptr(&scale.spec_replicas_path))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let status = obj
            .pointer(&ptr(&scale.status_replicas_path))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let selector = scale
            .label_selector_path
            .as_ref()
            .and_then(|p| {
                obj.pointer(&ptr(p))
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .or_else(|| {
                obj.pointer("/spec/selector")
                    .map(|s| LabelSelector::from_label_selector(s).render())
            })
            .unwrap_or_default();
        let m = &obj["metadata"];
        Ok(json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
            "spec": {"replicas": spec},
            "status": {"replicas": status, "selector": selector},
        }))
    }

    /// Writes `spec.replicas` through the scale subresource.
    pub fn set_scale(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        scale_obj: &Value,
        opts: &WriteOptions,
    ) -> Result<Value> {
        let Some(scale) = &rt.scale else {
            return Err(Error::no_such_resource());
        };
        let Some(replicas) = scale_obj.pointer("/spec/replicas").and_then(Value::as_i64) else {
            return Err(Error::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![Cause::required("spec.replicas", "")],
            ));
        };
        if replicas < 0 {
            return Err(Error::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let wanted_rv = scale_obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let old = self.get(rt, ns, name)?;
        if !wanted_rv.is_empty() && wanted_rv != rv_of(&old).to_string() {
            return Err(Error::conflict(&rt.group, &rt.plural, name));
        }
        let mut new = old.clone();
        let path: Vec<&str> = scale
            .spec_replicas_path
            .trim_start_matches('.')
            .split('.')
            .collect();
        let mut cur = &mut new;
        for (i, p) in path.iter().enumerate() {
            if i + 1 == path.len() {
                if let Some(o) = cur.as_object_mut() {
                    o.insert((*p).into(), json!(replicas));
                }
                break;
            }
            if !cur.get(*p).is_some_and(Value::is_object)
                && let Some(o) = cur.as_object_mut()
            {
                o.insert((*p).into(), json!({}));
            }
            let Some(next) = cur.get_mut(*p) else { break };
            cur = next;
        }
        let opts = WriteOptions {
            manager: self.manager(opts),
            ..opts.clone()
        };
        self.update(rt, ns, name, new, Sub::Main, &opts)?;
        self.get_scale(rt, ns, name)
    }
}
