//! The migration Job: what it runs, on which volumes, and how its outcome
//! reads in the upgrade's status.
//!
//! The Job runs [`MIGRATION_SCRIPT`] (`migrate.sh`, next to this file) in
//! the new major's image: fence writes on the old server, dump it with
//! `pg_dumpall` to the backup volume, initialise the new major on the new
//! data volume, restore, and verify every database table by table. Its
//! container's termination message carries the verification summary or
//! the reason it failed; [`migration_outcome`] words the Job's outcome
//! (read by `shared::job`) for conditions and Events.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use level1_install::api::{
    DATA_MOUNT, Names, PGDATA, PORT, PRIMARY_ORDINAL, container_security, env, pod_security,
    secret_env,
};
use shared::api::{PostgresDB, UpgradeStatus};
use shared::capability::Observed;
use shared::job::{JobOutcome, job_outcome};
use shared::keys::{ATTEMPT_ANNOTATION, COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY_LABEL};
use shared::names::MANAGED_BY;
use shared::volumes::claim_volume;

use crate::upgrade::major::names::attempt_text;
use crate::upgrade::versions::settings;

/// The Job's container.
pub const JOB_CONTAINER: &str = "upgrade";
/// Where the Job mounts the backup volume.
pub const BACKUP_MOUNT: &str = "/var/lib/postgresql/backup";
/// Where the Job keeps its socket, password file and lists (an emptyDir).
pub const WORK_MOUNT: &str = "/var/run/pgdb-upgrade";
/// The file on the new volume saying a migration into it has not completed.
pub const INCOMPLETE_MARKER: &str = ".pgdb-migration-incomplete";
/// The `app.kubernetes.io/component` of the Job and its pod.
pub const COMPONENT: &str = "major-upgrade";

/// What the Job runs, in the new major's image: dump, initdb, restore,
/// verify. Paths and hosts come from its environment.
pub const MIGRATION_SCRIPT: &str = include_str!("migrate.sh");

/// How the migration Job stands, worded for the upgrade's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Migration {
    /// No such Job.
    Absent,
    /// Its pod has not started running (why, when known).
    Pending(String),
    /// Its pod runs.
    Running,
    /// It succeeded; the verification summary.
    Succeeded(String),
    /// It failed; why.
    Failed(String),
}

impl Migration {
    /// Whether the Job has finished.
    pub fn is_finished(&self) -> bool {
        matches!(self, Migration::Succeeded(_) | Migration::Failed(_))
    }
}

/// How the migration Job named `name` stands, from the Job and its pods.
pub fn migration_outcome(observed: &Observed, name: &str) -> Migration {
    match job_outcome(observed, name, JOB_CONTAINER) {
        JobOutcome::Absent => Migration::Absent,
        JobOutcome::Running => Migration::Running,
        JobOutcome::Pending(Some(why)) => Migration::Pending(why),
        JobOutcome::Pending(None) | JobOutcome::PodLost => {
            Migration::Pending(format!("Job {name} has no running pod"))
        }
        JobOutcome::Succeeded(message) => Migration::Succeeded(message.unwrap_or_else(|| {
            format!(
                "Job {name} restored and verified every user table (see kubectl logs job/{name})"
            )
        })),
        JobOutcome::DeadlineExceeded => Migration::Failed(format!(
            "the migration ran longer than spec.upgrade.migrationTimeoutSeconds: Kubernetes stopped Job {name} and deleted its pod (DeadlineExceeded)"
        )),
        JobOutcome::Failed {
            termination_message: Some(message),
            ..
        } => Migration::Failed(message),
        JobOutcome::Failed {
            termination_message: None,
            condition_message: Some(condition),
        } => Migration::Failed(format!(
            "Job {name} failed: {condition} (see kubectl logs job/{name})"
        )),
        JobOutcome::Failed {
            termination_message: None,
            condition_message: None,
        } => Migration::Failed(format!("Job {name} failed (see kubectl logs job/{name})")),
    }
}

/// The labels of the Job's pod: the instance label (so the operator reads
/// the pod and its termination message) but not the labels the Services
/// and the StatefulSet select.
pub fn job_pod_labels(db: &PostgresDB) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE_LABEL.to_string(), db.name_any()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (COMPONENT_LABEL.to_string(), COMPONENT.to_string()),
    ])
}

/// The Job that dumps, restores and verifies. Built only from the recorded
/// status and names, so it stays the same while it runs (a Job's template
/// cannot change); `suspend` stops an abandoned one.
pub fn migration_job(db: &PostgresDB, up: &UpgradeStatus, suspend: bool) -> Option<Job> {
    let major = up.major.as_ref()?;
    let names = Names::of(db);
    let namespace = db.namespace().unwrap_or_else(|| "default".into());
    let old_server = names.pod_host(PRIMARY_ORDINAL, &namespace);
    let env = vec![
        env("PGHOST", &old_server),
        env("PGPORT", &PORT.to_string()),
        env("PGUSER", "postgres"),
        secret_env("PGPASSWORD", &names.superuser, "password"),
        env("PGDATABASE", "postgres"),
        env("PGCONNECT_TIMEOUT", "15"),
        env("PGDATA", PGDATA),
        env("DATA_MOUNT", DATA_MOUNT),
        env("DATA_CLAIM", &major.data_volume),
        env("WORK_DIR", WORK_MOUNT),
        env(
            "DUMP_FILE",
            &format!("{BACKUP_MOUNT}/{}.pg_dumpall.sql", major.job),
        ),
        env("FROM_VERSION", &up.from_version),
        env("TO_VERSION", &up.to_version),
        env("POSTGRES_INITDB_ARGS", "--data-checksums"),
    ];
    let container = Container {
        name: JOB_CONTAINER.into(),
        image: Some(major.to_image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), MIGRATION_SCRIPT.into()]),
        env: Some(env),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_MOUNT.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "backup".into(),
                mount_path: BACKUP_MOUNT.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "work".into(),
                mount_path: WORK_MOUNT.into(),
                ..Default::default()
            },
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(container_security()),
        ..Default::default()
    };
    Some(Job {
        metadata: ObjectMeta {
            name: Some(major.job.clone()),
            annotations: Some(BTreeMap::from([(
                ATTEMPT_ANNOTATION.to_string(),
                attempt_text(&up.started_at),
            )])),
            labels: Some(BTreeMap::from([(
                COMPONENT_LABEL.to_string(),
                COMPONENT.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            // Mutable on a Job, unlike its template: the spec's current value.
            active_deadline_seconds: settings(db).migration_timeout_seconds.map(i64::from),
            suspend: Some(suspend),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_pod_labels(db)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    enable_service_links: Some(false),
                    security_context: Some(pod_security()),
                    volumes: Some(vec![
                        claim_volume("data", &major.data_volume),
                        claim_volume("backup", &major.backup_volume),
                        Volume {
                            name: "work".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}
