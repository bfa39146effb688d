//! The deletion finalizer: work a level does before a database may go.
//!
//! Deleting a `PostgresDB` normally takes nothing but Kubernetes: its owned
//! children go with it through garbage collection, and its volumes stay
//! because nothing owns them. A level that must act first (take a last
//! backup, delete the volumes the spec says to delete) says so per
//! database through [`Capability::needs_finalizer`]; the core then keeps
//! [`FINALIZER`] on the database, and while the database is being deleted
//! it runs each capability's [`Capability::finalize`] step instead of the
//! usual reconcile. Each step is pure (it adds objects, deletions and notes
//! to a [`Desired`] and returns a [`Finalized`] verdict), the core applies
//! what they ask for in one place (`reconcile`), and the finalizer comes
//! off once every capability is done.
//!
//! How this differs from kube-rs's `kube::runtime::finalizer` helper, which
//! adds its finalizer to every object it sees and runs one cleanup closure:
//! the finalizer is added only when a capability needs it (a database whose
//! policy keeps everything never carries it, and Levels 1 and 2 never add
//! it), it is taken off again when the spec no longer needs it, and the
//! cleanup is the capabilities' pure steps. Like the helper, the metadata
//! patches are JSON patches guarded by a `test` (here of the
//! resourceVersion the decision was made on), so a concurrent change fails
//! the patch instead of being overwritten; the next reconcile decides again.
//!
//! A level that does not need the finalizer finds it (a Level 3 database
//! swapped to Level 2) and removes it, also while the database is being
//! deleted: the level runs no finalize step, so the database goes as that
//! level deletes databases, keeping its volumes. A paused database being
//! deleted waits: `spec.paused` means the operator changes nothing, and
//! unpausing (a terminating object's spec can still be edited) lets it go.
//! Where it stops: the core never removes finalizers other than its own.

use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::PostgresDB;
use crate::apply::{self, Change};
use crate::capability::{
    Deletion, Desired, DesiredObject, EventType, Finalized, Level, Note, Observed,
};
use crate::error::Error;
pub use crate::keys::DELETION_POLICY_FINALIZER as FINALIZER;

/// The reason of the Event published when the finalizer comes off.
pub const FINALIZED_REASON: &str = "Finalized";

/// What to do with the finalizer of a database that is not being deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizerChange {
    /// A capability needs to act before the database goes: add it.
    Add,
    /// No capability does any more: remove it.
    Remove,
}

/// Whether the database carries the core's finalizer.
pub fn carries(db: &PostgresDB) -> bool {
    db.finalizers().iter().any(|f| f == FINALIZER)
}

/// Whether the database is being deleted (`metadata.deletionTimestamp` set).
pub fn is_deleting(db: &PostgresDB) -> bool {
    db.metadata.deletion_timestamp.is_some()
}

/// What to do with the finalizer of `db` under `level`, when the reconcile
/// acts (not paused, spec servable). `None` when it is as it should be, and
/// always while the database is being deleted: then the finalize step
/// decides when it comes off.
pub fn change(level: &Level, db: &PostgresDB) -> Option<FinalizerChange> {
    if is_deleting(db) {
        return None;
    }
    match (level.needs_finalizer(db), carries(db)) {
        (true, false) => Some(FinalizerChange::Add),
        (false, true) => Some(FinalizerChange::Remove),
        _ => None,
    }
}

/// The JSON patch making the change: the whole finalizer list, guarded by
/// a test of the resourceVersion the decision was made on.
pub fn patch(db: &PostgresDB, change: FinalizerChange) -> serde_json::Value {
    patch_of(db, FINALIZER, change)
}

/// [`patch`] for any object and finalizer: the object's other finalizers
/// kept, in their order.
pub fn patch_of<K: Resource>(
    object: &K,
    finalizer: &str,
    change: FinalizerChange,
) -> serde_json::Value {
    let mut finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    if change == FinalizerChange::Add {
        finalizers.push(finalizer.to_string());
    }
    json!([
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": object.resource_version().unwrap_or_default(),
        },
        {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
    ])
}

/// What the finalize step of a database being deleted decided.
#[derive(Clone, Debug, Default)]
pub struct Finalization {
    /// Objects to write, with the reason (a last backup).
    pub changes: Vec<(DesiredObject, Change)>,
    /// Objects to delete, after the writes.
    pub deletions: Vec<Deletion>,
    /// Events the capabilities asked for.
    pub notes: Vec<Note>,
    /// The capabilities not done yet, each with why.
    pub pending: Vec<(&'static str, String)>,
}

impl Finalization {
    /// Whether every capability is done, so the finalizer may come off.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// The pending steps on one line, for the log.
    pub fn waiting_for(&self) -> String {
        self.pending
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The Event published when the finalizer comes off.
    pub fn finished_note() -> Note {
        Note {
            type_: EventType::Normal,
            reason: FINALIZED_REASON.into(),
            message: format!(
                "what spec.deletionPolicy asks before deletion is done; removed the finalizer {FINALIZER}"
            ),
            related: None,
        }
    }
}

/// The pending reason of a paused database being deleted.
pub const PAUSED_WHILE_DELETING: &str =
    "spec.paused is true: nothing is done before deletion until it is false";

/// Runs every capability's finalize step for a database being deleted,
/// from what was observed and the reconcile's clock.
pub fn finalize(
    level: &Level,
    db: &PostgresDB,
    observed: &Observed,
    now: jiff::Timestamp,
) -> Result<Finalization, Error> {
    if db.spec.paused {
        return Ok(Finalization {
            pending: vec![("core", PAUSED_WHILE_DELETING.to_string())],
            ..Default::default()
        });
    }
    let mut desired = Desired::default();
    let mut pending = Vec::new();
    for capability in &level.capabilities {
        if let Finalized::Pending(why) = capability.finalize(db, observed, now, &mut desired)? {
            pending.push((capability.name(), why));
        }
    }
    let parts = desired.into_parts();
    let mut changes = Vec::new();
    for mut object in parts.objects {
        apply::decorate(&mut object, db)?;
        if let Some(change) = apply::change_needed(&object, apply::live(observed, &object))? {
            changes.push((object, change));
        }
    }
    Ok(Finalization {
        changes,
        deletions: parts.deletions,
        notes: parts.notes,
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::Capability;
    use crate::testing::{DbBuilder, at};
    use k8s_openapi::api::core::v1::ConfigMap;

    /// A capability that needs the finalizer when the database is named
    /// "needs", and finalizes by asking for a ConfigMap's deletion and
    /// waiting until it is gone.
    struct Cleans;

    impl Capability for Cleans {
        fn name(&self) -> &'static str {
            "cleans"
        }

        fn needs_finalizer(&self, db: &PostgresDB) -> bool {
            db.name_any() == "needs"
        }

        fn finalize(
            &self,
            _db: &PostgresDB,
            observed: &Observed,
            _now: jiff::Timestamp,
            desired: &mut Desired,
        ) -> Result<Finalized, Error> {
            if observed.get::<ConfigMap>("leftover").is_some() {
                desired.delete::<ConfigMap>("leftover", "the spec says so");
                return Ok(Finalized::Pending("ConfigMap leftover still exists".into()));
            }
            Ok(Finalized::Done)
        }
    }

    struct Idle;

    impl Capability for Idle {
        fn name(&self) -> &'static str {
            "idle"
        }
    }

    fn level(capabilities: Vec<Box<dyn Capability>>) -> Level {
        Level {
            number: 9,
            name: "test-level",
            capabilities,
            companions: Vec::new(),
            insights: None,
            effective_spec: crate::capability::as_written,
        }
    }

    fn with_finalizers(mut db: PostgresDB, finalizers: &[&str]) -> PostgresDB {
        db.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
        db.metadata.resource_version = Some("42".into());
        db
    }

    fn deleting(mut db: PostgresDB) -> PostgresDB {
        db.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(5)));
        db
    }

    #[test]
    fn a_level_whose_capabilities_do_not_ask_never_adds_the_finalizer() {
        let idle = level(vec![Box::new(Idle)]);
        assert_eq!(change(&idle, &DbBuilder::named("needs").build()), None);
    }

    #[test]
    fn the_finalizer_is_added_only_when_a_capability_needs_it() {
        let cleans = level(vec![Box::new(Idle), Box::new(Cleans)]);
        assert_eq!(
            change(&cleans, &DbBuilder::named("needs").build()),
            Some(FinalizerChange::Add)
        );
        assert_eq!(change(&cleans, &DbBuilder::named("other").build()), None);
        let carrying = with_finalizers(DbBuilder::named("needs").build(), &[FINALIZER]);
        assert_eq!(change(&cleans, &carrying), None);
    }

    #[test]
    fn the_finalizer_comes_off_when_no_capability_needs_it_any_more() {
        let cleans = level(vec![Box::new(Cleans)]);
        let carrying = with_finalizers(DbBuilder::named("other").build(), &[FINALIZER]);
        assert_eq!(change(&cleans, &carrying), Some(FinalizerChange::Remove));
        let idle = level(vec![Box::new(Idle)]);
        assert_eq!(change(&idle, &carrying), Some(FinalizerChange::Remove));
    }

    #[test]
    fn nothing_is_changed_on_a_database_being_deleted_outside_the_finalize_step() {
        let cleans = level(vec![Box::new(Cleans)]);
        let db = deleting(DbBuilder::named("needs").build());
        assert_eq!(change(&cleans, &db), None);
    }

    #[test]
    fn the_patch_keeps_other_finalizers_and_tests_the_resource_version() {
        let db = with_finalizers(DbBuilder::named("needs").build(), &["someone/else"]);
        let added = patch(&db, FinalizerChange::Add);
        assert_eq!(added[0]["op"], "test");
        assert_eq!(added[0]["path"], "/metadata/resourceVersion");
        assert_eq!(added[0]["value"], "42");
        assert_eq!(added[1]["value"], json!(["someone/else", FINALIZER]));
        let both = with_finalizers(db, &["someone/else", FINALIZER]);
        assert_eq!(
            patch(&both, FinalizerChange::Remove)[1]["value"],
            json!(["someone/else"])
        );
        let parsed: Result<json_patch::Patch, _> = serde_json::from_value(added);
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn the_finalize_step_waits_for_every_capability_and_collects_what_they_ask() {
        let cleans = level(vec![Box::new(Idle), Box::new(Cleans)]);
        let db = deleting(DbBuilder::named("needs").build());
        let leftover = ConfigMap {
            metadata: crate::testing::meta("leftover"),
            ..Default::default()
        };
        let observed = crate::testing::ObservedBuilder::new()
            .with(&leftover)
            .build();
        let waiting = finalize(&cleans, &db, &observed, at(6)).expect("finalizes");
        assert!(!waiting.is_done());
        assert_eq!(
            waiting.waiting_for(),
            "cleans: ConfigMap leftover still exists"
        );
        assert_eq!(waiting.deletions.len(), 1);
        let done = finalize(&cleans, &db, &Observed::default(), at(7)).expect("finalizes");
        assert!(done.is_done());
        assert!(done.deletions.is_empty());
    }

    #[test]
    fn a_paused_database_being_deleted_waits_and_nothing_is_done() {
        let cleans = level(vec![Box::new(Cleans)]);
        let mut db = deleting(DbBuilder::named("needs").paused().build());
        db.spec.paused = true;
        let leftover = ConfigMap {
            metadata: crate::testing::meta("leftover"),
            ..Default::default()
        };
        let observed = crate::testing::ObservedBuilder::new()
            .with(&leftover)
            .build();
        let outcome = finalize(&cleans, &db, &observed, at(6)).expect("finalizes");
        assert!(!outcome.is_done());
        assert!(outcome.deletions.is_empty());
        assert_eq!(outcome.pending[0].1, PAUSED_WHILE_DELETING);
    }

    #[test]
    fn a_level_without_finalize_steps_is_done_at_once() {
        let idle = level(vec![Box::new(Idle)]);
        let db = deleting(with_finalizers(
            DbBuilder::named("needs").build(),
            &[FINALIZER],
        ));
        let outcome = finalize(&idle, &db, &Observed::default(), at(6)).expect("finalizes");
        assert!(outcome.is_done());
    }
}
