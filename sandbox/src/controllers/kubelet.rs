//! The kubelet: runs the pods bound to the sandbox node and reports status.
//!
//! For each pod it asks the [`PodRuntime`](crate::runtime::PodRuntime) to
//! start the containers once, then turns the runtime's reports into the
//! pod's status: `phase` (Pending → Running → Succeeded/Failed), container
//! statuses with restart counts, the `Ready` condition and a pod IP. A pod
//! marked for deletion has its containers stopped and is then removed.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::{NODE_NAME, keep_transition_times, list_all};
use crate::cluster::{Cluster, Sub};
use crate::meta::{finalizers, is_deleting, name_of, namespace_of, uid_of};
use crate::runtime::{ContainerReport, ContainerState};

fn pod_ip(uid: &str) -> String {
    // Stable per pod: derived from its uid, in the 10.244.0.0/16 pod range.
    let h = uid
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    format!("10.244.{}.{}", (h >> 8) % 250 + 1, h % 250 + 2)
}

fn state_json(state: &ContainerState, message: Option<&str>) -> Value {
    match state {
        ContainerState::Waiting { reason } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({ "waiting": w })
        }
        ContainerState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        ContainerState::Terminated {
            exit_code,
            reason,
            started_at,
            finished_at,
            message,
        } => {
            let mut t = json!({
                "exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at});
            if let Some(m) = message.as_deref().filter(|m| !m.is_empty()) {
                t["message"] = json!(m);
            }
            json!({ "terminated": t })
        }
    }
}

fn container_status(r: &ContainerReport, old: Option<&Value>) -> Value {
    let state = state_json(&r.state, r.message.as_deref());
    let mut v = json!({
        "name": r.name,
        "image": r.image,
        "imageID": format!("sandbox://{}", r.image),
        "containerID": format!("sandbox://{}", r.name),
        "ready": r.ready,
        "started": matches!(r.state, ContainerState::Running { .. }),
        "restartCount": r.restart_count,
        "state": state,
    });
    if let Some(last) = &r.last_state {
        v["lastState"] = state_json(last, None);
    } else if let Some(o) = old
        && let Some(last) = o.get("lastState")
        && r.restart_count > 0
    {
        v["lastState"] = last.clone();
    } else {
        v["lastState"] = json!({});
    }
    v
}

/// The status the runtime's reports add up to.
fn compute_status(c: &Cluster, pod: &Value, reports: &[ContainerReport]) -> Value {
    let old = pod.get("status").cloned().unwrap_or(json!({}));
    let restart_policy = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    let all_running = reports
        .iter()
        .all(|r| matches!(r.state, ContainerState::Running { .. }));
    // A container waiting to be restarted (CrashLoopBackOff) keeps the pod
    // Running, as on a cluster; only one that never ran keeps it Pending.
    let any_waiting = reports.iter().any(|r| {
        matches!(r.state, ContainerState::Waiting { .. })
            && r.restart_count == 0
            && r.last_state.is_none()
    });
    let all_terminated = reports
        .iter()
        .all(|r| matches!(r.state, ContainerState::Terminated { .. }));
    let any_failed = reports
        .iter()
        .any(|r| matches!(r.state, ContainerState::Terminated { exit_code, .. } if exit_code != 0));
    let phase = if any_waiting {
        "Pending"
    } else if all_terminated && restart_policy != "Always" {
        if any_failed { "Failed" } else { "Succeeded" }
    } else {
        "Running"
    };
    let ready = phase == "Running" && all_running && reports.iter().all(|r| r.ready);
    let now = crate::meta::now();
    let cond = |t: &str, s: bool| json!({"type": t, "status": if s { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
    let mut conditions = json!([
        cond("PodReadyToStartContainers", !any_waiting),
        cond("Initialized", true),
        cond("Ready", ready),
        cond("ContainersReady", ready),
        cond("PodScheduled", true),
    ]);
    keep_transition_times(&mut conditions, old.get("conditions"));
    let old_statuses = old.get("containerStatuses").and_then(Value::as_array);
    let statuses: Vec<Value> = reports
        .iter()
        .map(|r| {
            let o = old_statuses.and_then(|l| l.iter().find(|s| s["name"] == r.name.as_str()));
            container_status(r, o)
        })
        .collect();
    let ip = c
        .runtime
        .pod_ip(uid_of(pod))
        .unwrap_or_else(|| pod_ip(uid_of(pod)));
    json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": "10.0.0.1",
        "hostIPs": [{"ip": "10.0.0.1"}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": old.get("startTime").cloned().unwrap_or(json!(now)),
        "containerStatuses": statuses,
        "qosClass": old.get("qosClass").cloned().unwrap_or(json!("BestEffort")),
    })
}

pub fn reconcile(c: &Cluster) {
    let Ok(rt) = c.rt("", "pods") else { return };
    let pods = list_all(c, "", "pods", None);
    // Only this loop touches the set; a poisoned lock still holds valid uids.
    let mut started = c.kubelet_started.lock().unwrap_or_else(|e| e.into_inner());
    let live: HashSet<String> = pods.iter().map(|p| uid_of(p).to_string()).collect();
    // Containers of pods that vanished are stopped.
    for uid in started.iter().filter(|u| !live.contains(*u)) {
        c.runtime.stop(uid);
    }
    started.retain(|u| live.contains(u));
    for pod in pods {
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(NODE_NAME) {
            continue;
        }
        let uid = uid_of(&pod).to_string();
        let (ns, name) = (namespace_of(&pod).to_string(), name_of(&pod).to_string());
        if is_deleting(&pod) {
            // Stopping is asynchronous: the object goes once the runtime's
            // processes have exited (within the grace period), not before.
            c.runtime.stop(&uid);
            started.remove(&uid);
            if finalizers(&pod).is_empty() && c.runtime.stopped(&uid) {
                let _ = c.remove(&rt, &ns, &name);
            }
            continue;
        }
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if matches!(phase, "Succeeded" | "Failed") {
            if started.remove(&uid) {
                c.runtime.stop(&uid);
            }
            continue;
        }
        if !started.contains(&uid) {
            match serde_json::from_value::<Pod>(pod.clone()) {
                Ok(p) => c.runtime.start(&p),
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "pod spec cannot be decoded; not started");
                    continue;
                }
            }
            started.insert(uid.clone());
        }
        let Some(reports) = c.runtime.status(&uid) else {
            continue;
        };
        let status = compute_status(c, &pod, &reports);
        if pod.get("status") != Some(&status) {
            let _ = c.modify(&rt, &ns, &name, Sub::Status, "kubelet", &move |p| {
                p["status"] = status.clone();
            });
        }
    }
}
