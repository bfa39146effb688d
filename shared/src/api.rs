//! The `PostgresDB` custom resource: the one API every level serves.
//!
//! The spec is what a user asks for and the status is what the operator saw.
//! Doc comments become the CRD's field descriptions (`kubectl explain
//! postgresdb.spec`), and the `schemars` attributes become OpenAPI validation
//! the API server enforces before the operator ever sees an object. Checks that
//! need to look at the cluster (a storage shrink) or that the schema cannot
//! express live in the levels' `validate` steps instead.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `now` as status records it: a `Time` to the whole second, which is all
/// its RFC 3339 text on the wire keeps (so what a reconcile computes equals
/// what the next one reads back).
pub fn status_time(now: jiff::Timestamp) -> Time {
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

pub use crate::quantity::QUANTITY_PATTERN;
/// Pattern of `spec.version`: a major (`16`) or a major and minor (`16.4`).
pub const VERSION_PATTERN: &str = r"^[0-9]{1,2}(\.[0-9]{1,3})?$";
/// Pattern of a container image reference, as the kubelet parses it
/// (`[registry[:port]/]repository[:tag][@digest]`, the repository in
/// lowercase): `postgres:16`, `registry.example.com:5000/team/postgres:16.4`.
pub const IMAGE_PATTERN: &str = r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$";
/// Whether `image` is a container image reference ([`IMAGE_PATTERN`]).
pub fn is_image_reference(image: &str) -> bool {
    static PATTERN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        // The pattern is a constant checked by the tests below.
        regex::Regex::new(IMAGE_PATTERN).expect("IMAGE_PATTERN is a valid regex")
    });
    !image.is_empty() && image.len() <= 512 && PATTERN.is_match(image)
}
/// Pattern of a PostgreSQL identifier the operator creates (database, role).
pub const IDENTIFIER_PATTERN: &str = r"^[a-z_][a-z0-9_]*$";

/// A PostgreSQL database managed by the operator: one StatefulSet, its
/// volume, Services and generated credentials.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pgdb.example.com",
    version = "v1",
    kind = "PostgresDB",
    plural = "postgresdbs",
    shortname = "pgdb",
    namespaced,
    status = "PostgresDBStatus",
    derive = "PartialEq",
    doc = "A PostgreSQL database managed by the PostgresDB operator.",
    printcolumn = r#"{"name":"Requested","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Running","type":"string","jsonPath":".status.currentVersion"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Connections","type":"integer","priority":1,"description":"Client connections open (Level 4)","jsonPath":".status.insights.connections"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","priority":1,"description":"Connections clients may open (Level 4)","jsonPath":".status.insights.maxConnections"}"#,
    printcolumn = r#"{"name":"Storage%","type":"integer","priority":1,"description":"Data volume used, in percent (Level 4)","jsonPath":".status.insights.storageUsedPercent"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"date","priority":1,"description":"When the last successful backup completed (Level 4)","jsonPath":".status.insights.lastBackupTime"}"#,
    printcolumn = r#"{"name":"Instances","type":"integer","description":"Instances running (Level 5)","jsonPath":".status.highAvailability.instances"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","description":"The pod that is the primary (Level 5)","jsonPath":".status.currentPrimary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDBSpec {
    /// PostgreSQL version: a major version ("16") or a major and minor version
    /// ("16.4"). It selects the official `postgres` image tag of the same name
    /// unless `image` is set.
    #[schemars(regex(pattern = VERSION_PATTERN))]
    pub version: String,

    /// Container image to run instead of `postgres:<version>`. It must be
    /// built from the official image (same entrypoint, user id 999) and
    /// contain the version given in `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: Option<String>,

    /// The persistent volume holding the data directory.
    pub storage: StorageSpec,

    /// CPU and memory for the database container.
    #[serde(default = "ResourcesSpec::default_for_database")]
    pub resources: ResourcesSpec,

    /// The application database and the role that owns it, created when the
    /// data directory is first initialised.
    #[serde(default)]
    pub database: DatabaseSpec,

    /// postgresql.conf parameters, as strings (`max_connections: "200"`,
    /// `shared_buffers: "256MB"`). Parameters the operator manages itself
    /// (listen_addresses, port, hba_file, ...) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 200))]
    pub parameters: BTreeMap<String, String>,

    /// When true the operator changes nothing in the cluster for this
    /// database (it still reports status), so an administrator can work by
    /// hand. Set it back to false to resume reconciliation.
    #[serde(default)]
    pub paused: bool,

    /// How version changes are rolled out. Implemented from Level 2
    /// (seamless upgrades) on; a lower level reports it as not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeSpec>,

    /// Logical backups with pg_dump: where they go, when they are taken and
    /// how many are kept. Implemented from Level 3 (full lifecycle) on; a
    /// lower level reports it as not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::BackupSpec>,

    /// Initialise this new database from a backup, verified table by table
    /// before it reports Ready. Only for a database whose data volume does
    /// not exist yet. Implemented from Level 3 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<crate::backup::RestoreSpec>,

    /// What happens to the data volume and the backups when the PostgresDB
    /// is deleted: Retain (the default: keep both), Delete (delete both) or
    /// BackupThenDelete (take a last backup, keep the backups, delete the
    /// data volume). Implemented from Level 3 on; lower levels always retain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<crate::backup::DeletionPolicy>,

    /// How many instances run: one primary and `instances - 1` streaming
    /// replicas (hot standbys), each with its own volume. Changing it adds
    /// or removes replicas without touching the primary. Implemented from
    /// Level 5 (auto pilot) on; a lower level runs one instance and reports
    /// a value above 1 as not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: Option<i32>,

    /// The instance (pod name, `<name>-<ordinal>`) that should be the
    /// primary. When it names a healthy replica, the operator switches over
    /// to it without losing data: the replica catches up, the primary is
    /// demoted and the replica promoted. After a failover away from it, the
    /// operator switches back once it streams again. Unset, the operator
    /// keeps whichever instance is primary. Level 5 and above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,

    /// When a lost primary is replaced by a replica. Level 5 and above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::ha::FailoverSpec>,

    /// How commits reach the replicas: asynchronous (the default) or
    /// synchronous to a quorum. Level 5 and above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::ha::ReplicationSpec>,

    /// Replicas added and removed on read load, between `minInstances` and
    /// `maxInstances`; while set, `instances` is the operator's decision.
    /// Level 5 and above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<crate::autopilot::autoscaling::AutoscalingSpec>,

    /// `auto` derives shared_buffers, effective_cache_size, work_mem and the
    /// other memory and parallelism parameters from `resources.limits`;
    /// parameters set in `parameters` always win. Level 5 and above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<crate::autopilot::tuning::Tuning>,

    /// A baseline learned of the database's own behaviour (transactions,
    /// connections, query time, deadlocks, rollbacks), and the `Anomaly`
    /// condition when it deviates. Level 5 and above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly_detection: Option<crate::autopilot::anomaly::AnomalyDetectionSpec>,
}

/// How a new version is rolled out and when it is given up on.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// Seconds a new version has to become ready before the operator rolls
    /// back to the version that ran before.
    #[serde(default = "UpgradeSpec::default_health_timeout")]
    #[schemars(range(min = 10, max = 3600))]
    pub health_timeout_seconds: u32,

    /// Whether a change of major version (16 to 17) is carried out. A major
    /// upgrade is offline: writes stop, every database is dumped with
    /// pg_dumpall to a backup volume, restored into the new major on a new
    /// data volume and verified table by table before the Services switch
    /// to it. When false a major change is refused.
    #[serde(default)]
    pub allow_major: bool,

    /// Hours the previous major's data volume and the pre-upgrade dump are
    /// kept after a major upgrade completes, so it can be rolled back.
    #[serde(default = "UpgradeSpec::default_retention_hours")]
    #[schemars(range(min = 1, max = 8760))]
    pub retention_hours: u32,

    /// Seconds the migration of a major upgrade may run (the Job's
    /// activeDeadlineSeconds). Past it the Job is stopped and the upgrade
    /// rolled back. Unset, there is no limit: a migration takes about the
    /// time of a pg_dumpall and a restore, and writes stay stopped meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10))]
    pub migration_timeout_seconds: Option<u32>,
}

impl UpgradeSpec {
    fn default_health_timeout() -> u32 {
        300
    }

    fn default_retention_hours() -> u32 {
        168
    }
}

impl Default for UpgradeSpec {
    fn default() -> Self {
        Self {
            health_timeout_seconds: Self::default_health_timeout(),
            allow_major: false,
            retention_hours: Self::default_retention_hours(),
            migration_timeout_seconds: None,
        }
    }
}

/// The volume the data directory lives on.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of the volume, as a Kubernetes quantity ("1Gi", "500Mi"). It can
    /// grow (when the StorageClass allows expansion) but never shrink.
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub size: String,

    /// StorageClass of the volume; the cluster's default class when absent.
    /// It cannot change once the volume exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// Grow every instance's volume before it fills: `size` is then the
    /// smallest size, and the operator grows the volumes up to `maxSize`.
    /// Level 5 and above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_grow: Option<crate::autopilot::autogrow::AutoGrowSpec>,
}

/// Requests and limits of the database container, as in a Pod's `resources`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// What the scheduler reserves for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ComputeResources>,
    /// The most the container may use; above the memory limit it is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ComputeResources>,
}

impl ResourcesSpec {
    /// What a database gets when `resources` is left out: enough for a small
    /// development database, visible in the object because the API server
    /// applies this schema default.
    pub fn default_for_database() -> Self {
        Self {
            requests: Some(ComputeResources {
                cpu: Some("100m".into()),
                memory: Some("256Mi".into()),
            }),
            limits: Some(ComputeResources {
                cpu: None,
                memory: Some("512Mi".into()),
            }),
        }
    }
}

/// An amount of CPU and memory.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResources {
    /// CPU as a quantity: "500m" is half a core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub cpu: Option<String>,
    /// Memory as a quantity: "512Mi".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub memory: Option<String>,
}

/// The application database.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Name of the database to create.
    #[serde(default = "DatabaseSpec::default_name")]
    #[schemars(length(min = 1, max = 63), regex(pattern = IDENTIFIER_PATTERN))]
    pub name: String,
    /// Role that owns the database and whose credentials the operator
    /// publishes in the credentials Secret. It is not a superuser.
    #[serde(default = "DatabaseSpec::default_owner")]
    #[schemars(length(min = 1, max = 63), regex(pattern = IDENTIFIER_PATTERN))]
    pub owner: String,
}

impl DatabaseSpec {
    fn default_name() -> String {
        "app".into()
    }
    fn default_owner() -> String {
        "app".into()
    }
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        Self {
            name: Self::default_name(),
            owner: Self::default_owner(),
        }
    }
}

/// What the operator last observed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDBStatus {
    /// A one-word summary of the conditions: Creating, Ready, Updating,
    /// Degraded, Invalid or Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Ready, Progressing, Degraded and SpecImplemented, in the Kubernetes
    /// condition convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Database pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,

    /// The PostgreSQL version every pod runs, once a rollout has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,

    /// Where clients connect: the read-write Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,

    /// Name of the Secret holding the owner's credentials (username,
    /// password, dbname, host, port, uri).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,

    /// The version change in progress or last attempted (Level 2 and above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,

    /// How the last change of `spec.parameters` reached the server (Level 2
    /// and above): reloaded in place, or by a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<ConfigurationStatus>,

    /// The database's backups: the last one, the last successful one and
    /// the next scheduled slot (Level 3 and above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::BackupSummary>,

    /// The restore this database was initialised from and its verification
    /// (Level 3 and above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<crate::backup::RestoreStatus>,

    /// The key health figures of the operator's latest measurement, coarse
    /// enough not to change while the database is at rest (Level 4 and
    /// above; see `kubectl get pgdb -o wide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insights: Option<InsightsStatus>,

    /// The pod that is the primary, behind the read-write Service (Level 5
    /// and above; below it, the only pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,

    /// The instances, their roles and lag, and the last failover or
    /// switchover (Level 5 and above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_availability: Option<crate::ha::HighAvailabilityStatus>,

    /// What the auto pilot decided on its own (instances, volume size,
    /// derived parameters, a configuration rolled back, anomalies), each
    /// with what it measured (Level 5 and above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autopilot: Option<crate::autopilot::AutopilotStatus>,
}

/// The key health figures of a database (Level 4 and above), from the
/// operator's latest measurement. Exact, current values are in the
/// operator's metrics; these are rounded so a database at rest is not
/// written to.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InsightsStatus {
    /// Client connections open, in every state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<i64>,
    /// Connections clients may open: `max_connections` minus those
    /// reserved for superusers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    /// The data volume's used space, in whole percent of its capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_used_percent: Option<i64>,
    /// The data volume's capacity, as a quantity ("1Gi").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_capacity: Option<String>,
    /// When the last successful backup completed (Level 3's backups);
    /// `kubectl` shows its age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,
}

/// How parameter changes were applied.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    /// The parameters of the last change (set, changed or removed).
    pub changed: Vec<String>,
    /// Reload when every change could be applied by reloading the
    /// configuration; Restart when one needs a server restart.
    pub applied_by: ConfigurationMethod,
    /// Whether the running server has applied all of them.
    pub applied: bool,
    /// Parameters the server reports as waiting for a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restart: Vec<String>,
}

/// How a configuration change reaches the server.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConfigurationMethod {
    /// `pg_reload_conf()`: no restart, no dropped connection.
    Reload,
    /// A rolling restart of the pods.
    Restart,
}

/// A version change the operator is rolling out, or has given up on.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// The version that ran before.
    pub from_version: String,
    /// The image that ran before, restored on rollback.
    pub from_image: String,
    /// The version being rolled out.
    pub to_version: String,
    /// When the rollout started.
    pub started_at: Time,
    /// Rolling (minor), Migrating and Switching (major), Complete or RolledBack.
    pub phase: UpgradePhase,
    /// Seconds the database was observed not ready during the rollout.
    #[serde(default)]
    pub observed_downtime_seconds: u32,
    /// When the database was last seen becoming unready, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unready_since: Option<Time>,
    /// For a major upgrade: the volumes and the migration's progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<MajorUpgradeStatus>,
}

/// The parts of a major upgrade, all kept in the cluster so a restarted
/// operator carries on.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MajorUpgradeStatus {
    /// The PVC holding the previous major's data directory, kept for
    /// `spec.upgrade.retentionHours`.
    pub previous_data_volume: String,
    /// The PVC the new major's data directory is restored onto.
    pub data_volume: String,
    /// The PVC holding the pre-upgrade pg_dumpall output.
    pub backup_volume: String,
    /// The Job that dumps, restores and verifies.
    pub job: String,
    /// What the verification compared, once it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// When the previous data volume and the dump may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<Time>,
    /// The image the Job restores with and the database switches to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to_image: String,
    /// When the StatefulSet was switched to the new major; the
    /// health timeout counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<Time>,
    /// Why the upgrade was rolled back, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Set once `spec.version` has moved away from a rolled-back target:
    /// asking for the target again then starts a new attempt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

/// Where a version change stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpgradePhase {
    /// Pods are being moved to the new version.
    Rolling,
    /// Major upgrade: writes are stopped while the data is dumped, restored
    /// into the new major and verified.
    Migrating,
    /// Major upgrade: the database runs the new major on the new volume and
    /// must become ready.
    Switching,
    /// Every pod runs the new version and is ready.
    Complete,
    /// The new version did not become ready in time (or, for a major
    /// upgrade, its migration failed or was cancelled); the old one runs again.
    RolledBack,
}

/// A host and port clients connect to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// DNS name of the Service, resolvable inside the cluster.
    pub host: String,
    /// TCP port.
    pub port: i32,
}

/// The one-word summary shown by `kubectl get pgdb`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Objects are being created; the database has not been ready yet.
    Creating,
    /// The database accepts connections and nothing is in progress.
    Ready,
    /// A change is being rolled out, or the pods of a database that was
    /// ready before are starting again without a failure seen.
    Updating,
    /// A pod is failing (the `Degraded` condition is true).
    Degraded,
    /// The spec cannot be served; nothing was changed.
    Invalid,
    /// Reconciliation is paused by `spec.paused`.
    Paused,
}

impl PostgresDBSpec {
    /// The optional top-level spec sections this object uses, by field name.
    ///
    /// Level 1's fields are the base every level implements; the sections
    /// later levels add (upgrade policy, backups, monitoring, autopilot) are
    /// listed here as they are added, so a level that does not implement one
    /// can say so instead of silently ignoring it.
    pub fn sections_in_use(&self) -> Vec<&'static str> {
        let mut sections = Vec::new();
        if self.upgrade.is_some() {
            sections.push("upgrade");
        }
        if self.backup.is_some() {
            sections.push("backup");
        }
        if self.restore.is_some() {
            sections.push("restore");
        }
        if self.deletion_policy.is_some() {
            sections.push("deletionPolicy");
        }
        if self.instances.is_some_and(|n| n != 1) {
            sections.push("instances");
        }
        if self.primary.is_some() {
            sections.push("primary");
        }
        if self.failover.is_some() {
            sections.push("failover");
        }
        if self.replication.is_some() {
            sections.push("replication");
        }
        if self.autoscaling.is_some() {
            sections.push("autoscaling");
        }
        if self.storage.auto_grow.is_some() {
            sections.push("storage.autoGrow");
        }
        if self.tuning.is_some() {
            sections.push("tuning");
        }
        if self.anomaly_detection.is_some() {
            sections.push("anomalyDetection");
        }
        sections
    }
}
