//! Server-side dry run (`dryRun=All`, KEP-576): a create, update, patch,
//! apply or delete goes through defaulting, validation and conflict checks
//! and answers with the object it would have written, but stores nothing:
//! no new resourceVersion, no watch event, the object unchanged (or still
//! absent). "Nothing was written" is shown by a watch opened before the
//! dry run whose first event is a real write made after it.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::common::{api_err, sandbox};

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": value}}))
        .expect("a ConfigMap")
}

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

/// The list's resourceVersion now: a watch from it sees every later write.
async fn now(api: &Api<ConfigMap>) -> String {
    api.list_metadata(&Default::default())
        .await
        .expect("the list is served")
        .metadata
        .resource_version
        .expect("a list resourceVersion")
}

/// Creates ConfigMap `marker` for real and checks that the first event a
/// watch from `since` gets is its creation: no dry run before it wrote.
async fn nothing_written_since(api: &Api<ConfigMap>, since: &str) {
    let stream = api
        .watch(&WatchParams::default().timeout(10), since)
        .await
        .expect("the watch opens");
    api.create(&PostParams::default(), &cm("marker", "m"))
        .await
        .expect("the marker is created");
    let first = stream
        .boxed()
        .try_next()
        .await
        .expect("the watch streams")
        .expect("an event before the watch times out");
    match first {
        WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("marker") => {}
        other => panic!("a dry run wrote: the first event after it is {other:?}"),
    }
}

/// Upstream: a dry-run create answers with the object as it would be
/// stored (name from generateName, defaults applied) and stores nothing.
#[tokio::test]
async fn a_dry_run_create_returns_the_defaulted_object_and_stores_nothing() {
    let sb = sandbox().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let since = now(&cms).await;
    let pod: Pod = serde_json::from_value(json!({"metadata": {"generateName": "p-"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}))
    .expect("a pod");
    let would = pods
        .create(&dry_post(), &pod)
        .await
        .expect("the dry run is accepted");
    let name = would.metadata.name.clone().expect("a generated name");
    assert!(name.starts_with("p-") && name.len() > 2, "{name}");
    let spec = would.spec.expect("a spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(api_err(pods.get(&name).await).code, 404);
    assert!(
        pods.list(&Default::default())
            .await
            .expect("pods are listed")
            .items
            .is_empty()
    );
    cms.create(&dry_post(), &cm("a", "v"))
        .await
        .expect("the dry run is accepted");
    assert_eq!(api_err(cms.get("a").await).code, 404);
    nothing_written_since(&cms, &since).await;
}

/// Upstream: a dry run is validated like the real request: an existing
/// name is 409 AlreadyExists, an invalid object 422 Invalid.
#[tokio::test]
async fn a_dry_run_create_fails_as_the_real_one_would() {
    let sb = sandbox().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sb.client());
    cms.create(&PostParams::default(), &cm("a", "v"))
        .await
        .expect("a is created");
    let existing = api_err(cms.create(&dry_post(), &cm("a", "w")).await);
    assert_eq!(
        (existing.code, existing.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        cms.get("a").await.expect("a exists").data,
        cm("a", "v").data
    );
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let no_containers: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
            .expect("a pod");
    let invalid = api_err(pods.create(&dry_post(), &no_containers).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
}

/// Upstream: a dry-run update or patch answers with the changed object and
/// leaves the stored one as it was; a stale resourceVersion is still 409.
#[tokio::test]
async fn dry_run_updates_and_patches_return_the_change_and_leave_the_object() {
    let sb = sandbox().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let stored = cms
        .create(&PostParams::default(), &cm("a", "v"))
        .await
        .expect("a is created");
    let since = now(&cms).await;
    let mut changed = stored.clone();
    changed.data = cm("a", "replaced").data;
    let would = cms
        .replace("a", &dry_post(), &changed)
        .await
        .expect("the dry-run update is accepted");
    assert_eq!(would.data, cm("a", "replaced").data);
    let dry_patch = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let would = cms
        .patch(
            "a",
            &dry_patch,
            &Patch::Merge(json!({"data": {"k": "merged"}})),
        )
        .await
        .expect("the dry-run merge patch is accepted");
    assert_eq!(would.data, cm("a", "merged").data);
    let would = cms
        .patch(
            "a",
            &PatchParams::apply("tester").force().dry_run(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a"}, "data": {"k": "applied"}})),
        )
        .await
        .expect("the dry-run apply is accepted");
    assert_eq!(would.data, cm("a", "applied").data);
    let mut stale = changed.clone();
    stale.metadata.resource_version = Some("1".into());
    let conflict = api_err(cms.replace("a", &dry_post(), &stale).await);
    assert_eq!(conflict.code, 409);
    let now_stored = cms.get("a").await.expect("a exists");
    assert_eq!(now_stored.data, stored.data);
    assert_eq!(
        now_stored.metadata.resource_version,
        stored.metadata.resource_version
    );
    nothing_written_since(&cms, &since).await;
}

/// Upstream: a dry-run delete answers with the object it would delete (a
/// pod: marked with a deletionTimestamp) and deletes nothing; a missing
/// object is still 404.
#[tokio::test]
async fn a_dry_run_delete_returns_the_object_and_deletes_nothing() {
    let sb = sandbox().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let stored = cms
        .create(&PostParams::default(), &cm("a", "v"))
        .await
        .expect("a is created");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}))
    .expect("a pod");
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("p is created");
    let since = now(&cms).await;
    let dry = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    let would = cms
        .delete("a", &dry)
        .await
        .expect("the dry-run delete is accepted");
    let would = would.left().expect("the object, not a Status");
    assert_eq!(would.metadata.uid, stored.metadata.uid);
    let would = pods
        .delete("p", &dry)
        .await
        .expect("the dry-run delete is accepted")
        .left()
        .expect("the pod, not a Status");
    assert!(would.metadata.deletion_timestamp.is_some());
    let still = cms.get("a").await.expect("a still exists");
    assert_eq!(
        still.metadata.resource_version,
        stored.metadata.resource_version
    );
    let still = pods.get("p").await.expect("p still exists");
    assert!(still.metadata.deletion_timestamp.is_none());
    assert_eq!(still.metadata.uid, pod.metadata.uid);
    assert_eq!(api_err(cms.delete("missing", &dry).await).code, 404);
    nothing_written_since(&cms, &since).await;
}
