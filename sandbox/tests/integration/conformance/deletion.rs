//! Delete preconditions (`DeleteOptions.preconditions`): a delete names the
//! uid and/or resourceVersion it means; when the stored object has another,
//! the delete is refused with 409 Conflict ("Precondition failed: UID in
//! precondition: ..., UID in object meta: ...", as apimachinery's storage
//! words it) and the object stays. Also: a terminating namespace takes
//! no new objects.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde_json::json;

use crate::common::{api_err, eventually, sandbox};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}}))
        .expect("a ConfigMap")
}

fn with(uid: Option<&str>, resource_version: Option<&str>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.map(String::from),
            resource_version: resource_version.map(String::from),
        }),
        ..Default::default()
    }
}

/// Upstream: a uid precondition that is not the object's is 409 Conflict
/// and deletes nothing; a recreated object (same name, new uid) is safe
/// from a delete meant for its predecessor.
#[tokio::test]
async fn a_delete_whose_uid_precondition_does_not_match_is_409_and_deletes_nothing() {
    let sb = sandbox().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let first = cms
        .create(&PostParams::default(), &cm("a"))
        .await
        .expect("a is created");
    let old_uid = first.metadata.uid.clone().expect("a uid");
    cms.delete("a", &DeleteParams::default())
        .await
        .expect("a is deleted");
    let second = cms
        .create(&PostParams::default(), &cm("a"))
        .await
        .expect("a is created again");
    let new_uid = second.metadata.uid.clone().expect("a uid");
    let refused = api_err(cms.delete("a", &with(Some(&old_uid), None)).await);
    assert_eq!((refused.code, refused.reason.as_str()), (409, "Conflict"));
    assert!(
        refused.message.contains(&format!(
            "Precondition failed: UID in precondition: {old_uid}, UID in object meta: {new_uid}"
        )),
        "{}",
        refused.message
    );
    assert_eq!(
        cms.get("a").await.expect("a stays").metadata.uid,
        Some(new_uid.clone())
    );
    cms.delete("a", &with(Some(&new_uid), None))
        .await
        .expect("the matching uid deletes");
    assert_eq!(api_err(cms.get("a").await).code, 404);
}

/// Upstream: a resourceVersion precondition that is not the object's
/// current one (the object changed since it was read) is 409 Conflict.
#[tokio::test]
async fn a_delete_whose_resource_version_precondition_is_stale_is_409_and_deletes_nothing() {
    let sb = sandbox().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let read = cms
        .create(&PostParams::default(), &cm("a"))
        .await
        .expect("a is created");
    let stale = read.metadata.resource_version.clone().expect("an rv");
    let mut changed = read.clone();
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    let current = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .expect("a is updated")
        .metadata
        .resource_version
        .expect("an rv");
    let refused = api_err(cms.delete("a", &with(None, Some(&stale))).await);
    assert_eq!((refused.code, refused.reason.as_str()), (409, "Conflict"));
    assert!(
        refused.message.contains(&format!(
            "Precondition failed: ResourceVersion in precondition: {stale}, ResourceVersion in object meta: {current}"
        )),
        "{}",
        refused.message
    );
    assert_eq!(
        cms.get("a")
            .await
            .expect("a stays")
            .metadata
            .resource_version,
        Some(current.clone())
    );
    cms.delete("a", &with(read.metadata.uid.as_deref(), Some(&current)))
        .await
        .expect("matching preconditions delete");
    assert_eq!(api_err(cms.get("a").await).code, 404);
}

/// Upstream: while a namespace is terminating (here held by a finalizer
/// on an object in it), creating in it is 403 Forbidden ("unable to create
/// new content in namespace tmp because it is being terminated"); once
/// the finalizer goes, the namespace goes.
#[tokio::test]
async fn a_terminating_namespace_refuses_new_objects_with_403() {
    let sb = sandbox().await;
    let namespaces: Api<Namespace> = Api::all(sb.client());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "tmp"}})).expect("a namespace"),
        )
        .await
        .expect("tmp is created");
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "tmp");
    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .expect("a ConfigMap");
    cms.create(&PostParams::default(), &held)
        .await
        .expect("held is created");
    namespaces
        .delete("tmp", &DeleteParams::default())
        .await
        .expect("tmp is being deleted");
    eventually("held marked for deletion", || {
        let cms = cms.clone();
        async move {
            cms.get("held")
                .await
                .ok()
                .filter(|c| c.metadata.deletion_timestamp.is_some())
        }
    })
    .await;
    let phase = namespaces
        .get("tmp")
        .await
        .expect("tmp stays while held")
        .status
        .and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Terminating"));
    let refused = api_err(cms.create(&PostParams::default(), &cm("new")).await);
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert!(
        refused.message.contains(
            "unable to create new content in namespace tmp because it is being terminated"
        ),
        "{}",
        refused.message
    );
    cms.patch(
        "held",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("the finalizer is removed");
    eventually("tmp gone", || {
        let namespaces = namespaces.clone();
        async move {
            matches!(namespaces.get("tmp").await, Err(kube::Error::Api(s)) if s.code == 404)
                .then_some(())
        }
    })
    .await;
}
