use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::common::{api_err, eventually, sandbox, statefulset};

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

/// Upstream: the server sets uid, creationTimestamp, resourceVersion and
/// generation=1 on create (ObjectMeta is server-populated).
#[tokio::test]
async fn a_created_object_gets_uid_creation_timestamp_generation_and_resource_version() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let c = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    assert!(c.metadata.uid.is_some_and(|u| u.len() == 36));
    assert!(c.metadata.creation_timestamp.is_some());
    assert_eq!(c.metadata.generation, Some(1));
    assert_eq!(c.metadata.namespace.as_deref(), Some("default"));
    assert!(c.metadata.resource_version.unwrap().parse::<u64>().unwrap() > 0);
}

/// Upstream: resourceVersions come from one etcd revision counter, so they
/// grow across all kinds.
#[tokio::test]
async fn resource_versions_increase_monotonically_across_kinds() {
    let sb = sandbox().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let nss: Api<Namespace> = Api::all(sb.client());
    let n = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
        )
        .await
        .unwrap();
    let b = cms
        .create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    let rv =
        |m: &kube::api::ObjectMeta| m.resource_version.clone().unwrap().parse::<u64>().unwrap();
    assert!(rv(&a.metadata) < rv(&n.metadata) && rv(&n.metadata) < rv(&b.metadata));
}

/// Upstream: a second create of the same name is 409 AlreadyExists.
#[tokio::test]
async fn creating_an_existing_name_is_409_already_exists() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let e = api_err(
        api.create(&PostParams::default(), &cm("a", json!({})))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "configmaps \"a\" already exists");
}

/// Upstream: GET of a missing object is 404 NotFound with a Status naming it.
#[tokio::test]
async fn getting_a_missing_object_is_404_not_found_with_a_status_body() {
    let sb = sandbox().await;
    let api: Api<StatefulSet> = Api::default_namespaced(sb.client());
    let e = api_err(api.get("nope").await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "statefulsets.apps \"nope\" not found");
    let d = e.details.unwrap();
    assert_eq!(
        (d.name.as_str(), d.group.as_str(), d.kind.as_str()),
        ("nope", "apps", "statefulsets")
    );
}

/// Upstream: optimistic concurrency, an update carrying an old
/// metadata.resourceVersion is 409 Conflict.
#[tokio::test]
async fn an_update_with_a_stale_resource_version_is_409_conflict() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let first = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let mut second = first.clone();
    second.data = Some([("k".to_string(), "v2".to_string())].into());
    api.replace("a", &PostParams::default(), &second)
        .await
        .unwrap();
    let e = api_err(api.replace("a", &PostParams::default(), &first).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("the object has been modified"),
        "{}",
        e.message
    );
}

/// Upstream: metadata.generation increments on spec changes, not on
/// metadata or status changes.
#[tokio::test]
async fn generation_bumps_on_spec_changes_only() {
    let sb = sandbox().await;
    let api: Api<StatefulSet> = Api::default_namespaced(sb.client());
    let s = api
        .create(&PostParams::default(), &statefulset("g", 0, json!({})))
        .await
        .unwrap();
    assert_eq!(s.metadata.generation, Some(1));
    // The StatefulSet controller writes status concurrently, as on a
    // cluster: a replace that loses the race is read and made again.
    let replace = |change: fn(&mut StatefulSet)| {
        let api = api.clone();
        async move {
            loop {
                let mut s = api.get("g").await.unwrap();
                change(&mut s);
                match api.replace("g", &PostParams::default(), &s).await {
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    r => return r.unwrap(),
                }
            }
        }
    };
    let s2 = replace(|s| {
        s.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    })
    .await;
    assert_eq!(s2.metadata.generation, Some(1));
    let s3 = replace(|s| {
        s.spec.as_mut().unwrap().replicas = Some(0);
        s.spec.as_mut().unwrap().min_ready_seconds = Some(5);
    })
    .await;
    assert_eq!(s3.metadata.generation, Some(2));
}

/// Upstream: metadata.generateName gets a 5-character random suffix.
#[tokio::test]
async fn generate_name_appends_a_random_suffix() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let obj: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "job-"}})).unwrap();
    let c = api.create(&PostParams::default(), &obj).await.unwrap();
    let name = c.metadata.name.unwrap();
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");
}

/// Upstream: creating in a namespace that does not exist is 404 for the namespace.
#[tokio::test]
async fn creating_in_a_missing_namespace_is_404() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "ghost");
    let e = api_err(
        api.create(&PostParams::default(), &cm("a", json!({})))
            .await,
    );
    assert_eq!(e.code, 404);
    assert_eq!(e.message, "namespaces \"ghost\" not found");
}

/// Upstream: label selectors support =, ==, !=, in, notin, exists and !key.
#[tokio::test]
async fn list_filters_by_label_selector_operators() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    for (n, l) in [
        ("a", json!({"app": "pg", "tier": "db"})),
        ("b", json!({"app": "web"})),
        ("c", json!({})),
    ] {
        api.create(&PostParams::default(), &cm(n, l)).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt"))
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    for (sel, want) in [
        ("app=pg", vec!["a"]),
        ("app==web", vec!["b"]),
        ("app!=pg", vec!["b", "c"]),
        ("app in (pg,web)", vec!["a", "b"]),
        ("app notin (pg)", vec!["b", "c"]),
        ("tier", vec!["a"]),
        ("!app", vec!["c"]),
        ("app=pg,tier", vec!["a"]),
        ("app in (web)", vec!["b"]),
        ("app=pg,tier=web", vec![]),
        ("app=none", vec![]),
    ] {
        let got = names(api.list(&ListParams::default().labels(sel)).await.unwrap());
        assert_eq!(got, want, "selector {sel}");
    }
}

/// Upstream: fieldSelector metadata.name / metadata.namespace; unsupported
/// fields are 400 BadRequest.
#[tokio::test]
async fn list_filters_by_field_selector_on_metadata_name() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    for n in ["a", "b"] {
        api.create(&PostParams::default(), &cm(n, json!({})))
            .await
            .unwrap();
    }
    let l = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    let all: Api<ConfigMap> = Api::all(sb.client());
    let l = all
        // Every namespace holds the kube-root-ca.crt ConfigMap.
        .list(
            &ListParams::default()
                .fields("metadata.namespace!=default,metadata.name!=kube-root-ca.crt"),
        )
        .await
        .unwrap();
    assert!(l.items.is_empty());
    let e = api_err(api.list(&ListParams::default().fields("data.k=v")).await);
    assert_eq!(e.code, 400);
}

/// Upstream: limit/continue paging; the list carries a resourceVersion.
#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await
            .unwrap();
    }
    let mut seen = vec![];
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.metadata.resource_version.is_some());
        seen.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    // The namespace's kube-root-ca.crt sorts last.
    assert_eq!(seen, vec!["c0", "c1", "c2", "c3", "c4", "kube-root-ca.crt"]);
}

/// Upstream: a list with a label selector pages with limit and continue
/// like any list (name order, no object twice or missed), and follows
/// labels as they change. The sandbox serves it from its label index.
#[tokio::test]
async fn a_label_selected_list_pages_in_name_order_and_follows_relabelling() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    for i in 0..9 {
        let labels = if i % 3 == 0 {
            json!({})
        } else {
            json!({"x": "1", "i": i.to_string()})
        };
        api.create(&PostParams::default(), &cm(&format!("c{i}"), labels))
            .await
            .unwrap();
    }
    let paged = |selector: &'static str| {
        let api = api.clone();
        async move {
            let mut seen = vec![];
            let mut lp = ListParams::default().labels(selector).limit(2);
            loop {
                let page = api.list(&lp).await.unwrap();
                seen.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
                match page.metadata.continue_ {
                    Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                    _ => break,
                }
            }
            seen
        }
    };
    assert_eq!(paged("x=1").await, ["c1", "c2", "c4", "c5", "c7", "c8"]);
    assert_eq!(paged("x=1,i!=4").await, ["c1", "c2", "c5", "c7", "c8"]);
    // c4 loses the label, c3 gains it.
    let mut c4 = api.get("c4").await.unwrap();
    c4.metadata.labels = None;
    api.replace("c4", &PostParams::default(), &c4)
        .await
        .unwrap();
    let mut c3 = api.get("c3").await.unwrap();
    c3.metadata.labels = Some([("x".to_string(), "1".to_string())].into());
    api.replace("c3", &PostParams::default(), &c3)
        .await
        .unwrap();
    api.delete("c8", &DeleteParams::default()).await.unwrap();
    assert_eq!(paged("x=1").await, ["c1", "c2", "c3", "c5", "c7"]);
    // Another namespace's objects with the label are not listed.
    let other: Api<Namespace> = Api::all(sb.client());
    other
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
        )
        .await
        .unwrap();
    let there: Api<ConfigMap> = Api::namespaced(sb.client(), "other");
    there
        .create(&PostParams::default(), &cm("c0", json!({"x": "1"})))
        .await
        .unwrap();
    assert_eq!(paged("x=1").await, ["c1", "c2", "c3", "c5", "c7"]);
}

/// Upstream: /api/v1/pods lists across namespaces; namespaces are cluster-scoped.
#[tokio::test]
async fn cluster_scoped_and_all_namespaces_lists_work() {
    let sb = sandbox().await;
    let nss: Api<Namespace> = Api::all(sb.client());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert!(names.contains(&"default".to_string()) && names.contains(&"kube-system".to_string()));
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "two"}})).unwrap(),
    )
    .await
    .unwrap();
    for ns in ["default", "two"] {
        let api: Api<ConfigMap> = Api::namespaced(sb.client(), ns);
        api.create(&PostParams::default(), &cm("x", json!({})))
            .await
            .unwrap();
    }
    let all: Api<ConfigMap> = Api::all(sb.client());
    assert_eq!(
        all.list(&ListParams::default().fields("metadata.name=x"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

/// Upstream: discovery (/api, /apis, group versions) lists served resources.
#[tokio::test]
async fn discovery_lists_core_and_group_resources() {
    let sb = sandbox().await;
    let d = kube::discovery::Discovery::new(sb.client())
        .run()
        .await
        .unwrap();
    for (group, kind) in [
        ("", "Pod"),
        ("apps", "StatefulSet"),
        ("coordination.k8s.io", "Lease"),
        ("events.k8s.io", "Event"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("policy", "PodDisruptionBudget"),
    ] {
        let g = d
            .get(group)
            .unwrap_or_else(|| panic!("group {group:?} discovered"));
        assert!(
            g.recommended_resources()
                .iter()
                .any(|(r, _)| r.kind == kind),
            "{kind} in {group}"
        );
    }
    let v = sb.client().apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
}

/// Upstream: DELETE on a collection deletes the objects the selector matches.
#[tokio::test]
async fn delete_collection_removes_matching_objects() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &cm("a", json!({"x": "1"})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("b", json!({"x": "2"})))
        .await
        .unwrap();
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("x=1"),
    )
    .await
    .unwrap();
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    // The namespace's kube-root-ca.crt has no `x` label.
    assert_eq!(left, vec!["b", "kube-root-ca.crt"]);
}

/// Upstream: the status subresource changes only status; main-resource
/// writes leave status alone for kinds with a status subresource.
#[tokio::test]
async fn status_subresource_writes_only_status_and_main_writes_ignore_status() {
    let sb = sandbox().await;
    let api: Api<StatefulSet> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &statefulset("s", 0, json!({})))
        .await
        .unwrap();
    let patch =
        json!({"spec": {"replicas": 7}, "status": {"replicas": 0, "observedGeneration": 42}});
    api.patch_status(
        "s",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let got = api.get("s").await.unwrap();
    assert_eq!(
        got.spec.unwrap().replicas,
        Some(0),
        "status write must not change spec"
    );
    let patch = json!({"metadata": {"labels": {"a": "b"}}, "status": {"observedGeneration": 99}});
    let after = api
        .patch(
            "s",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    assert_ne!(
        after.status.unwrap().observed_generation,
        Some(99),
        "main write must not change status"
    );
}

/// Upstream: the scale subresource reads and writes spec.replicas as an autoscaling/v1 Scale.
#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let sb = sandbox().await;
    let api: Api<StatefulSet> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &statefulset("s", 0, json!({})))
        .await
        .unwrap();
    let patch = json!({"spec": {"replicas": 3}});
    api.patch_scale(
        "s",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    assert_eq!(api.get("s").await.unwrap().spec.unwrap().replicas, Some(3));
    let scale = api.get_scale("s").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=s"));
}

/// Upstream: deleting an object with finalizers sets deletionTimestamp and
/// keeps it until the finalizers are removed.
#[tokio::test]
async fn an_object_with_finalizers_is_only_marked_for_deletion_until_they_are_removed() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let obj: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let patch = json!({"metadata": {"finalizers": null}});
    api.patch(
        "f",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    assert_eq!(api_err(api.get("f").await).code, 404);
}

/// Upstream: pods/log returns the container's log as text.
#[tokio::test]
async fn pod_logs_come_from_the_runtime() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}})).unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    let logs = eventually("pod logs", || {
        let api = api.clone();
        async move { api.logs("p", &Default::default()).await.ok() }
    })
    .await;
    assert!(logs.contains("postgres:16"), "{logs}");
}

/// Upstream: the API server's audit log records each request's User-Agent
/// with its verb and resource. The sandbox notes which kinds of request
/// each agent made, so a test can compare them with an RBAC role.
#[tokio::test]
async fn requests_are_noted_by_user_agent_verb_group_and_resource() {
    let sb = sandbox().await;
    let send =
        |agent: &'static str, method: &'static str, path: &'static str, body: &'static str| {
            let client = sb.client();
            async move {
                let req = http::Request::builder()
                    .method(method)
                    .uri(path)
                    .header("user-agent", agent)
                    .header("content-type", "application/json")
                    .body(body.as_bytes().to_vec())
                    .expect("request builds");
                client
                    .request_text(req)
                    .await
                    .expect("the request succeeds");
            }
        };
    send(
        "reader/1.0",
        "GET",
        "/api/v1/namespaces/default/configmaps",
        "",
    )
    .await;
    send(
        "writer/2.0",
        "POST",
        "/api/v1/namespaces/default/configmaps",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}"#,
    )
    .await;
    send(
        "writer/2.0",
        "GET",
        "/apis/apps/v1/namespaces/default/statefulsets",
        "",
    )
    .await;
    let kind = |verb: &str, group: &str, resource: &str| sandbox::RequestKind {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
    };
    let counters = sb.counters();
    assert_eq!(
        counters.requests_from("reader/"),
        [kind("list", "", "configmaps")].into()
    );
    assert_eq!(
        counters.requests_from("writer/"),
        [
            kind("create", "", "configmaps"),
            kind("list", "apps", "statefulsets")
        ]
        .into()
    );
    assert!(counters.requests_from("nobody/").is_empty());
}

/// Upstream: metadata-only clients (`Accept: ...;as=PartialObjectMetadata`
/// and `...List`) get PartialObjectMetadata objects: the metadata, no data.
#[tokio::test]
async fn metadata_only_reads_return_partial_object_metadata() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &cm("a", json!({"x": "y"})))
        .await
        .unwrap();
    let one = api.get_metadata("a").await.expect("a metadata-only get");
    let types = one.types.expect("apiVersion and kind");
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("meta.k8s.io/v1", "PartialObjectMetadata")
    );
    assert_eq!(one.metadata.name.as_deref(), Some("a"));
    assert_eq!(
        one.metadata
            .labels
            .unwrap_or_default()
            .get("x")
            .map(String::as_str),
        Some("y")
    );
    let list = api
        .list_metadata(&ListParams::default().labels("x=y"))
        .await
        .expect("a metadata-only list");
    let types = list.types;
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("meta.k8s.io/v1", "PartialObjectMetadataList")
    );
    assert_eq!(list.items.len(), 1);
}
