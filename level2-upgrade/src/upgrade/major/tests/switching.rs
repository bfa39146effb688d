//! A major upgrade from a verified migration to the new major serving, or
//! back to the old one.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::JobStatus;
use shared::api::{UpgradePhase, status_time};
use shared::capability::Observed;
use shared::conditions::PROGRESSING;
use shared::keys::CONTROLLER_REVISION_LABEL;
use shared::keys::VERIFIED_ANNOTATION;
use shared::testing::{PodBuilder, at, put};

use super::*;
use crate::upgrade::major::names::{attempt_text, job_name};
use crate::upgrade::major::progress::{Transition, progress};

#[test]
fn a_succeeded_job_switches_the_statefulset_to_the_new_image_on_the_new_volume() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let mut observed = Observed::default();
    job(
        &mut observed,
        &job_of(&up),
        JobStatus {
            succeeded: Some(1),
            conditions: Some(vec![condition("Complete", None, "")]),
            ..Default::default()
        },
    );
    job_pod(
        &mut observed,
        &job_of(&up),
        "Succeeded",
        terminated(0, "verified 3 databases, 2 tables, 5 rows"),
    );
    let progress = progress(&database, &observed, at(STARTED + 30));
    assert_eq!(progress.transition, Some(Transition::Verified));
    let (after, major_status) = progress.parts().expect("an upgrade");
    assert_eq!(after.phase, UpgradePhase::Switching);
    assert_eq!(
        major_status.verified.as_deref(),
        Some("verified 3 databases, 2 tables, 5 rows")
    );
    assert_eq!(
        major_status.switched_at,
        Some(status_time(at(STARTED + 30)))
    );

    let desired = desired(&database, &observed, STARTED + 30);
    assert_eq!(image(&desired), "postgres:16");
    assert_eq!(version_annotation(&desired), "16");
    assert_eq!(mounted_claim(&desired), "orders-data-16");
    assert!(!fenced(&desired));
    let data = object(&desired, "PersistentVolumeClaim", "orders-data-16").expect("the PVC");
    assert_eq!(
        data.value["metadata"]["annotations"][VERIFIED_ANNOTATION],
        job_of(&up).as_str()
    );
    assert!(
        desired
            .notes
            .iter()
            .any(|n| n.reason == "MajorUpgradeVerified")
    );
}

#[test]
fn a_failed_job_rolls_back_before_any_switch_and_keeps_the_evidence() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let mut observed = Observed::default();
    job(
        &mut observed,
        &job_of(&up),
        JobStatus {
            failed: Some(1),
            conditions: Some(vec![condition("Failed", None, "backoff")]),
            ..Default::default()
        },
    );
    job_pod(
        &mut observed,
        &job_of(&up),
        "Failed",
        terminated(
            1,
            "restoring the dump into 16 failed: ERROR: unrecognized configuration parameter",
        ),
    );
    let draft = assess(&database, &observed, STARTED + 30);
    let after = draft.fields.upgrade.clone().expect("recorded");
    assert_eq!(after.phase, UpgradePhase::RolledBack);
    assert!(
        after
            .major
            .as_ref()
            .and_then(|m| m.failure.as_deref())
            .is_some_and(|f| f.contains("unrecognized"))
    );
    let progressing = draft.conditions.get(PROGRESSING).expect("set");
    assert!(
        progressing.is_warning() && progressing.reason == "MajorUpgradeRolledBack",
        "{progressing:?}"
    );
    assert!(
        progressing.message.contains("To retry"),
        "{}",
        progressing.message
    );

    let rolled_back = with_upgrade(db("16", Some("15"), Some(true)), after);
    let desired = desired(&rolled_back, &observed, STARTED + 31);
    assert_eq!(image(&desired), "postgres:15");
    assert_eq!(mounted_claim(&desired), "data-orders-0");
    assert!(!fenced(&desired), "the old server takes writes again");
    assert!(
        desired.deletions().is_empty(),
        "the Job and the volumes stay as evidence"
    );
    assert!(desired.objects().iter().all(|o| o.resource.kind != "Job"));
}

#[test]
fn the_switch_completes_when_the_new_major_serves_from_the_new_volume_confirmed_by_sql_and_starts_the_retention()
 {
    let mut up = upgrade(UpgradePhase::Switching);
    up.major.as_mut().expect("major").switched_at = Some(status_time(at(STARTED + 30)));
    let database = with_upgrade(db("16", Some("15"), Some(true)), up);
    let mut observed = Observed::default();
    live_sts(
        &mut observed,
        "postgres:16",
        "16",
        Some("orders-data-16"),
        false,
    );
    assert_eq!(
        progress(&database, &observed, at(STARTED + 40)).phase(),
        Some(UpgradePhase::Switching),
        "not ready yet"
    );
    live_sts(
        &mut observed,
        "postgres:16",
        "16",
        Some("orders-data-16"),
        true,
    );
    put(
        &mut observed,
        &PodBuilder::named("orders-0")
            .owned_by::<StatefulSet>("orders")
            .phase("Running")
            .ip("10.0.0.7")
            .build(),
    );
    assert_eq!(
        progress(&database, &observed, at(STARTED + 40)).phase(),
        Some(UpgradePhase::Switching),
        "ready, but its server has not said it runs 16"
    );
    observed.insert_sql(
        "server_version/orders-0",
        Ok(vec![vec![Some("16.4 (Debian 16.4-1.pgdg120+1)".into())]]),
    );
    let progress = progress(&database, &observed, at(STARTED + 40));
    assert_eq!(progress.transition, Some(Transition::Completed));
    let (after, major_status) = progress.parts().expect("an upgrade");
    assert_eq!(after.phase, UpgradePhase::Complete);
    let until = at(STARTED + 40)
        .checked_add(jiff::SignedDuration::from_hours(24))
        .expect("a time");
    assert_eq!(major_status.retain_until, Some(status_time(until)));
}

#[test]
fn a_switch_not_ready_within_the_health_timeout_is_rolled_back_and_the_stuck_pod_deleted() {
    let mut up = upgrade(UpgradePhase::Switching);
    up.major.as_mut().expect("major").switched_at = Some(status_time(at(STARTED + 30)));
    let database = with_upgrade(db("16", Some("15"), Some(true)), up);
    let mut observed = Observed::default();
    live_sts(
        &mut observed,
        "postgres:16",
        "16",
        Some("orders-data-16"),
        false,
    );
    let progress = progress(&database, &observed, at(STARTED + 91));
    assert_eq!(progress.phase(), Some(UpgradePhase::RolledBack));

    let rolled_back = with_upgrade(
        db("16", Some("15"), Some(true)),
        progress.upgrade.expect("an upgrade"),
    );
    let desired_now = desired(&rolled_back, &observed, STARTED + 92);
    assert_eq!(image(&desired_now), "postgres:15");
    assert_eq!(version_annotation(&desired_now), "15");
    assert_eq!(mounted_claim(&desired_now), "data-orders-0");
    assert!(
        deleted(&desired_now, "Pod").is_empty(),
        "the template is not reverted yet"
    );

    // Once the live template is reverted, the pod stuck on 16 is deleted.
    let mut reverted = Observed::default();
    live_sts(&mut reverted, "postgres:15", "15", None, false);
    put(
        &mut reverted,
        &PodBuilder::named("orders-0")
            .label(CONTROLLER_REVISION_LABEL, "orders-16-revision")
            .ready(false)
            .build(),
    );
    let desired_then = desired(&rolled_back, &reverted, STARTED + 95);
    assert_eq!(deleted(&desired_then, "Pod"), ["orders-0"]);
}

#[test]
fn a_rolled_back_attempt_is_retried_once_the_spec_went_back_to_what_runs_and_forth_again() {
    let mut failed = upgrade(UpgradePhase::RolledBack);
    failed.major.as_mut().expect("major").failure = Some("restore failed".into());
    let same_target = with_upgrade(db("16", Some("15"), Some(true)), failed.clone());
    let stays = progress(&same_target, &Observed::default(), at(STARTED + 100));
    assert_eq!(stays.phase(), Some(UpgradePhase::RolledBack));
    assert_eq!(
        stays.transition, None,
        "no new attempt while the spec still asks for the failed one"
    );

    let back = with_upgrade(db("15", Some("15"), Some(true)), failed);
    let closed = progress(&back, &Observed::default(), at(STARTED + 200));
    assert!(closed.parts().is_some_and(|(_, m)| m.closed));

    let again = with_upgrade(
        db("16", Some("15"), Some(true)),
        closed.upgrade.expect("an upgrade"),
    );
    let retry = progress(&again, &Observed::default(), at(STARTED + 300));
    assert_eq!(retry.transition, Some(Transition::Started));
    let (up, major_status) = retry.parts().expect("an upgrade");
    assert_eq!(up.started_at, status_time(at(STARTED + 300)));
    assert_ne!(
        major_status.job,
        job_name("orders", 16, &attempt_text(&status_time(at(STARTED)))),
        "a new Job"
    );
}
