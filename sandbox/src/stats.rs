//! The kubelet's Summary API, reached through the API server's node proxy:
//! `GET /api/v1/nodes/{node}/proxy/stats/summary`.
//!
//! A real API server forwards the request to the node's kubelet, which
//! answers with the node and, per pod it runs, the pod's reference and its
//! volumes' usage (`pods[].volume[]`: `name`, `usedBytes`,
//! `capacityBytes`, `availableBytes`, inodes, and `pvcRef` for a claim's
//! volume). Monitoring reads it for what SQL cannot tell: how full a
//! database's disk is. Here the sandbox's kubelet answers from the store
//! and the pod runtime: a claim's capacity is the claim's
//! (`status.capacity.storage`, else its request), its use is what the
//! runtime measures in the volume's directory ([`PodRuntime::volume_usage`]:
//! `statvfs` of its tmpfs as root, else a walk of the directory reused for
//! a few seconds), and a volume the volume-fill fault made full is
//! reported used to its capacity with nothing available. One request looks
//! at the node's pods and their claims once, and measures each claim's
//! volume with one system call when it is a tmpfs, so it stays cheap with
//! many databases.
//!
//! Where it stops: only volumes of persistent volume claims are reported
//! (no emptyDir, ConfigMap or Secret volumes, no ephemeral storage), and no
//! CPU, memory, network or container stats (`containers` is empty); the
//! simulated runtime writes nothing, so its volumes report 0 bytes used.
//! Other kubelet paths behind the proxy (`/metrics`, `/stats` v1, `/logs`)
//! answer 404.
//!
//! [`PodRuntime::volume_usage`]: crate::cluster::PodRuntime::volume_usage

use serde_json::{Value, json};

use crate::builtin::parse_quantity;
use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// What the node proxy serves for `path` (the segments after `proxy/`).
pub fn serve(cluster: &Cluster, node: &str, path: &[&str]) -> Result<Value> {
    match path {
        ["stats", "summary"] => summary(cluster, node),
        _ => Err(Error::no_such_resource()),
    }
}

/// The Summary API's answer for `node`.
pub fn summary(cluster: &Cluster, node: &str) -> Result<Value> {
    let node_obj = cluster
        .store
        .get("/nodes", "", node)
        .ok_or_else(|| Error::not_found("", "nodes", node))?;
    let now = crate::meta::now();
    let pods = cluster
        .store
        .list("/pods", None, None, None, &|p| {
            p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                && !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                )
        })
        .items;
    let pods: Vec<Value> = pods.iter().map(|p| pod_stats(cluster, p, &now)).collect();
    Ok(json!({
        "node": {
            "nodeName": node,
            "systemContainers": [],
            "startTime": node_obj.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
        },
        "pods": pods,
    }))
}

fn pod_stats(cluster: &Cluster, pod: &Value, now: &str) -> Value {
    let meta = &pod["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or_default();
    let volumes: Vec<Value> = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let name = v["name"].as_str()?;
            let claim = v.pointer("/persistentVolumeClaim/claimName")?.as_str()?;
            claim_stats(cluster, ns, name, claim, now)
        })
        .collect();
    let mut stats = json!({
        "podRef": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
        "startTime": pod.pointer("/status/startTime").cloned().unwrap_or(Value::Null),
        "containers": [],
    });
    // As the kubelet's JSON: `volume` is omitted when there is none.
    if !volumes.is_empty() {
        stats["volume"] = Value::Array(volumes);
    }
    stats
}

/// One claim's volume as mounted in a pod as `volume`; `None` while the
/// claim is missing or unbound (no volume to measure yet).
fn claim_stats(cluster: &Cluster, ns: &str, volume: &str, claim: &str, now: &str) -> Option<Value> {
    let pvc = cluster.store.get("/persistentvolumeclaims", ns, claim)?;
    let pv = pvc.pointer("/spec/volumeName")?.as_str()?;
    let capacity = pvc
        .pointer("/status/capacity/storage")
        .or_else(|| pvc.pointer("/spec/resources/requests/storage"))
        .and_then(Value::as_str)
        .and_then(parse_quantity)
        .map(|b| b.max(0.0) as u64)
        .unwrap_or(0);
    let usage = cluster.runtime.volume_usage(pv).unwrap_or_default();
    let (used, available) = if usage.full {
        (usage.used_bytes.max(capacity), 0)
    } else {
        (usage.used_bytes, capacity.saturating_sub(usage.used_bytes))
    };
    Some(json!({
        "time": now,
        "availableBytes": available,
        "capacityBytes": capacity,
        "usedBytes": used,
        "inodesUsed": usage.inodes_used,
        "name": volume,
        "pvcRef": {"name": claim, "namespace": ns},
    }))
}
