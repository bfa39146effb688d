//! The Job controller: run pods to completion.
//!
//! A Job keeps up to `parallelism` pods running until `completions` of them
//! have Succeeded (condition `Complete`), or more than `backoffLimit` have
//! Failed, or it has been running longer than `activeDeadlineSeconds`
//! (conditions `FailureTarget` and `Failed`, reason `BackoffLimitExceeded`
//! or `DeadlineExceeded`; the remaining pods are deleted and count as
//! failed). Pods carry the `batch.kubernetes.io/controller-uid` and
//! `job-name` labels the Job's selector matches.

use std::time::Duration;

use serde_json::{Value, json};

use super::queue::{Controller, Outcome};
use super::{
    MANAGER, controlled_by, controller_keys, controller_ref, event_key, keep_transition_times,
};
use crate::cluster::{Cluster, DeleteOptions, Sub, WriteOptions};
use crate::meta::{is_deleting, name_of, namespace_of, uid_of};
use crate::store::{Event, ObjectKey};

/// Keyed by Job; its pods lead back to it through their controller
/// reference.
pub struct JobController;

impl Controller for JobController {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "job"
    }

    fn keys(&self, _c: &Cluster, e: &Event, out: &mut Vec<ObjectKey>) {
        match e.key.as_str() {
            "batch/jobs" => out.push(event_key(e)),
            "/pods" => controller_keys(e, "Job", out),
            _ => {}
        }
    }

    fn all(&self, c: &Cluster) -> Vec<ObjectKey> {
        c.store.keys("batch/jobs", None)
    }

    fn reconcile(&self, c: &Cluster, key: &ObjectKey) -> Outcome {
        match sync(c, &key.0, &key.1) {
            Some(d) => Outcome::After(d),
            None => Outcome::Done,
        }
    }
}

/// How soon a Job whose pods could not all be deleted is tried again.
const RETRY: Duration = Duration::from_millis(200);
/// The shortest requeue, so a wake-up a hair before a deadline (clocks
/// round differently) cannot spin the loop.
const MIN_REQUEUE: Duration = Duration::from_millis(20);

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

/// Adds the interim `FailureTarget` and the terminal `Failed` condition, as
/// kube-controller-manager does once a Job's pods are gone.
fn push_failed(conditions: &mut Value, reason: &str, message: &str, now: &str) {
    if let Some(list) = conditions.as_array_mut() {
        for t in ["FailureTarget", "Failed"] {
            list.push(json!({"type": t, "status": "True", "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now}));
        }
    }
}

/// Deletes `pods` without a grace period; how many are gone.
fn terminate(
    c: &Cluster,
    pod_rt: &crate::registry::ResourceType,
    ns: &str,
    pods: &[&Value],
) -> usize {
    pods.iter()
        .filter(|p| {
            let opts = DeleteOptions {
                grace_period: Some(0),
                ..Default::default()
            };
            match c.delete(pod_rt, ns, name_of(p), &opts) {
                Ok(_) => true,
                Err(e) => e.code() == 404,
            }
        })
        .count()
}

/// When a Job that started at `start` runs out of `activeDeadlineSeconds`.
fn deadline_of(job: &Value, start: &str) -> Option<jiff::Timestamp> {
    let secs = job.pointer("/spec/activeDeadlineSeconds")?.as_i64()?;
    let start: jiff::Timestamp = start.parse().ok()?;
    start
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .ok()
}

/// Reconciles one Job; returns how soon it must be looked at again (its
/// active deadline, or a retry), since nothing in the store changes when a
/// deadline passes.
fn sync(c: &Cluster, ns: &str, name: &str) -> Option<Duration> {
    let (Ok(job_rt), Ok(pod_rt)) = (c.rt("batch", "jobs"), c.rt("", "pods")) else {
        return None;
    };
    let job = c.store.get(&job_rt.key(), ns, name)?;
    let mut requeue: Option<Duration> = None;
    let mut wake_in = |d: Duration| {
        let d = d.max(MIN_REQUEUE);
        requeue = Some(requeue.map_or(d, |r| r.min(d)));
    };
    {
        // A finished Job is left as it is, like upstream: its counters
        // include pods terminated at the end, which recounting would lose.
        if is_deleting(&job) || has_condition(&job, "Complete") || has_condition(&job, "Failed") {
            return None;
        }
        let ns = ns.to_string();
        let name = name.to_string();
        let pods: Vec<Value> = c
            .store
            .owned(&pod_rt.key(), uid_of(&job))
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
        let mut failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let mut active: Vec<&Value> = pods
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
        // The deadline measures how long a Job has been continuously
        // running: a suspended Job has no startTime, and resuming starts
        // the clock again from now.
        let start_time = (!suspended).then(|| {
            old_status
                .get("startTime")
                .and_then(Value::as_str)
                .map_or_else(|| now.clone(), str::to_string)
        });
        let deadline = start_time.as_deref().and_then(|s| deadline_of(&job, s));
        let past_deadline = deadline.is_some_and(|d| jiff::Timestamp::now() >= d);
        let failure = if failed > backoff {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if past_deadline {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        };
        if succeeded >= completions {
            for t in ["SuccessCriteriaMet", "Complete"] {
                if let Some(list) = conditions.as_array_mut() {
                    list.push(json!({"type": t, "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now}));
                }
            }
            completion_time = Some(json!(now));
        } else if let Some((reason, message)) = failure {
            let gone = terminate(c, &pod_rt, &ns, &active);
            // Upstream declares the Job failed only once every active pod
            // is gone; until then it tries again.
            if gone == active.len() {
                push_failed(&mut conditions, reason, message, &now);
                failed += gone as i64;
                active.clear();
            } else {
                wake_in(RETRY);
            }
        } else if !suspended {
            let want = parallelism.min(completions - succeeded);
            for _ in active.len() as i64..want {
                let _ = c.create(&pod_rt, &ns, new_pod(&job), &WriteOptions::manager(MANAGER));
            }
            if let Some(d) = deadline {
                let left = jiff::Timestamp::now().duration_until(d);
                wake_in(Duration::try_from(left).unwrap_or_default());
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
            "active": active_now,
            "succeeded": succeeded,
            "failed": failed,
            "ready": active.iter().filter(|p| super::pod_ready(p)).count(),
            "terminating": 0,
            "uncountedTerminatedPods": {},
        });
        if let Some(t) = start_time {
            status["startTime"] = json!(t);
        }
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
    requeue
}
