//! Initialising a new database from a backup, verified table by table:
//! `spec.restore`.
//!
//! A new `PostgresDB` with `spec.restore` (`fromBackup: <backup>`, or
//! `fromDatabase: <database>` for that database's newest Completed backup)
//! starts from the backup's data instead of an empty cluster. The restore
//! happens before the server serves anyone: Level 1's StatefulSet gets an
//! init container ([`plan`]) that restores the backup into the new data
//! volume and verifies every table the backup's manifest lists (its row
//! count, and its digest where the manifest has one) with the script of
//! [`script`]; the server container then starts on the restored directory.
//! The init container's verdict becomes `status.restore` (Restoring,
//! Verified or Failed) and an Event, and Ready stays False until Verified.
//! The new database keeps its own generated passwords: the roles of the
//! backup are restored, then the superuser's and the owner's passwords are
//! reset from the new database's Secrets.
//!
//! Refused, naming the field, with nothing created ([`source`]): an unknown
//! backup or database, a backup that is not Completed, one of a newer major
//! than `spec.version`, and a database that already holds data (its
//! StatefulSet or data volume exists and no record says this restore made
//! them).
//!
//! Where it stops: the restore is the logical dump's point in time (writes
//! to the source after it are not in it); once Verified, `spec.restore` is
//! history and changing it does nothing; a Failed restore is not retried
//! (delete the database and its PVC to start over); a backup in S3 is
//! downloaded by the init container with rclone, configured as the backup
//! Job configures it (`backup_controller::job::rclone_env`, with the
//! region the backup recorded): rclone must be in the image (the backup
//! Job's tools init container is not added to the database's pod).

pub mod plan;
pub mod script;
pub mod source;

#[cfg(test)]
mod tests;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use level1_install::api::{Names, PRIMARY_ORDINAL};
use shared::api::PostgresDB;
use shared::backup::{PostgresDBBackup, RestorePhase, RestoreStatus};
use shared::capability::{
    Capability, Desired, EventType, Observed, Query, SpecProblem, StatusDraft,
};
use shared::conditions::{Assessment, PROGRESSING, READY};
use shared::error::Error;

/// The restore capability.
pub struct Restore;

/// What the restore of `db` stands at: the backup, and what status.restore
/// becomes. `None` when the database asks for no restore, or the restore
/// cannot be served (see [`Capability::validate`]).
///
/// A restore not recorded yet starts only when validation would let it:
/// the core assesses every capability even in a refused reconcile, and a
/// record written there would make the next reconcile carry on with the
/// refused restore (over data it must never touch).
pub fn standing(
    db: &PostgresDB,
    observed: &Observed,
    now: jiff::Timestamp,
) -> Option<RestoreStatus> {
    db.spec.restore.as_ref()?;
    let recorded = db.status.as_ref().and_then(|s| s.restore.as_ref());
    let backup = match recorded {
        Some(r) => r.backup.clone(),
        None => {
            let backup = source::resolve(db, observed).ok()?.backup;
            if source::existing_data(db, observed, &backup).is_some() {
                return None;
            }
            backup
        }
    };
    Some(plan::progress(db, observed, &backup, now))
}

impl Capability for Restore {
    fn name(&self) -> &'static str {
        "restore"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["restore"]
    }

    fn observe(&self, db: &PostgresDB) -> Vec<Query> {
        let Some(restore) = db.spec.restore.as_ref() else {
            return Vec::new();
        };
        let names = Names::of(db);
        let mut queries = vec![
            Query::named::<StatefulSet>(&names.primary),
            Query::named::<PersistentVolumeClaim>(names.data_claim(PRIMARY_ORDINAL)),
            Query::labelled::<Pod>(),
        ];
        if let Some(recorded) = db.status.as_ref().and_then(|s| s.restore.as_ref()) {
            queries.push(Query::named::<PostgresDBBackup>(&recorded.backup));
        } else if let Some(backup) = &restore.from_backup {
            queries.push(Query::named::<PostgresDBBackup>(backup));
        } else if let Some(database) = &restore.from_database {
            queries.push(Query::labelled_for::<PostgresDBBackup>(database));
        }
        queries
    }

    fn validate(&self, db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
        if db.spec.restore.is_none() {
            return Vec::new();
        }
        // Once a restore started, it carries on (or stays as it ended)
        // whatever happens to the backup object since.
        if db
            .status
            .as_ref()
            .and_then(|s| s.restore.as_ref())
            .is_some()
        {
            return Vec::new();
        }
        match source::resolve(db, observed) {
            Err(problem) => vec![problem],
            Ok(source) => source::existing_data(db, observed, &source.backup)
                .into_iter()
                .collect(),
        }
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        let Some(standing) = standing(db, observed, now) else {
            return Ok(());
        };
        let previous = db.status.as_ref().and_then(|s| s.restore.as_ref());
        note_transition(previous, &standing, desired);
        if standing.phase == RestorePhase::Verified {
            // Done: the pod template no longer carries the restore, so the
            // database never depends on the backup's volume again.
            return Ok(());
        }
        let names = Names::of(db);
        let live = observed.get::<StatefulSet>(&names.primary);
        let source = source::resolve(db, observed)
            .ok()
            .filter(|s| s.backup == standing.backup);
        desired.modify::<StatefulSet>(&names.primary, |sts| {
            let Some(spec) = sts.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
                return;
            };
            match (&source, live.as_ref().and_then(plan::live_restore)) {
                (Some(source), _) => plan::add_restore(spec, source),
                (None, Some((init, volumes))) => {
                    spec.init_containers
                        .get_or_insert_with(Vec::new)
                        .insert(0, init);
                    spec.volumes.get_or_insert_with(Vec::new).extend(volumes);
                }
                (None, None) => {}
            }
        })?;
        Ok(())
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &shared::capability::ApplyReport,
        status: &mut StatusDraft,
    ) {
        let Some(standing) = standing(db, observed, status.now) else {
            return;
        };
        let message = standing.message.clone().unwrap_or_default();
        match standing.phase {
            RestorePhase::Restoring => {
                status.conditions.set(
                    READY,
                    Assessment::no(
                        "Restoring",
                        format!("not serving until the restore is verified: {message}"),
                    ),
                );
                status
                    .conditions
                    .set(PROGRESSING, Assessment::yes("Restoring", message));
            }
            RestorePhase::Failed => {
                status.conditions.set(
                    READY,
                    Assessment::no(
                        "RestoreFailed",
                        format!(
                            "the restore of backup {} failed: {message}",
                            standing.backup
                        ),
                    )
                    .warn(),
                );
            }
            RestorePhase::Verified => {}
        }
        status.fields.restore = Some(standing);
    }
}

/// Publishes the restore's news: started and verified (Normal Events); a
/// failure is the Ready condition's Warning Event.
fn note_transition(
    previous: Option<&RestoreStatus>,
    standing: &RestoreStatus,
    desired: &mut Desired,
) {
    if previous.map(|p| p.phase) == Some(standing.phase) {
        return;
    }
    let message = standing.message.clone().unwrap_or_default();
    match standing.phase {
        RestorePhase::Restoring => desired.note(
            EventType::Normal,
            "RestoreStarted",
            format!("restoring backup {}: {message}", standing.backup),
        ),
        RestorePhase::Verified => desired.note(EventType::Normal, "RestoreVerified", message),
        // Its Warning Event is the Ready condition's (see `assess`).
        RestorePhase::Failed => {}
    }
}
