//! `pods/portforward` against pods of the simulated runtime, in which
//! nothing listens, and requests a kubelet refuses. (Forwarding to a real
//! server is in `real_postgres::portforward`.)

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::common::{eventually, raw, sandbox};

async fn running_pod(api: &Api<Pod>, name: &str, restart_policy: &str) {
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"restartPolicy": restart_policy, "containers": [{"name": "db", "image": "postgres:16"}]}}))
    .expect("a pod");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("the pod is accepted");
}

async fn phase(api: &Api<Pod>, name: &str) -> Option<String> {
    api.get(name).await.ok()?.status?.phase
}

/// Upstream: the kubelet dials the port inside the pod; when nothing
/// listens, the port's error channel says "connection refused" and the
/// forward ends.
#[tokio::test]
async fn port_forwarding_to_a_simulated_pod_reports_connection_refused_on_the_error_channel() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    running_pod(&api, "p", "Always").await;
    eventually("the pod runs", || async {
        (phase(&api, "p").await.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let mut pf = api
        .portforward("p", &[5432, 8080])
        .await
        .expect("the connection is upgraded");
    let mut data = pf.take_stream(5432).expect("a data stream");
    for port in [5432, 8080] {
        let error = pf
            .take_error(port)
            .expect("an error channel per port")
            .await
            .expect("an error message");
        assert!(
            error.starts_with(&format!("error forwarding port {port} to pod ")),
            "{error}"
        );
        assert!(error.contains("connect: connection refused"), "{error}");
    }
    // Once every port is done the server closes the connection: the data
    // stream ends. (kube-rs's `join` then fails, as against a cluster: it
    // sends its own close after the server's.)
    let mut rest = vec![];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut data, &mut rest),
    )
    .await
    .expect("the server closes the connection once every port is done")
    .expect("the stream ends");
    assert!(rest.is_empty(), "nothing came from the pod");
    assert_eq!(sb.counters().get("get", "pods/portforward"), 1);
}

/// Upstream: the API server answers 404 for a missing pod, 400 "Upgrade
/// request required" to a request that is not an upgrade, and the kubelet
/// 400 to one without ports.
#[tokio::test]
async fn port_forward_requests_for_missing_pods_without_upgrade_or_without_ports_are_refused() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    match api.portforward("missing", &[5432]).await {
        Err(kube::Error::UpgradeConnection(e)) => {
            assert!(e.to_string().contains("404"), "{e}")
        }
        other => panic!("expected a refused upgrade, got {:?}", other.err()),
    }
    running_pod(&api, "p", "Always").await;
    let (code, status) = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/default/pods/p/portforward?ports=5432",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(status["message"], "Upgrade request required");
    let req = http::Request::builder()
        .uri("/api/v1/namespaces/default/pods/p/portforward")
        .body(vec![])
        .expect("request builds");
    match sb.client().connect(req).await {
        Err(kube::Error::UpgradeConnection(e)) => {
            assert!(e.to_string().contains("400"), "{e}")
        }
        other => panic!("expected a refused upgrade, got {:?}", other.err()),
    }
}

/// Upstream: a pod whose containers no longer run has no sandbox to
/// forward into: the kubelet fails the upgrade.
#[tokio::test]
async fn port_forwarding_to_a_finished_pod_fails_the_upgrade() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    running_pod(&api, "done", "Never").await;
    eventually("the pod finishes", || async {
        (phase(&api, "done").await.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    match api.portforward("done", &[5432]).await {
        Err(kube::Error::UpgradeConnection(e)) => {
            assert!(e.to_string().contains("500"), "{e}")
        }
        other => panic!("expected a refused upgrade, got {:?}", other.err()),
    }
}
