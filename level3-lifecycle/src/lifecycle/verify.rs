//! `spec.backup.verify`: proving each new backup restores, in a scratch
//! server, with the same script as a restore.
//!
//! A backup that was never restored is not a backup. With
//! `spec.backup.verify: true`, once a backup is Completed the backup
//! controller runs a Job that initialises a scratch data directory on an
//! emptyDir, restores the backup into it and compares every table the
//! manifest lists (row count, and digest where recorded) with
//! [`RESTORE_SCRIPT`], then reads its verdict into the backup's
//! `status.verification`. The scratch server listens on a Unix socket in the
//! pod only; nothing of the database or its volumes is touched, and the
//! backup volume is mounted read-only.
//!
//! The contract, for the backup controller (two pure functions):
//!
//! - [`verify_job`]`(db, backup)` builds the Job for a Completed backup
//!   of `db` (`None` when the backup records no location for its files, or
//!   the database's version cannot be read). The Job is named
//!   [`verify_job_name`]`(backup)`, labelled with the database's instance
//!   label and [`BACKUP_LABEL`] = the backup's name on the Job and its pod
//!   (so `Query::labelled::<Job>()` and `::<Pod>()` read them), runs
//!   once (`backoffLimit: 0`, `restartPolicy: Never`) in the database's
//!   image, within [`VERIFY_DEADLINE_SECONDS`]. The caller applies it (as
//!   owned by the `PostgresDB` or the `PostgresDBBackup`, its choice) and
//!   keeps it until it has read the result.
//! - [`verification`]`(observed, job, now)` reads that Job and its pod
//!   (observed by the instance label) into a [`Verification`]: `None`
//!   while it has not finished; `passed: true` with the script's summary
//!   when every table matched; `passed: false` with the first mismatch, the
//!   failing step's error, or the deadline otherwise. `verified_at` is
//!   `now`, the reconcile's clock. The caller records it once in the
//!   backup's status; a failed verification marks the backup Failed, as the
//!   issue asks.
//!
//! Where it stops: the scratch data directory is an emptyDir, so the node
//! needs room for a second copy of the data while the Job runs; a backup in
//! S3 is downloaded by the script with rclone, configured as the backup Job
//! configures it (see `restore::plan::source_access`).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use level1_install::api::{Names, container_security, env, pod_security, secret_env, spec_version};
use shared::api::PostgresDB;
use shared::backup::{PostgresDBBackup, Verification};
use shared::capability::Observed;
use shared::job::{JobOutcome, job_outcome};
use shared::keys::{BACKUP_LABEL, COMPONENT_LABEL};
use shared::names::common_labels;

use super::backup_controller::job::{backup_label_value, job_name};
use super::restore::plan::{WORK_MOUNT, WORK_VOLUME, init_volumes, source_access};
use super::restore::script::{RESTORE_SCRIPT, RestoreResult};
use super::restore::source::Source;

/// The Job's container.
pub const VERIFY_CONTAINER: &str = "verify";
/// The `app.kubernetes.io/component` of the Job and its pod.
pub const COMPONENT: &str = "backup-verify";
/// The scratch volume (an emptyDir) holding the scratch data directory.
pub const SCRATCH_VOLUME: &str = "scratch";
/// Where the Job mounts it.
pub const SCRATCH_MOUNT: &str = "/var/lib/postgresql/scratch";
/// How long a verification may run before Kubernetes stops it.
pub const VERIFY_DEADLINE_SECONDS: i64 = 6 * 3600;

/// The name of the Job verifying `backup`.
pub fn verify_job_name(backup: &str) -> String {
    job_name(backup, "verify")
}

/// The labels of the Job and its pod.
fn labels(db: &PostgresDB, backup: &str) -> BTreeMap<String, String> {
    let mut labels = common_labels(&db.name_any());
    labels.insert(COMPONENT_LABEL.into(), COMPONENT.into());
    labels.insert(BACKUP_LABEL.into(), backup_label_value(backup));
    labels
}

/// The Job restoring `backup` of `db` into a scratch server and comparing
/// every table with its manifest; see the module's contract.
pub fn verify_job(db: &PostgresDB, backup: &PostgresDBBackup) -> Option<Job> {
    let source = Source::of(backup)?;
    let image = match &db.spec.image {
        Some(image) => image.clone(),
        None => spec_version(db)?.official_image(),
    };
    let names = Names::of(db);
    let mut environment = vec![
        env("BACKUP_NAME", &source.backup),
        env("PGDATA", &format!("{SCRATCH_MOUNT}/pgdata")),
        env("WORK_DIR", WORK_MOUNT),
        // initdb needs a superuser password; the scratch server listens on
        // a socket in the pod only, and the database's own is at hand.
        secret_env("POSTGRES_PASSWORD", &names.superuser, "password"),
    ];
    let (source_env, source_mounts) = source_access(&source);
    environment.extend(source_env);
    let mut mounts = vec![
        VolumeMount {
            name: SCRATCH_VOLUME.into(),
            mount_path: SCRATCH_MOUNT.into(),
            ..Default::default()
        },
        VolumeMount {
            name: WORK_VOLUME.into(),
            mount_path: WORK_MOUNT.into(),
            ..Default::default()
        },
    ];
    mounts.extend(source_mounts);
    let mut volumes = vec![Volume {
        name: SCRATCH_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    volumes.extend(init_volumes(&source));
    let container = Container {
        name: VERIFY_CONTAINER.into(),
        image: Some(image),
        command: Some(vec!["sh".into(), "-c".into(), RESTORE_SCRIPT.into()]),
        env: Some(environment),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(container_security()),
        ..Default::default()
    };
    let labels = labels(db, &source.backup);
    Some(Job {
        metadata: ObjectMeta {
            name: Some(verify_job_name(&source.backup)),
            namespace: db.namespace(),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(VERIFY_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    enable_service_links: Some(false),
                    security_context: Some(pod_security()),
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The verdict of the verify Job named `job`, once it finished; see the
/// module's contract.
pub fn verification(observed: &Observed, job: &str, now: jiff::Timestamp) -> Option<Verification> {
    let (passed, message) = match job_outcome(observed, job, VERIFY_CONTAINER) {
        JobOutcome::Absent | JobOutcome::Pending(_) | JobOutcome::Running | JobOutcome::PodLost => {
            return None;
        }
        // The script exits 0 only when every table matched (the message
        // may be shortened past parsing, which changes nothing).
        JobOutcome::Succeeded(message) => (
            true,
            match message.as_deref() {
                Some(text) => RestoreResult::parse(text)
                    .map(|r| r.message)
                    .unwrap_or_else(|| text.to_string()),
                None => format!(
                    "Job {job} restored and verified the backup (see kubectl logs job/{job})"
                ),
            },
        ),
        JobOutcome::Failed {
            termination_message,
            condition_message,
        } => {
            let message = match termination_message.as_deref() {
                Some(text) => RestoreResult::parse(text)
                    .map(|r| r.message)
                    .unwrap_or_else(|| text.to_string()),
                None => format!(
                    "Job {job} failed: {} (see kubectl logs job/{job})",
                    condition_message.unwrap_or_else(|| "no reason given".into())
                ),
            };
            (false, format!("the backup does not restore: {message}"))
        }
        JobOutcome::DeadlineExceeded => (
            false,
            format!(
                "Job {job} ran longer than {VERIFY_DEADLINE_SECONDS}s: Kubernetes stopped it (DeadlineExceeded)"
            ),
        ),
    };
    Some(Verification {
        passed,
        message,
        verified_at: Time(now),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, Pod};
    use shared::backup::{
        BackupLocation, BackupPhase, PostgresDBBackupSpec, PostgresDBBackupStatus,
    };
    use shared::keys::JOB_NAME_LABEL;
    use shared::testing::{DbBuilder, ObservedBuilder, PodBuilder, at, meta};

    use super::*;

    fn backup() -> PostgresDBBackup {
        PostgresDBBackup {
            metadata: meta("orders-20261201-0300"),
            spec: PostgresDBBackupSpec {
                database: "orders".into(),
            },
            status: Some(PostgresDBBackupStatus {
                phase: Some(BackupPhase::Completed),
                location: Some(BackupLocation {
                    volume: Some("orders-backups".into()),
                    path: "/orders-20261201-0300/".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn finished(condition: &str, exit_code: i32, message: &str) -> (Job, Pod) {
        let job = Job {
            metadata: meta("orders-20261201-0300-verify"),
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: condition.into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = PodBuilder::named("orders-20261201-0300-verify-x")
            .label(JOB_NAME_LABEL, "orders-20261201-0300-verify")
            .phase(if exit_code == 0 {
                "Succeeded"
            } else {
                "Failed"
            })
            .container(
                VERIFY_CONTAINER,
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code,
                        message: Some(message.into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .build();
        (job, pod)
    }

    #[test]
    fn the_verify_job_restores_the_backup_from_its_volume_into_a_scratch_directory() {
        let db = DbBuilder::named("orders").version("15").build();
        let job = verify_job(&db, &backup()).expect("a Job");
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("orders-20261201-0300-verify")
        );
        let labels = job.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(BACKUP_LABEL).map(String::as_str),
            Some("orders-20261201-0300")
        );
        let spec = job.spec.expect("a spec");
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.expect("a pod spec");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("postgres:15"));
        let env: BTreeMap<_, _> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            env["BACKUP_DIR"],
            "/var/lib/postgresql/restore-source/orders-20261201-0300"
        );
        assert_eq!(env["PGDATA"], "/var/lib/postgresql/scratch/pgdata");
        assert!(
            !env.contains_key("MARKER_DIR"),
            "a scratch restore keeps no marker"
        );
        let volumes: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["scratch", "restore-work", "restore-source"]);
        let source = pod
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.persistent_volume_claim.clone());
        assert_eq!(
            source.map(|c| (c.claim_name, c.read_only)),
            Some(("orders-backups".into(), Some(true)))
        );
    }

    #[test]
    fn a_backup_without_a_location_gets_no_job() {
        let db = DbBuilder::named("orders").version("15").build();
        let mut backup = backup();
        backup.status = None;
        assert_eq!(verify_job(&db, &backup), None);
    }

    #[test]
    fn a_passing_job_verifies_the_backup() {
        let (job, pod) = finished(
            "Complete",
            0,
            r#"{"passed":true,"backup":"b","databases":2,"tables":3,"rows":42,"message":"restored and verified backup b: 2 databases, 3 tables, 42 rows"}"#,
        );
        let observed = ObservedBuilder::new().with(&job).with(&pod).build();
        let verdict =
            verification(&observed, "orders-20261201-0300-verify", at(50)).expect("finished");
        assert!(verdict.passed);
        assert!(verdict.message.contains("42 rows"));
        assert_eq!(verdict.verified_at, Time(at(50)));
    }

    #[test]
    fn a_failing_job_says_which_table_differs() {
        let (job, pod) = finished(
            "Failed",
            1,
            r#"{"passed":false,"backup":"b","databases":1,"tables":3,"rows":42,"message":"verification failed: table public.items of database app has 2 rows restored, the backup recorded 3","mismatch":{"database":"app","schema":"public","table":"items"}}"#,
        );
        let observed = ObservedBuilder::new().with(&job).with(&pod).build();
        let verdict =
            verification(&observed, "orders-20261201-0300-verify", at(50)).expect("finished");
        assert!(!verdict.passed);
        assert!(
            verdict.message.contains("public.items"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn a_job_still_running_has_no_verdict() {
        let job = Job {
            metadata: meta("orders-20261201-0300-verify"),
            ..Default::default()
        };
        let observed = ObservedBuilder::new().with(&job).build();
        assert_eq!(
            verification(&observed, "orders-20261201-0300-verify", at(50)),
            None
        );
        assert_eq!(
            verification(&ObservedBuilder::new().build(), "absent", at(50)),
            None
        );
    }
}
