//! Throughput benchmark (not a test): prints creates per second over HTTP
//! through kube-rs, list and get latency, and watch fan-out delivery time.
//!
//! Run with `cargo bench -p sandbox --bench throughput`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use sandbox::{Sandbox, SandboxConfig};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"bench": "yes"}}, "data": {"k": "v"}}),
    )
    .expect("static object")
}

#[tokio::main]
async fn main() {
    let sb = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts");
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());

    // Creates: 16 concurrent clients.
    let n = 4000usize;
    let start = Instant::now();
    let mut tasks = vec![];
    for w in 0..16 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                api.create(&PostParams::default(), &cm(&format!("c{i}")))
                    .await
                    .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "creates over HTTP (16 clients): {n} in {secs:.2}s = {:.0}/s",
        n as f64 / secs
    );

    // In-process write path without HTTP, for comparison.
    let c = sb.cluster();
    let rt = c.rt("", "configmaps").expect("configmaps served");
    let start = Instant::now();
    for i in 0..n {
        let obj = json!({"metadata": {"name": format!("d{i}")}, "data": {"k": "v"}});
        c.create(
            &rt,
            "default",
            obj,
            &sandbox::cluster::WriteOptions::manager("bench"),
        )
        .expect("create");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "creates in-process: {n} in {secs:.2}s = {:.0}/s",
        n as f64 / secs
    );

    // Reads.
    let reps = 500;
    let start = Instant::now();
    for i in 0..reps {
        api.get(&format!("c{}", i % n)).await.expect("get");
    }
    println!(
        "get latency: {:.3} ms",
        start.elapsed().as_secs_f64() * 1000.0 / reps as f64
    );
    let lp = ListParams::default().labels("bench=yes").limit(100);
    let start = Instant::now();
    for _ in 0..100 {
        api.list(&lp).await.expect("list");
    }
    println!(
        "list latency (100 of {} objects): {:.3} ms",
        2 * n,
        start.elapsed().as_secs_f64() * 1000.0 / 100.0
    );

    // Watch fan-out: 50 watchers, 200 changes each must reach all of them.
    let watchers = 50;
    let changes = 200;
    let rv = api
        .get("c0")
        .await
        .expect("get")
        .metadata
        .resource_version
        .expect("rv");
    let mut handles = vec![];
    for _ in 0..watchers {
        let api = api.clone();
        let rv = rv.clone();
        handles.push(tokio::spawn(async move {
            let mut s = api
                .watch(&WatchParams::default().disable_bookmarks(), &rv)
                .await
                .expect("watch")
                .boxed();
            let mut seen = 0;
            while seen < changes {
                match tokio::time::timeout(Duration::from_secs(30), s.next()).await {
                    Ok(Some(Ok(WatchEvent::Added(_)))) => seen += 1,
                    Ok(Some(Ok(_))) => {}
                    other => panic!("watch failed: {other:?}"),
                }
            }
        }));
    }
    let start = Instant::now();
    for i in 0..changes {
        api.create(&PostParams::default(), &cm(&format!("w{i}")))
            .await
            .expect("create");
    }
    for h in handles {
        h.await.expect("watcher");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "watch fan-out: {changes} changes x {watchers} watchers = {} events delivered in {secs:.2}s ({:.0} events/s)",
        changes * watchers,
        (changes * watchers) as f64 / secs
    );
    sb.shutdown().await;
}
