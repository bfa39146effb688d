//! Backups as objects: the `PostgresDBBackup` custom resource, and the
//! sections of `PostgresDB` that ask for backups, restores and a deletion
//! policy (Level 3, full lifecycle).
//!
//! A backup is a logical one: every database of the server dumped with
//! `pg_dump` in one snapshot, plus roles and settings from
//! `pg_dumpall --globals-only`, written to a backup volume or an
//! S3-compatible bucket with a manifest beside the files (a SHA-256 per
//! file, and each table's row count and digest taken in the dump's
//! snapshot). The object says where the files are and what they hold in a
//! few numbers; the manifest holds the per-table detail, because a server
//! may hold thousands of tables and an object must stay small.
//!
//! These types are the API; what Level 3 does with them lives in its
//! `lifecycle` module. Lower levels serve the same `PostgresDB` and report
//! `backup`, `restore` and `deletionPolicy` as not implemented.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::QUANTITY_PATTERN;

/// Pattern of a retention age: a whole number of minutes, hours, days or
/// weeks ("90m", "36h", "7d", "4w").
pub const AGE_PATTERN: &str = r"^[1-9][0-9]{0,5}(m|h|d|w)$";
/// Pattern of a Kubernetes object name (DNS-1123 subdomain).
pub const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// `spec.backup`: logical backups of the whole server.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to take backups, in cron syntax: the five fields of a
    /// Kubernetes CronJob ("0 3 * * *", daily at 03:00 UTC), or six with
    /// seconds first. Times are UTC. Absent, backups are taken only when a
    /// `PostgresDBBackup` is created by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub schedule: Option<String>,

    /// Pauses the schedule; backups created by hand still run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// Which completed backups are kept; the others are deleted with their
    /// files after each successful backup. The newest completed backup is
    /// always kept. Absent, every backup is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,

    /// Where the files go: a backup volume (the default) or an
    /// S3-compatible bucket.
    #[serde(default)]
    pub destination: BackupDestination,

    /// Restore each new backup into a scratch server and compare every
    /// table with what the backup recorded; a backup that does not restore
    /// is marked Failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

/// `spec.backup.retention`: keep the last N completed backups, those
/// younger than an age, or (both set) a backup either keeps.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// How many completed backups to keep (failed ones do not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub keep_last: Option<u32>,

    /// Keep completed backups younger than this: "7d", "36h", "4w".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = AGE_PATTERN))]
    pub max_age: Option<String>,
}

/// `spec.backup.destination`: at most one of `volume` and `s3`; neither
/// means a backup volume of the default size.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// A PersistentVolumeClaim the operator creates for the database's
    /// backups and never deletes unless `deletionPolicy` is Delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<BackupVolume>,

    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
}

/// The backup volume.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupVolume {
    /// Its size, as a quantity; the data volume's size when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub size: Option<String>,

    /// Its StorageClass; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// An S3-compatible bucket. Files go under
/// `<prefix>/<namespace>/<database>/<backup>/`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// The endpoint URL ("https://s3.eu-west-1.amazonaws.com",
    /// "http://minio.storage:9000").
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: String,

    /// The bucket, which must exist.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,

    /// A path prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^[A-Za-z0-9!_.*'()/-]*$"))]
    pub prefix: Option<String>,

    /// The region to sign requests for; "us-east-1" when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub region: Option<String>,

    /// The Secret in the database's namespace holding the keys
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub credentials_secret: String,
}

/// `spec.restore`: exactly one of `fromBackup` and `fromDatabase`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// A completed `PostgresDBBackup` in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub from_backup: Option<String>,

    /// A `PostgresDB` in this namespace (it may be deleted) whose latest
    /// completed backup is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub from_database: Option<String>,
}

/// `spec.deletionPolicy`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the data volume and the backups.
    #[default]
    Retain,
    /// Delete the data volume and the backups (with their files).
    Delete,
    /// Take a last backup, then delete the data volume; the backups stay.
    BackupThenDelete,
}

/// `status.backup` of a `PostgresDB`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    /// The most recently started backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// The most recent completed backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// When that backup completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_at: Option<Time>,
    /// The next slot of `spec.backup.schedule`, unless suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_at: Option<Time>,
}

/// `status.restore` of a `PostgresDB` initialised from a backup.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The backup restored.
    pub backup: String,
    /// Restoring, Verified or Failed.
    pub phase: RestorePhase,
    /// What the verification compared, or why the restore failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the restore was verified or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// Where a restore stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RestorePhase {
    /// The backup is being restored into the new data directory.
    #[default]
    Restoring,
    /// Every table matched what the backup recorded.
    Verified,
    /// The restore or its verification failed; the database is not Ready.
    Failed,
}

/// A logical backup of one `PostgresDB`'s server.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pgdb.example.com",
    version = "v1",
    kind = "PostgresDBBackup",
    plural = "postgresdbbackups",
    shortname = "pgbackup",
    namespaced,
    status = "PostgresDBBackupStatus",
    derive = "PartialEq",
    doc = "A logical backup (pg_dump) of a PostgresDB, taken by the PostgresDB operator from Level 3 on.",
    printcolumn = r#"{"name":"Database","type":"string","jsonPath":".spec.database"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.size"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDBBackupSpec {
    /// The `PostgresDB` in this namespace to back up.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub database: String,
}

/// What the operator observed of a backup.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDBBackupStatus {
    /// Pending, Running, Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// The schedule slot this backup was taken for, when a schedule made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<Time>,
    /// When its Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The Job taking it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The PostgreSQL version dumped (`server_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Where the files are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<BackupLocation>,
    /// Total size of the files, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// The same size for people ("12.4MiB").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// What was dumped, counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<DumpSummary>,
    /// The result of restoring it into a scratch server
    /// (`spec.backup.verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Why it failed, in the words of the tool that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Ready (completed, and verified when asked) in the Kubernetes
    /// condition convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Where a backup stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    /// Waiting for its turn (one backup of a database runs at a time), for
    /// the database or for the backup volume.
    Pending,
    /// Its Job is dumping.
    Running,
    /// The files and the manifest are written.
    Completed,
    /// It did not complete; `error` says why.
    Failed,
}

/// Where a backup's files are: exactly one of `volume` and `s3`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupLocation {
    /// The backup volume (PVC) holding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The S3 URL of the backup's folder (`s3://bucket/prefix/...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    /// The S3 endpoint, when `s3` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Secret with the bucket's credentials, when `s3` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// The region requests are signed for, when `s3` is set and a region
    /// was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The backup's folder on the volume, or its key prefix in the bucket.
    pub path: String,
}

/// What a backup holds, counted at dump time.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DumpSummary {
    /// Databases dumped (templates excluded).
    pub databases: u32,
    /// Tables, over all databases.
    pub tables: u32,
    /// Rows, over all tables.
    pub rows: i64,
}

/// The result of restoring a backup and comparing it with its manifest.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Whether every table matched.
    pub passed: bool,
    /// What was compared, or the first mismatch.
    pub message: String,
    /// When it finished.
    pub verified_at: Time,
}
