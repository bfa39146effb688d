//! What the `PostgresDB` reconcile does about backups: a `PostgresDBBackup`
//! for each slot of `spec.backup.schedule` ([`schedule`]), retention
//! ([`retention`]), `status.backup` ([`status`]), and the validation of
//! `spec.backup`.
//!
//! Backups are objects the database does not own: deleting a database
//! keeps its backups (unless `deletionPolicy` says otherwise), so they are
//! created unowned, carry the database's labels and the never-prune
//! annotation, and are watched rather than owned
//! ([`Capability::watched_kinds`]): a backup's status change triggers its
//! database's reconcile, which then updates `status.backup` and enforces
//! retention. The backup itself is taken by the backup controller, which
//! reports it in the object's status; this module only reads that status.
//!
//! Everything here is a pure function of the database, the backups
//! observed and the reconcile's clock. The schedule keeps no timer: the
//! reconcile asks to be woken at the next slot ([`StatusDraft::wake_at`]),
//! and the slots taken are read from the backups, so a restarted operator
//! carries on where the cluster says it is.

pub mod retention;
pub mod schedule;
pub mod status;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{ApiResource, ObjectMeta};
use shared::PostgresDB;
use shared::backup::{BackupPhase, PostgresDBBackup, PostgresDBBackupSpec};
use shared::capability::{
    ApplyReport, Capability, Desired, EventType, Observed, Query, SpecProblem, StatusDraft,
};
use shared::keys::{NEVER_PRUNE_ANNOTATION, SCHEDULED_FOR_ANNOTATION};
use shared::names::common_labels;
use shared::retention::annotation_text;

use self::retention::Policy;
use self::schedule::{Schedule, SlotPlan};

/// The reason of the Event published when retention deletes a backup.
pub const EXPIRED_REASON: &str = "BackupExpired";

/// The backup capability of the `PostgresDB` reconcile.
pub struct Backups;

/// What this module reads of a `PostgresDBBackup`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupView {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: Option<String>,
    /// Where it stands, as the backup controller reported it.
    pub phase: Option<BackupPhase>,
    /// The schedule slot it was created for, when a schedule made it.
    pub scheduled_for: Option<Timestamp>,
    /// When the object was created.
    pub created: Option<Timestamp>,
    /// When its Job started.
    pub started: Option<Timestamp>,
    /// When it completed or failed.
    pub completed: Option<Timestamp>,
    /// Whether it is being deleted.
    pub deleting: bool,
}

impl BackupView {
    /// What `backup` says.
    pub fn of(backup: &PostgresDBBackup) -> Self {
        let status = backup.status.as_ref();
        let scheduled_for = backup
            .annotations()
            .get(SCHEDULED_FOR_ANNOTATION)
            .and_then(|text| text.parse().ok())
            .or_else(|| status.and_then(|s| s.scheduled_for.as_ref()).map(|t| t.0));
        Self {
            name: backup.name_any(),
            uid: backup.metadata.uid.clone(),
            phase: status.and_then(|s| s.phase),
            scheduled_for,
            created: backup.metadata.creation_timestamp.as_ref().map(|t| t.0),
            started: status.and_then(|s| s.started_at.as_ref()).map(|t| t.0),
            completed: status.and_then(|s| s.completed_at.as_ref()).map(|t| t.0),
            deleting: backup.metadata.deletion_timestamp.is_some(),
        }
    }

    /// When it finished, or, lacking that, when it was created.
    pub fn finished_at(&self) -> Option<Timestamp> {
        self.completed.or(self.created)
    }
}

/// The observed backups of `db`: labelled with its instance label and
/// naming it in their spec.
pub fn backups_of(db: &PostgresDB, observed: &Observed) -> Vec<BackupView> {
    let name = db.name_any();
    observed
        .all::<PostgresDBBackup>()
        .iter()
        .filter(|b| b.spec.database == name)
        .map(BackupView::of)
        .collect()
}

/// The problems of `spec.backup`, each naming its field.
pub fn problems(db: &PostgresDB) -> Vec<SpecProblem> {
    let Some(spec) = &db.spec.backup else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if let Some(expression) = &spec.schedule {
        match Schedule::parse(expression) {
            Err(problem) => problems.push(SpecProblem::new(
                "spec.backup.schedule",
                "InvalidSchedule",
                problem.0,
            )),
            Ok(schedule) if schedule.next_after(Timestamp::UNIX_EPOCH).is_none() => {
                problems.push(SpecProblem::new(
                    "spec.backup.schedule",
                    "InvalidSchedule",
                    format!("{expression:?} never fires (no date matches it)"),
                ));
            }
            Ok(_) => {}
        }
    }
    if let Some(retention) = &spec.retention
        && let Err(problem) = Policy::parse(retention)
    {
        problems.push(SpecProblem::new(
            problem.field,
            "InvalidRetention",
            problem.message,
        ));
    }
    if spec.destination.volume.is_some() && spec.destination.s3.is_some() {
        problems.push(SpecProblem::new(
            "spec.backup.destination",
            "InvalidDestination",
            "both volume and s3 are set; choose one (neither means a backup volume)",
        ));
    }
    problems
}

/// The schedule `db` takes backups on: `spec.backup.schedule` parsed,
/// when it is set, valid and not suspended (the next level reads it to
/// tell when backups are overdue).
pub fn active_schedule(db: &PostgresDB) -> Option<Schedule> {
    let spec = db.spec.backup.as_ref()?;
    if spec.suspend {
        return None;
    }
    Schedule::parse(spec.schedule.as_deref()?).ok()
}

/// The schedule's plan for `db` at `now`, when it has a valid schedule.
pub fn slot_plan(db: &PostgresDB, backups: &[BackupView], now: Timestamp) -> Option<SlotPlan> {
    let spec = db.spec.backup.as_ref()?;
    let schedule = Schedule::parse(spec.schedule.as_deref()?).ok()?;
    let taken: Vec<Timestamp> = backups.iter().filter_map(|b| b.scheduled_for).collect();
    let created = db.metadata.creation_timestamp.as_ref().map(|t| t.0);
    Some(schedule::plan(
        &schedule,
        spec.suspend,
        created,
        &taken,
        now,
    ))
}

/// The `PostgresDBBackup` of `db` for `slot`: the database's labels, the
/// slot in [`SCHEDULED_FOR_ANNOTATION`], and never pruned.
pub fn scheduled_backup(db: &PostgresDB, slot: Timestamp) -> PostgresDBBackup {
    let database = db.name_any();
    PostgresDBBackup {
        metadata: ObjectMeta {
            name: Some(schedule::backup_name(&database, slot)),
            namespace: db.namespace(),
            labels: Some(common_labels(&database)),
            annotations: Some(BTreeMap::from([
                (SCHEDULED_FOR_ANNOTATION.to_string(), annotation_text(slot)),
                (NEVER_PRUNE_ANNOTATION.to_string(), "true".to_string()),
            ])),
            ..Default::default()
        },
        spec: PostgresDBBackupSpec { database },
        status: None,
    }
}

impl Capability for Backups {
    fn name(&self) -> &'static str {
        "backups"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["backup"]
    }

    fn watched_kinds(&self) -> Vec<ApiResource> {
        vec![ApiResource::erase::<PostgresDBBackup>(&())]
    }

    fn observe(&self, _db: &PostgresDB) -> Vec<Query> {
        vec![Query::labelled::<PostgresDBBackup>()]
    }

    fn validate(&self, db: &PostgresDB, _observed: &Observed) -> Vec<SpecProblem> {
        problems(db)
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        now: Timestamp,
        desired: &mut Desired,
    ) -> Result<(), shared::Error> {
        let Some(spec) = &db.spec.backup else {
            return Ok(());
        };
        let backups = backups_of(db, observed);
        if let Some(slot) = slot_plan(db, &backups, now).and_then(|plan| plan.due) {
            let backup = scheduled_backup(db, slot);
            let exists = backups
                .iter()
                .any(|b| Some(&b.name) == backup.metadata.name.as_ref());
            if !exists {
                desired.add_unowned(&backup)?;
            }
        }
        let policy = spec
            .retention
            .as_ref()
            .and_then(|r| Policy::parse(r).ok())
            .unwrap_or_default();
        for expired in retention::expired(&backups, &policy, now) {
            desired.note(
                EventType::Normal,
                EXPIRED_REASON,
                format!(
                    "deleting PostgresDBBackup/{}: {}",
                    expired.name, expired.reason
                ),
            );
            desired.delete_observed::<PostgresDBBackup>(&expired.name, expired.uid, expired.reason);
        }
        Ok(())
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        let backups = backups_of(db, observed);
        let next = slot_plan(db, &backups, status.now).and_then(|plan| plan.next);
        status.fields.backup = status::summary(&backups, next);
        if db.spec.paused {
            return;
        }
        if let Some(next) = next {
            status.wake_at(next);
        }
        let policy = db
            .spec
            .backup
            .as_ref()
            .and_then(|b| b.retention.as_ref())
            .and_then(|r| Policy::parse(r).ok())
            .unwrap_or_default();
        if let Some(expiry) = retention::next_expiry(&backups, &policy, status.now) {
            status.wake_at(expiry);
        }
    }
}
