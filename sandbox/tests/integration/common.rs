//! Helpers the conformance suite shares: a sandbox on the simulated
//! runtime, one bounded wait ([`eventually`]), the Status of a failed call,
//! raw HTTP requests for what kube-rs will not send, and the fixtures more
//! than one of its files builds (a StatefulSet, a pod's readiness). The
//! kubectl and real-PostgreSQL suites have their own, for their own
//! fixtures.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};

pub async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts")
}

/// Polls `check` until it returns `Some`, failing with `what` after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after 10s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A StatefulSet `name` (its Service named after it too) of `replicas`
/// `postgres:16` pods labelled `app: <name>`, with the fields of `spec` set
/// over those.
pub fn statefulset(name: &str, replicas: i32, spec: Value) -> StatefulSet {
    let mut set = json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
        }
    });
    for (k, v) in spec.as_object().into_iter().flatten() {
        set["spec"][k] = v.clone();
    }
    serde_json::from_value(set).expect("a StatefulSet")
}

/// `volumeClaimTemplates` of one claim, `data`: ReadWriteOnce, 1Gi.
pub fn data_claim_templates() -> Value {
    json!([{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}}])
}

/// Waits until the StatefulSet `name` reports `replicas` ready replicas.
pub async fn wait_ready_replicas(
    sets: &Api<StatefulSet>,
    name: &str,
    replicas: i32,
) -> StatefulSet {
    eventually(
        &format!("{replicas} ready replicas of {name}"),
        || async move {
            sets.get(name)
                .await
                .ok()
                .filter(|s| s.status.as_ref().and_then(|st| st.ready_replicas) == Some(replicas))
        },
    )
    .await
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Status a failed kube-rs call carried.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A raw HTTP request to the sandbox, for what kube-rs will not send.
pub async fn raw(
    sb: &Sandbox,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body)
        .expect("request builds");
    match sb.client().request::<serde_json::Value>(req).await {
        Ok(v) => (200, v),
        Err(kube::Error::Api(s)) => (
            s.code,
            serde_json::to_value(&*s).expect("status serializes"),
        ),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// An object with only its name set.
pub fn named<K: serde::de::DeserializeOwned>(name: &str) -> K {
    serde_json::from_value(json!({"metadata": {"name": name}})).expect("a named object")
}

/// Creates `obj` with `api`, returning what the API server stored.
pub async fn create<K>(api: &kube::Api<K>, obj: &K) -> K
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.create(&kube::api::PostParams::default(), obj)
        .await
        .expect("created")
}
