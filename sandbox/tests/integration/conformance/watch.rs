use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::common::sandbox;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

async fn next(
    s: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> WatchEvent<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a watch event within 10s")
        .expect("the stream is open")
        .expect("the event decodes")
}

fn describe(e: &WatchEvent<ConfigMap>) -> String {
    match e {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.clone().unwrap()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

/// Upstream: a watch from resourceVersion N delivers every change after N, in order.
#[tokio::test]
async fn a_watch_from_a_resource_version_replays_later_changes() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let a = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    api.delete("a", &Default::default()).await.unwrap();
    let rv = a.metadata.resource_version.unwrap();
    let mut s = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(describe(&next(&mut s).await), "ADDED b");
    assert_eq!(describe(&next(&mut s).await), "DELETED a");
    api.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    assert_eq!(describe(&next(&mut s).await), "ADDED c");
}

/// Upstream: a watch with resourceVersion "0" starts with synthetic ADDED
/// events for the objects that exist.
#[tokio::test]
async fn a_watch_from_resource_version_zero_starts_with_synthetic_added_events() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let mut s = api
        .watch(&WatchParams::default().disable_bookmarks(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(describe(&next(&mut s).await), "ADDED a");
}

/// Upstream: a resourceVersion older than the watch cache window gets an
/// ERROR event carrying a 410 Expired Status ("too old resource version").
#[tokio::test]
async fn a_watch_from_an_expired_resource_version_gets_410_gone() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let a = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    sb.expire_resource_versions();
    let mut s = api
        .watch(
            &WatchParams::default().disable_bookmarks(),
            &a.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match next(&mut s).await {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {}", describe(&other)),
    }
}

/// Upstream: with a label selector, an object that stops matching is sent
/// as DELETED and one that starts matching as ADDED.
#[tokio::test]
async fn a_watch_with_a_label_selector_sees_objects_leaving_as_deleted() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let a = api
        .create(&PostParams::default(), &cm("a", json!({"app": "pg"})))
        .await
        .unwrap();
    let mut s = api
        .watch(
            &WatchParams::default().disable_bookmarks().labels("app=pg"),
            &a.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let patch = json!({"metadata": {"labels": {"app": "other"}}});
    api.patch("a", &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(describe(&next(&mut s).await), "DELETED a");
    let patch = json!({"metadata": {"labels": {"app": "pg"}}});
    api.patch("a", &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(describe(&next(&mut s).await), "ADDED a");
}

/// Upstream: allowWatchBookmarks=true yields BOOKMARK events carrying only
/// a resourceVersion.
#[tokio::test]
async fn bookmarks_are_sent_when_allowed() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let a = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let mut s = api
        .watch(
            &WatchParams::default(),
            &a.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match next(&mut s).await {
        WatchEvent::Bookmark(b) => assert!(!b.metadata.resource_version.is_empty()),
        other => panic!("expected a bookmark, got {}", describe(&other)),
    }
}

/// Upstream: timeoutSeconds ends the watch response.
#[tokio::test]
async fn timeout_seconds_ends_the_watch() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    let a = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let mut s = api
        .watch(
            &WatchParams::default().disable_bookmarks().timeout(1),
            &a.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("the watch ends within 10s");
    assert!(end.is_none());
}

/// Upstream: kube-runtime's watcher (list then watch, bookmarks on)
/// works, and re-lists after its resourceVersion expires.
#[tokio::test]
async fn kube_runtime_watcher_streams_and_recovers_from_expired_resource_versions() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let mut s = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), s.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("a"));
    sb.expire_resource_versions();
    api.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // The watcher reports the 410 as an error item, then re-lists.
        let item = tokio::time::timeout_at(deadline, s.next())
            .await
            .expect("watcher sees b within 10s");
        if let Some(Ok(o)) = item
            && o.metadata.name.as_deref() == Some("b")
        {
            break;
        }
    }
}

/// Upstream: sendInitialEvents=true (streaming list) sends the objects, then
/// a bookmark annotated k8s.io/initial-events-end.
#[tokio::test]
async fn kube_runtime_watcher_in_streaming_list_mode_works() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let mut s = watcher(api.clone(), watcher::Config::default().streaming_lists())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), s.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("a"));
}

/// A raw GET whose body is the whole response (a watch ended by
/// `timeoutSeconds`).
async fn get_text(sb: &sandbox::Sandbox, path: &str) -> String {
    let req = http::Request::builder()
        .uri(path)
        .body(vec![])
        .expect("request builds");
    sb.client()
        .request_text(req)
        .await
        .expect("the GET succeeds")
}

/// The (type, name) of each event line of a watch response.
fn event_lines(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).expect("an event per line");
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Upstream: the deprecated `/watch/` prefix still serves watches: of a
/// collection (as `?watch=true`) and of one object by name (as a
/// `metadata.name` field selector).
#[tokio::test]
async fn the_legacy_watch_prefix_watches_a_collection_or_one_object() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    for n in ["a", "b"] {
        api.create(&PostParams::default(), &cm(n, json!({})))
            .await
            .unwrap();
    }
    let all = get_text(
        &sb,
        "/api/v1/watch/namespaces/default/configmaps?resourceVersion=0&timeoutSeconds=1",
    )
    .await;
    let mut names = event_lines(&all);
    names.sort();
    assert_eq!(
        names,
        [
            ("ADDED".into(), "a".into()),
            ("ADDED".into(), "b".into()),
            // Every namespace holds it.
            ("ADDED".into(), "kube-root-ca.crt".into())
        ],
        "{all}"
    );
    let one = get_text(
        &sb,
        "/api/v1/watch/namespaces/default/configmaps/b?resourceVersion=0&timeoutSeconds=1",
    )
    .await;
    assert_eq!(event_lines(&one), [("ADDED".into(), "b".into())], "{one}");
}
