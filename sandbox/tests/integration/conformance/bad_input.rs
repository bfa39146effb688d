use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::common::{api_err, raw, sandbox};

/// Upstream: an undecodable body is 400 BadRequest.
#[tokio::test]
async fn malformed_json_is_400_bad_request() {
    let sb = sandbox().await;
    let (code, body) = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(body["reason"], "BadRequest");
    let (code, _) = raw(
        &sb,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/x",
        "application/apply-patch+yaml",
        b"a: [b".to_vec(),
    )
    .await;
    assert!(code == 400 || code == 404, "{code}");
}

/// Upstream: an unknown resource is 404 NotFound.
#[tokio::test]
async fn unknown_resources_are_404() {
    let sb = sandbox().await;
    let (code, body) = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/default/widgets",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(body["reason"], "NotFound");
    let (code, _) = raw(
        &sb,
        "GET",
        "/apis/nope.example.com/v1/things",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 404);
}

/// Upstream: a PATCH with an unsupported Content-Type is 415 UnsupportedMediaType.
#[tokio::test]
async fn a_patch_with_the_wrong_content_type_is_415() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
    )
    .await
    .unwrap();
    let (code, body) = raw(
        &sb,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/x",
        "text/plain",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(code, 415);
    assert_eq!(body["reason"], "UnsupportedMediaType");
}

/// Upstream: request bodies over 3 MiB are 413 RequestEntityTooLarge.
#[tokio::test]
async fn an_oversized_body_is_413() {
    let sb = sandbox().await;
    let big = json!({"metadata": {"name": "big"}, "data": {"x": "a".repeat(3 * 1024 * 1024 + 10)}});
    let (code, body) = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        serde_json::to_vec(&big).unwrap(),
    )
    .await;
    assert_eq!(code, 413);
    assert_eq!(body["reason"], "RequestEntityTooLarge");
}

/// Upstream: names must be DNS-1123 subdomains (labels for namespaces):
/// 422 Invalid with a metadata.name cause.
#[tokio::test]
async fn invalid_names_are_422_invalid() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let e = api_err(
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "Bad_Name"}})).unwrap(),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", e.message);
    assert_eq!(e.details.unwrap().causes[0].field, "metadata.name");
}

/// A bad request never loses a stored object.
#[tokio::test]
async fn bad_requests_leave_stored_objects_intact() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "keep"}, "data": {"a": "1"}})).unwrap(),
    )
    .await
    .unwrap();
    for (method, ct, body) in [
        ("PUT", "application/json", b"[1,2".to_vec()),
        ("PATCH", "application/json-patch+json", b"{}".to_vec()),
        ("PATCH", "application/merge-patch+json", b"[]".to_vec()),
        (
            "PATCH",
            "application/strategic-merge-patch+json",
            b"nope".to_vec(),
        ),
        (
            "PUT",
            "application/json",
            br#"{"metadata":{"name":"other"}}"#.to_vec(),
        ),
    ] {
        let (code, _) = raw(
            &sb,
            method,
            "/api/v1/namespaces/default/configmaps/keep",
            ct,
            body,
        )
        .await;
        assert!((400..500).contains(&code), "{method} {ct} gave {code}");
    }
    assert_eq!(api.get("keep").await.unwrap().data.unwrap()["a"], "1");
}
