//! Every label and annotation key the operator reads or writes, in one place.
//!
//! Keys are part of the operator's contract with the cluster: a restarted
//! operator, another level, or an administrator's `kubectl` finds objects
//! and their history by them. Defining each once keeps the levels agreeing
//! on the spelling; the values the labels carry are built in the `names`
//! and `volumes` modules.

/// `app.kubernetes.io/name` of every child (its value is `names::APP_NAME`).
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the database's name.
pub const APP_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by` of every child (its value is `names::MANAGED_BY`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/component`: what part of the database a child is
/// (a major upgrade's Job is `major-upgrade`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// The label naming the `PostgresDB` a child belongs to; the operator reads
/// a database's children with one selector on it.
pub const INSTANCE_LABEL: &str = "pgdb.example.com/instance";

/// The annotation holding the hash of what the operator last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "pgdb.example.com/applied-hash";
/// Pod template annotation: hash of the configuration, so a change restarts the pod.
pub const CONFIG_HASH_ANNOTATION: &str = "pgdb.example.com/config-hash";
/// Pod template annotation: the PostgreSQL version the pod runs.
pub const VERSION_ANNOTATION: &str = "pgdb.example.com/version";

/// Label of the operator's own volume claims saying what they hold
/// (see `volumes::VolumeRole`).
pub const VOLUME_LABEL: &str = "pgdb.example.com/volume";
/// Label of the operator's volume claims: the major version they were made for.
pub const MAJOR_LABEL: &str = "pgdb.example.com/major";
/// Annotation (value `"true"`) of an object the core never prunes, whatever
/// else holds: a level that makes backups puts it on them. Whatever carries
/// [`VOLUME_LABEL`] holds data and is never pruned either.
pub const NEVER_PRUNE_ANNOTATION: &str = "pgdb.example.com/never-prune";
/// Annotation of a data claim a migration was verified into: the Job's name.
pub const VERIFIED_ANNOTATION: &str = "pgdb.example.com/verified-by";
/// Annotation of a kept claim: when it may be deleted (RFC 3339, see the
/// `retention` module).
pub const RETAIN_UNTIL_ANNOTATION: &str = "pgdb.example.com/retain-until";
/// Annotation of a Job: the attempt (its start time) it belongs to.
pub const ATTEMPT_ANNOTATION: &str = "pgdb.example.com/attempt";
/// Selector label a fenced Service requires, which no pod carries.
pub const FENCE_LABEL: &str = "pgdb.example.com/fenced-by";

/// Label of a database pod (Level 5): its role, `primary` or `replica`
/// (see `ha`), which the read-write and read-only Services select on.
/// The operator sets it on the pods; the pod template does not carry it.
pub const ROLE_LABEL: &str = "pgdb.example.com/role";
/// [`ROLE_LABEL`]'s value on the primary.
pub const ROLE_PRIMARY: &str = "primary";
/// [`ROLE_LABEL`]'s value on a replica.
pub const ROLE_REPLICA: &str = "replica";
/// Set by the StatefulSet controller on its pods: the pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// Set by the Job controller on a Job's pods: the Job's name.
pub const JOB_NAME_LABEL: &str = "job-name";
/// Set by the StatefulSet controller on its pods: the revision they run.
pub const CONTROLLER_REVISION_LABEL: &str = "controller-revision-hash";

/// Label of a `PostgresDBBackup`'s Jobs and of the objects made for it: the
/// backup's name (Level 3).
pub const BACKUP_LABEL: &str = "pgdb.example.com/backup";
/// Annotation of a scheduled `PostgresDBBackup`: the schedule slot it was
/// created for (RFC 3339), so a restarted operator neither skips nor
/// repeats a slot.
pub const SCHEDULED_FOR_ANNOTATION: &str = "pgdb.example.com/scheduled-for";
/// Finalizer on a `PostgresDBBackup`: its files are deleted before the
/// object goes.
pub const BACKUP_FILES_FINALIZER: &str = "pgdb.example.com/backup-files";
/// Finalizer on a `PostgresDB` whose `deletionPolicy` has work to do before
/// it goes (a last backup, deleting volumes and backups).
pub const DELETION_POLICY_FINALIZER: &str = "pgdb.example.com/deletion-policy";
