//! What a client-go informer asks for, as Prometheus's Kubernetes service
//! discovery (`kubernetes_sd_configs`, roles endpoints, service, pod) runs
//! them: its clients prefer protobuf (`Accept:
//! application/vnd.kubernetes.protobuf, */*`), and each informer's
//! reflector lists (`limit=500&resourceVersion=0`), then watches from the
//! list's resourceVersion with `allowWatchBookmarks=true` and a
//! `timeoutSeconds` of 5 to 10 minutes, checking that every event's
//! object (bookmarks too) is of the watched kind. The sandbox answers
//! JSON, labelled as such, which client-go decodes whatever it preferred
//! (it picks the decoder from the response's Content-Type).
//!
//! The operator of the tests runs outside the cluster; it is registered
//! for discovery as upstream registers an external endpoint: a Service
//! without a selector plus an Endpoints object written by hand, which the
//! endpoints controller leaves alone.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::common::sandbox;

/// What client-go sends when its content type is protobuf.
const PROTOBUF_FIRST: &str = "application/vnd.kubernetes.protobuf, */*";

/// A GET with client-go's Accept header: the Content-Type and the body.
async fn get(sb: &sandbox::Sandbox, path: &str) -> (String, String) {
    let req = http::Request::get(path)
        .header("accept", PROTOBUF_FIRST)
        .body(vec![])
        .expect("request builds");
    let res = sb
        .client()
        .send(req.map(Into::into))
        .await
        .expect("answered");
    assert_eq!(res.status(), 200, "{path}");
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect_bytes())
        .await
        .expect("the response ends within 10 s")
        .expect("the body is read");
    (ct, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_informer_preferring_protobuf_gets_json_lists_and_watches_labelled_as_json() {
    let sb = sandbox().await;
    for (path, kind) in [
        ("/api/v1/endpoints", "Endpoints"),
        ("/api/v1/services", "Service"),
        ("/api/v1/pods", "Pod"),
        ("/api/v1/nodes", "Node"),
        ("/api/v1/namespaces", "Namespace"),
        ("/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice"),
    ] {
        let (ct, body) = get(&sb, &format!("{path}?limit=500&resourceVersion=0")).await;
        assert_eq!(ct, "application/json", "{path}");
        let list: Value = serde_json::from_str(&body).expect("a JSON list");
        assert_eq!(list["kind"], format!("{kind}List"), "{path}");
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .expect("the list's resourceVersion");
        let (ct, _) = get(
            &sb,
            &format!(
                "{path}?allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=1&watch=true"
            ),
        )
        .await;
        assert_eq!(ct, "application/json", "the watch of {path}");
    }
}

#[tokio::test]
async fn an_informers_watch_from_its_lists_version_sees_later_changes_and_bookmarks_of_the_watched_kind()
 {
    let sb = sandbox().await;
    let (_, body) = get(&sb, "/api/v1/endpoints?limit=500&resourceVersion=0").await;
    let list: Value = serde_json::from_str(&body).expect("a JSON list");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_string();
    let watch = {
        let client = sb.client();
        tokio::spawn(async move {
            let req = http::Request::get(format!(
                "/api/v1/endpoints?allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=3&watch=true"
            ))
            .header("accept", PROTOBUF_FIRST)
            .body(vec![])
            .expect("request builds");
            client.request_text(req).await.expect("the watch is served")
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let eps: Api<Endpoints> = Api::namespaced(sb.client(), "default");
    let ep = json!({"metadata": {"name": "metrics"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "metrics", "port": 9000}]}]});
    eps.create(
        &PostParams::default(),
        &serde_json::from_value(ep).expect("endpoints"),
    )
    .await
    .expect("created");
    let body = watch.await.expect("the watch ends at its timeout");
    let events: Vec<Value> = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an event per line"))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "ADDED" && e["object"]["metadata"]["name"] == "metrics"),
        "{body}"
    );
    let bookmarks: Vec<&Value> = events.iter().filter(|e| e["type"] == "BOOKMARK").collect();
    assert!(!bookmarks.is_empty(), "bookmarks within 3 s: {body}");
    for e in &events {
        // client-go's reflector: "expected type X, but watch event object had type Y".
        assert_eq!(e["object"]["kind"], "Endpoints", "{e}");
        assert_eq!(e["object"]["apiVersion"], "v1", "{e}");
        assert!(
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{e}"
        );
    }
}

#[tokio::test]
async fn the_endpoints_of_a_service_without_selector_stay_as_written() {
    let sb = sandbox().await;
    let svcs: Api<Service> = Api::namespaced(sb.client(), "default");
    let svc = json!({"metadata": {"name": "pgdb-operator-metrics", "labels": {"app.kubernetes.io/name": "pgdb-operator"}},
        "spec": {"ports": [{"name": "metrics", "port": 9000, "targetPort": 9000}]}});
    svcs.create(
        &PostParams::default(),
        &serde_json::from_value(svc).expect("a service"),
    )
    .await
    .expect("created");
    let eps: Api<Endpoints> = Api::namespaced(sb.client(), "default");
    let ep = json!({"metadata": {"name": "pgdb-operator-metrics", "labels": {"app.kubernetes.io/name": "pgdb-operator"}},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "metrics", "port": 9000, "protocol": "TCP"}]}]});
    eps.create(
        &PostParams::default(),
        &serde_json::from_value(ep).expect("endpoints"),
    )
    .await
    .expect("created");
    // Past the endpoints controller's resync (2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ep = eps.get("pgdb-operator-metrics").await.expect("still there");
    let subsets = ep.subsets.expect("subsets kept");
    assert_eq!(subsets.len(), 1);
    let ip = subsets[0].addresses.as_ref().expect("addresses")[0]
        .ip
        .clone();
    assert_eq!(ip, "127.0.0.1");
}
