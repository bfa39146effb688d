//! The node proxy's kubelet Summary API
//! (`GET /api/v1/nodes/{node}/proxy/stats/summary`, what monitoring reads
//! for volume usage): the node, each pod bound to it by `podRef`, and per
//! claim volume `capacityBytes` from the claim with `usedBytes` and
//! `availableBytes` (on the simulated runtime, which writes nothing, 0 used).
//! RBAC names the request `get` on `nodes/proxy`.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::common::{eventually, sandbox};

async fn get(sb: &sandbox::Sandbox, path: &str) -> Result<Value, kube::Error> {
    let req = http::Request::get(path)
        .body(vec![])
        .expect("request builds");
    sb.client().request::<Value>(req).await
}

#[tokio::test]
async fn the_stats_summary_lists_each_pods_claim_volumes_with_the_claims_capacity() {
    let sb = sandbox().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(sb.client(), "default");
    let claim = json!({"metadata": {"name": "data-db-0"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}});
    claims
        .create(
            &PostParams::default(),
            &serde_json::from_value(claim).expect("a claim"),
        )
        .await
        .expect("the claim is created");
    let pod = json!({"metadata": {"name": "db-0"},
        "spec": {"containers": [{"name": "postgres", "image": "postgres:15"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}},
                             {"name": "scratch", "emptyDir": {}}]}});
    Api::<Pod>::namespaced(sb.client(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod).expect("a pod"),
        )
        .await
        .expect("the pod is created");

    // Once the claim is bound, its volume is measured.
    let summary = eventually("the claim's volume in the stats summary", || async {
        let s = get(&sb, "/api/v1/nodes/sandbox/proxy/stats/summary")
            .await
            .expect("the summary is served");
        let has_volume = s["pods"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p.get("volume").is_some()));
        has_volume.then_some(s)
    })
    .await;
    assert_eq!(summary["node"]["nodeName"], "sandbox");
    let pods = summary["pods"].as_array().expect("pods");
    let db = pods
        .iter()
        .find(|p| p["podRef"]["name"] == "db-0")
        .expect("the pod is listed");
    assert_eq!(db["podRef"]["namespace"], "default");
    assert!(db["podRef"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let volumes = db["volume"].as_array().expect("volume stats");
    assert_eq!(volumes.len(), 1, "only the claim's volume: {volumes:#?}");
    let v = &volumes[0];
    assert_eq!(v["name"], "data");
    assert_eq!(
        v["pvcRef"],
        json!({"name": "data-db-0", "namespace": "default"})
    );
    assert_eq!(v["capacityBytes"], 2u64 << 30);
    assert_eq!(v["usedBytes"], 0);
    assert_eq!(v["availableBytes"], 2u64 << 30);
    assert!(v["time"].as_str().is_some());
}

#[tokio::test]
async fn the_node_proxy_answers_404_for_an_unknown_node_or_kubelet_path() {
    let sb = sandbox().await;
    for path in [
        "/api/v1/nodes/elsewhere/proxy/stats/summary",
        "/api/v1/nodes/sandbox/proxy/metrics/cadvisor",
        "/api/v1/nodes/sandbox/proxy",
    ] {
        match get(&sb, path).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 404, "{path}: {s:?}"),
            other => panic!("{path}: expected 404, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stats_summary_request_is_get_on_nodes_proxy_for_rbac() {
    let sb = sandbox().await;
    sb.counters().reset();
    let req = http::Request::get("/api/v1/nodes/sandbox/proxy/stats/summary")
        .header("user-agent", "collector/1.0")
        .body(vec![])
        .expect("request builds");
    sb.client()
        .request::<Value>(req)
        .await
        .expect("the summary is served");
    assert_eq!(sb.counters().get("get", "nodes/proxy"), 1);
    let kinds = sb.counters().requests_from("collector/");
    assert!(
        kinds
            .iter()
            .any(|k| k.verb == "get" && k.resource == "nodes/proxy" && k.group.is_empty()),
        "{kinds:?}"
    );
}
