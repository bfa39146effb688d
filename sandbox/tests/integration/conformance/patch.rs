use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{api_err, sandbox};

fn cm_apply(data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
}

/// Upstream: server-side apply creates a missing object and records the
/// manager's fields in managedFields (operation Apply, FieldsV1).
#[tokio::test]
async fn server_side_apply_creates_the_object_and_records_managed_fields() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let c = api
        .patch(
            "c",
            &PatchParams::apply("op"),
            &Patch::Apply(cm_apply(json!({"a": "1"}))),
        )
        .await
        .unwrap();
    let mf = c.metadata.managed_fields.unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(
        (mf[0].manager.as_deref(), mf[0].operation.as_deref()),
        (Some("op"), Some("Apply"))
    );
    assert_eq!(
        mf[0].fields_v1.as_ref().unwrap().0,
        json!({"f:data": {"f:a": {}}})
    );
}

/// Upstream: an apply that changes nothing is a no-op: no new
/// resourceVersion, no watch event.
#[tokio::test]
async fn a_repeated_identical_apply_does_not_bump_resource_version() {
    // A CronJob: no built-in controller writes to it behind the test's back
    // (the Deployment controller writes a Deployment's revision and status).
    let sb = sandbox().await;
    let api: Api<CronJob> = Api::default_namespaced(sb.client());
    let cfg = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "s", "labels": {"a": "b"}},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {
                 "template": {"metadata": {"labels": {"app": "s"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "db", "image": "postgres:16", "ports": [{"containerPort": 5432}]}]}}}}}});
    let first = api
        .patch("s", &PatchParams::apply("op"), &Patch::Apply(&cfg))
        .await
        .unwrap();
    let second = api
        .patch("s", &PatchParams::apply("op"), &Patch::Apply(&cfg))
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version,
        second.metadata.resource_version
    );
}

/// Upstream: applying a field another manager owns with a different value
/// is 409 Conflict listing the field; force=true takes ownership.
#[tokio::test]
async fn apply_conflicts_with_another_manager_are_409_with_the_field_listed() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.patch(
        "c",
        &PatchParams::apply("alice"),
        &Patch::Apply(cm_apply(json!({"a": "1"}))),
    )
    .await
    .unwrap();
    let e = api_err(
        api.patch(
            "c",
            &PatchParams::apply("bob"),
            &Patch::Apply(cm_apply(json!({"a": "2"}))),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"alice\"") && e.message.contains(".data.a"),
        "{}",
        e.message
    );
    assert_eq!(e.details.unwrap().causes[0].field, ".data.a");
    // Same value: shared ownership, no conflict.
    api.patch(
        "c",
        &PatchParams::apply("bob"),
        &Patch::Apply(cm_apply(json!({"a": "1"}))),
    )
    .await
    .unwrap();
    let forced = api
        .patch(
            "c",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(cm_apply(json!({"a": "3"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["a"], "3");
}

/// Upstream: fields a manager stops applying are removed when no other
/// manager owns them.
#[tokio::test]
async fn fields_a_manager_stops_applying_are_removed() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.patch(
        "c",
        &PatchParams::apply("op"),
        &Patch::Apply(cm_apply(json!({"a": "1", "b": "2"}))),
    )
    .await
    .unwrap();
    let c = api
        .patch(
            "c",
            &PatchParams::apply("op"),
            &Patch::Apply(cm_apply(json!({"a": "1"}))),
        )
        .await
        .unwrap();
    assert_eq!(c.data.unwrap().keys().collect::<Vec<_>>(), vec!["a"]);
}

/// Upstream: apply merges keyed lists item by item: containers by name.
#[tokio::test]
async fn apply_merges_containers_by_name_across_managers() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    let pod = |c: serde_json::Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [c]}});
    api.patch(
        "p",
        &PatchParams::apply("a"),
        &Patch::Apply(pod(json!({"name": "db", "image": "postgres:16"}))),
    )
    .await
    .unwrap();
    let p = api
        .patch(
            "p",
            &PatchParams::apply("b"),
            &Patch::Apply(pod(json!({"name": "exporter", "image": "exporter:1"}))),
        )
        .await
        .unwrap();
    let names: Vec<String> = p
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["db", "exporter"]);
}

/// Upstream: an apply request without fieldManager is 400 BadRequest.
#[tokio::test]
async fn apply_without_field_manager_is_400() {
    let sb = sandbox().await;
    let req = http::Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/default/configmaps/c")
        .header("content-type", "application/apply-patch+yaml")
        .body(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n".to_vec())
        .unwrap();
    let e = api_err(sb.client().request::<ConfigMap>(req).await);
    assert_eq!(e.code, 400);
}

/// Upstream: JSON patch (RFC 6902) applies operations; a failed `test`
/// aborts the patch with 422.
#[tokio::test]
async fn json_patch_applies_and_a_failed_test_is_422() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap(),
    )
    .await
    .unwrap();
    let ok: json_patch::Patch = serde_json::from_value(json!([{"op": "test", "path": "/data/a", "value": "1"}, {"op": "replace", "path": "/data/a", "value": "2"}])).unwrap();
    let c = api
        .patch("c", &PatchParams::default(), &Patch::<()>::Json(ok))
        .await
        .unwrap();
    assert_eq!(c.data.unwrap()["a"], "2");
    let bad: json_patch::Patch = serde_json::from_value(json!([{"op": "test", "path": "/data/a", "value": "1"}, {"op": "replace", "path": "/data/a", "value": "3"}])).unwrap();
    let e = api_err(
        api.patch("c", &PatchParams::default(), &Patch::<()>::Json(bad))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(api.get("c").await.unwrap().data.unwrap()["a"], "2");
}

/// Upstream: JSON merge patch (RFC 7386): null deletes, lists replace.
#[tokio::test]
async fn merge_patch_null_deletes_a_field() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let c = api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    let data = c.data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["b", "c"]);
}

/// Upstream: strategic merge patch merges containers by their `name` merge key.
#[tokio::test]
async fn strategic_merge_patch_merges_containers_by_name() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "db", "image": "postgres:15"}, {"name": "side", "image": "busybox"}]}})).unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    let patch = json!({"spec": {"containers": [{"name": "db", "image": "postgres:16"}]}});
    let p = api
        .patch("p", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let cs = p.spec.unwrap().containers;
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].image.as_deref(), Some("postgres:16"));
    let patch = json!({"spec": {"containers": [{"name": "side", "$patch": "delete"}]}});
    let p = api
        .patch("p", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    assert_eq!(p.spec.unwrap().containers.len(), 1);
}

/// Upstream: an apply to a missing object creates it, and an apply that
/// races another's create applies to the created object (the server's
/// create-or-update loop): concurrent applies never answer AlreadyExists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_to_a_missing_object_all_succeed() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    for round in 0..8 {
        let name = format!("raced-{round}");
        let applies = (0..16).map(|_| {
            let api = api.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": name}, "data": {"a": "1"}});
                api.patch(
                    &name,
                    &PatchParams::apply("op").force(),
                    &Patch::Apply(body),
                )
                .await
            })
        });
        for outcome in futures::future::join_all(applies).await {
            let applied = outcome.expect("the task ran");
            assert!(applied.is_ok(), "round {round}: {applied:?}");
        }
    }
}
