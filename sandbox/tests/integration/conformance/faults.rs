use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchParams};
use serde_json::json;

use crate::common::{api_err, sandbox};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

/// Fault injection: the next N matching requests fail with the given status; others pass.
/// (500 rather than 503: kube-rs retries 429/503/504 on its own.)
#[tokio::test]
async fn injected_failures_hit_the_next_n_matching_requests() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    sb.faults()
        .fail_next(2, Some("create"), Some("configmaps"), 500);
    for _ in 0..2 {
        assert_eq!(
            api_err(api.create(&PostParams::default(), &cm("a")).await).code,
            500
        );
    }
    api.list(&Default::default()).await.unwrap();
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
}

/// Request counters: by verb and resource, and resettable.
#[tokio::test]
async fn request_counters_count_by_verb_and_resource_and_reset() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    api.get("a").await.unwrap();
    api.get("a").await.unwrap();
    assert_eq!(sb.counters().get("create", "configmaps"), 1);
    assert_eq!(sb.counters().get("get", "configmaps"), 2);
    sb.counters().reset();
    api.get("a").await.unwrap();
    assert_eq!(sb.counters().writes(), 0);
}

/// Fault injection: dropping watches ends open watch streams.
#[tokio::test]
async fn dropped_watches_end_open_streams() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let c = api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let mut s = api
        .watch(
            &WatchParams::default().disable_bookmarks(),
            &c.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    sb.faults().drop_watches();
    let end = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("stream ends within 10s");
    assert!(end.is_none());
}

/// Fault injection: delayed responses still answer correctly.
#[tokio::test]
async fn delayed_responses_still_succeed() {
    let sb = sandbox().await;
    sb.faults().set_delay(Duration::from_millis(20));
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    sb.faults().clear();
    api.get("a").await.unwrap();
}

/// The written kubeconfig is usable by kube-rs like any cluster's.
#[tokio::test]
async fn the_kubeconfig_points_kube_clients_at_the_sandbox() {
    let sb = sandbox().await;
    let dir = std::env::temp_dir().join(format!("sandbox-kc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    sb.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("via-kubeconfig"))
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Shutdown stops the server: later requests fail to connect.
#[tokio::test]
async fn shutdown_stops_serving() {
    let sb = sandbox().await;
    let client = sb.client();
    sb.shutdown().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    assert!(api.get("x").await.is_err());
}
