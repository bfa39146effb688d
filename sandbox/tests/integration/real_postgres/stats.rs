//! The kubelet's Summary API on the real runtime
//! (`/api/v1/nodes/sandbox/proxy/stats/summary`): a claim's volume reports
//! what its directory really holds against the claim's capacity, grows as
//! the server writes, and is reported full while the volume-fill fault
//! holds; growing the claim relieves the fault, its quota growing with it.

use serde_json::Value;

use super::{claim, create, pod_ip, postgres_pod, psql, query, ready, start, wait_pod};

/// The summary's entry for volume `volume` of pod `pod` in `default`.
async fn volume_stats(sb: &sandbox::Sandbox, pod: &str, volume: &str) -> Value {
    let req = http::Request::get("/api/v1/nodes/sandbox/proxy/stats/summary")
        .body(vec![])
        .expect("request builds");
    let summary: Value = sb
        .client()
        .request(req)
        .await
        .expect("the summary is served");
    summary["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["podRef"]["name"] == pod && p["podRef"]["namespace"] == "default")
        .and_then(|p| p["volume"].as_array())
        .into_iter()
        .flatten()
        .find(|v| v["name"] == volume)
        .cloned()
        .unwrap_or_else(|| panic!("no volume {volume} of pod {pod} in the summary:\n{summary:#}"))
}

fn bytes(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a byte count: {v:#}"))
}

#[tokio::test]
async fn a_claims_volume_stats_show_its_real_usage_and_full_while_filled() {
    let sb = start().await;
    create(&sb, claim("data")).await;
    create(&sb, postgres_pod("db", Some("data"))).await;
    let ip = pod_ip(&wait_pod(&sb, "db", "Ready", ready).await);

    let v = volume_stats(&sb, "db", "data").await;
    let gib = 1024 * 1024 * 1024;
    assert_eq!(
        bytes(&v, "capacityBytes"),
        gib,
        "the claim's capacity: {v:#}"
    );
    assert_eq!(v["pvcRef"]["name"], "data");
    assert_eq!(v["pvcRef"]["namespace"], "default");
    let used = bytes(&v, "usedBytes");
    // A fresh PostgreSQL 15 data directory holds some tens of megabytes.
    assert!(
        (10 << 20..200 << 20).contains(&used),
        "the data directory's size: {v:#}"
    );
    assert_eq!(bytes(&v, "availableBytes"), gib - used);

    // 20 MB more rows: the volume's usage follows (a plain directory's
    // walk is reused for a few seconds, so wait that long).
    query(
        &ip,
        "create table filler as select repeat('x', 1000) as t from generate_series(1, 20000)",
    )
    .await;
    tokio::time::sleep(sandbox::pgruntime::volume::WALK_PERIOD).await;
    let grown = bytes(&volume_stats(&sb, "db", "data").await, "usedBytes");
    assert!(grown >= used + (15 << 20), "{used} bytes, then {grown}");

    let rt = sb.postgres_runtime().expect("the real runtime");
    rt.fill_volume("default", "data", true)
        .expect("the volume fills");
    let full = volume_stats(&sb, "db", "data").await;
    assert_eq!(bytes(&full, "usedBytes"), gib, "a full volume: {full:#}");
    assert_eq!(bytes(&full, "availableBytes"), 0, "{full:#}");

    rt.fill_volume("default", "data", false)
        .expect("the volume has room again");
    let emptied = volume_stats(&sb, "db", "data").await;
    assert!(bytes(&emptied, "availableBytes") > 0, "{emptied:#}");
    assert!(bytes(&emptied, "usedBytes") < gib, "{emptied:#}");
    sb.shutdown().await;
}

#[tokio::test]
async fn growing_a_full_volumes_claim_gives_the_server_room_again() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::api::{Api, Patch, PatchParams};

    let sb = start().await;
    create(&sb, claim("data")).await;
    create(&sb, postgres_pod("db", Some("data"))).await;
    let ip = pod_ip(&wait_pod(&sb, "db", "Ready", ready).await);
    let rt = sb.postgres_runtime().expect("the real runtime");
    if rt
        .fill_volume("default", "data", true)
        .expect("the volume fills")
        != sandbox::pgruntime::VolumeFull::NoSpace
    {
        return; // Not root: no tmpfs, no quota to grow.
    }
    let write =
        "create table filler as select repeat('x', 1000) as t from generate_series(1, 5000)";
    let refused = psql(&ip, write).await;
    // "could not extend file ...: No space left on device", or the server
    // stopping on a WAL write it could not make.
    assert!(!refused.status.success(), "a full volume took 5 MB");

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(sb.client(), "default");
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
            ),
        )
        .await
        .expect("the claim grows");
    let gib = 1024 * 1024 * 1024;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let grown = loop {
        let v = volume_stats(&sb, "db", "data").await;
        if bytes(&v, "capacityBytes") == 2 * gib || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(bytes(&grown, "capacityBytes"), 2 * gib, "{grown:#}");
    assert!(
        bytes(&grown, "availableBytes") > gib,
        "room again: {grown:#}"
    );
    // The server may have restarted on the full volume: retry until it answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = psql(&ip, write).await;
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the write still fails: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    sb.shutdown().await;
}
