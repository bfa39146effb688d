//! The Job controller: run pods to completion.
//!
//! A Job keeps up to `parallelism` pods running until `completions` of them
//! have Succeeded (condition `Complete`), or more than `backoffLimit` have
//! Failed (condition `Failed`, reason `BackoffLimitExceeded`, remaining
//! pods deleted). Pods carry the `batch.kubernetes.io/controller-uid` and
//! `job-name` labels the Job's selector matches.

use serde_json::{Value, json};

use super::{MANAGER, controlled_by, controller_ref, keep_transition_times, list_all};
use crate::cluster::{Cluster, DeleteOptions, Sub, WriteOptions};
use crate::meta::{is_deleting, name_of, namespace_of, uid_of};

fn has_condition(job: &Value, t: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
}

fn new_pod(job: &Value) -> Value {
    let tmpl = &job["spec"]["template"];
    let mut meta = tmpl.get("metadata").cloned().unwrap_or(json!({}));
    let mut labels = meta.get("labels").cloned().unwrap_or(json!({}));
    let uid = uid_of(job);
    let name = name_of(job);
    labels["batch.kubernetes.io/controller-uid"] = json!(uid);
    labels["controller-uid"] = json!(uid);
    labels["batch.kubernetes.io/job-name"] = json!(name);
    labels["job-name"] = json!(name);
    meta["labels"] = labels;
    meta["generateName"] = json!(format!("{name}-"));
    meta["namespace"] = json!(namespace_of(job));
    meta["ownerReferences"] = json!([controller_ref(job)]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": tmpl["spec"]})
}

pub fn reconcile(c: &Cluster) {
    let (Ok(job_rt), Ok(pod_rt)) = (c.rt("batch", "jobs"), c.rt("", "pods")) else {
        return;
    };
    for job in list_all(c, "batch", "jobs", None) {
        if is_deleting(&job) {
            continue;
        }
        let ns = namespace_of(&job).to_string();
        let name = name_of(&job).to_string();
        let finished = has_condition(&job, "Complete") || has_condition(&job, "Failed");
        let pods: Vec<Value> = list_all(c, "", "pods", Some(&ns))
            .into_iter()
            .filter(|p| controlled_by(p, uid_of(&job)))
            .collect();
        let phase = |p: &Value| {
            p.pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
        let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let active: Vec<&Value> = pods
            .iter()
            .filter(|p| !is_deleting(p) && !matches!(phase(p).as_str(), "Succeeded" | "Failed"))
            .collect();
        let spec = &job["spec"];
        let completions = spec["completions"].as_i64().unwrap_or(1);
        let parallelism = spec["parallelism"].as_i64().unwrap_or(1);
        let backoff = spec["backoffLimit"].as_i64().unwrap_or(6);
        let suspended = spec["suspend"].as_bool() == Some(true);
        let now = crate::meta::now();
        let old_status = job.get("status").cloned().unwrap_or(json!({}));
        let mut conditions = old_status.get("conditions").cloned().unwrap_or(json!([]));
        let mut completion_time = old_status.get("completionTime").cloned();
        if !finished {
            if succeeded >= completions {
                for t in ["SuccessCriteriaMet", "Complete"] {
                    if let Some(list) = conditions.as_array_mut() {
                        list.push(json!({"type": t, "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now}));
                    }
                }
                completion_time = Some(json!(now));
            } else if failed > backoff {
                for t in ["FailureTarget", "Failed"] {
                    if let Some(list) = conditions.as_array_mut() {
                        list.push(json!({"type": t, "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now}));
                    }
                }
                for p in &active {
                    let _ = c.delete(
                        &pod_rt,
                        &ns,
                        name_of(p),
                        &DeleteOptions {
                            grace_period: Some(0),
                            ..Default::default()
                        },
                    );
                }
            } else if !suspended {
                let want = parallelism.min(completions - succeeded);
                for _ in active.len() as i64..want {
                    let _ = c.create(&pod_rt, &ns, new_pod(&job), &WriteOptions::manager(MANAGER));
                }
            }
        }
        keep_transition_times(&mut conditions, old_status.get("conditions"));
        let active_now = if has_condition(&json!({"status": {"conditions": conditions}}), "Failed")
            || has_condition(&json!({"status": {"conditions": conditions}}), "Complete")
        {
            0
        } else {
            active.len().max(if suspended {
                0
            } else {
                parallelism.min(completions - succeeded).max(0) as usize
            })
        };
        let mut status = json!({
            "startTime": old_status.get("startTime").cloned().unwrap_or(json!(now)),
            "active": active_now,
            "succeeded": succeeded,
            "failed": failed,
            "ready": active.iter().filter(|p| super::pod_ready(p)).count(),
            "terminating": 0,
            "uncountedTerminatedPods": {},
        });
        if conditions.as_array().is_some_and(|l| !l.is_empty()) {
            status["conditions"] = conditions;
        }
        if let Some(t) = completion_time {
            status["completionTime"] = t;
        }
        if job.get("status") != Some(&status) {
            let _ = c.modify(&job_rt, &ns, &name, Sub::Status, MANAGER, &move |j| {
                j["status"] = status.clone();
            });
        }
    }
}
