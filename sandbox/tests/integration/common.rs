//! Helpers the conformance suite shares: a sandbox on the simulated
//! runtime, one bounded wait ([`eventually`]), the Status of a failed call,
//! and raw HTTP requests for what kube-rs will not send. The kubectl and
//! real-PostgreSQL suites have their own, for their own fixtures.

use std::future::Future;
use std::time::Duration;

use sandbox::{Sandbox, SandboxConfig};

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
