//! Unit tests of the backup controller's decisions.

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, PersistentVolumeClaim, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::ApiResource;
use shared::backup::{
    BackupDestination, BackupPhase, BackupSpec, PostgresDBBackup, PostgresDBBackupSpec,
    PostgresDBBackupStatus, S3Destination,
};
use shared::capability::Observed;
use shared::conditions::READY;
use shared::keys::{
    BACKUP_FILES_FINALIZER, INSTANCE_LABEL, JOB_NAME_LABEL, NEVER_PRUNE_ANNOTATION,
};
use shared::names::common_labels;
use shared::testing::{DbBuilder, ObservedBuilder, PodBuilder, at, login_secret, meta, put};

use super::job::{BACKUP_CONTAINER, CLEANUP_CONTAINER, backup_job_name, cleanup_job_name};
use super::*;

const NOW: i64 = 1_000_000;

/// Builds a `PostgresDBBackup` of `orders` in `shop`.
struct BackupBuilder(PostgresDBBackup);

impl BackupBuilder {
    fn named(name: &str) -> Self {
        let mut backup = PostgresDBBackup::new(
            name,
            PostgresDBBackupSpec {
                database: "orders".into(),
            },
        );
        backup.metadata.namespace = Some("shop".into());
        backup.metadata.uid = Some(format!("uid-{name}"));
        backup.metadata.creation_timestamp = Some(Time(at(NOW - 10)));
        Self(backup)
    }

    /// Labelled and finalized, as the controller leaves it.
    fn adopted(name: &str) -> Self {
        let mut b = Self::named(name);
        b.0.metadata.labels = Some(common_labels("orders"));
        b.0.metadata.annotations =
            Some([(NEVER_PRUNE_ANNOTATION.to_string(), "true".to_string())].into());
        b.0.metadata.finalizers = Some(vec![BACKUP_FILES_FINALIZER.into()]);
        b
    }

    fn created(mut self, seconds: i64) -> Self {
        self.0.metadata.creation_timestamp = Some(Time(at(seconds)));
        self
    }

    fn phase(mut self, phase: BackupPhase) -> Self {
        let status = self.0.status.get_or_insert_with(Default::default);
        status.phase = Some(phase);
        if phase != BackupPhase::Pending {
            status.job = Some(backup_job_name(
                &self.0.metadata.name.clone().unwrap_or_default(),
            ));
            status.started_at = Some(Time(at(NOW - 60)));
            status.location = Some(job::volume_destination("orders").location(
                "shop",
                "orders",
                self.0.metadata.name.as_deref().unwrap_or_default(),
            ));
        }
        self
    }

    fn deleting(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(Time(at(NOW - 1)));
        self
    }

    fn build(self) -> PostgresDBBackup {
        self.0
    }
}

fn ready_db(version: &str) -> PostgresDB {
    let mut db = DbBuilder::named("orders").running(Some(version)).build();
    if let Some(status) = db.status.as_mut() {
        status.conditions.push(Condition {
            type_: READY.into(),
            status: "True".into(),
            reason: "Ready".into(),
            message: String::new(),
            last_transition_time: Time(at(0)),
            observed_generation: None,
        });
    }
    db
}

fn claim(name: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(name),
        ..Default::default()
    }
}

/// A Ready database running 15, with the backup role's Secret and volume.
fn ready() -> ObservedBuilder {
    ObservedBuilder::new()
        .with(&ready_db("15"))
        .with(&login_secret(
            "orders-backup-credentials",
            "pgdb_backup",
            "pw",
        ))
        .with(&claim("orders-backups"))
}

fn job_with(name: &str, status: JobStatus) -> Job {
    Job {
        metadata: meta(name),
        status: Some(status),
        ..Default::default()
    }
}

fn terminated(code: i32, message: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
            message: Some(message.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running_state() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}

/// What was observed while the backup `b1`'s Job ran: the Job with
/// `status` and its pod's container in `state`.
fn job_observed(
    builder: ObservedBuilder,
    job: &str,
    container: &str,
    status: JobStatus,
    state: ContainerState,
    phase: &str,
) -> Observed {
    builder
        .with(&job_with(job, status))
        .with(
            &PodBuilder::named(&format!("{job}-x1"))
                .label(JOB_NAME_LABEL, job)
                .phase(phase)
                .container(container, state)
                .build(),
        )
        .build()
}

fn succeeded() -> JobStatus {
    JobStatus {
        succeeded: Some(1),
        conditions: Some(vec![JobCondition {
            type_: "Complete".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn failed() -> JobStatus {
    JobStatus {
        failed: Some(1),
        conditions: Some(vec![JobCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("BackoffLimitExceeded".into()),
            message: Some("Job has reached the specified backoff limit".into()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn active() -> JobStatus {
    JobStatus {
        active: Some(1),
        ..Default::default()
    }
}

fn status_of(step: &Step) -> &PostgresDBBackupStatus {
    step.status.as_ref().expect("a status is written")
}

fn ready_message(status: &PostgresDBBackupStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[test]
fn a_backup_made_by_hand_is_labelled_with_its_database_and_gets_the_files_finalizer() {
    let step = decide(
        &BackupBuilder::named("b1").build(),
        &ready().build(),
        at(NOW),
    );
    let labels = step.adopt.expect("adopted");
    assert_eq!(
        labels.get(INSTANCE_LABEL).map(String::as_str),
        Some("orders")
    );
    assert!(step.add_finalizer);
    let again = decide(
        &BackupBuilder::adopted("b1").build(),
        &ready().build(),
        at(NOW),
    );
    assert!(again.adopt.is_none() && !again.add_finalizer);
}

#[test]
fn a_ready_database_s_backup_starts_a_job_of_its_major_logged_in_as_the_backup_role() {
    let step = decide(
        &BackupBuilder::adopted("b1").build(),
        &ready().build(),
        at(NOW),
    );
    let job = step.create.clone().expect("a Job");
    assert_eq!(job.metadata.name.as_deref(), Some("b1-backup"));
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod");
    let container = &pod.containers[0];
    assert_eq!(container.name, BACKUP_CONTAINER);
    assert_eq!(container.image.as_deref(), Some("postgres:15"));
    let env = container.env.clone().unwrap_or_default();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(value("PGUSER").as_deref(), Some("pgdb_backup"));
    assert_eq!(value("PGHOST").as_deref(), Some("orders.shop.svc"));
    assert_eq!(value("DESTINATION").as_deref(), Some("volume"));
    assert_eq!(
        job.metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].name.clone()),
        Some("b1".into()),
        "the Job goes with its backup"
    );
    assert_eq!(job.spec.as_ref().and_then(|s| s.backoff_limit), Some(0));
    let status = status_of(&step);
    assert_eq!(status.phase, Some(BackupPhase::Running));
    assert_eq!(status.started_at, Some(Time(at(NOW))));
    let location = status.location.clone().expect("location");
    assert_eq!(location.volume.as_deref(), Some("orders-backups"));
    assert_eq!(location.path, "b1/");
    assert_eq!(step.events[0].reason, "BackupStarted");
}

#[test]
fn a_backup_waits_for_its_database_then_fails_when_it_never_appears() {
    let alone = ObservedBuilder::new().build();
    let young = decide(&BackupBuilder::adopted("b1").build(), &alone, at(NOW));
    assert_eq!(status_of(&young).phase, Some(BackupPhase::Pending));
    assert!(young.create.is_none());
    let old = decide(
        &BackupBuilder::adopted("b1").created(NOW - 600).build(),
        &alone,
        at(NOW),
    );
    let status = status_of(&old);
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    assert!(
        status
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("PostgresDB orders does not exist")
    );
    let not_ready = ObservedBuilder::new()
        .with(&DbBuilder::named("orders").running(Some("15")).build())
        .build();
    let waiting = decide(&BackupBuilder::adopted("b1").build(), &not_ready, at(NOW));
    assert_eq!(status_of(&waiting).phase, Some(BackupPhase::Pending));
    assert!(ready_message(status_of(&waiting)).contains("to be Ready"));
}

#[test]
fn one_backup_of_a_database_runs_at_a_time_and_the_oldest_waiting_goes_first() {
    let running = BackupBuilder::adopted("b0")
        .phase(BackupPhase::Running)
        .build();
    let observed = ready().with(&running).build();
    let step = decide(&BackupBuilder::adopted("b1").build(), &observed, at(NOW));
    assert!(step.create.is_none());
    assert!(ready_message(status_of(&step)).contains("waiting for backup b0"));

    let older = BackupBuilder::adopted("b-older").created(NOW - 100).build();
    let newer = BackupBuilder::adopted("b-newer").created(NOW - 50).build();
    let observed = ready().with(&older).with(&newer).build();
    assert!(decide(&newer, &observed, at(NOW)).create.is_none());
    assert!(decide(&older, &observed, at(NOW)).create.is_some());
    // Finished backups do not hold anyone up.
    let done = BackupBuilder::adopted("b-done")
        .created(NOW - 500)
        .phase(BackupPhase::Completed)
        .build();
    let observed = ready().with(&done).with(&newer).build();
    assert!(decide(&newer, &observed, at(NOW)).create.is_some());
}

#[test]
fn a_server_without_pg_read_all_data_fails_the_backup_saying_which_major_is_needed() {
    let observed = ObservedBuilder::new()
        .with(&ready_db("13"))
        .with(&login_secret(
            "orders-backup-credentials",
            "pgdb_backup",
            "pw",
        ))
        .with(&claim("orders-backups"))
        .build();
    let step = decide(&BackupBuilder::adopted("b1").build(), &observed, at(NOW));
    assert_eq!(status_of(&step).phase, Some(BackupPhase::Failed));
    assert!(
        status_of(&step)
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("14 or later")
    );
}

fn s3_db() -> PostgresDB {
    let mut db = ready_db("15");
    db.spec.backup = Some(BackupSpec {
        destination: BackupDestination {
            s3: Some(S3Destination {
                endpoint: "http://s3.storage:9000".into(),
                bucket: "backups".into(),
                prefix: Some("pg".into()),
                region: None,
                credentials_secret: "s3-keys".into(),
            }),
            volume: None,
        },
        ..Default::default()
    });
    db
}

fn s3_secret(keys: &[&str]) -> Secret {
    Secret {
        metadata: meta("s3-keys"),
        data: Some(
            keys.iter()
                .map(|k| (k.to_string(), ByteString(b"x".to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[test]
fn missing_s3_credentials_fail_the_backup_naming_the_field_and_the_keys() {
    let base = || {
        ObservedBuilder::new().with(&s3_db()).with(&login_secret(
            "orders-backup-credentials",
            "pgdb_backup",
            "pw",
        ))
    };
    let step = decide(
        &BackupBuilder::adopted("b1").build(),
        &base().build(),
        at(NOW),
    );
    let error = status_of(&step).error.clone().unwrap_or_default();
    assert!(
        error.contains(
            "spec.backup.destination.s3.credentialsSecret: Secret s3-keys does not exist"
        ),
        "{error}"
    );
    assert!(step.create.is_none());
    let half = base().with(&s3_secret(&["AWS_ACCESS_KEY_ID"])).build();
    let step = decide(&BackupBuilder::adopted("b1").build(), &half, at(NOW));
    let error = status_of(&step).error.clone().unwrap_or_default();
    assert!(error.contains("has no AWS_SECRET_ACCESS_KEY"), "{error}");

    let whole = base()
        .with(&s3_secret(&["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]))
        .build();
    let step = decide(&BackupBuilder::adopted("b1").build(), &whole, at(NOW));
    let job = step.create.clone().expect("a Job");
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    assert_eq!(
        pod.init_containers.map(|c| c[0].image.clone()),
        Some(Some(job::RCLONE_IMAGE.into()))
    );
    let location = status_of(&step).location.clone().expect("location");
    assert_eq!(
        location.s3.as_deref(),
        Some("s3://backups/pg/shop/orders/b1/")
    );
}

#[test]
fn a_job_that_succeeded_completes_the_backup_with_its_summary() {
    let summary = r#"{"serverVersion":"15.10","snapshotAt":"2026-12-01T00:00:00Z","databases":2,"tables":3,"rows":1500,"bytes":1536}"#;
    let observed = job_observed(
        ready(),
        "b1-backup",
        BACKUP_CONTAINER,
        succeeded(),
        terminated(0, summary),
        "Succeeded",
    );
    let backup = BackupBuilder::adopted("b1")
        .phase(BackupPhase::Running)
        .build();
    let step = decide(&backup, &observed, at(NOW));
    let status = status_of(&step);
    assert_eq!(status.phase, Some(BackupPhase::Completed));
    assert_eq!(status.server_version.as_deref(), Some("15.10"));
    assert_eq!(status.size_bytes, Some(1536));
    assert_eq!(status.size.as_deref(), Some("1.5KiB"));
    assert_eq!(
        status.summary,
        Some(DumpSummary {
            databases: 2,
            tables: 3,
            rows: 1500
        })
    );
    assert_eq!(status.completed_at, Some(Time(at(NOW))));
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("Ready");
    assert_eq!(condition.status, "True");
    assert_eq!(step.events[0].reason, "BackupCompleted");
    assert_eq!(step.requeue, None);
}

#[test]
fn a_job_that_failed_fails_the_backup_with_the_tool_s_own_words() {
    let words = "dumping database app with pg_dump failed: pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout";
    let observed = job_observed(
        ready(),
        "b1-backup",
        BACKUP_CONTAINER,
        failed(),
        terminated(1, words),
        "Failed",
    );
    let backup = BackupBuilder::adopted("b1")
        .phase(BackupPhase::Running)
        .build();
    let step = decide(&backup, &observed, at(NOW));
    let status = status_of(&step);
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    assert_eq!(status.error.as_deref(), Some(words));
    assert_eq!(step.events[0].type_, EventType::Warning);
}

#[test]
fn a_backup_never_stays_running_when_its_job_or_pod_is_gone_killed_restarted_or_late() {
    let backup = BackupBuilder::adopted("b1")
        .phase(BackupPhase::Running)
        .build();
    let error = |observed: &Observed, now: i64| {
        let step = decide(&backup, observed, at(now));
        assert_eq!(
            status_of(&step).phase,
            Some(BackupPhase::Failed),
            "{step:?}"
        );
        (
            status_of(&step).error.clone().unwrap_or_default(),
            step.delete_job.clone(),
        )
    };
    // The Job deleted.
    let (gone, _) = error(&ready().build(), NOW);
    assert!(gone.contains("Job b1-backup was deleted"), "{gone}");
    // Its pod lost.
    let (lost, delete) = error(&ready().with(&job_with("b1-backup", active())).build(), NOW);
    assert!(lost.contains("disappeared"), "{lost}");
    assert_eq!(delete.as_deref(), Some("b1-backup"));
    // Its container killed.
    let killed = job_observed(
        ready(),
        "b1-backup",
        BACKUP_CONTAINER,
        failed(),
        terminated(137, "12:00 dumping database app"),
        "Failed",
    );
    let (message, _) = error(&killed, NOW);
    assert!(message.contains("was killed (exit code 137"), "{message}");
    // Its pod restarted.
    let mut pod = PodBuilder::named("b1-backup-x1")
        .label(JOB_NAME_LABEL, "b1-backup")
        .phase("Running")
        .container(BACKUP_CONTAINER, running_state())
        .build();
    if let Some(statuses) = pod
        .status
        .as_mut()
        .and_then(|s| s.container_statuses.as_mut())
    {
        statuses[0].restart_count = 1;
    }
    let mut restarted = ready().with(&job_with("b1-backup", active())).build();
    put(&mut restarted, &pod);
    let (message, delete) = error(&restarted, NOW);
    assert!(message.contains("restarted 1 time"), "{message}");
    assert_eq!(delete.as_deref(), Some("b1-backup"));
    // Past its deadline (Kubernetes's, or the controller's own reading).
    let mut late = failed();
    if let Some(c) = late.conditions.as_mut() {
        c[0].reason = Some("DeadlineExceeded".into());
    }
    let (message, _) = error(&ready().with(&job_with("b1-backup", late)).build(), NOW);
    assert!(message.contains("deadline"), "{message}");
    let running = job_observed(
        ready(),
        "b1-backup",
        BACKUP_CONTAINER,
        active(),
        running_state(),
        "Running",
    );
    let (message, delete) = error(&running, NOW + job::BACKUP_DEADLINE_SECONDS + 1000);
    assert!(message.contains("deadline"), "{message}");
    assert_eq!(delete.as_deref(), Some("b1-backup"));
    // Still running in time: stays Running, looked at again soon.
    let step = decide(&backup, &running, at(NOW));
    assert_eq!(status_of(&step).phase, Some(BackupPhase::Running));
    assert_eq!(step.requeue, Some(RECHECK));
    let mut written = backup.clone();
    written.status = step.status.clone();
    let again = decide(&written, &running, at(NOW + 5));
    assert!(
        again.status.is_none(),
        "nothing written while it runs: {again:?}"
    );
}

#[test]
fn a_finished_backup_at_rest_writes_nothing() {
    let backup = BackupBuilder::adopted("b1")
        .phase(BackupPhase::Completed)
        .build();
    let step = decide(&backup, &ready().build(), at(NOW));
    assert_eq!(step, Step::default());
}

#[test]
fn deleting_a_backup_stops_its_job_then_deletes_its_files_then_lets_it_go() {
    let running = BackupBuilder::adopted("b1")
        .phase(BackupPhase::Running)
        .deleting()
        .build();
    let observed = job_observed(
        ready(),
        "b1-backup",
        BACKUP_CONTAINER,
        active(),
        running_state(),
        "Running",
    );
    let step = decide(&running, &observed, at(NOW));
    assert_eq!(step.delete_job.as_deref(), Some("b1-backup"));
    assert!(step.create.is_none() && !step.remove_finalizer);

    let done = BackupBuilder::adopted("b1")
        .phase(BackupPhase::Completed)
        .deleting()
        .build();
    let mut observed = ready().build();
    observed.mark_queried(
        &ApiResource::erase::<PersistentVolumeClaim>(&()),
        "orders-backups",
    );
    let step = decide(&done, &observed, at(NOW));
    let cleanup = step.create.expect("a cleanup Job");
    assert_eq!(cleanup.metadata.name, Some(cleanup_job_name("b1")));
    let env = cleanup
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod")
        .containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "TARGET_DIR"
                && e.value.as_deref() == Some("/var/lib/pgdb-backups/b1"))
    );
    assert!(!step.remove_finalizer);

    let cleaned = job_observed(
        ready(),
        &cleanup_job_name("b1"),
        CLEANUP_CONTAINER,
        succeeded(),
        terminated(0, "deleted"),
        "Succeeded",
    );
    let step = decide(&done, &cleaned, at(NOW));
    assert!(step.remove_finalizer);
    assert_eq!(step.events[0].reason, "BackupFilesDeleted");

    let not_cleaned = job_observed(
        ready(),
        &cleanup_job_name("b1"),
        CLEANUP_CONTAINER,
        failed(),
        terminated(1, "Permission denied"),
        "Failed",
    );
    let step = decide(&done, &not_cleaned, at(NOW));
    assert!(!step.remove_finalizer);
    assert!(step.events[0].message.contains("Permission denied"));
    assert_eq!(
        step.delete_job,
        Some(cleanup_job_name("b1")),
        "retried with a new Job"
    );
}

#[test]
fn a_backup_that_never_started_or_whose_volume_is_gone_goes_at_once() {
    let never = BackupBuilder::adopted("b1").deleting().build();
    assert!(decide(&never, &ready().build(), at(NOW)).remove_finalizer);
    let done = BackupBuilder::adopted("b1")
        .phase(BackupPhase::Completed)
        .deleting()
        .build();
    let mut no_volume = ObservedBuilder::new().build();
    no_volume.mark_queried(
        &ApiResource::erase::<PersistentVolumeClaim>(&()),
        "orders-backups",
    );
    let step = decide(&done, &no_volume, at(NOW));
    assert!(step.remove_finalizer, "{step:?}");
    assert!(step.create.is_none());
}

#[test]
fn sizes_read_as_people_write_them() {
    assert_eq!(human_size(512), "512B");
    assert_eq!(human_size(1536), "1.5KiB");
    assert_eq!(human_size(13_002_342), "12.4MiB");
    assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0GiB");
    assert_eq!(major_of("16.4"), Some(16));
    assert_eq!(major_of("15"), Some(15));
}

#[test]
fn a_scheduled_backup_shows_its_slot_in_status() {
    let mut backup = BackupBuilder::adopted("orders-20261201-0300")
        .phase(BackupPhase::Completed)
        .build();
    backup.metadata.annotations.get_or_insert_default().insert(
        shared::keys::SCHEDULED_FOR_ANNOTATION.into(),
        "2026-12-01T03:00:00Z".into(),
    );
    let step = decide(&backup, &ready().build(), at(NOW));
    let slot = status_of(&step).scheduled_for.clone().expect("the slot");
    assert_eq!(slot.0.to_string(), "2026-12-01T03:00:00Z");
    backup.status = step.status.clone();
    assert_eq!(decide(&backup, &ready().build(), at(NOW)), Step::default());
}

mod verify;

#[test]
fn a_backup_is_counted_once_by_result_when_its_status_first_ends_it() {
    let running = BackupBuilder::adopted("b1")
        .phase(BackupPhase::Running)
        .build();
    let ended = |phase| PostgresDBBackupStatus {
        phase: Some(phase),
        ..Default::default()
    };
    assert_eq!(
        finished(&running, &ended(BackupPhase::Completed)),
        Some("completed")
    );
    assert_eq!(
        finished(&running, &ended(BackupPhase::Failed)),
        Some("failed")
    );
    assert_eq!(finished(&running, &ended(BackupPhase::Running)), None);
    let pending = BackupBuilder::adopted("b2")
        .phase(BackupPhase::Pending)
        .build();
    assert_eq!(
        finished(&pending, &ended(BackupPhase::Failed)),
        Some("failed")
    );
    // Already ended: a later status write (its slot, say) is no new backup.
    let completed = BackupBuilder::adopted("b3")
        .phase(BackupPhase::Completed)
        .build();
    assert_eq!(finished(&completed, &ended(BackupPhase::Completed)), None);
    let failed = BackupBuilder::adopted("b4")
        .phase(BackupPhase::Failed)
        .build();
    assert_eq!(finished(&failed, &ended(BackupPhase::Failed)), None);
}
