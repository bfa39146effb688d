//! Per-object controllers: each built-in controller turns a change into the
//! keys of the objects it affects, and no others (upstream's event
//! handlers: a pod's event enqueues its controller, a Service selecting
//! it, ...), and lists page through ten thousand objects.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use sandbox::cluster::Cluster;
use sandbox::cluster::WriteOptions;
use sandbox::controllers::queue::Controller;
use sandbox::controllers::{
    endpoints::EndpointsController, gc::GarbageCollector, job::JobController, kubelet::Kubelet,
    namespace::NamespaceController, pvc, statefulset::StatefulSetController,
};
use sandbox::store::{Event, EventType};
use serde_json::{Value, json};

use crate::common::sandbox;

fn event(kind: EventType, key: &str, object: Value, old: Option<Value>) -> Event {
    let text = |field: &str| {
        object["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (ns, name) = (text("namespace"), text("name"));
    Event::new(kind, key, &ns, &name, 0, object, old)
}

fn keys<C: Controller>(ctl: &C, c: &Cluster, e: &Event) -> BTreeSet<C::Key> {
    let mut out = vec![];
    ctl.keys(c, e, &mut out);
    out.into_iter().collect()
}

fn owned_pod(owner_kind: &str, owner: &str, controller: bool) -> Value {
    json!({"metadata": {"name": "p", "namespace": "default", "uid": "pod-uid",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner,
                             "uid": "owner-uid", "controller": controller}]}})
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_string(), name.to_string())
}

fn create(c: &Cluster, group: &str, plural: &str, obj: Value) -> Value {
    let rt = c.rt(group, plural).expect("a built-in resource");
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    c.create(&rt, &ns, obj, &WriteOptions::manager("test"))
        .expect("the object is created")
}

/// Upstream: a pod's change enqueues the StatefulSet (or Job) that
/// controls it, never an owner that is not its controller.
#[tokio::test]
async fn a_pod_change_names_only_the_statefulset_or_job_that_controls_it() {
    let sb = sandbox().await;
    let c = sb.cluster();
    let e = event(
        EventType::Modified,
        "/pods",
        owned_pod("StatefulSet", "pg", true),
        None,
    );
    assert_eq!(
        keys(&StatefulSetController, c, &e),
        [key("default", "pg")].into()
    );
    assert!(keys(&JobController, c, &e).is_empty());
    let e = event(
        EventType::Modified,
        "/pods",
        owned_pod("Job", "backup", true),
        None,
    );
    assert_eq!(
        keys(&JobController, c, &e),
        [key("default", "backup")].into()
    );
    assert!(keys(&StatefulSetController, c, &e).is_empty());
    let e = event(
        EventType::Modified,
        "/pods",
        owned_pod("StatefulSet", "pg", false),
        None,
    );
    assert!(keys(&StatefulSetController, c, &e).is_empty());
    // The kubelet looks at the pod itself.
    assert_eq!(keys(&Kubelet, c, &e), ["pod-uid".to_string()].into());
}

/// Upstream: a pod whose labels change enqueues the Services that select
/// it before and after the change, found by selector, and no other.
#[tokio::test]
async fn a_pod_whose_labels_change_names_the_services_selecting_its_old_and_new_labels() {
    let sb = sandbox().await;
    let c = sb.cluster();
    for (name, app) in [("old", "a"), ("new", "b"), ("other", "c")] {
        create(
            c,
            "",
            "services",
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": app}, "ports": [{"port": 80}]}}),
        );
    }
    let pod = |app: &str| json!({"metadata": {"name": "p", "namespace": "default", "labels": {"app": app}}});
    let e = event(EventType::Modified, "/pods", pod("b"), Some(pod("a")));
    assert_eq!(
        keys(&EndpointsController, c, &e),
        [key("default", "new"), key("default", "old")].into()
    );
    let elsewhere =
        json!({"metadata": {"name": "p", "namespace": "kube-system", "labels": {"app": "a"}}});
    let e = event(EventType::Added, "/pods", elsewhere, None);
    assert!(keys(&EndpointsController, c, &e).is_empty());
}

/// Upstream: an owner's deletion enqueues its dependents (found by owner
/// uid), a dependent's deletion its owners (a foreground deletion may wait
/// for it), and an object with owners is looked at when it changes.
#[tokio::test]
async fn the_garbage_collector_follows_owner_uids_both_ways() {
    let sb = sandbox().await;
    let c = sb.cluster();
    let owner = create(
        c,
        "",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "owner", "namespace": "default"}}),
    );
    let owner_uid = owner["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let dependent = create(
        c,
        "",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dependent", "namespace": "default",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}]}}),
    );
    let dependent_uid = dependent["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    create(
        c,
        "",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "bystander", "namespace": "default"}}),
    );
    let e = event(EventType::Deleted, "/configmaps", owner, None);
    assert_eq!(
        keys(&GarbageCollector, c, &e),
        [dependent_uid.clone()].into()
    );
    let e = event(EventType::Deleted, "/configmaps", dependent.clone(), None);
    assert_eq!(keys(&GarbageCollector, c, &e), [owner_uid].into());
    let e = event(EventType::Modified, "/configmaps", dependent, None);
    assert_eq!(keys(&GarbageCollector, c, &e), [dependent_uid].into());
}

/// Upstream: a deleted claim's volume is looked at (to be reclaimed), a
/// volume's change leads to its claim, and a namespaced object's deletion
/// to its namespace (a terminating one waits for its last object).
#[tokio::test]
async fn claims_volumes_and_namespaces_are_named_by_what_they_hold() {
    let sb = sandbox().await;
    let c = sb.cluster();
    let claim = json!({"metadata": {"name": "data", "namespace": "default", "uid": "claim-uid"}});
    let e = event(
        EventType::Deleted,
        "/persistentvolumeclaims",
        claim.clone(),
        None,
    );
    assert_eq!(
        keys(&pvc::VolumeBinder, c, &e),
        [
            pvc::Key::Claim("default".into(), "data".into()),
            pvc::Key::Volume("pvc-claim-uid".into())
        ]
        .into()
    );
    let volume = json!({"metadata": {"name": "pvc-claim-uid"},
        "spec": {"claimRef": {"namespace": "default", "name": "data", "uid": "claim-uid"}}});
    let e = event(EventType::Modified, "/persistentvolumes", volume, None);
    assert_eq!(
        keys(&pvc::VolumeBinder, c, &e),
        [
            pvc::Key::Claim("default".into(), "data".into()),
            pvc::Key::Volume("pvc-claim-uid".into())
        ]
        .into()
    );
    let e = event(EventType::Deleted, "/persistentvolumeclaims", claim, None);
    assert_eq!(
        keys(&NamespaceController, c, &e),
        ["default".to_string()].into()
    );
    let e = event(
        EventType::Modified,
        "/persistentvolumeclaims",
        json!({"metadata": {"name": "data", "namespace": "default"}}),
        None,
    );
    assert!(keys(&NamespaceController, c, &e).is_empty());
}

/// Upstream: a list with `limit` pages through every object once with
/// `continue`, at ten thousand objects, and a label selector returns only
/// what it selects.
#[tokio::test]
async fn ten_thousand_objects_page_through_with_continue_each_once() {
    let sb = sandbox().await;
    let c = sb.cluster();
    for i in 0..10_000 {
        let labels = if i % 10 == 0 {
            json!({"tenth": "yes"})
        } else {
            json!({})
        };
        create(
            c,
            "",
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i:05}"), "namespace": "default", "labels": labels}}),
        );
    }
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let mut names = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.expect("a page");
        assert!(page.items.len() <= 500);
        names.extend(
            page.items
                .into_iter()
                .filter_map(|cm| cm.metadata.name)
                // The namespace's own ConfigMap, not one of the test's.
                .filter(|n| n != "kube-root-ca.crt"),
        );
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!((names.len(), unique.len()), (10_000, 10_000));
    let tenth = api
        .list(&ListParams::default().labels("tenth=yes"))
        .await
        .expect("a selected list");
    assert_eq!(tenth.items.len(), 1_000);
}
