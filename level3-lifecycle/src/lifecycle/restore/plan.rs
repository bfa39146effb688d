//! Where a restore stands, and what it changes in Level 1's StatefulSet.
//!
//! The restore runs in an init container of the database's own pod, before
//! the server container: [`init_container`] runs the restore-and-verify
//! script in the server's image with the server container's `POSTGRES_*`
//! and `APP_*` environment, on the same data volume, with the backup volume
//! mounted read-only (or, for a backup in S3, the bucket's location and
//! credentials). The script initialises the data directory as the image's
//! entrypoint would and restores into it; the entrypoint then finds a data
//! directory and starts the server on it. A marker on the data volume makes
//! the init container a no-op after a completed restore (a restarted pod
//! does not restore twice) and a failed one final.
//!
//! [`progress`] reads the init container's state and termination message
//! from the pod: Restoring while it has not finished, Verified when the
//! script's result passed, Failed otherwise. Verified and Failed are final
//! (what status.restore records is kept). Once Verified, the init container
//! is no longer part of the pod template: the pod restarts once without it,
//! so the database never depends on the source's backup volume again.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, Pod, PodSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use level1_install::api::{CONTAINER, DATA_MOUNT, Names, PRIMARY_ORDINAL, container_security, env};
use shared::api::PostgresDB;
use shared::backup::{RestorePhase, RestoreStatus};
use shared::capability::Observed;
use shared::volumes::{DATA_TEMPLATE, claim_volume};

use super::script::{RESTORE_SCRIPT, RestoreResult};
use super::source::Source;
use crate::lifecycle::backup_controller::job::{Destination, rclone_env};

/// The init container's name.
pub const INIT_CONTAINER: &str = "restore";
/// The pod volume holding the backup volume's claim.
pub const SOURCE_VOLUME: &str = "restore-source";
/// Where the init container mounts the backup volume (read-only).
pub const SOURCE_MOUNT: &str = "/var/lib/postgresql/restore-source";
/// The pod volume for the script's socket, lists and downloads.
pub const WORK_VOLUME: &str = "restore-work";
/// Where the init container mounts it.
pub const WORK_MOUNT: &str = "/var/run/pgdb-restore";
/// The environment variable naming the backup restored, which also tells
/// a live StatefulSet's restore apart.
pub const BACKUP_NAME_ENV: &str = "BACKUP_NAME";

/// The server container's variables the init container runs with, so the
/// data directory is initialised as the image's entrypoint would.
const SHARED_ENV: [&str; 8] = [
    "PGDATA",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_INITDB_ARGS",
    "POSTGRES_HOST_AUTH_METHOD",
    "APP_OWNER",
    "APP_DATABASE",
    "APP_PASSWORD",
];

/// The folder of the backup's files as the init container sees it.
pub fn backup_dir(source: &Source) -> String {
    let path = source.location.path.trim_matches('/');
    let folder = if path.is_empty() {
        source.backup.as_str()
    } else {
        path
    };
    format!("{SOURCE_MOUNT}/{folder}")
}

/// The restore's init container, from the server container `server` (its
/// image, environment and data mount).
pub fn init_container(server: &Container, source: &Source) -> Container {
    let mut environment: Vec<_> = server
        .env
        .iter()
        .flatten()
        .filter(|e| SHARED_ENV.contains(&e.name.as_str()))
        .cloned()
        .collect();
    environment.extend([
        env(BACKUP_NAME_ENV, &source.backup),
        env("WORK_DIR", WORK_MOUNT),
        env("MARKER_DIR", DATA_MOUNT),
    ]);
    let mut mounts: Vec<VolumeMount> = server
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name == DATA_TEMPLATE)
        .cloned()
        .collect();
    mounts.push(VolumeMount {
        name: WORK_VOLUME.into(),
        mount_path: WORK_MOUNT.into(),
        ..Default::default()
    });
    let (source_env, source_mounts) = source_access(source);
    environment.extend(source_env);
    mounts.extend(source_mounts);
    Container {
        name: INIT_CONTAINER.into(),
        image: server.image.clone(),
        command: Some(vec!["sh".into(), "-c".into(), RESTORE_SCRIPT.into()]),
        env: Some(environment),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(container_security()),
        ..Default::default()
    }
}

/// How a container reaches the backup's files: `BACKUP_DIR` on the backup
/// volume mounted read-only at [`SOURCE_MOUNT`] (the pod volume
/// [`SOURCE_VOLUME`], see [`init_volumes`]), or, for a backup in S3, the
/// bucket's location and credentials for the script to download the folder
/// into the work directory first.
pub fn source_access(source: &Source) -> (Vec<EnvVar>, Vec<VolumeMount>) {
    let location = &source.location;
    let mut environment = Vec::new();
    let mut mounts = Vec::new();
    match (&location.volume, &location.s3) {
        (Some(_), _) => {
            environment.push(env("BACKUP_DIR", &backup_dir(source)));
            mounts.push(VolumeMount {
                name: SOURCE_VOLUME.into(),
                mount_path: SOURCE_MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        (None, Some(url)) => {
            // The script downloads the folder first with rclone (see
            // `fetch_from_s3` in restore.sh), its remote `dest` configured
            // as the backup Job configures it, from the location recorded.
            environment.extend([
                env("BACKUP_S3_URL", url),
                env("S3_PATH", location.path.trim_matches('/')),
                env("BACKUP_DIR", &format!("{WORK_MOUNT}/backup")),
            ]);
            if let Some((Destination::S3(s3), _)) = Destination::of_location(location) {
                environment.extend(rclone_env(&s3));
            }
        }
        (None, None) => {}
    }
    (environment, mounts)
}

/// The pod volumes the init container adds.
pub fn init_volumes(source: &Source) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: WORK_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    if let Some(claim) = &source.location.volume {
        let mut volume = claim_volume(SOURCE_VOLUME, claim);
        if let Some(pvc) = volume.persistent_volume_claim.as_mut() {
            pvc.read_only = Some(true);
        }
        volumes.push(volume);
    }
    volumes
}

/// Adds the restore's init container and volumes to a pod spec (built by
/// Level 1), replacing any earlier ones of the restore's.
pub fn add_restore(spec: &mut PodSpec, source: &Source) {
    let Some(server) = spec
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)
        .cloned()
    else {
        return;
    };
    let init = spec.init_containers.get_or_insert_with(Vec::new);
    init.retain(|c| c.name != INIT_CONTAINER);
    init.insert(0, init_container(&server, source));
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| v.name != WORK_VOLUME && v.name != SOURCE_VOLUME);
    volumes.extend(init_volumes(source));
}

/// The pod spec of a StatefulSet, when it has one.
fn pod_spec(sts: &StatefulSet) -> Option<&PodSpec> {
    sts.spec.as_ref()?.template.spec.as_ref()
}

/// The backup a StatefulSet's restore init container restores, if it has one.
pub fn restoring_backup_in(sts: &StatefulSet) -> Option<String> {
    pod_spec(sts)?
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == INIT_CONTAINER)?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == BACKUP_NAME_ENV)?
        .value
        .clone()
}

/// The restore init container and its volumes as a live StatefulSet has
/// them: kept as they are while a restore whose backup object has gone since
/// is still under way.
pub fn live_restore(sts: &StatefulSet) -> Option<(Container, Vec<Volume>)> {
    let spec = pod_spec(sts)?;
    let init = spec
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == INIT_CONTAINER)?
        .clone();
    let volumes = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name == WORK_VOLUME || v.name == SOURCE_VOLUME)
        .cloned()
        .collect();
    Some((init, volumes))
}

/// What the init container of the database's pod reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitReport {
    /// No pod, or the container has not finished a run.
    Pending,
    /// It exited 0 with a passing result.
    Passed(RestoreResult),
    /// It failed (now, or in its previous run): why.
    Failed(String),
}

/// How the restore init container of the database's first pod stands.
pub fn init_report(db: &PostgresDB, observed: &Observed) -> InitReport {
    let names = Names::of(db);
    let Some(pod) = observed.get::<Pod>(&names.pod(PRIMARY_ORDINAL)) else {
        return InitReport::Pending;
    };
    let Some(status) = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|l| l.iter().find(|c| c.name == INIT_CONTAINER))
    else {
        return InitReport::Pending;
    };
    let terminated = status
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| {
            status
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
        });
    let Some(terminated) = terminated else {
        return InitReport::Pending;
    };
    let message = terminated.message.clone().unwrap_or_default();
    let result = RestoreResult::parse(&message);
    match result {
        Some(result) if terminated.exit_code == 0 && result.passed => InitReport::Passed(result),
        Some(result) => InitReport::Failed(result.message),
        None if terminated.exit_code == 0 => InitReport::Failed(format!(
            "the restore init container of pod {} exited without a result (see kubectl logs {} -c {INIT_CONTAINER})",
            names.pod(PRIMARY_ORDINAL),
            names.pod(PRIMARY_ORDINAL)
        )),
        None => InitReport::Failed(format!(
            "the restore init container of pod {} failed with exit code {}: {}",
            names.pod(PRIMARY_ORDINAL),
            terminated.exit_code,
            message.trim()
        )),
    }
}

/// What `status.restore` becomes at `now`, restoring `backup`: a final
/// phase recorded before is kept.
pub fn progress(
    db: &PostgresDB,
    observed: &Observed,
    backup: &str,
    now: jiff::Timestamp,
) -> RestoreStatus {
    if let Some(recorded) = db.status.as_ref().and_then(|s| s.restore.as_ref())
        && recorded.phase != RestorePhase::Restoring
    {
        return recorded.clone();
    }
    let names = Names::of(db);
    match init_report(db, observed) {
        InitReport::Pending => RestoreStatus {
            backup: backup.into(),
            phase: RestorePhase::Restoring,
            message: Some(format!(
                "the init container {INIT_CONTAINER} of pod {} restores backup {backup} into PVC {} and verifies every table against its manifest",
                names.pod(PRIMARY_ORDINAL),
                names.data_claim(PRIMARY_ORDINAL)
            )),
            completed_at: None,
        },
        InitReport::Passed(result) => RestoreStatus {
            backup: backup.into(),
            phase: RestorePhase::Verified,
            message: Some(result.message),
            completed_at: Some(Time(now)),
        },
        InitReport::Failed(why) => RestoreStatus {
            backup: backup.into(),
            phase: RestorePhase::Failed,
            message: Some(why),
            completed_at: Some(Time(now)),
        },
    }
}
