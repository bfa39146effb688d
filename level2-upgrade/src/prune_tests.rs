//! Unit tests of pruning with Level 2's capabilities: the migration Job the
//! status names is kept in every phase while an earlier attempt's goes, and
//! Level 1 taking over after a major upgrade deletes nothing Level 2 made.

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{ApiResource, DynamicObject};
use shared::api::{PostgresDB, UpgradePhase};
use shared::capability::{Capability, Desired, Observed};
use shared::keys::{COMPONENT_LABEL, VOLUME_LABEL};
use shared::prune;
use shared::reconcile::{Decision, decide};
use shared::testing::{ChildBuilder, at, raw};

use crate::tests::db;
use crate::upgrade::Upgrade;
use crate::upgrade::major::names::job_name;
use crate::upgrade::major::tests::upgrade;

/// Records `object` and marks its kind listed.
fn observe_child(observed: &mut Observed, object: DynamicObject, resource: ApiResource) {
    observed.mark_listed(&resource);
    observed.insert(&resource, object);
}

/// A finished migration Job named `name`, as the operator made it.
fn observe_job(observed: &mut Observed, name: &str) {
    let job = Job {
        metadata: ChildBuilder::of::<Job>(name)
            .label(COMPONENT_LABEL, "major-upgrade")
            .meta(),
        status: Some(JobStatus {
            succeeded: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    observe_child(observed, raw(&job), ApiResource::erase::<Job>(&()));
}

/// The names of the objects pruning deletes, as `Kind/name`.
fn pruned(decision: &Decision) -> Vec<String> {
    match decision {
        Decision::Apply { deletions, .. } => deletions
            .iter()
            .filter(|d| d.origin == shared::capability::DeletionOrigin::Prune)
            .map(|d| format!("{}/{}", d.resource.kind, d.name))
            .collect(),
        other => panic!("expected a decision to apply, got {other:?}"),
    }
}

#[test]
fn the_job_the_status_names_is_kept_in_every_phase_and_an_earlier_attempt_s_is_pruned() {
    let earlier = job_name("orders", 16, &at(1).to_string());
    for phase in [
        UpgradePhase::Migrating,
        UpgradePhase::Switching,
        UpgradePhase::Complete,
        UpgradePhase::RolledBack,
    ] {
        let up = upgrade(phase);
        let current = up.major.as_ref().expect("major").job.clone();
        let mut database: PostgresDB = db("16", Some("15"));
        database.status.get_or_insert_with(Default::default).upgrade = Some(up);
        let mut observed = Observed::default();
        observe_job(&mut observed, &current);
        observe_job(&mut observed, &earlier);
        let mut desired = Desired::default();
        Upgrade
            .desire(&database, &observed, at(1_000), &mut desired)
            .expect("desires");
        let orphans: Vec<String> = prune::orphans(&crate::level(), &database, &observed, &desired)
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(
            orphans,
            std::slice::from_ref(&earlier),
            "in phase {phase:?}"
        );
    }
}

/// What the cluster holds once `decision` was applied: the applied bodies,
/// with a uid and the kinds listed.
fn applied(decision: &Decision) -> Observed {
    let mut observed = Observed::default();
    if let Decision::Apply { changes, .. } = decision {
        for (object, _) in changes {
            let mut value = object.value.clone();
            value["metadata"]["uid"] = format!("uid-{}", object.name).into();
            value["metadata"]["resourceVersion"] = "1".into();
            observed.mark_listed(&object.resource);
            observed.insert(
                &object.resource,
                serde_json::from_value(value).expect("an object"),
            );
        }
    }
    observed
}

#[test]
fn a_database_at_rest_has_no_orphans_at_either_level() {
    for level in [level1_install::level(), crate::level()] {
        let database = db("16", None);
        let first = decide(&level, &database, &Observed::default(), at(1)).expect("decides");
        let second = decide(&level, &database, &applied(&first), at(2)).expect("decides");
        assert!(pruned(&second).is_empty(), "{}: {second:?}", level.name);
    }
}

#[test]
fn level1_taking_over_after_a_major_upgrade_deletes_no_volume_and_no_job_level2_made() {
    let level1 = level1_install::level();
    let mut database = db("16", Some("16"));
    database.status.get_or_insert_with(Default::default).upgrade =
        Some(upgrade(UpgradePhase::Complete));
    let first = decide(&level1, &database, &Observed::default(), at(1)).expect("decides");
    let mut observed = applied(&first);
    // Level 2's volumes, here even labelled and owned like every child, and
    // its Job; Level 1 lists volumes (it reads their size) but not Jobs.
    for (name, role) in [
        ("data-orders-0", "data"),
        ("orders-data-16", "data"),
        ("orders-backup-16", "backup"),
    ] {
        observe_child(
            &mut observed,
            ChildBuilder::of::<PersistentVolumeClaim>(name)
                .label(VOLUME_LABEL, role)
                .build(),
            ApiResource::erase::<PersistentVolumeClaim>(&()),
        );
    }
    let job = upgrade(UpgradePhase::Complete).major.expect("major").job;
    observe_job(&mut observed, &job);
    let decision = decide(&level1, &database, &observed, at(2)).expect("decides");
    assert!(pruned(&decision).is_empty(), "{decision:?}");
}
