//! The kubelet's volume stats: how full each database's data volume is.
//!
//! PostgreSQL knows the size of its databases, not of the file system they
//! live on; the kubelet does (statvfs of the volume, the same figures as
//! the `kubelet_volume_stats_*` series). The collector reads the kubelet's
//! stats summary through the API server's node proxy,
//! `GET /api/v1/nodes/<node>/proxy/stats/summary`, once per node per
//! interval, whatever the number of databases on it, and finds each data
//! volume in `pods[].volume[]` by its claim (`pvcRef`).
//!
//! Where it stops: a node whose summary cannot be read (the proxy answers
//! 404, as a cluster without the endpoint does, or the kubelet is slow)
//! gives "volume usage unknown" for its databases, never an error of the
//! collector. The other figures of the summary (CPU, memory, ephemeral
//! storage) are not read.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

/// How long reading one node's summary may take.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// The part of the kubelet's `Summary` read here.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Summary {
    /// The pods on the node.
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

/// A pod's stats.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodReference,
    /// Its volumes' stats.
    #[serde(default)]
    pub volume: Vec<VolumeStats>,
}

/// Names a pod.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct PodReference {
    /// The pod's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

/// One volume's stats.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    /// The volume's name in the pod's spec.
    pub name: String,
    /// Bytes used.
    #[serde(default)]
    pub used_bytes: Option<u64>,
    /// The file system's capacity in bytes.
    #[serde(default)]
    pub capacity_bytes: Option<u64>,
    /// The claim behind the volume, for a persistent volume.
    #[serde(default)]
    pub pvc_ref: Option<ClaimReference>,
}

/// Names a PersistentVolumeClaim.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ClaimReference {
    /// The claim's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

/// The stats of every node read this interval: a node whose summary could
/// not be read is absent (its volumes' usage is unknown).
pub type NodesStats = HashMap<String, Summary>;

impl Summary {
    /// The used and capacity bytes of the claim `claim` in `namespace`,
    /// mounted by the pod `pod`, when the kubelet reports both.
    pub fn claim_usage(&self, namespace: &str, pod: &str, claim: &str) -> Option<(u64, u64)> {
        let pod = self
            .pods
            .iter()
            .find(|p| p.pod_ref.namespace == namespace && p.pod_ref.name == pod)?;
        let volume = pod.volume.iter().find(|v| {
            v.pvc_ref
                .as_ref()
                .is_some_and(|c| c.name == claim && c.namespace == namespace)
        })?;
        Some((volume.used_bytes?, volume.capacity_bytes?))
    }
}

/// Why a node's summary could not be read.
#[derive(Debug)]
pub enum Unread {
    /// The API server has no such endpoint for the node (404): usage is
    /// unknown, and that is normal for a cluster without it.
    NotServed,
    /// Anything else: a timeout, a refusal, a body that did not parse.
    Failed(String),
}

/// Reads the summary of `node` through the API server's node proxy.
pub async fn read(client: &kube::Client, node: &str) -> Result<Summary, Unread> {
    let path = format!("/api/v1/nodes/{node}/proxy/stats/summary");
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| Unread::Failed(e.to_string()))?;
    let text = match tokio::time::timeout(STATS_TIMEOUT, client.request_text(request)).await {
        Err(_) => {
            return Err(Unread::Failed(format!(
                "no answer within {}s",
                STATS_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => {
            return Err(Unread::NotServed);
        }
        Ok(Err(error)) => return Err(Unread::Failed(error.to_string())),
        Ok(Ok(text)) => text,
    };
    serde_json::from_str(&text).map_err(|e| Unread::Failed(format!("not a stats summary: {e}")))
}

/// Reads the summary of every node in `nodes`, at once; a node that cannot
/// be read is left out (and logged, except when the endpoint is not served).
pub async fn read_all(client: kube::Client, nodes: Vec<String>) -> NodesStats {
    let reads = nodes.into_iter().map(|node| {
        let client = client.clone();
        async move {
            let summary = read(&client, &node).await;
            (node, summary)
        }
    });
    let mut stats = NodesStats::new();
    for (node, summary) in futures::future::join_all(reads).await {
        match summary {
            Ok(summary) => {
                stats.insert(node, summary);
            }
            Err(Unread::NotServed) => {
                tracing::debug!(
                    node,
                    "the node's stats summary is not served; volume usage unknown"
                );
            }
            Err(Unread::Failed(why)) => {
                tracing::warn!(
                    node,
                    why,
                    "cannot read the node's stats summary; volume usage unknown"
                );
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A summary as a kubelet writes it (abridged: the node's own figures
    /// and the pods' CPU and memory are left out).
    const SUMMARY: &str = r#"{
      "node": {"nodeName": "node-1", "fs": {"usedBytes": 1}},
      "pods": [
        {"podRef": {"name": "orders-0", "namespace": "shop", "uid": "u1"},
         "cpu": {"usageNanoCores": 1000},
         "volume": [
           {"time": "2026-01-01T00:00:00Z", "name": "config", "usedBytes": 4096,
            "capacityBytes": 99, "availableBytes": 1},
           {"time": "2026-01-01T00:00:00Z", "name": "data", "usedBytes": 52428800,
            "capacityBytes": 1073741824, "availableBytes": 1021313024,
            "inodesFree": 1, "inodes": 2, "inodesUsed": 1,
            "pvcRef": {"name": "data-orders-0", "namespace": "shop"}}
         ]},
        {"podRef": {"name": "billing-0", "namespace": "shop", "uid": "u2"}}
      ]
    }"#;

    #[test]
    fn the_data_volume_is_found_by_its_claim_in_the_kubelets_summary() {
        let summary: Summary = serde_json::from_str(SUMMARY).expect("parses");
        assert_eq!(
            summary.claim_usage("shop", "orders-0", "data-orders-0"),
            Some((52_428_800, 1_073_741_824))
        );
    }

    #[test]
    fn a_pod_or_claim_the_summary_does_not_list_has_unknown_usage() {
        let summary: Summary = serde_json::from_str(SUMMARY).expect("parses");
        assert_eq!(
            summary.claim_usage("shop", "billing-0", "data-billing-0"),
            None
        );
        assert_eq!(
            summary.claim_usage("other", "orders-0", "data-orders-0"),
            None
        );
        assert_eq!(
            summary.claim_usage("shop", "orders-0", "data-orders-1"),
            None
        );
    }
}
