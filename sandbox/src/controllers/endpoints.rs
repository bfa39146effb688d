//! Endpoints and EndpointSlices: where a Service's traffic would go.
//!
//! For every Service with a selector, the pods in its namespace that match
//! the selector and have an IP are listed: Ready pods as addresses, others
//! as not-ready addresses. Both the legacy `Endpoints` object (same name as
//! the Service) and a `discovery.k8s.io/v1` EndpointSlice (labelled
//! `kubernetes.io/service-name`) are kept up to date.

use serde_json::{Value, json};

use super::{MANAGER, controller_ref, list_all, pod_ready};
use crate::cluster::{Cluster, DeleteOptions, WriteOptions};
use crate::meta::{is_deleting, name_of, namespace_of, uid_of};
use crate::selector::LabelSelector;

fn target_port(svc_port: &Value, pod: &Value) -> Value {
    match &svc_port["targetPort"] {
        Value::String(named) => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"].as_str() == Some(named.as_str()))
            .map(|p| p["containerPort"].clone())
            .unwrap_or(Value::Null),
        Value::Null => svc_port["port"].clone(),
        other => other.clone(),
    }
}

fn put(c: &Cluster, group: &str, plural: &str, ns: &str, name: &str, desired: Value) {
    let Ok(rt) = c.rt(group, plural) else { return };
    match c.store.get(&rt.key(), ns, name) {
        None => {
            let _ = c.create(&rt, ns, desired, &WriteOptions::manager(MANAGER));
        }
        Some(old) => {
            let mut new = old.clone();
            for k in ["subsets", "endpoints", "ports", "addressType"] {
                match desired.get(k) {
                    Some(v) => new[k] = v.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove(k);
                        }
                    }
                }
            }
            if new != old {
                let _ = c.update(
                    &rt,
                    ns,
                    name,
                    new,
                    crate::cluster::Sub::Main,
                    &WriteOptions::manager(MANAGER),
                );
            }
        }
    }
}

pub fn reconcile(c: &Cluster) {
    let services = list_all(c, "", "services", None);
    for svc in &services {
        let Some(sel) = svc
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        if is_deleting(svc) {
            continue;
        }
        let selector = LabelSelector::from_map(sel);
        let ns = namespace_of(svc).to_string();
        let name = name_of(svc).to_string();
        let pods: Vec<Value> = list_all(c, "", "pods", Some(&ns))
            .into_iter()
            .filter(|p| {
                selector.matches(p) && !is_deleting(p) && p.pointer("/status/podIP").is_some()
            })
            .collect();
        let svc_ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let address = |p: &Value| {
            json!({"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
                   "targetRef": {"kind": "Pod", "namespace": ns, "name": name_of(p), "uid": uid_of(p)}})
        };
        let ready: Vec<Value> = pods.iter().filter(|p| pod_ready(p)).map(address).collect();
        let not_ready: Vec<Value> = pods.iter().filter(|p| !pod_ready(p)).map(address).collect();
        let first_pod = pods.first().cloned().unwrap_or(json!({}));
        let ports: Vec<Value> = svc_ports
            .iter()
            .map(|p| {
                let mut port =
                    json!({"port": target_port(p, &first_pod), "protocol": p["protocol"]});
                if let Some(n) = p.get("name") {
                    port["name"] = n.clone();
                }
                port
            })
            .collect();
        let mut ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns, "labels": svc["metadata"]["labels"].clone()}});
        if ep["metadata"]["labels"].is_null()
            && let Some(m) = ep["metadata"].as_object_mut()
        {
            m.remove("labels");
        }
        if !pods.is_empty() {
            let mut subset = json!({"ports": ports});
            if !ready.is_empty() {
                subset["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready);
            }
            ep["subsets"] = json!([subset]);
        }
        put(c, "", "endpoints", &ns, &name, ep);

        let slice_name = format!(
            "{name}-{}",
            &uid_of(svc).replace('-', "")[..5.min(uid_of(svc).len())]
        );
        let endpoints: Vec<Value> = pods
            .iter()
            .map(|p| {
                let r = pod_ready(p);
                json!({"addresses": [p["status"]["podIP"]], "conditions": {"ready": r, "serving": r, "terminating": false},
                       "nodeName": p["spec"]["nodeName"], "targetRef": {"kind": "Pod", "namespace": ns, "name": name_of(p), "uid": uid_of(p)}})
            })
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice_name, "namespace": ns, "ownerReferences": [controller_ref(svc)],
                         "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        });
        put(
            c,
            "discovery.k8s.io",
            "endpointslices",
            &ns,
            &slice_name,
            slice,
        );
    }
    // Endpoints of deleted Services go too (EndpointSlices follow through GC).
    if let Ok(ep_rt) = c.rt("", "endpoints") {
        for ep in list_all(c, "", "endpoints", None) {
            let managed = ep
                .pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().any(|e| e["manager"] == MANAGER));
            if managed
                && !services
                    .iter()
                    .any(|s| name_of(s) == name_of(&ep) && namespace_of(s) == namespace_of(&ep))
            {
                let _ = c.delete(
                    &ep_rt,
                    namespace_of(&ep),
                    name_of(&ep),
                    &DeleteOptions::default(),
                );
            }
        }
    }
}
