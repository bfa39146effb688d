//! Endpoints and EndpointSlices: where a Service's traffic would go.
//!
//! For every Service with a selector, the pods in its namespace that match
//! the selector and have an IP are listed: Ready pods as addresses, others
//! as not-ready addresses. Both the legacy `Endpoints` object (same name as
//! the Service) and a `discovery.k8s.io/v1` EndpointSlice (labelled
//! `kubernetes.io/service-name`) are kept up to date.

use serde_json::{Value, json};

use super::queue::{Controller, Outcome};
use super::{MANAGER, controller_ref, event_key, pod_ready};
use crate::cluster::{Cluster, DeleteOptions, WriteOptions};
use crate::meta::{is_deleting, name_of, namespace_of, uid_of};
use crate::store::{Event, ObjectKey};

const SERVICES: &str = "/services";
const PODS: &str = "/pods";

/// Keyed by Service; a pod's event leads to the Services whose selector
/// matches its labels before or after the change (from the store's
/// selector index), an Endpoints' or EndpointSlice's to its Service.
pub struct EndpointsController;

impl Controller for EndpointsController {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "endpoints"
    }

    fn keys(&self, c: &Cluster, e: &Event, out: &mut Vec<ObjectKey>) {
        match e.key.as_str() {
            SERVICES | "/endpoints" => out.push(event_key(e)),
            "discovery.k8s.io/endpointslices" => {
                if let Some(svc) = e
                    .object
                    .pointer("/metadata/labels/kubernetes.io~1service-name")
                    .and_then(Value::as_str)
                {
                    out.push((e.namespace.clone(), svc.to_string()));
                }
            }
            PODS => {
                let labels = |o: &Value| o.pointer("/metadata/labels").cloned();
                let (new, old) = (labels(&e.object), e.old.as_ref().and_then(labels));
                let pairs = [&new, &old]
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .flatten()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)));
                for name in c.store.selecting(SERVICES, &e.namespace, pairs) {
                    out.push((e.namespace.clone(), name));
                }
            }
            _ => {}
        }
    }

    fn all(&self, c: &Cluster) -> Vec<ObjectKey> {
        let mut keys = c.store.keys(SERVICES, None);
        keys.extend(c.store.keys("/endpoints", None));
        keys
    }

    fn reconcile(&self, c: &Cluster, key: &ObjectKey) -> Outcome {
        sync(c, &key.0, &key.1);
        Outcome::Done
    }
}

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

/// Reconciles one Service's Endpoints and EndpointSlice, or removes the
/// Endpoints the controller made for a Service that is gone.
fn sync(c: &Cluster, ns: &str, name: &str) {
    let Some(svc) = c.store.get(SERVICES, ns, name) else {
        remove_orphan(c, ns, name);
        return;
    };
    let svc = &svc;
    {
        let Some(sel) = svc
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .filter(|s| !s.is_empty())
        else {
            return;
        };
        if is_deleting(svc) {
            return;
        }
        let pairs: Vec<(&str, &str)> = sel
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
            .collect();
        let ns = namespace_of(svc).to_string();
        let name = name_of(svc).to_string();
        let mut pods: Vec<Value> = c
            .store
            .labelled(PODS, &ns, &pairs)
            .into_iter()
            .filter(|p| !is_deleting(p) && p.pointer("/status/podIP").is_some())
            .collect();
        pods.sort_by(|a, b| name_of(a).cmp(name_of(b)));
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
}

/// Endpoints of deleted Services go too (EndpointSlices follow through GC).
fn remove_orphan(c: &Cluster, ns: &str, name: &str) {
    let Ok(ep_rt) = c.rt("", "endpoints") else {
        return;
    };
    let Some(ep) = c.store.get(&ep_rt.key(), ns, name) else {
        return;
    };
    let managed = ep
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|e| e["manager"] == MANAGER));
    if managed {
        let _ = c.delete(&ep_rt, ns, name, &DeleteOptions::default());
    }
}
