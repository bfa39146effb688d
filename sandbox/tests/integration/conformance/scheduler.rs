//! The scheduler: a pod no node can take stays `Pending` and unbound with
//! `PodScheduled=False`, reason `Unschedulable` and kube-scheduler's
//! message, and a Warning Event `FailedScheduling` from
//! `default-scheduler`; it is bound once a node can take it (upstream
//! `pkg/scheduler`, the `NodeResourcesFit` and `NodeAffinity` filters).

use k8s_openapi::api::core::v1::{Event, Node, Pod, PodCondition};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::common::{eventually, sandbox};

fn pod(name: &str, spec_extra: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "db", "image": "postgres:16"}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("a pod")
}

fn requesting(name: &str, requests: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [
        {"name": "db", "image": "postgres:16", "resources": {"requests": requests}}]}}))
    .expect("a pod")
}

fn scheduled(p: &Pod) -> Option<PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .cloned()
}

fn node_name(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

/// Waits for the pod's `PodScheduled=False` condition and returns it.
async fn unschedulable(api: &Api<Pod>, name: &str) -> PodCondition {
    eventually("PodScheduled=False", || async {
        let p = api.get(name).await.expect("the pod exists");
        scheduled(&p).filter(|c| c.status == "False")
    })
    .await
}

async fn failed_scheduling(sb: &sandbox::Sandbox, pod: &str) -> Vec<Event> {
    let events: Api<Event> = Api::default_namespaced(sb.client());
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
        .collect()
}

/// Upstream: a pod that fits is bound to the node (here, in its create).
#[tokio::test]
async fn a_pod_within_the_nodes_allocatable_is_bound_to_the_node() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    let nodes: Api<Node> = Api::all(sb.client());
    let node = nodes.get("sandbox").await.expect("the sandbox node");
    let allocatable = node
        .status
        .and_then(|s| s.allocatable)
        .expect("the node advertises its allocatable");
    let cpu = allocatable.get("cpu").expect("allocatable cpu").0.clone();
    let created = api
        .create(
            &PostParams::default(),
            &requesting("fits", json!({"cpu": cpu, "memory": "256Mi"})),
        )
        .await
        .expect("create the pod");
    assert_eq!(node_name(&created).as_deref(), Some("sandbox"));
}

/// Upstream `NodeResourcesFit`: a request above every node's allocatable
/// leaves the pod Pending with `Insufficient cpu`, and the scheduler
/// records `FailedScheduling`; preemption finds no victim.
#[tokio::test]
async fn a_pod_requesting_more_cpu_than_the_node_has_stays_pending_as_unschedulable() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    api.create(
        &PostParams::default(),
        &requesting("big", json!({"cpu": "64"})),
    )
    .await
    .expect("create the pod");
    let condition = unschedulable(&api, "big").await;
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    let expected = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are \
                    available: 1 No preemption victims found for incoming pod.";
    assert_eq!(condition.message.as_deref(), Some(expected));
    let p = api.get("big").await.expect("the pod exists");
    assert_eq!(node_name(&p), None, "the pod is not bound");
    let status = p.status.expect("a status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert!(status.container_statuses.is_none(), "no kubelet ran it");

    let events = eventually("a FailedScheduling Event", || async {
        Some(failed_scheduling(&sb, "big").await).filter(|e| !e.is_empty())
    })
    .await;
    let e = &events[0];
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.message.as_deref(), Some(expected));
    assert_eq!(
        e.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("default-scheduler")
    );
    assert_eq!(e.involved_object.kind.as_deref(), Some("Pod"));
}

/// Both resources short are both named, in upstream's sorted histogram.
#[tokio::test]
async fn a_pod_short_of_cpu_and_memory_names_both() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    api.create(
        &PostParams::default(),
        &requesting("huge", json!({"cpu": "64", "memory": "1Ti"})),
    )
    .await
    .expect("create the pod");
    let condition = unschedulable(&api, "huge").await;
    let message = condition.message.unwrap_or_default();
    assert!(
        message.starts_with("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."),
        "{message}"
    );
}

/// Upstream `NodeAffinity`: a nodeSelector no node matches leaves the pod
/// Pending; once the node gets the label the pod is retried, bound and run.
#[tokio::test]
async fn a_pod_whose_node_selector_matches_no_node_is_bound_once_the_node_is_labelled() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    api.create(
        &PostParams::default(),
        &pod("picky", json!({"nodeSelector": {"disktype": "ssd"}})),
    )
    .await
    .expect("create the pod");
    let condition = unschedulable(&api, "picky").await;
    assert_eq!(
        condition.message.as_deref(),
        Some(
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        )
    );
    let nodes: Api<Node> = Api::all(sb.client());
    nodes
        .patch(
            "sandbox",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"disktype": "ssd"}}})),
        )
        .await
        .expect("label the node");
    let p = eventually("the pod bound and running", || async {
        let p = api.get("picky").await.expect("the pod exists");
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        (running && node_name(&p).as_deref() == Some("sandbox")).then_some(p)
    })
    .await;
    assert_eq!(
        scheduled(&p).map(|c| c.status).as_deref(),
        Some("True"),
        "PodScheduled turns True once bound"
    );
}

/// Upstream `CheckGracefulDelete`: a pod no node runs is deleted at once,
/// whatever its grace period.
#[tokio::test]
async fn an_unschedulable_pod_is_deleted_without_a_grace_period() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    api.create(
        &PostParams::default(),
        &requesting("gone", json!({"cpu": "64"})),
    )
    .await
    .expect("create the pod");
    unschedulable(&api, "gone").await;
    api.delete("gone", &DeleteParams::default())
        .await
        .expect("delete the pod");
    assert!(
        api.get_opt("gone").await.expect("get the pod").is_none(),
        "the pod is gone as soon as the delete returns"
    );
}
