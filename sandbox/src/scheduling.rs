//! Where a pod may run: kube-scheduler's filters for the cases a single
//! node meets, as a pure function of the pod and the nodes.
//!
//! A node is feasible when, in upstream's plugin order, it is not cordoned
//! (`NodeUnschedulable`), its labels carry every pair of the pod's
//! `spec.nodeSelector` (`NodeAffinity`), and its `status.allocatable` covers
//! the pod's cpu and memory requests (`NodeResourcesFit`). A pod's requests
//! are upstream's effective requests: the sum over its containers, or the
//! largest init container's if that is more, plus `spec.overhead`; a
//! container that sets only a limit requests its limit, as the API server
//! defaults it. When no node is feasible the verdict carries upstream's
//! `FitError` message, preemption's part included, e.g.
//! `0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are
//! available: 1 No preemption victims found for incoming pod.`
//!
//! Where it stops: the requests of the pods already on a node are not
//! subtracted, nor is the node's pod count, because the sandbox's node is
//! the machine the tests share and runs a thousand small databases; a pod
//! is unschedulable only when it could never fit. Required node affinity
//! terms, taints and tolerations, host ports and volume topology are not
//! evaluated. The write path binds a pod that fits at creation
//! ([`crate::cluster`]); the scheduler loop
//! ([`crate::controllers::scheduler`]) retries the others and reports why.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::builtin::parse_quantity;
use crate::meta::name_of;

/// The resources the fit filter compares with a node's allocatable.
const RESOURCES: [&str; 2] = ["cpu", "memory"];

/// The scheduler's verdict on one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// The first feasible node, by name.
    Node(String),
    /// No node is feasible: the `PodScheduled=False` message.
    Unschedulable(String),
}

/// Why one node was filtered out, and what preemption would say about it.
#[derive(Debug, Clone, PartialEq)]
struct Rejection {
    reasons: Vec<String>,
    /// Whether evicting other pods could never help (upstream's
    /// `UnschedulableAndUnresolvable`).
    unresolvable: bool,
}

/// Whether a pod is still waiting for a node.
pub fn unbound(pod: &Value) -> bool {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
}

/// The node `pod` goes to, or why none can take it.
pub fn place(pod: &Value, nodes: &[Value]) -> Placement {
    let mut sorted: Vec<&Value> = nodes.iter().collect();
    sorted.sort_by_key(|n| name_of(n));
    let mut rejections = vec![];
    for node in sorted {
        match filter(pod, node) {
            None => return Placement::Node(name_of(node).to_string()),
            Some(r) => rejections.push(r),
        }
    }
    Placement::Unschedulable(fit_error(nodes.len(), &rejections))
}

/// The first filter that rejects `node`, in upstream's plugin order.
fn filter(pod: &Value, node: &Value) -> Option<Rejection> {
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        return Some(Rejection {
            reasons: vec!["node(s) were unschedulable".into()],
            unresolvable: true,
        });
    }
    if let Some(selector) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object) {
        let labels = node.pointer("/metadata/labels");
        let matches = selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !matches {
            return Some(Rejection {
                reasons: vec!["node(s) didn't match Pod's node affinity/selector".into()],
                unresolvable: true,
            });
        }
    }
    let wanted = requests(pod);
    let insufficient: Vec<String> = RESOURCES
        .iter()
        .filter(|r| {
            let allocatable = node
                .pointer(&format!("/status/allocatable/{r}"))
                .and_then(Value::as_str)
                .and_then(parse_quantity)
                .unwrap_or(0.0);
            wanted.get(**r).copied().unwrap_or(0.0) > allocatable
        })
        .map(|r| format!("Insufficient {r}"))
        .collect();
    (!insufficient.is_empty()).then_some(Rejection {
        reasons: insufficient,
        unresolvable: false,
    })
}

/// One container's request of `resource`: its request, else its limit.
fn container_request(container: &Value, resource: &str) -> f64 {
    ["requests", "limits"]
        .iter()
        .find_map(|kind| {
            container
                .pointer(&format!("/resources/{kind}/{resource}"))
                .and_then(Value::as_str)
        })
        .and_then(parse_quantity)
        .unwrap_or(0.0)
}

/// The pod's effective requests of the resources the filter compares.
fn requests(pod: &Value) -> BTreeMap<&'static str, f64> {
    let list = |field: &str| {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (containers, inits) = (list("containers"), list("initContainers"));
    RESOURCES
        .iter()
        .map(|r| {
            let sum: f64 = containers.iter().map(|c| container_request(c, r)).sum();
            let init = inits
                .iter()
                .map(|c| container_request(c, r))
                .fold(0.0, f64::max);
            let overhead = pod
                .pointer(&format!("/spec/overhead/{r}"))
                .and_then(Value::as_str)
                .and_then(parse_quantity)
                .unwrap_or(0.0);
            (*r, sum.max(init) + overhead)
        })
        .collect()
}

/// `reasons` counted and rendered as upstream's histogram: "N reason"
/// entries, sorted as strings, joined with ", ".
fn histogram<'a>(reasons: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut entries: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    entries.sort();
    entries.join(", ")
}

/// Upstream's `FitError` message, followed by what the default preemption
/// plugin found.
fn fit_error(nodes: usize, rejections: &[Rejection]) -> String {
    let filters = histogram(
        rejections
            .iter()
            .flat_map(|r| r.reasons.iter().map(String::as_str)),
    );
    let preemption = histogram(rejections.iter().map(|r| {
        if r.unresolvable {
            "Preemption is not helpful for scheduling"
        } else {
            "No preemption victims found for incoming pod"
        }
    }));
    if nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let available = format!("0/{nodes} nodes are available");
    format!("{available}: {filters}. preemption: {available}: {preemption}.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Value {
        json!({"metadata": {"name": "sandbox", "labels": {"kubernetes.io/os": "linux"}},
               "status": {"allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110"}}})
    }

    fn pod(resources: Value) -> Value {
        json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": resources}]}})
    }

    #[test]
    fn a_pod_within_the_allocatable_goes_to_the_node() {
        let p = pod(json!({"requests": {"cpu": "2", "memory": "256Mi"}}));
        assert_eq!(place(&p, &[node()]), Placement::Node("sandbox".into()));
    }

    #[test]
    fn a_cpu_request_above_the_allocatable_is_insufficient_cpu_in_upstreams_words() {
        let p = pod(json!({"requests": {"cpu": "64"}}));
        assert_eq!(
            place(&p, &[node()]),
            Placement::Unschedulable(
                "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are \
                 available: 1 No preemption victims found for incoming pod."
                    .into()
            )
        );
    }

    #[test]
    fn a_limit_without_a_request_is_the_request_and_both_resources_are_named() {
        let p = pod(json!({"limits": {"cpu": "3", "memory": "25Gi"}}));
        let Placement::Unschedulable(m) = place(&p, &[node()]) else {
            panic!("placed");
        };
        assert!(
            m.starts_with("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."),
            "{m}"
        );
    }

    #[test]
    fn the_containers_requests_add_up_and_the_largest_init_container_counts_alone() {
        let p = json!({"spec": {
            "containers": [{"resources": {"requests": {"cpu": "1500m"}}}, {"resources": {"requests": {"cpu": "600m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert!(matches!(place(&p, &[node()]), Placement::Unschedulable(_)));
        let p = json!({"spec": {
            "containers": [{"resources": {"requests": {"cpu": "1"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}}, {"resources": {"requests": {"cpu": "2"}}}]}});
        assert_eq!(place(&p, &[node()]), Placement::Node("sandbox".into()));
    }

    #[test]
    fn a_node_selector_no_node_matches_is_not_helped_by_preemption() {
        let mut p = pod(json!({}));
        p["spec"]["nodeSelector"] = json!({"disktype": "ssd"});
        assert_eq!(
            place(&p, &[node()]),
            Placement::Unschedulable(
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. \
                 preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
                    .into()
            )
        );
        p["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
        assert_eq!(place(&p, &[node()]), Placement::Node("sandbox".into()));
    }

    #[test]
    fn a_cordoned_node_takes_no_pod() {
        let mut n = node();
        n["spec"] = json!({"unschedulable": true});
        let Placement::Unschedulable(m) = place(&pod(json!({})), &[n]) else {
            panic!("placed");
        };
        assert!(m.contains("1 node(s) were unschedulable."), "{m}");
    }
}
