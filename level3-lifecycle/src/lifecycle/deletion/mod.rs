//! What deleting a `PostgresDB` does to its data: `spec.deletionPolicy`.
//!
//! - **Retain** (the default): nothing. The database goes as at Levels 1
//!   and 2: its owned children through garbage collection, its data
//!   volumes, backup volume and `PostgresDBBackup` objects stay (nothing
//!   owns them), so a database re-created under the same name finds its
//!   data, and a new one can restore from the backups.
//! - **Delete**: the database's `PostgresDBBackup` objects are deleted
//!   (the backup controller's finalizer removes each one's files first),
//!   then the data volumes (the StatefulSet's claim-template claims and the
//!   operator's `<db>-data-<major>` claims, a previous major's kept one
//!   included), the pre-upgrade dumps (`<db>-backup-<major>`) and, once no
//!   backup object is left, the backup volume.
//! - **BackupThenDelete**: a last `PostgresDBBackup` ([`final_backup_name`])
//!   is created; once it is Completed the data volumes are deleted. The
//!   backups, the backup volume and the pre-upgrade dumps stay. A final
//!   backup that Failed keeps everything (never delete data without its
//!   last backup): a Warning says so each time, and the user either
//!   deletes the failed backup (a new one is taken) or changes the policy.
//!
//! The core carries this out through its finalizer (`shared::finalizer`):
//! [`Deletion::needs_finalizer`] asks for it unless the policy is Retain,
//! and [`Deletion::finalize`] is the pure step run while the database is
//! being deleted ([`finalize`] decides from what was observed and says
//! Done or Pending(why)). A volume is deleted only once no pod mounts it:
//! while one does, the step deletes the StatefulSet (the server stops, the
//! data is flushed) and waits. Pending until every object to delete is
//! gone or being deleted; a claim still held by a pod's volume protection
//! goes when the pod does.
//!
//! Where it stops: what Kubernetes deletes with the database (Secrets,
//! Services, the StatefulSet) is garbage collection's. Changing the policy
//! while the database is being deleted takes effect at the next reconcile
//! (Retain lets it go at once, keeping what is left).

#[cfg(test)]
mod tests;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use level1_install::api::Names;
use shared::PostgresDB;
use shared::backup::{BackupPhase, DeletionPolicy, PostgresDBBackup, PostgresDBBackupSpec};
use shared::capability::{Capability, Desired, EventType, Finalized, Observed, Query};
use shared::error::Error;
use shared::ext::PvcExt;
use shared::keys::NEVER_PRUNE_ANNOTATION;
use shared::volumes::{VolumeRole, template_claim_ordinal};

use super::names::backup_volume;

/// The deletion-policy capability.
pub struct Deletion;

/// The policy in force: Retain when the spec says nothing.
pub fn policy(db: &PostgresDB) -> DeletionPolicy {
    db.spec.deletion_policy.unwrap_or_default()
}

/// The name of the last backup BackupThenDelete takes: the database's name
/// and when its deletion was asked for (UTC, to the second), so a database
/// re-created under the same name and deleted again takes a new one
/// instead of finding the old one Completed.
pub fn final_backup_name(db: &PostgresDB) -> Option<String> {
    let at = db.metadata.deletion_timestamp.as_ref()?.0;
    Some(format!(
        "{}-final-{}",
        db.name_any(),
        at.strftime("%Y%m%d%H%M%S")
    ))
}

/// The last backup BackupThenDelete creates: labelled as the database's
/// (the core adds the common labels), not owned by it (it outlives the
/// database), and never pruned.
pub fn final_backup(db: &PostgresDB, name: &str) -> PostgresDBBackup {
    let mut backup = PostgresDBBackup::new(
        name,
        PostgresDBBackupSpec {
            database: db.name_any(),
        },
    );
    backup.metadata = ObjectMeta {
        name: Some(name.to_string()),
        annotations: Some([(NEVER_PRUNE_ANNOTATION.to_string(), "true".to_string())].into()),
        ..Default::default()
    };
    backup
}

/// The claims holding the database's data directories: the StatefulSet's
/// claim-template claims and the operator's data claims (every major's).
pub fn data_claims(db: &PostgresDB, observed: &Observed) -> Vec<PersistentVolumeClaim> {
    let names = Names::of(db);
    observed
        .all::<PersistentVolumeClaim>()
        .into_iter()
        .filter(|c| {
            template_claim_ordinal(&names.primary, &c.name_any()).is_some()
                || VolumeRole::of(c) == Some(VolumeRole::Data)
        })
        .collect()
}

/// The operator's pre-upgrade dump claims (`<db>-backup-<major>`).
pub fn dump_claims(observed: &Observed) -> Vec<PersistentVolumeClaim> {
    observed
        .all::<PersistentVolumeClaim>()
        .into_iter()
        .filter(|c| VolumeRole::of(c) == Some(VolumeRole::Backup))
        .collect()
}

/// The database's `PostgresDBBackup` objects.
pub fn backups(db: &PostgresDB, observed: &Observed) -> Vec<PostgresDBBackup> {
    observed
        .all::<PostgresDBBackup>()
        .into_iter()
        .filter(|b| b.spec.database == db.name_any())
        .collect()
}

/// The pods mounting the claim named `claim`.
fn mounted_by(observed: &Observed, claim: &str) -> Vec<String> {
    observed
        .all::<Pod>()
        .into_iter()
        .filter(|pod| {
            pod.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .any(|source| source.claim_name == claim)
        })
        .map(|pod| pod.name_any())
        .collect()
}

/// Deletes `claims` that no pod mounts, and the StatefulSet while any is
/// left; pending while any claim is left. `why` says what the policy is.
fn delete_claims(
    db: &PostgresDB,
    observed: &Observed,
    claims: &[PersistentVolumeClaim],
    why: &str,
    desired: &mut Desired,
) -> Finalized {
    let mut waiting = Vec::new();
    let mut deleted = Vec::new();
    for claim in claims {
        let name = claim.name_any();
        if claim.is_deleting() {
            continue;
        }
        let pods = mounted_by(observed, &name);
        if !pods.is_empty() {
            waiting.push(format!("PVC {name} is mounted by pod {}", pods.join(", ")));
            continue;
        }
        desired.delete::<PersistentVolumeClaim>(&name, why);
        deleted.push(name.clone());
        waiting.push(format!("PVC {name} is being deleted"));
    }
    if !deleted.is_empty() {
        desired.note(
            EventType::Normal,
            "VolumesDeleted",
            format!("deleted PVC {}: {why}", deleted.join(", PVC ")),
        );
    }
    // The server stops before its volumes go, and its StatefulSet cannot
    // recreate a deleted claim-template claim for a pod it starts again.
    let statefulset = Names::of(db).primary;
    if !waiting.is_empty()
        && let Some(sts) = observed.get::<StatefulSet>(&statefulset)
        && sts.metadata.deletion_timestamp.is_none()
    {
        desired.delete::<StatefulSet>(&statefulset, "its volumes are to be deleted");
        desired.note(
            EventType::Normal,
            "ServerStopping",
            format!("deleted StatefulSet {statefulset} so that no pod mounts the volumes {why}"),
        );
    }
    if waiting.is_empty() {
        Finalized::Done
    } else {
        Finalized::Pending(waiting.join("; "))
    }
}

/// What spec.deletionPolicy Delete does before the database goes.
fn finalize_delete(db: &PostgresDB, observed: &Observed, desired: &mut Desired) -> Finalized {
    let why = "spec.deletionPolicy is Delete";
    let mut pending = Vec::new();
    let backups = backups(db, observed);
    let to_delete: Vec<String> = backups
        .iter()
        .filter(|b| b.metadata.deletion_timestamp.is_none())
        .map(|b| b.name_any())
        .collect();
    for name in &to_delete {
        desired.delete::<PostgresDBBackup>(name, why);
    }
    if !to_delete.is_empty() {
        desired.note(
            EventType::Normal,
            "BackupsDeleted",
            format!(
                "deleted PostgresDBBackup {} ({why}); each one's files go before it does",
                to_delete.join(", ")
            ),
        );
    }
    if !backups.is_empty() {
        let names: Vec<String> = backups.iter().map(|b| b.name_any()).collect();
        pending.push(format!(
            "PostgresDBBackup {} removing their files",
            names.join(", ")
        ));
    }
    let mut claims = data_claims(db, observed);
    claims.extend(dump_claims(observed));
    // The backup volume goes last: a backup object's finalizer may need
    // the files on it.
    if backups.is_empty()
        && let Some(volume) = observed.get::<PersistentVolumeClaim>(&backup_volume(&db.name_any()))
    {
        claims.push(volume);
    }
    if let Finalized::Pending(why) = delete_claims(db, observed, &claims, why, desired) {
        pending.push(why);
    }
    if pending.is_empty() {
        Finalized::Done
    } else {
        Finalized::Pending(pending.join("; "))
    }
}

/// What spec.deletionPolicy BackupThenDelete does before the database goes.
fn finalize_backup_then_delete(
    db: &PostgresDB,
    observed: &Observed,
    desired: &mut Desired,
) -> Result<Finalized, Error> {
    let claims = data_claims(db, observed);
    if claims.iter().all(PvcExt::is_deleting) {
        // No data left to back up (or it is being deleted already).
        return Ok(Finalized::Done);
    }
    let Some(name) = final_backup_name(db) else {
        return Ok(Finalized::Done);
    };
    let Some(backup) = observed.get::<PostgresDBBackup>(&name) else {
        desired.add_unowned(&final_backup(db, &name))?;
        desired.note(
            EventType::Normal,
            "FinalBackupRequested",
            format!(
                "created PostgresDBBackup {name}: spec.deletionPolicy is BackupThenDelete, so the data volumes are deleted once it is Completed"
            ),
        );
        return Ok(Finalized::Pending(format!(
            "waiting for the final backup {name}"
        )));
    };
    if backup.metadata.deletion_timestamp.is_some() {
        return Ok(Finalized::Pending(format!(
            "the final backup {name} is being deleted; a new one is taken once it is gone"
        )));
    }
    let status = backup.status.unwrap_or_default();
    match status.phase {
        Some(BackupPhase::Completed) => Ok(delete_claims(
            db,
            observed,
            &claims,
            &format!(
                "spec.deletionPolicy is BackupThenDelete and the final backup {name} completed"
            ),
            desired,
        )),
        Some(BackupPhase::Failed) => {
            let error = status.error.unwrap_or_else(|| "no error recorded".into());
            desired.note(
                EventType::Warning,
                "FinalBackupFailed",
                format!(
                    "the final backup {name} failed ({error}); the data volumes are kept. Delete PostgresDBBackup {name} to take it again, or set spec.deletionPolicy to Retain (keep the data) or Delete"
                ),
            );
            Ok(Finalized::Pending(format!(
                "the final backup {name} failed: {error}"
            )))
        }
        phase => Ok(Finalized::Pending(format!(
            "waiting for the final backup {name} ({})",
            phase.map_or("not started".to_string(), |p| format!("{p:?}"))
        ))),
    }
}

/// The finalize step: what the policy asks before the database goes.
pub fn finalize(
    db: &PostgresDB,
    observed: &Observed,
    desired: &mut Desired,
) -> Result<Finalized, Error> {
    match policy(db) {
        DeletionPolicy::Retain => Ok(Finalized::Done),
        DeletionPolicy::Delete => Ok(finalize_delete(db, observed, desired)),
        DeletionPolicy::BackupThenDelete => finalize_backup_then_delete(db, observed, desired),
    }
}

impl Capability for Deletion {
    fn name(&self) -> &'static str {
        "deletion"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["deletionPolicy"]
    }

    /// Only while the database is being deleted under a policy with work
    /// to do: a database at rest costs no read.
    fn observe(&self, db: &PostgresDB) -> Vec<Query> {
        if db.metadata.deletion_timestamp.is_none() || policy(db) == DeletionPolicy::Retain {
            return Vec::new();
        }
        vec![
            Query::labelled::<PersistentVolumeClaim>(),
            Query::named::<PersistentVolumeClaim>(backup_volume(&db.name_any())),
            Query::labelled::<PostgresDBBackup>(),
            Query::labelled::<Pod>(),
            Query::named::<StatefulSet>(Names::of(db).primary),
        ]
    }

    fn needs_finalizer(&self, db: &PostgresDB) -> bool {
        policy(db) != DeletionPolicy::Retain
    }

    fn finalize(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<Finalized, Error> {
        finalize(db, observed, desired)
    }
}
