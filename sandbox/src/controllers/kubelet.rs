//! The kubelet: runs the pods bound to the sandbox node and reports status.
//!
//! For each pod it asks the [`PodRuntime`](crate::runtime::PodRuntime) to
//! start the containers once, then turns the runtime's reports into the
//! pod's status: `phase` (Pending → Running → Succeeded/Failed), container
//! statuses with restart counts, the `Ready` condition and a pod IP. A pod
//! marked for deletion has its containers stopped and is then removed.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::queue::{Controller, Outcome};
use super::{NODE_NAME, keep_transition_times};
use crate::cluster::{Cluster, Sub};
use crate::meta::{finalizers, is_deleting, name_of, namespace_of, uid_of};
use crate::runtime::{ContainerReport, ContainerState};
use crate::store::Event;

const PODS: &str = "/pods";

/// Keyed by pod uid: a pod's own events, and the pods the runtime says
/// changed (or every pod it runs, when it cannot say which).
pub struct Kubelet;

impl Controller for Kubelet {
    type Key = String;

    fn name(&self) -> &'static str {
        "kubelet"
    }

    fn keys(&self, _c: &Cluster, e: &Event, out: &mut Vec<String>) {
        if e.key == PODS {
            out.push(uid_of(&e.object).to_string());
        }
    }

    fn all(&self, c: &Cluster) -> Vec<String> {
        let mut uids = c.store.uids_of(PODS);
        // Pods handed to the runtime whose object is gone are stopped.
        uids.extend(started(c).iter().cloned());
        uids
    }

    fn notified(&self, c: &Cluster) -> Option<Vec<String>> {
        match c.runtime.changed_pods() {
            Some(uids) => Some(uids),
            None => Some(started(c).iter().cloned().collect()),
        }
    }

    fn reconcile(&self, c: &Cluster, uid: &String) -> Outcome {
        sync(c, uid)
    }
}

fn started(c: &Cluster) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
    // Only the kubelet touches the set; a poisoned lock still holds valid uids.
    c.kubelet_started.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// Where a pod's init containers stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Init {
    /// Every init container exited 0 (or there are none).
    Done,
    /// One is running, waiting or being restarted.
    Running,
    /// One failed and the pod's restartPolicy is Never.
    Failed,
}

fn init_state(init: &[&ContainerReport], restart_policy: &str) -> Init {
    let succeeded =
        |r: &ContainerReport| matches!(r.state, ContainerState::Terminated { exit_code: 0, .. });
    let failed = init
        .iter()
        .any(|r| matches!(r.state, ContainerState::Terminated { exit_code, .. } if exit_code != 0));
    if init.iter().all(|r| succeeded(r)) {
        Init::Done
    } else if failed && restart_policy == "Never" {
        Init::Failed
    } else {
        Init::Running
    }
}

/// The status the runtime's reports add up to.
fn compute_status(c: &Cluster, pod: &Value, all_reports: &[ContainerReport]) -> Value {
    let old = pod.get("status").cloned().unwrap_or(json!({}));
    let restart_policy = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    let init_reports: Vec<&ContainerReport> = all_reports.iter().filter(|r| r.init).collect();
    let reports: Vec<&ContainerReport> = all_reports.iter().filter(|r| !r.init).collect();
    let init = init_state(&init_reports, restart_policy);
    let all_running = reports
        .iter()
        .all(|r| matches!(r.state, ContainerState::Running { .. }));
    // A container waiting to be restarted (CrashLoopBackOff) keeps the pod
    // Running, as on a cluster; only one that never ran keeps it Pending.
    let never_ran = |r: &ContainerReport| {
        matches!(r.state, ContainerState::Waiting { .. })
            && r.restart_count == 0
            && r.last_state.is_none()
    };
    let any_waiting = reports.iter().any(|r| never_ran(r));
    let all_terminated = reports
        .iter()
        .all(|r| matches!(r.state, ContainerState::Terminated { .. }));
    let any_failed = reports
        .iter()
        .any(|r| matches!(r.state, ContainerState::Terminated { exit_code, .. } if exit_code != 0));
    // The pod's sandbox is up once its first container (init or not) ran.
    let ready_to_start = match init_reports.first() {
        Some(first) => !never_ran(first),
        None => !any_waiting,
    };
    let phase = if init == Init::Failed {
        "Failed"
    } else if init == Init::Running || any_waiting {
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
        cond("PodReadyToStartContainers", ready_to_start),
        cond("Initialized", init == Init::Done),
        cond("Ready", ready),
        cond("ContainersReady", ready),
        cond("PodScheduled", true),
    ]);
    keep_transition_times(&mut conditions, old.get("conditions"));
    let statuses_of = |reports: &[&ContainerReport], key: &str| -> Vec<Value> {
        let old_statuses = old.get(key).and_then(Value::as_array);
        reports
            .iter()
            .map(|r| {
                let o = old_statuses.and_then(|l| l.iter().find(|s| s["name"] == r.name.as_str()));
                container_status(r, o)
            })
            .collect()
    };
    let statuses = statuses_of(&reports, "containerStatuses");
    let init_statuses = statuses_of(&init_reports, "initContainerStatuses");
    let ip = c
        .runtime
        .pod_ip(uid_of(pod))
        .unwrap_or_else(|| pod_ip(uid_of(pod)));
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": "10.0.0.1",
        "hostIPs": [{"ip": "10.0.0.1"}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": old.get("startTime").cloned().unwrap_or(json!(now)),
        "containerStatuses": statuses,
        "qosClass": old.get("qosClass").cloned().unwrap_or(json!("BestEffort")),
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    status
}

/// How soon a deleted pod whose containers are still stopping is looked
/// at again.
const STOPPING_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Starts, reports on or stops one pod.
fn sync(c: &Cluster, uid: &str) -> Outcome {
    let Ok(rt) = c.rt("", "pods") else {
        return Outcome::Done;
    };
    let pod = match c.store.get_by_uid(uid) {
        Some((key, pod)) if key == PODS => pod,
        _ => {
            // The object is gone: its containers are stopped.
            if started(c).remove(uid) {
                c.runtime.stop(uid);
            }
            return Outcome::Done;
        }
    };
    let mut started = started(c);
    {
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(NODE_NAME) {
            return Outcome::Done;
        }
        let uid = uid_of(&pod).to_string();
        let (ns, name) = (namespace_of(&pod).to_string(), name_of(&pod).to_string());
        if is_deleting(&pod) {
            // Stopping is asynchronous: the object goes once the runtime's
            // processes have exited (within the grace period), not before.
            c.runtime.stop(&uid);
            started.remove(&uid);
            if !finalizers(&pod).is_empty() {
                return Outcome::Done;
            }
            if !c.runtime.stopped(&uid) {
                return Outcome::After(STOPPING_POLL);
            }
            return match c.remove(&rt, &ns, &name) {
                Err(e) if e.code() != 404 => Outcome::Retry,
                _ => Outcome::Done,
            };
        }
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if matches!(phase, "Succeeded" | "Failed") {
            if started.remove(&uid) {
                c.runtime.stop(&uid);
            }
            return Outcome::Done;
        }
        if !started.contains(&uid) {
            match serde_json::from_value::<Pod>(pod.clone()) {
                Ok(p) => c.runtime.start(&p),
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "pod spec cannot be decoded; not started");
                    return Outcome::Done;
                }
            }
            started.insert(uid.clone());
        }
        let Some(reports) = c.runtime.status(&uid) else {
            return Outcome::Done;
        };
        let status = compute_status(c, &pod, &reports);
        if pod.get("status") != Some(&status)
            && let Err(e) = c.modify(&rt, &ns, &name, Sub::Status, "kubelet", &move |p| {
                p["status"] = status.clone();
            })
            && e.code() != 404
        {
            return Outcome::Retry;
        }
    }
    Outcome::Done
}
