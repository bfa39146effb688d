//! How a Job the operator started stands, read from the Job and its pods.
//!
//! A level that runs work to completion (a major upgrade's migration, a
//! backup) decides from the Job's outcome as a typed value: still waiting to
//! run, running, succeeded, failed with what its container said, stopped at
//! its deadline, or without the pod it had. The outcome carries the facts
//! (the termination message, the Job's own failure message); the level words
//! them for its conditions and Events, since only it knows what the Job was for.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::capability::Observed;
use crate::conditions::ConditionStatus;
use crate::ext::PodExt;

/// The most of a termination message the operator keeps (a Job's container
/// may write up to 4096 bytes there).
const MESSAGE_LIMIT: usize = 1000;

/// How a Job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// No such Job.
    Absent,
    /// Its pod has not started running: why, when a container waits.
    Pending(Option<String>),
    /// It started a pod, which is gone without having finished.
    PodLost,
    /// Its pod runs.
    Running,
    /// It succeeded; its container's termination message, if any.
    Succeeded(Option<String>),
    /// It failed.
    Failed {
        /// Its container's termination message, if any.
        termination_message: Option<String>,
        /// The message of the Job's Failed (or FailureTarget) condition,
        /// when the Job has one.
        condition_message: Option<String>,
    },
    /// Kubernetes stopped it at `activeDeadlineSeconds` (and deleted its pod).
    DeadlineExceeded,
}

impl JobOutcome {
    /// Whether the Job has finished, one way or another.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            JobOutcome::Succeeded(_) | JobOutcome::Failed { .. } | JobOutcome::DeadlineExceeded
        )
    }
}

/// The observed pods of the Job named `job`.
pub fn job_pods(observed: &Observed, job: &str) -> Vec<Pod> {
    observed
        .all::<Pod>()
        .into_iter()
        .filter(|p| p.job() == Some(job))
        .collect()
}

/// The termination message the container named `container` left in one
/// of `pods`, trimmed and shortened.
pub fn termination_message(pods: &[Pod], container: &str) -> Option<String> {
    pods.iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        let terminated = statuses
            .iter()
            .find(|c| c.name == container)?
            .state
            .as_ref()?
            .terminated
            .as_ref()?;
        terminated
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| m.chars().take(MESSAGE_LIMIT).collect())
    })
}

/// How the Job named `name` stands, from the Job and its pods; `container`
/// is the container whose termination message tells the result.
pub fn job_outcome(observed: &Observed, name: &str, container: &str) -> JobOutcome {
    let Some(job) = observed.get::<Job>(name) else {
        return JobOutcome::Absent;
    };
    let pods = job_pods(observed, name);
    let status = job.status.unwrap_or_default();
    let condition = |type_: &str| {
        status.conditions.iter().flatten().find(|c| {
            c.type_ == type_ && ConditionStatus::parse(&c.status) == ConditionStatus::True
        })
    };
    // A Job marked to fail (past its deadline, say) has failed, even if its
    // pod, stopping within its grace period, still exits 0.
    if let Some(failed) = condition("Failed").or_else(|| condition("FailureTarget")) {
        if failed.reason.as_deref() == Some("DeadlineExceeded") {
            return JobOutcome::DeadlineExceeded;
        }
        return JobOutcome::Failed {
            termination_message: termination_message(&pods, container),
            condition_message: Some(failed.message.clone().unwrap_or_default()),
        };
    }
    if condition("Complete").is_some() || status.succeeded.unwrap_or(0) > 0 {
        let message = termination_message(&pods, container);
        // Level 1 asks for the pods before any level asks for a Job, so a
        // Job seen complete may come with its pod seen still running: that
        // read is older than the result, and deciding on it would lose the
        // termination message for good. The next reconcile reads both after the pod ended. A
        // Job whose pods are all gone (deleted after it finished) has
        // succeeded with no message to read.
        if message.is_none() && pods.iter().any(PodExt::has_running_container) {
            return JobOutcome::Running;
        }
        return JobOutcome::Succeeded(message);
    }
    if status.failed.unwrap_or(0) > 0 {
        return JobOutcome::Failed {
            termination_message: termination_message(&pods, container),
            condition_message: None,
        };
    }
    if pods.iter().any(PodExt::has_running_container) {
        return JobOutcome::Running;
    }
    let waiting = pods.iter().find_map(|p| {
        let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "pod {}: {}: {}",
                p.name_any(),
                waiting.reason.clone().unwrap_or_default(),
                waiting.message.clone().unwrap_or_default()
            ))
        })
    });
    if waiting.is_none() && pods.is_empty() && status.active.unwrap_or(0) > 0 {
        return JobOutcome::PodLost;
    }
    JobOutcome::Pending(waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{PodBuilder, meta, put};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    };

    fn with_job(status: JobStatus, pod: Option<ContainerState>) -> Observed {
        let mut observed = Observed::default();
        put(
            &mut observed,
            &Job {
                metadata: meta("j"),
                status: Some(status),
                ..Default::default()
            },
        );
        if let Some(state) = pod {
            let phase = if state.running.is_some() {
                "Running"
            } else {
                "Pending"
            };
            put(
                &mut observed,
                &PodBuilder::named("j-x1")
                    .label(crate::keys::JOB_NAME_LABEL, "j")
                    .phase(phase)
                    .container("work", state)
                    .build(),
            );
        }
        observed
    }

    fn failed_condition(reason: &str) -> JobStatus {
        JobStatus {
            failed: Some(1),
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some("stopped".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn terminated(message: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                message: Some(format!("  {message}\n")),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_job_not_observed_is_absent_and_one_whose_pod_waits_says_why() {
        assert_eq!(
            job_outcome(&Observed::default(), "j", "work"),
            JobOutcome::Absent
        );
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                message: Some("no such image".into()),
            }),
            ..Default::default()
        };
        let outcome = job_outcome(&with_job(JobStatus::default(), Some(waiting)), "j", "work");
        assert_eq!(
            outcome,
            JobOutcome::Pending(Some("pod j-x1: ImagePullBackOff: no such image".into()))
        );
    }

    #[test]
    fn a_running_pod_makes_a_running_job_and_a_vanished_one_a_lost_pod() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        let active = JobStatus {
            active: Some(1),
            ..Default::default()
        };
        assert_eq!(
            job_outcome(&with_job(active.clone(), Some(running)), "j", "work"),
            JobOutcome::Running
        );
        assert_eq!(
            job_outcome(&with_job(active, None), "j", "work"),
            JobOutcome::PodLost
        );
    }

    #[test]
    fn a_job_seen_complete_with_its_pod_seen_still_running_is_not_finished_until_the_pod_is_read_again()
     {
        let complete = JobStatus {
            succeeded: Some(1),
            ..Default::default()
        };
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        assert_eq!(
            job_outcome(&with_job(complete.clone(), Some(running)), "j", "work"),
            JobOutcome::Running
        );
        assert_eq!(
            job_outcome(&with_job(complete, None), "j", "work"),
            JobOutcome::Succeeded(None)
        );
    }

    #[test]
    fn a_finished_job_carries_its_container_s_termination_message() {
        let succeeded = JobStatus {
            succeeded: Some(1),
            ..Default::default()
        };
        assert_eq!(
            job_outcome(
                &with_job(succeeded, Some(terminated("verified"))),
                "j",
                "work"
            ),
            JobOutcome::Succeeded(Some("verified".into()))
        );
        assert_eq!(
            job_outcome(
                &with_job(
                    failed_condition("BackoffLimitExceeded"),
                    Some(terminated("restore failed"))
                ),
                "j",
                "work"
            ),
            JobOutcome::Failed {
                termination_message: Some("restore failed".into()),
                condition_message: Some("stopped".into()),
            }
        );
        assert!(
            job_outcome(
                &with_job(failed_condition("DeadlineExceeded"), None),
                "j",
                "work"
            )
            .is_finished()
        );
        assert_eq!(
            job_outcome(
                &with_job(failed_condition("DeadlineExceeded"), None),
                "j",
                "work"
            ),
            JobOutcome::DeadlineExceeded
        );
    }
}
