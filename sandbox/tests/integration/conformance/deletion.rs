//! Delete preconditions (`DeleteOptions.preconditions`): a delete names the
//! uid and/or resourceVersion it means; when the stored object has another,
//! the delete is refused with 409 Conflict ("Precondition failed: UID in
//! precondition: ..., UID in object meta: ...", as apimachinery's storage
//! words it) and the object stays.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde_json::json;

use crate::common::{api_err, sandbox};

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
