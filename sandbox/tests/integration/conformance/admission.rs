//! Built-in defaulting and validation that docs/sandbox.md lists: a
//! Secret's write-only `stringData`, a StatefulSet's selector and its
//! immutable fields, a PersistentVolumeClaim's immutable spec. Each as
//! kube-apiserver's registry strategies do it.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{api_err, sandbox};

/// Upstream: `stringData` is write-only; its keys are merged into `data`
/// (base64), over any same key in `data`, and it is never stored.
#[tokio::test]
async fn a_secret_s_string_data_is_folded_into_data() {
    let sb = sandbox().await;
    let secrets: Api<Secret> = Api::default_namespaced(sb.client());
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s"},
        "data": {"a": "b2xk", "b": "Yg=="}, "stringData": {"a": "new"}}))
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("the Secret is created");
    let stored = secrets.get("s").await.expect("the Secret exists");
    assert!(stored.string_data.is_none(), "{:?}", stored.string_data);
    let data = stored.data.expect("data");
    assert_eq!(data["a"].0, b"new");
    assert_eq!(data["b"].0, b"b");
}

fn sts(selector: &str, label: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": "pg"},
        "spec": {
            "replicas": 1,
            "serviceName": "pg",
            "selector": {"matchLabels": {"app": selector}},
            "template": {"metadata": {"labels": {"app": label}},
                         "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
        }
    }))
    .expect("a StatefulSet")
}

/// Upstream: a StatefulSet whose selector does not match its template's
/// labels is 422 Invalid; once created, only replicas, ordinals, template,
/// updateStrategy, persistentVolumeClaimRetentionPolicy and minReadySeconds
/// may change.
#[tokio::test]
async fn a_statefulset_s_selector_must_match_and_most_of_its_spec_is_immutable() {
    let sb = sandbox().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(sb.client());
    let mismatch = api_err(sets.create(&PostParams::default(), &sts("a", "b")).await);
    assert_eq!((mismatch.code, mismatch.reason.as_str()), (422, "Invalid"));
    assert!(
        mismatch
            .message
            .contains("`selector` does not match template `labels`"),
        "{}",
        mismatch.message
    );
    sets.create(&PostParams::default(), &sts("a", "a"))
        .await
        .expect("a matching StatefulSet is created");
    let patch = |spec: serde_json::Value| Patch::Merge(json!({ "spec": spec }));
    sets.patch(
        "pg",
        &PatchParams::default(),
        &patch(json!({"replicas": 2})),
    )
    .await
    .expect("replicas may change");
    let refused = api_err(
        sets.patch(
            "pg",
            &PatchParams::default(),
            &patch(json!({"serviceName": "other"})),
        )
        .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    assert!(
        refused
            .message
            .contains("updates to statefulset spec for fields other than"),
        "{}",
        refused.message
    );
    let stored = sets.get("pg").await.expect("the StatefulSet exists");
    let spec = stored.spec.expect("a spec");
    assert_eq!(spec.service_name.as_deref(), Some("pg"));
    assert_eq!(spec.replicas, Some(2));
}

/// Upstream: a claim's spec is immutable after creation except its
/// storage request (which may grow); changing its access modes is 422.
#[tokio::test]
async fn a_claim_s_spec_is_immutable_except_its_storage_request() {
    let sb = sandbox().await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(sb.client());
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    .expect("a claim");
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("the claim is created");
    let refused = api_err(
        claims
            .patch(
                "data",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"accessModes": ["ReadWriteMany"]}})),
            )
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    assert!(
        refused.message.contains("spec is immutable after creation"),
        "{}",
        refused.message
    );
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await
        .expect("the storage request may grow");
    let spec = claims
        .get("data")
        .await
        .expect("the claim exists")
        .spec
        .expect("a spec");
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
}
