//! Events the runtime records on a pod, as the kubelet does for what
//! happens to its containers.
//!
//! Only what a learner must not miss is recorded: a container the sandbox
//! simulates instead of running (reason `Simulated`), so a container that
//! reports Running is never mistaken for a real process. Recording is best
//! effort, like the kubelet's: a failed write is dropped.

use serde_json::json;

use super::state::{Inner, PodCtx};
use crate::cluster::WriteOptions;

/// Records a Normal Event `reason` with `message` on the pod of `ctx`.
pub(super) fn record(inner: &Inner, ctx: &PodCtx, reason: &str, message: &str) {
    let Some(c) = inner.cluster() else {
        return;
    };
    let Ok(rt) = c.rt("", "events") else {
        return;
    };
    let now = crate::meta::now();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{}.{nanos:x}", ctx.name), "namespace": ctx.ns},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod",
            "name": ctx.name, "namespace": ctx.ns, "uid": ctx.uid,
        },
        "reason": reason,
        "message": message,
        "type": "Normal",
        "source": {"component": "kubelet"},
        "reportingComponent": "kubelet",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let _ = c.create(&rt, &ctx.ns, event, &WriteOptions::manager("kubelet"));
}
