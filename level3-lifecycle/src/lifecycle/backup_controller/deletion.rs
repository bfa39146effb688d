//! A backup being deleted: its Job is stopped, then a cleanup Job deletes
//! its files where its status says they are (so it works when the
//! database is gone), then the files finalizer goes. A volume already gone
//! took the files with it; a bucket whose credentials are gone is reported
//! and retried, never given up silently.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::ResourceExt;
use kube::api::ApiResource;
use shared::backup::{BackupLocation, PostgresDBBackup, PostgresDBBackupStatus};
use shared::capability::{EventType, Observed};
use shared::ext::PodExt;
use shared::job::{JobOutcome, job_outcome, job_pods};
use shared::keys::BACKUP_FILES_FINALIZER;

use super::job::{
    BACKUP_CONTAINER, CLEANUP_CONTAINER, Destination, backup_job_name, cleanup_job,
    cleanup_job_name,
};
use super::{BackupEvent, CLEANUP_RETRY, Step, describe_location, has_finalizer};

/// A backup being deleted: stop its Job, delete its files, let it go.
pub(super) fn deleting(
    backup: &PostgresDBBackup,
    status: &PostgresDBBackupStatus,
    observed: &Observed,
    step: &mut Step,
) {
    if !has_finalizer(backup) {
        return;
    }
    let name = backup.name_any();
    let job_name = status.job.clone().unwrap_or_else(|| backup_job_name(&name));
    let outcome = job_outcome(observed, &job_name, BACKUP_CONTAINER);
    if let Some(job) = observed.get::<Job>(&job_name) {
        let pods_running = job_pods(observed, &job_name)
            .iter()
            .any(|p| !p.is_finished());
        if !outcome.is_finished() && job.metadata.deletion_timestamp.is_none() {
            step.delete_job = Some(job_name.clone());
            step.events.push(BackupEvent {
                type_: EventType::Normal,
                reason: "BackupStopped",
                message: format!("stopped Job {job_name}: the backup is being deleted"),
            });
            step.requeue = Some(Duration::from_secs(2));
            return;
        }
        if job.metadata.deletion_timestamp.is_some() || pods_running {
            step.requeue = Some(Duration::from_secs(2));
            return;
        }
    }
    let Some((destination, path)) = status.location.as_ref().and_then(Destination::of_location)
    else {
        // Never started: no files.
        step.remove_finalizer = true;
        return;
    };
    match &destination {
        Destination::Volume { claim } => {
            let claim_object = observed.get::<PersistentVolumeClaim>(claim);
            if claim_object
                .as_ref()
                .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
                && observed.was_queried(&ApiResource::erase::<PersistentVolumeClaim>(&()), claim)
            {
                step.remove_finalizer = true;
                step.events.push(BackupEvent {
                    type_: EventType::Normal,
                    reason: "BackupFilesDeleted",
                    message: format!("PVC {claim} (the backup volume) is gone, and the files of backup {name} with it"),
                });
                return;
            }
        }
        Destination::S3(s3) => {
            if observed.get::<Secret>(&s3.credentials_secret).is_none() {
                step.events.push(BackupEvent {
                    type_: EventType::Warning,
                    reason: "BackupFilesNotDeleted",
                    message: format!(
                        "cannot delete the files of backup {name} at {}: Secret {} (the bucket's credentials) does not exist. Recreate it, or remove the finalizer {BACKUP_FILES_FINALIZER} by hand to keep the files",
                        describe_location(status.location.as_ref().unwrap_or(&BackupLocation::default())),
                        s3.credentials_secret
                    ),
                });
                step.requeue = Some(CLEANUP_RETRY);
                return;
            }
        }
    }
    let cleanup = cleanup_job_name(&name);
    match job_outcome(observed, &cleanup, CLEANUP_CONTAINER) {
        JobOutcome::Absent => {
            step.create = Some(cleanup_job(backup, &destination, &path));
            step.requeue = Some(Duration::from_secs(2));
        }
        JobOutcome::Succeeded(_) => {
            step.remove_finalizer = true;
            step.events.push(BackupEvent {
                type_: EventType::Normal,
                reason: "BackupFilesDeleted",
                message: format!(
                    "deleted the files of backup {name} from {}",
                    describe_location(
                        status
                            .location
                            .as_ref()
                            .unwrap_or(&BackupLocation::default())
                    )
                ),
            });
        }
        JobOutcome::Failed {
            termination_message,
            condition_message,
        } => {
            step.delete_job = Some(cleanup.clone());
            step.events.push(BackupEvent {
                type_: EventType::Warning,
                reason: "BackupFilesNotDeleted",
                message: format!(
                    "Job {cleanup} could not delete the files of backup {name}: {}; retrying in {}s",
                    termination_message
                        .or(condition_message)
                        .unwrap_or_else(|| format!("see kubectl logs job/{cleanup}")),
                    CLEANUP_RETRY.as_secs()
                ),
            });
            step.requeue = Some(CLEANUP_RETRY);
        }
        JobOutcome::DeadlineExceeded => {
            step.delete_job = Some(cleanup.clone());
            step.requeue = Some(CLEANUP_RETRY);
        }
        JobOutcome::Pending(_) | JobOutcome::Running | JobOutcome::PodLost => {
            step.requeue = Some(Duration::from_secs(2));
        }
    }
}
