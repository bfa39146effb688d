//! The backup controller: takes each `PostgresDBBackup`, however it was
//! created (by hand, by a schedule, by a deletion policy), with a Job,
//! reports it in the object's status, and deletes its files before the
//! object goes.
//!
//! It is a companion of the `PostgresDB` reconcile (see
//! `shared::capability::Companion`): the runner starts it under the same
//! leadership and stops it with the operator. Like the reconcile it reads,
//! decides with a pure function and acts: [`decide`] takes the backup,
//! what was read (its database, the other backups of that database, its
//! Jobs and their pods, the Secrets and the backup volume it needs) and
//! the clock, and returns a [`Step`]; [`run`] reads and applies it.
//! Nothing is kept in memory: a restarted operator decides again from the
//! cluster, and a backup whose status says Running is followed through its
//! Job.
//!
//! What it decides:
//! - adoption: a backup made by hand gets the database's labels (so the
//!   database's reconcile finds it) and the files finalizer;
//! - turns: one backup of a database runs at a time, the oldest waiting one
//!   first; a backup waits (Pending, saying for what) for its database to
//!   be Ready, for the backup role's Secret and for the backup volume;
//! - the Job ([`job::backup_job`], running `backup.sh`): `postgres:<major>`
//!   of the running server, pg_dump of every database in a snapshot of its
//!   own, `pg_dumpall --globals-only`, the manifest, the upload to S3;
//! - its end: Completed with the summary the Job's termination message
//!   carries, or Failed with the error in the words of the tool that
//!   failed. A backup never stays Running: a Job deleted, failed or past
//!   its deadline, a pod lost, killed or replaced, all end it as Failed;
//! - deletion: the Job of a running backup is stopped, then a cleanup Job
//!   ([`job::cleanup_job`]) deletes the files where the status says they
//!   are (so it works when the database is gone), then the finalizer goes.
//!
//! - verification: with `spec.backup.verify`, a dumped backup stays Running
//!   until the restore module's verify Job has a verdict, then Completed
//!   or Failed with it ([`verifying`]).
//!
//! Where it stops: a backup is not retried (a new backup object is a new
//! attempt); how a backup is verified is the restore module's
//! (`lifecycle::verify`).

mod deletion;
pub mod job;
pub mod run;
#[cfg(test)]
mod tests;
pub mod verifying;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use serde::Deserialize;
use shared::api::PostgresDB;
use shared::backup::{
    BackupLocation, BackupPhase, DumpSummary, PostgresDBBackup, PostgresDBBackupStatus,
};
use shared::capability::{EventType, Observed};
use shared::conditions::{ConditionStatus, READY};
use shared::ext::PodExt;
use shared::job::{JobOutcome, job_outcome, job_pods};
use shared::keys::{BACKUP_FILES_FINALIZER, NEVER_PRUNE_ANNOTATION, SCHEDULED_FOR_ANNOTATION};
use shared::names::common_labels;

pub use run::{companion, run};

use self::job::{
    BACKUP_CONTAINER, BACKUP_DEADLINE_SECONDS, Destination, backup_job, backup_job_name,
};
use crate::lifecycle::names::backup_credentials_secret;

/// How long a backup of a database that does not exist waits for it (a
/// manifest may create both at once) before it fails.
pub const MISSING_DATABASE_GRACE: Duration = Duration::from_secs(60);
/// How soon a waiting or running backup is looked at again (its Job and
/// pod changes trigger a look too).
pub const RECHECK: Duration = Duration::from_secs(5);
/// How soon a failed file deletion is retried.
pub const CLEANUP_RETRY: Duration = Duration::from_secs(30);
/// The oldest major with `pg_read_all_data`, which the backup role needs.
pub const MIN_MAJOR: u32 = 14;

/// An Event about the backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What happened.
    pub message: String,
}

/// What to do for one backup, in the order [`run`] does it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// Labels (and the never-prune annotation) to apply: the backup lacks
    /// its database's labels.
    pub adopt: Option<BTreeMap<String, String>>,
    /// Add [`BACKUP_FILES_FINALIZER`].
    pub add_finalizer: bool,
    /// Create this Job (the backup's, or its cleanup).
    pub create: Option<Job>,
    /// Delete the Job of this name (and its pods).
    pub delete_job: Option<String>,
    /// The status to write, when it differs from the current one.
    pub status: Option<PostgresDBBackupStatus>,
    /// Events to publish on the backup.
    pub events: Vec<BackupEvent>,
    /// Remove [`BACKUP_FILES_FINALIZER`]: the files are gone.
    pub remove_finalizer: bool,
    /// When to look again without a change; `None` waits for one.
    pub requeue: Option<Duration>,
}

/// What a backup Job's termination message says when it succeeded.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    /// `server_version` of the server dumped.
    pub server_version: String,
    /// When the first database's snapshot was taken.
    #[serde(default)]
    pub snapshot_at: Option<String>,
    /// Databases dumped.
    pub databases: u32,
    /// Tables over all databases.
    pub tables: u32,
    /// Rows over all tables.
    pub rows: i64,
    /// Bytes of all files, the manifest included.
    pub bytes: i64,
}

/// A size for people: "512B", "12.4KiB", "3.0GiB".
pub fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    // Precision loss is irrelevant at one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

fn has_finalizer(backup: &PostgresDBBackup) -> bool {
    backup
        .finalizers()
        .iter()
        .any(|f| f == BACKUP_FILES_FINALIZER)
}

fn is_terminal(phase: Option<BackupPhase>) -> bool {
    matches!(phase, Some(BackupPhase::Completed | BackupPhase::Failed))
}

/// The `result` label of `pgdb_operator_backups_total` when writing
/// `next` ends `backup`: "completed" or "failed"; `None` when the backup
/// had already ended or does not end now. Counted once the status is
/// written, so a backup is counted once (a write whose answer was lost
/// and is not repeated goes uncounted: counters may miss, never double).
pub fn finished(backup: &PostgresDBBackup, next: &PostgresDBBackupStatus) -> Option<&'static str> {
    let before = backup.status.as_ref().and_then(|s| s.phase);
    if is_terminal(before) {
        return None;
    }
    match next.phase {
        Some(BackupPhase::Completed) => Some("completed"),
        Some(BackupPhase::Failed) => Some("failed"),
        _ => None,
    }
}

fn time(now: jiff::Timestamp) -> Time {
    Time(now)
}

/// The major of a `status.currentVersion` ("16", "16.4").
pub fn major_of(version: &str) -> Option<u32> {
    version
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The status with `phase` and its Ready condition; the condition keeps its
/// transition time unless its status changes.
fn with_phase(
    previous: &PostgresDBBackupStatus,
    mut next: PostgresDBBackupStatus,
    phase: BackupPhase,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> PostgresDBBackupStatus {
    next.phase = Some(phase);
    let status = if phase == BackupPhase::Completed {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let old = previous.conditions.iter().find(|c| c.type_ == READY);
    let since = match old {
        Some(c) if c.status == status.as_str() => c.last_transition_time.clone(),
        _ => time(now),
    };
    next.conditions.retain(|c| c.type_ != READY);
    next.conditions.push(Condition {
        type_: READY.into(),
        status: status.as_str().into(),
        reason: reason.into(),
        message: message.chars().take(1000).collect(),
        last_transition_time: since,
        observed_generation: None,
    });
    next
}

/// Sets `next` as the step's status when it differs from the backup's.
fn set_status(step: &mut Step, backup: &PostgresDBBackup, next: PostgresDBBackupStatus) {
    if backup.status.as_ref() != Some(&next) {
        step.status = Some(next);
    }
}

/// Decides what to do for `backup`, from what was read and the clock.
pub fn decide(backup: &PostgresDBBackup, observed: &Observed, now: jiff::Timestamp) -> Step {
    let mut step = Step::default();
    let status = backup.status.clone().unwrap_or_default();
    if backup.metadata.deletion_timestamp.is_some() {
        deletion::deleting(backup, &status, observed, &mut step);
        return step;
    }
    let labels = common_labels(&backup.spec.database);
    let labelled = labels
        .iter()
        .all(|(k, v)| backup.labels().get(k) == Some(v))
        && backup
            .annotations()
            .get(NEVER_PRUNE_ANNOTATION)
            .map(String::as_str)
            == Some("true");
    if !labelled {
        step.adopt = Some(labels);
    }
    step.add_finalizer = !has_finalizer(backup);
    match status.phase {
        Some(BackupPhase::Completed | BackupPhase::Failed) => {}
        Some(BackupPhase::Running) => {
            watch(backup, &status, status.clone(), observed, now, &mut step)
        }
        None | Some(BackupPhase::Pending) => start(backup, &status, observed, now, &mut step),
    }
    // A scheduled backup shows its slot in status too.
    let slot = scheduled_for(backup);
    if slot.is_some() {
        let mut next = step.status.clone().unwrap_or_else(|| status.clone());
        if next.scheduled_for != slot {
            next.scheduled_for = slot;
            step.status = Some(next);
        }
    }
    step
}

/// The schedule slot a scheduled backup was created for (its
/// [`SCHEDULED_FOR_ANNOTATION`]).
pub fn scheduled_for(backup: &PostgresDBBackup) -> Option<Time> {
    backup
        .annotations()
        .get(SCHEDULED_FOR_ANNOTATION)?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(Time)
}

fn pending(
    backup: &PostgresDBBackup,
    status: &PostgresDBBackupStatus,
    why: String,
    now: jiff::Timestamp,
    step: &mut Step,
) {
    let next = with_phase(
        status,
        status.clone(),
        BackupPhase::Pending,
        "Waiting",
        &why,
        now,
    );
    set_status(step, backup, next);
    step.requeue = Some(RECHECK);
}

fn fail(
    backup: &PostgresDBBackup,
    status: &PostgresDBBackupStatus,
    mut next: PostgresDBBackupStatus,
    error: String,
    now: jiff::Timestamp,
    step: &mut Step,
) {
    next.completed_at = Some(time(now));
    next.error = Some(error.clone());
    let next = with_phase(status, next, BackupPhase::Failed, "Failed", &error, now);
    set_status(step, backup, next);
    step.events.push(BackupEvent {
        type_: EventType::Warning,
        reason: "BackupFailed",
        message: error,
    });
    step.requeue = None;
}

/// A waiting backup: its turn, its database, what it needs; then its Job.
fn start(
    backup: &PostgresDBBackup,
    status: &PostgresDBBackupStatus,
    observed: &Observed,
    now: jiff::Timestamp,
    step: &mut Step,
) {
    let name = backup.name_any();
    let namespace = backup.namespace().unwrap_or_default();
    let database = &backup.spec.database;
    let job_name = backup_job_name(&name);
    let db = observed.get::<PostgresDB>(database);
    // Its Job exists: it was started by a reconcile whose status write was
    // lost. Follow it.
    if let Some(job) = observed.get::<Job>(&job_name) {
        let mut next = status.clone();
        next.job = Some(job_name);
        next.started_at = job.metadata.creation_timestamp.clone().or(Some(time(now)));
        if next.location.is_none() {
            next.location = db
                .as_ref()
                .and_then(|db| destination(db).ok())
                .map(|d| d.location(&namespace, database, &name));
        }
        watch(backup, status, next, observed, now, step);
        return;
    }
    let Some(db) = db else {
        let age = backup
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| now.duration_since(t.0).as_secs())
            .unwrap_or_default();
        if age > i64::try_from(MISSING_DATABASE_GRACE.as_secs()).unwrap_or(60) {
            fail(
                backup,
                status,
                status.clone(),
                format!(
                    "spec.database: PostgresDB {database} does not exist in namespace {namespace}"
                ),
                now,
                step,
            );
        } else {
            pending(
                backup,
                status,
                format!("waiting for PostgresDB {database} to exist"),
                now,
                step,
            );
        }
        return;
    };
    let mut others: Vec<PostgresDBBackup> = observed
        .all::<PostgresDBBackup>()
        .into_iter()
        .filter(|b| {
            b.spec.database == *database
                && b.name_any() != name
                && b.metadata.deletion_timestamp.is_none()
                && !is_terminal(b.status.as_ref().and_then(|s| s.phase))
        })
        .collect();
    if let Some(running) = others
        .iter()
        .find(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Running))
    {
        pending(
            backup,
            status,
            format!(
                "waiting for backup {} of the same database to finish: one backup of a database runs at a time",
                running.name_any()
            ),
            now,
            step,
        );
        return;
    }
    let order = |b: &PostgresDBBackup| {
        (
            b.metadata.creation_timestamp.clone().map(|t| t.0),
            b.name_any(),
        )
    };
    others.sort_by_key(order);
    if let Some(older) = others.first().filter(|o| order(o) < order(backup)) {
        pending(
            backup,
            status,
            format!(
                "waiting for the older backup {} of the same database to go first: one backup of a database runs at a time",
                older.name_any()
            ),
            now,
            step,
        );
        return;
    }
    let db_status = db.status.clone().unwrap_or_default();
    let ready = db_status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && ConditionStatus::is_true_in(c));
    let major = db_status.current_version.as_deref().and_then(major_of);
    let (true, Some(major)) = (ready, major) else {
        pending(
            backup,
            status,
            format!("waiting for PostgresDB {database} to be Ready"),
            now,
            step,
        );
        return;
    };
    if major < MIN_MAJOR {
        fail(
            backup,
            status,
            status.clone(),
            format!(
                "PostgresDB {database} runs PostgreSQL {major}, which has no pg_read_all_data role for a read-only backup role: backups need PostgreSQL {MIN_MAJOR} or later"
            ),
            now,
            step,
        );
        return;
    }
    let credentials = backup_credentials_secret(database);
    if observed.get::<Secret>(&credentials).is_none() {
        pending(
            backup,
            status,
            format!(
                "waiting for Secret {credentials} (the backup role's login), which PostgresDB {database}'s reconcile creates"
            ),
            now,
            step,
        );
        return;
    }
    let destination = match destination(&db) {
        Ok(d) => d,
        Err(problem) => {
            fail(backup, status, status.clone(), problem, now, step);
            return;
        }
    };
    match &destination {
        Destination::Volume { claim } => {
            if observed.get::<PersistentVolumeClaim>(claim).is_none() {
                pending(
                    backup,
                    status,
                    format!(
                        "waiting for PVC {claim} (the backup volume), which PostgresDB {database}'s reconcile creates"
                    ),
                    now,
                    step,
                );
                return;
            }
        }
        Destination::S3(s3) => {
            if let Err(problem) =
                s3_credentials_problem(observed, &s3.credentials_secret, &namespace)
            {
                fail(backup, status, status.clone(), problem, now, step);
                return;
            }
        }
    }
    let job = backup_job(backup, database, major, &destination);
    let location = destination.location(&namespace, database, &name);
    let mut next = status.clone();
    next.job = Some(job_name.clone());
    next.started_at = Some(time(now));
    next.location = Some(location.clone());
    next.error = None;
    let next = with_phase(
        status,
        next,
        BackupPhase::Running,
        "Running",
        &format!("Job {job_name} is dumping PostgresDB {database}"),
        now,
    );
    step.create = Some(job);
    set_status(step, backup, next);
    step.events.push(BackupEvent {
        type_: EventType::Normal,
        reason: "BackupStarted",
        message: format!(
            "started Job {job_name}: pg_dump of every database of PostgresDB {database} (PostgreSQL {major}) to {}",
            describe_location(&location)
        ),
    });
    step.requeue = Some(RECHECK);
}

/// Where the files go, from the database's spec.
pub fn destination(db: &PostgresDB) -> Result<Destination, String> {
    let dest = db
        .spec
        .backup
        .as_ref()
        .map(|b| b.destination.clone())
        .unwrap_or_default();
    match (dest.volume, dest.s3) {
        (Some(_), Some(_)) => {
            Err("spec.backup.destination: set either volume or s3, not both".into())
        }
        (_, Some(s3)) => Ok(Destination::S3(s3)),
        _ => Ok(job::volume_destination(&db.name_any())),
    }
}

/// Why the S3 credentials Secret cannot be used, if it cannot.
fn s3_credentials_problem(
    observed: &Observed,
    secret: &str,
    namespace: &str,
) -> Result<(), String> {
    let Some(found) = observed.get::<Secret>(secret) else {
        return Err(format!(
            "spec.backup.destination.s3.credentialsSecret: Secret {secret} does not exist in namespace {namespace}; it must hold the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ));
    };
    let data = found.data.unwrap_or_default();
    let string_data = found.string_data.unwrap_or_default();
    let missing: Vec<&str> = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .into_iter()
        .filter(|k| {
            data.get(*k).is_none_or(|v| v.0.is_empty())
                && string_data.get(*k).is_none_or(String::is_empty)
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "spec.backup.destination.s3.credentialsSecret: Secret {secret} has no {}; it must hold the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            missing.join(" and no ")
        ))
    }
}

/// Where the files are, for messages.
pub fn describe_location(location: &BackupLocation) -> String {
    match (&location.volume, &location.s3) {
        (Some(claim), _) => format!("PVC {claim}, folder {}", location.path),
        (_, Some(url)) => url.clone(),
        _ => location.path.clone(),
    }
}

/// Why a container of `pods` was killed, if one was (exit code 128 and
/// above: a signal, an OOM kill).
fn killed(pods: &[Pod], container: &str) -> Option<String> {
    pods.iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        let terminated = statuses
            .iter()
            .find(|c| c.name == container)?
            .state
            .as_ref()?
            .terminated
            .as_ref()?;
        (terminated.exit_code >= 128).then(|| {
            format!(
                "container {container} of pod {} was killed (exit code {}{}) before the backup completed",
                pod.name_any(),
                terminated.exit_code,
                terminated
                    .reason
                    .as_deref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            )
        })
    })
}

/// A running backup: its Job decides.
fn watch(
    backup: &PostgresDBBackup,
    status: &PostgresDBBackupStatus,
    next: PostgresDBBackupStatus,
    observed: &Observed,
    now: jiff::Timestamp,
    step: &mut Step,
) {
    let name = backup.name_any();
    let job_name = next.job.clone().unwrap_or_else(|| backup_job_name(&name));
    let pods = job_pods(observed, &job_name);
    let outcome = job_outcome(observed, &job_name, BACKUP_CONTAINER);
    let logs = format!("see kubectl logs job/{job_name}");
    if !outcome.is_finished() && outcome != JobOutcome::Absent {
        let restarted = pods.iter().find_map(|p| {
            let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
            let count = statuses.iter().map(|c| c.restart_count).max()?;
            (count > 0).then(|| (p.name_any(), count))
        });
        let problem = if let Some((pod, count)) = restarted {
            Some(format!(
                "pod {pod} of Job {job_name} restarted {count} time(s): a backup is not resumed halfway; create a new backup"
            ))
        } else if pods.len() > 1 {
            Some(format!(
                "Job {job_name} replaced its pod: a backup is not resumed halfway; create a new backup"
            ))
        } else if let Some(pod) = pods.iter().find(|p| p.is_deleting()) {
            Some(format!(
                "pod {} of Job {job_name} was deleted before the backup completed",
                pod.name_any()
            ))
        } else {
            let deadline = next.started_at.as_ref().map(|t| t.0).and_then(|t| {
                t.checked_add(jiff::SignedDuration::from_secs(
                    BACKUP_DEADLINE_SECONDS + 120,
                ))
                .ok()
            });
            deadline.filter(|d| now > *d).map(|_| {
                format!(
                    "the backup ran longer than its deadline of {}h; stopped Job {job_name}",
                    BACKUP_DEADLINE_SECONDS / 3600
                )
            })
        };
        if let Some(problem) = problem {
            step.delete_job = Some(job_name);
            fail(backup, status, next, problem, now, step);
            return;
        }
    }
    match outcome {
        JobOutcome::Absent => fail(
            backup,
            status,
            next,
            format!("Job {job_name} was deleted before the backup completed"),
            now,
            step,
        ),
        JobOutcome::PodLost => {
            step.delete_job = Some(job_name.clone());
            fail(
                backup,
                status,
                next,
                format!(
                    "the pod of Job {job_name} disappeared before the backup completed (deleted or evicted)"
                ),
                now,
                step,
            );
        }
        JobOutcome::Running | JobOutcome::Pending(None) => {
            let next = with_phase(
                status,
                next,
                BackupPhase::Running,
                "Running",
                &format!(
                    "Job {job_name} is dumping PostgresDB {}",
                    backup.spec.database
                ),
                now,
            );
            set_status(step, backup, next);
            step.requeue = Some(RECHECK);
        }
        JobOutcome::Pending(Some(why)) => {
            let next = with_phase(
                status,
                next,
                BackupPhase::Running,
                "JobPending",
                &format!("Job {job_name} has not started: {why}"),
                now,
            );
            set_status(step, backup, next);
            step.requeue = Some(RECHECK);
        }
        JobOutcome::Succeeded(message) => {
            match message
                .as_deref()
                .and_then(|m| serde_json::from_str::<JobSummary>(m).ok())
            {
                Some(summary) => complete(backup, status, next, &summary, observed, now, step),
                None => fail(
                    backup,
                    status,
                    next,
                    format!(
                        "Job {job_name} succeeded but left no readable summary ({}); {logs}",
                        message.unwrap_or_else(|| "no termination message".into())
                    ),
                    now,
                    step,
                ),
            }
        }
        JobOutcome::Failed {
            termination_message,
            condition_message,
        } => {
            let error = killed(&pods, BACKUP_CONTAINER)
                .map(|k| match &termination_message {
                    Some(last) => format!("{k}; its last output: {last}"),
                    None => k,
                })
                .or(termination_message)
                .unwrap_or_else(|| match condition_message {
                    Some(c) if !c.is_empty() => format!("Job {job_name} failed: {c}; {logs}"),
                    _ => format!("Job {job_name} failed; {logs}"),
                });
            fail(backup, status, next, error, now, step);
        }
        JobOutcome::DeadlineExceeded => fail(
            backup,
            status,
            next,
            format!(
                "the backup ran longer than its deadline of {}h: Kubernetes stopped Job {job_name} and deleted its pod (DeadlineExceeded)",
                BACKUP_DEADLINE_SECONDS / 3600
            ),
            now,
            step,
        ),
    }
}

fn complete(
    backup: &PostgresDBBackup,
    status: &PostgresDBBackupStatus,
    mut next: PostgresDBBackupStatus,
    summary: &JobSummary,
    observed: &Observed,
    now: jiff::Timestamp,
    step: &mut Step,
) {
    // A verified backup completed when its dump did.
    next.completed_at = Some(next.completed_at.clone().unwrap_or_else(|| time(now)));
    next.server_version = Some(summary.server_version.clone());
    next.size_bytes = Some(summary.bytes);
    next.size = Some(human_size(summary.bytes));
    next.summary = Some(DumpSummary {
        databases: summary.databases,
        tables: summary.tables,
        rows: summary.rows,
    });
    next.error = None;
    let location = next
        .location
        .as_ref()
        .map(describe_location)
        .unwrap_or_default();
    let message = format!(
        "dumped {} database(s), {} table(s), {} row(s) of PostgreSQL {} ({}) to {location}",
        summary.databases,
        summary.tables,
        summary.rows,
        summary.server_version,
        human_size(summary.bytes)
    );
    if verifying::verify_asked(observed, &backup.spec.database) {
        verifying::verify(backup, status, next, &message, observed, now, step);
        return;
    }
    let next = with_phase(
        status,
        next,
        BackupPhase::Completed,
        "Completed",
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
