//! The Jobs of a backup: the one that takes it ([`backup_job`], running
//! `backup.sh`) and the one that deletes its files ([`cleanup_job`],
//! running `cleanup.sh`), built as pure functions of the backup, where its
//! files go ([`Destination`]) and the server's major.
//!
//! The backup Job runs in the `postgres:<major>` image of the running
//! server, so pg_dump and pg_dumpall match it, and logs in through the
//! read-write Service as the backup role. For an S3 destination it uploads
//! with rclone: on a cluster an init container copies the binary of the
//! official `rclone/rclone` image into an emptyDir the dump container
//! runs it from; the sandbox runs no init containers and its containers
//! find the host's rclone (Debian's, installed by
//! `scripts/install-tools.sh`) on their `PATH`. The cleanup Job runs in
//! the rclone image, which has a shell, `rm` and rclone.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use level1_install::api::{PORT, container_security, env, pod_security, secret_env};
use shared::backup::{BackupLocation, PostgresDBBackup, S3Destination};
use shared::keys::{BACKUP_LABEL, COMPONENT_LABEL, MANAGED_BY_LABEL};
use shared::names::MANAGED_BY;
use shared::volumes::claim_volume;

use crate::lifecycle::names::{
    BACKUP_ROLE, GLOBALS_FILE, MANIFEST_FILE, backup_credentials_secret, backup_volume,
};

/// The container taking the backup (its termination message is the
/// summary, or the error).
pub const BACKUP_CONTAINER: &str = "backup";
/// The container deleting a backup's files.
pub const CLEANUP_CONTAINER: &str = "cleanup";
/// `app.kubernetes.io/component` of the backup Jobs and their pods.
pub const COMPONENT: &str = "backup";
/// `app.kubernetes.io/component` of the cleanup Jobs and their pods.
pub const CLEANUP_COMPONENT: &str = "backup-cleanup";
/// Where the backup volume is mounted.
pub const BACKUP_MOUNT: &str = "/var/lib/pgdb-backups";
/// The Job's scratch space (an emptyDir): the snapshot sessions, the
/// files on their way to S3.
pub const WORK_MOUNT: &str = "/var/run/pgdb-backup";
/// Where the init container puts rclone for the dump container.
pub const TOOLS_MOUNT: &str = "/var/run/pgdb-tools";
/// The official rclone image (the version Debian bookworm packages, which
/// the sandbox runs).
pub const RCLONE_IMAGE: &str = "rclone/rclone:1.60.1";
/// How long a backup may run before Kubernetes stops it
/// (`activeDeadlineSeconds`); the controller marks it Failed then.
pub const BACKUP_DEADLINE_SECONDS: i64 = 6 * 3600;
/// How long cleaning up may run.
pub const CLEANUP_DEADLINE_SECONDS: i64 = 3600;
/// How long pg_dump waits for a table's lock before the backup fails
/// (instead of queueing every later query of that table behind it).
pub const LOCK_WAIT_TIMEOUT: &str = "30s";
/// Tables up to this size on disk get a digest of their rows in the
/// manifest; larger ones their row count only.
pub const DIGEST_BYTES: u64 = 64 * 1024 * 1024;

/// `backup.sh`: dumps every database in one snapshot each, writes the
/// manifest, uploads to S3 when asked, and reports in its termination
/// message.
pub const BACKUP_SCRIPT: &str = include_str!("backup.sh");
/// `cleanup.sh`: deletes a backup's folder on the volume or in the bucket.
pub const CLEANUP_SCRIPT: &str = include_str!("cleanup.sh");
/// `manifest.awk`: the manifest's JSON from the files and table facts.
pub const MANIFEST_AWK: &str = include_str!("manifest.awk");
/// The per-table facts query, shared with restores.
pub const TABLE_FACTS_SQL: &str = include_str!("../table_facts.sql");

/// Where a backup's files go, resolved from the database's spec when the
/// backup starts and kept in its status for everything after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A folder of the backup volume.
    Volume {
        /// The PVC.
        claim: String,
    },
    /// A folder of an S3 bucket.
    S3(S3Destination),
}

/// The backup's folder on the volume (relative to its root).
pub fn volume_path(backup: &str) -> String {
    format!("{backup}/")
}

/// The backup's key prefix in the bucket:
/// `<prefix>/<namespace>/<database>/<backup>/`.
pub fn s3_path(prefix: Option<&str>, namespace: &str, database: &str, backup: &str) -> String {
    let prefix = prefix.unwrap_or_default().trim_matches('/');
    if prefix.is_empty() {
        format!("{namespace}/{database}/{backup}/")
    } else {
        format!("{prefix}/{namespace}/{database}/{backup}/")
    }
}

impl Destination {
    /// Where the files of `backup` (of `database` in `namespace`) are.
    pub fn location(&self, namespace: &str, database: &str, backup: &str) -> BackupLocation {
        match self {
            Destination::Volume { claim } => BackupLocation {
                volume: Some(claim.clone()),
                path: volume_path(backup),
                ..Default::default()
            },
            Destination::S3(s3) => {
                let path = s3_path(s3.prefix.as_deref(), namespace, database, backup);
                BackupLocation {
                    s3: Some(format!("s3://{}/{path}", s3.bucket)),
                    endpoint: Some(s3.endpoint.clone()),
                    credentials_secret: Some(s3.credentials_secret.clone()),
                    region: s3.region.clone(),
                    path,
                    ..Default::default()
                }
            }
        }
    }

    /// The destination a recorded location names (for the cleanup, which
    /// must work when the database is gone).
    pub fn of_location(location: &BackupLocation) -> Option<(Self, String)> {
        if let Some(claim) = &location.volume {
            return Some((
                Destination::Volume {
                    claim: claim.clone(),
                },
                location.path.clone(),
            ));
        }
        let url = location.s3.as_deref()?;
        let bucket = url.strip_prefix("s3://")?.split('/').next()?.to_string();
        Some((
            Destination::S3(S3Destination {
                endpoint: location.endpoint.clone()?,
                bucket,
                prefix: None,
                region: location.region.clone(),
                credentials_secret: location.credentials_secret.clone()?,
            }),
            location.path.clone(),
        ))
    }
}

/// The name of a Job made for `backup`: `<backup>-<suffix>`, shortened
/// with a hash of the full name when that would pass the 63 characters a
/// Job's name may have (its pods carry it in a label).
pub fn job_name(backup: &str, suffix: &str) -> String {
    let full = format!("{backup}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let keep = 63 - suffix.len() - 10;
    let head: String = backup.chars().take(keep).collect();
    format!(
        "{}-{:08x}-{suffix}",
        head.trim_end_matches(['-', '.']),
        fnv(backup)
    )
}

/// The label value naming a backup on its Jobs and pods (a label value has
/// at most 63 characters).
pub fn backup_label_value(backup: &str) -> String {
    if backup.len() <= 63 {
        backup.to_string()
    } else {
        job_name(backup, "b")
    }
}

fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// The name of the Job taking `backup`.
pub fn backup_job_name(backup: &str) -> String {
    job_name(backup, "backup")
}

/// The name of the Job deleting the files of `backup`.
pub fn cleanup_job_name(backup: &str) -> String {
    job_name(backup, "cleanup")
}

fn labels(backup: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (BACKUP_LABEL.to_string(), backup_label_value(backup)),
        (COMPONENT_LABEL.to_string(), component.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ])
}

fn owner(backup: &PostgresDBBackup) -> Option<OwnerReference> {
    backup.controller_owner_ref(&())
}

/// The rclone remote `dest:` as environment variables (no config file),
/// and `S3_BUCKET`: how the backup Job, its cleanup and a restore or
/// verification reading the backup from S3 all reach the bucket.
pub fn rclone_env(s3: &S3Destination) -> Vec<EnvVar> {
    vec![
        env("RCLONE_CONFIG_DEST_TYPE", "s3"),
        env("RCLONE_CONFIG_DEST_PROVIDER", "Other"),
        env("RCLONE_CONFIG_DEST_ENDPOINT", &s3.endpoint),
        env(
            "RCLONE_CONFIG_DEST_REGION",
            s3.region.as_deref().unwrap_or("us-east-1"),
        ),
        env("RCLONE_CONFIG_DEST_FORCE_PATH_STYLE", "true"),
        secret_env(
            "RCLONE_CONFIG_DEST_ACCESS_KEY_ID",
            &s3.credentials_secret,
            "AWS_ACCESS_KEY_ID",
        ),
        secret_env(
            "RCLONE_CONFIG_DEST_SECRET_ACCESS_KEY",
            &s3.credentials_secret,
            "AWS_SECRET_ACCESS_KEY",
        ),
        env("S3_BUCKET", &s3.bucket),
    ]
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn job(
    backup: &PostgresDBBackup,
    name: String,
    component: &str,
    deadline: i64,
    pod: PodSpec,
) -> Job {
    let backup_name = backup.name_any();
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: backup.namespace(),
            labels: Some(labels(&backup_name, component)),
            owner_references: owner(backup).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&backup_name, component)),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Job taking `backup` of the database `database` (its read-write
/// Service), whose server runs `major`, into `destination`.
pub fn backup_job(
    backup: &PostgresDBBackup,
    database: &str,
    major: u32,
    destination: &Destination,
) -> Job {
    let backup_name = backup.name_any();
    let namespace = backup.namespace().unwrap_or_else(|| "default".into());
    let mut vars = vec![
        env("PGHOST", &format!("{database}.{namespace}.svc")),
        env("PGPORT", &PORT.to_string()),
        env("PGUSER", BACKUP_ROLE),
        secret_env(
            "PGPASSWORD",
            &backup_credentials_secret(database),
            "password",
        ),
        env("PGDATABASE", "postgres"),
        env("PGCONNECT_TIMEOUT", "15"),
        env("PGAPPNAME", "pgdb-backup"),
        env("BACKUP_NAME", &backup_name),
        env("DATABASE_NAME", database),
        env("WORK_DIR", WORK_MOUNT),
        env("TOOLS_DIR", TOOLS_MOUNT),
        env("GLOBALS_FILE", GLOBALS_FILE),
        env("MANIFEST_FILE", MANIFEST_FILE),
        env("LOCK_WAIT_TIMEOUT", LOCK_WAIT_TIMEOUT),
        env("DIGEST_BYTES", &DIGEST_BYTES.to_string()),
        env("TABLE_FACTS_SQL", TABLE_FACTS_SQL),
        env("MANIFEST_AWK", MANIFEST_AWK),
    ];
    let mut mounts = vec![mount("work", WORK_MOUNT)];
    let mut volumes = vec![empty_dir("work")];
    let mut init_containers = None;
    match destination {
        Destination::Volume { claim } => {
            vars.push(env("DESTINATION", "volume"));
            vars.push(env("OUT_DIR", &format!("{BACKUP_MOUNT}/{backup_name}")));
            mounts.push(mount("backups", BACKUP_MOUNT));
            volumes.push(claim_volume("backups", claim));
        }
        Destination::S3(s3) => {
            vars.push(env("DESTINATION", "s3"));
            vars.push(env("OUT_DIR", &format!("{WORK_MOUNT}/files")));
            vars.push(env(
                "S3_PATH",
                &s3_path(s3.prefix.as_deref(), &namespace, database, &backup_name),
            ));
            vars.extend(rclone_env(s3));
            mounts.push(mount("tools", TOOLS_MOUNT));
            volumes.push(empty_dir("tools"));
            init_containers = Some(vec![Container {
                name: "rclone".into(),
                image: Some(RCLONE_IMAGE.into()),
                command: Some(vec![
                    "cp".into(),
                    "/usr/local/bin/rclone".into(),
                    format!("{TOOLS_MOUNT}/rclone"),
                ]),
                volume_mounts: Some(vec![mount("tools", TOOLS_MOUNT)]),
                security_context: Some(container_security()),
                ..Default::default()
            }]);
        }
    }
    let container = Container {
        name: BACKUP_CONTAINER.into(),
        image: Some(format!("postgres:{major}")),
        command: Some(vec!["sh".into(), "-c".into(), BACKUP_SCRIPT.into()]),
        env: Some(vars),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(container_security()),
        ..Default::default()
    };
    job(
        backup,
        backup_job_name(&backup_name),
        COMPONENT,
        BACKUP_DEADLINE_SECONDS,
        PodSpec {
            restart_policy: Some("Never".into()),
            init_containers,
            containers: vec![container],
            enable_service_links: Some(false),
            security_context: Some(pod_security()),
            volumes: Some(volumes),
            ..Default::default()
        },
    )
}

/// The Job deleting the files of `backup` at `path` of `destination`.
pub fn cleanup_job(backup: &PostgresDBBackup, destination: &Destination, path: &str) -> Job {
    let backup_name = backup.name_any();
    let mut vars = vec![env("BACKUP_NAME", &backup_name)];
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    match destination {
        Destination::Volume { claim } => {
            vars.push(env("DESTINATION", "volume"));
            vars.push(env(
                "TARGET_DIR",
                &format!("{BACKUP_MOUNT}/{}", path.trim_end_matches('/')),
            ));
            vars.push(env("BACKUP_ROOT", BACKUP_MOUNT));
            mounts.push(mount("backups", BACKUP_MOUNT));
            volumes.push(claim_volume("backups", claim));
        }
        Destination::S3(s3) => {
            vars.push(env("DESTINATION", "s3"));
            vars.push(env("S3_PATH", path));
            vars.extend(rclone_env(s3));
        }
    }
    let container = Container {
        name: CLEANUP_CONTAINER.into(),
        image: Some(RCLONE_IMAGE.into()),
        command: Some(vec!["sh".into(), "-c".into(), CLEANUP_SCRIPT.into()]),
        env: Some(vars),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(container_security()),
        ..Default::default()
    };
    job(
        backup,
        cleanup_job_name(&backup_name),
        CLEANUP_COMPONENT,
        CLEANUP_DEADLINE_SECONDS,
        PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![container],
            enable_service_links: Some(false),
            security_context: Some(pod_security()),
            volumes: Some(volumes),
            ..Default::default()
        },
    )
}

/// The claim a volume destination of `database` writes to.
pub fn volume_destination(database: &str) -> Destination {
    Destination::Volume {
        claim: backup_volume(database),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_fit_a_label_value_and_stay_distinct() {
        assert_eq!(backup_job_name("orders-1"), "orders-1-backup");
        let long = "a".repeat(200);
        let other = format!("{}b", "a".repeat(199));
        let name = backup_job_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-backup"));
        assert_ne!(name, backup_job_name(&other));
        assert!(backup_label_value(&long).len() <= 63);
    }

    #[test]
    fn s3_paths_put_each_database_s_backups_in_a_folder_of_their_own() {
        assert_eq!(
            s3_path(Some("/team/pg/"), "prod", "orders", "b1"),
            "team/pg/prod/orders/b1/"
        );
        assert_eq!(s3_path(None, "prod", "orders", "b1"), "prod/orders/b1/");
    }

    #[test]
    fn a_recorded_location_names_its_destination_again() {
        let s3 = Destination::S3(S3Destination {
            endpoint: "http://s3:9000".into(),
            bucket: "backups".into(),
            prefix: Some("pg".into()),
            region: Some("eu-west-1".into()),
            credentials_secret: "keys".into(),
        });
        let location = s3.location("prod", "orders", "b1");
        assert_eq!(
            location.s3.as_deref(),
            Some("s3://backups/pg/prod/orders/b1/")
        );
        let (again, path) = Destination::of_location(&location).expect("names one");
        assert_eq!(path, "pg/prod/orders/b1/");
        match again {
            Destination::S3(again) => {
                assert_eq!(again.bucket, "backups");
                assert_eq!(again.credentials_secret, "keys");
                assert_eq!(again.region.as_deref(), Some("eu-west-1"));
            }
            other => panic!("expected S3, got {other:?}"),
        }
        let volume = volume_destination("orders").location("prod", "orders", "b1");
        assert_eq!(volume.volume.as_deref(), Some("orders-backups"));
        assert_eq!(volume.path, "b1/");
    }
}
