//! `spec.backup.verify` in the backup controller: a dumped backup of a
//! database asking for verification stays Running until the restore
//! module's verify Job (see [`crate::lifecycle::verify`]) has restored it
//! into a scratch server and compared every table with the manifest.
//!
//! Retention, restores (`fromDatabase`, `fromBackup`) and the deletion
//! policy all take a backup only once it is Completed, so holding the phase
//! at Running while the verification runs keeps an unverified backup out of
//! all of them with no change on their side. It also keeps the database's
//! next backup waiting: one backup of a database at a time, verification
//! included.
//!
//! The verdict is read from the verify Job each time (nothing is kept in
//! memory) and recorded once, in `status.verification`, when the phase
//! leaves Running: Completed with `passed: true`, or Failed with the
//! mismatch as the error, a Warning Event and a Ready condition saying so.
//! The verify Job is owned by the backup, so it goes with it.
//!
//! Where it stops: a failed verification is not retried (a new backup is a
//! new attempt); a database deleted while its backup is verified leaves no
//! one to ask, so the backup completes unverified, saying so.

use k8s_openapi::api::batch::v1::Job;
use kube::{Resource, ResourceExt};
use shared::api::PostgresDB;
use shared::backup::{BackupPhase, PostgresDBBackup, PostgresDBBackupStatus};
use shared::capability::{EventType, Observed};
use shared::job::{JobOutcome, job_outcome};

use super::{BackupEvent, RECHECK, Step, fail, set_status, with_phase};
use crate::lifecycle::verify::{VERIFY_CONTAINER, verification, verify_job, verify_job_name};

/// Whether the database `database`, as observed, asks for each backup to
/// be verified.
pub fn verify_asked(observed: &Observed, database: &str) -> bool {
    observed
        .get::<PostgresDB>(database)
        .and_then(|db| db.spec.backup)
        .is_some_and(|b| b.verify)
}

/// A backup whose dump completed (`next` carries its summary), of a
/// database asking for verification: Running while its verify Job runs, then
/// Completed (verified) or Failed (does not restore). `dumped` says what
/// the dump holds, for the messages.
pub(super) fn verify(
    backup: &PostgresDBBackup,
    status: &PostgresDBBackupStatus,
    mut next: PostgresDBBackupStatus,
    dumped: &str,
    observed: &Observed,
    now: jiff::Timestamp,
    step: &mut Step,
) {
    let name = backup.name_any();
    let job_name = verify_job_name(&name);
    match verification(observed, &job_name, now) {
        Some(verdict) if verdict.passed => {
            let message = format!("{dumped}; verified: {}", verdict.message);
            next.verification = Some(verdict);
            let next = with_phase(
                status,
                next,
                BackupPhase::Completed,
                "Verified",
                &message,
                now,
            );
            set_status(step, backup, next);
            step.events.push(BackupEvent {
                type_: EventType::Normal,
                reason: "BackupCompleted",
                message,
            });
            step.requeue = None;
        }
        Some(verdict) => {
            let error = format!(
                "spec.backup.verify: the verification of backup {name} failed: {}",
                verdict.message
            );
            next.verification = Some(verdict);
            fail(backup, status, next, error, now, step);
        }
        None => {
            if job_outcome(observed, &job_name, VERIFY_CONTAINER) == JobOutcome::PodLost {
                step.delete_job = Some(job_name.clone());
                fail(
                    backup,
                    status,
                    next,
                    format!(
                        "spec.backup.verify: the pod of Job {job_name} disappeared before the verification ended (deleted or evicted)"
                    ),
                    now,
                    step,
                );
                return;
            }
            if observed.get::<Job>(&job_name).is_none() {
                let mut dumped_backup = backup.clone();
                dumped_backup.status = Some(next.clone());
                let db = observed.get::<PostgresDB>(&backup.spec.database);
                let Some(mut job) = db.and_then(|db| verify_job(&db, &dumped_backup)) else {
                    fail(
                        backup,
                        status,
                        next,
                        format!(
                            "spec.backup.verify: backup {name} cannot be verified: it records no location for its files, or PostgresDB {} has no readable version",
                            backup.spec.database
                        ),
                        now,
                        step,
                    );
                    return;
                };
                job.metadata.owner_references = backup.controller_owner_ref(&()).map(|o| vec![o]);
                step.create = Some(job);
                step.events.push(BackupEvent {
                    type_: EventType::Normal,
                    reason: "BackupVerifying",
                    message: format!(
                        "{dumped}; started Job {job_name} to restore it into a scratch server and compare every table with its manifest (spec.backup.verify)"
                    ),
                });
            }
            let next = with_phase(
                status,
                next,
                BackupPhase::Running,
                "Verifying",
                &format!(
                    "{dumped}; Job {job_name} is restoring it into a scratch server to verify it (spec.backup.verify): the backup counts as Completed once verified"
                ),
                now,
            );
            set_status(step, backup, next);
            step.requeue = Some(RECHECK);
        }
    }
}
