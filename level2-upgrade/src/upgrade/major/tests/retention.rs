//! After a major upgrade: which volume serves, what is kept and for how
//! long, what the retention deletes (never the claim-template volume), and
//! going back to the previous major while its data is kept.

use shared::api::{UpgradePhase, UpgradeStatus, status_time};
use shared::capability::{ApplyReport, Capability, Observed};
use shared::conditions::PROGRESSING;
use shared::keys::{RETAIN_UNTIL_ANNOTATION, VERIFIED_ANNOTATION};
use shared::testing::at;

use super::*;
use crate::upgrade::Upgrade;
use crate::upgrade::major::names::attempt_text;
use crate::upgrade::major::progress::{Transition, progress};
use shared::conditions::ConditionStatus;

#[test]
fn after_completion_the_new_volume_stays_mounted_and_kept_volumes_are_marked_with_their_retention()
{
    let mut up = upgrade(UpgradePhase::Complete);
    let until = status_time(at(STARTED + 3600));
    up.major.as_mut().expect("major").retain_until = Some(until.clone());
    let database = with_upgrade(db("16", Some("16"), Some(true)), up);
    let mut observed = Observed::default();
    claim(&mut observed, "orders-backup-16", ours("backup"), &[]);
    claim(
        &mut observed,
        "orders-data-16",
        ours("data"),
        &[(VERIFIED_ANNOTATION, "job")],
    );
    claim(&mut observed, "data-orders-0", instance(), &[]);
    let desired = desired(&database, &observed, STARTED + 100);
    assert_eq!(image(&desired), "postgres:16");
    assert_eq!(mounted_claim(&desired), "orders-data-16");
    let backup = object(&desired, "PersistentVolumeClaim", "orders-backup-16").expect("kept");
    assert_eq!(
        backup.value["metadata"]["annotations"][RETAIN_UNTIL_ANNOTATION],
        attempt_text(&until).as_str()
    );
    assert!(
        object(&desired, "PersistentVolumeClaim", "data-orders-0").is_none(),
        "the claim-template volume is the StatefulSet's, not annotated"
    );
    assert!(desired.deletions().is_empty());

    let draft = assess(&database, &observed, STARTED + 100);
    let progressing = draft.conditions.get(PROGRESSING).expect("set");
    assert!(
        progressing.status == ConditionStatus::False
            && progressing.reason == "MajorUpgradeComplete"
    );
    assert!(
        progressing.message.contains("claim-template"),
        "{}",
        progressing.message
    );
}

#[test]
fn when_the_retention_passes_the_dump_and_an_operator_volume_go_but_never_the_claim_template_volume()
 {
    let mut up = upgrade(UpgradePhase::Complete);
    up.major.as_mut().expect("major").retain_until = Some(status_time(at(STARTED + 3600)));
    let database = with_upgrade(db("16", Some("16"), Some(true)), up);
    let mut observed = Observed::default();
    let until = attempt_text(&status_time(at(STARTED + 3600)));
    let expired = [(RETAIN_UNTIL_ANNOTATION, until.as_str())];
    claim(&mut observed, "orders-backup-16", ours("backup"), &expired);
    claim(
        &mut observed,
        "orders-data-16",
        ours("data"),
        &[(VERIFIED_ANNOTATION, "job")],
    );
    claim(&mut observed, "orders-data-14", ours("data"), &expired);
    claim(&mut observed, "data-orders-0", instance(), &[]);
    live_sts(
        &mut observed,
        "postgres:16",
        "16",
        Some("orders-data-16"),
        true,
    );

    let before = desired(&database, &observed, STARTED + 3599);
    assert!(
        before.deletions().is_empty(),
        "nothing goes before the retention passes"
    );

    let after = desired(&database, &observed, STARTED + 3600);
    let mut gone = deleted(&after, "PersistentVolumeClaim");
    gone.sort();
    assert_eq!(gone, ["orders-backup-16", "orders-data-14"]);
    assert!(
        object(&after, "PersistentVolumeClaim", "orders-backup-16").is_none(),
        "a PVC being deleted is not applied again"
    );
    let note = after
        .notes
        .iter()
        .find(|n| n.reason == "RetentionExpired")
        .expect("an Event");
    assert!(
        note.message.contains("data-orders-0 is kept"),
        "{}",
        note.message
    );
    let draft = assess(&database, &Observed::default(), STARTED + 3600);
    let message = &draft.conditions.get(PROGRESSING).expect("set").message;
    assert!(
        message.contains("orders-backup-16 (the dump) was deleted")
            && message.contains("data-orders-0 (15's data) is kept"),
        "{message}"
    );

    // Later, under a minor upgrade's status, expired volumes still go, and
    // the mounted one never does, expired or not.
    let mut later = db("16.4", Some("16"), Some(true));
    later.status.as_mut().expect("status").upgrade = Some(UpgradeStatus {
        major: None,
        phase: UpgradePhase::Rolling,
        ..upgrade(UpgradePhase::Rolling)
    });
    let mut mounted_expired = observed.clone();
    claim(
        &mut mounted_expired,
        "orders-data-16",
        ours("data"),
        &[
            (VERIFIED_ANNOTATION, "job"),
            (RETAIN_UNTIL_ANNOTATION, "1970-01-01T00:00:00Z"),
        ],
    );
    let desired_later = desired(&later, &mounted_expired, STARTED + 4000);
    assert_eq!(mounted_claim(&desired_later), "orders-data-16");
    assert!(
        !deleted(&desired_later, "PersistentVolumeClaim").contains(&"orders-data-16".to_string())
    );
}

#[test]
fn which_volume_is_mounted_is_read_from_the_cluster() {
    // A PostgresDB recreated over the volumes of a completed upgrade.
    let database = db("16", None, Some(true));
    let mut observed = Observed::default();
    claim(
        &mut observed,
        "orders-data-16",
        ours("data"),
        &[(VERIFIED_ANNOTATION, "job")],
    );
    assert_eq!(
        mounted_claim(&desired(&database, &observed, 0)),
        "orders-data-16"
    );
    // A volume whose migration was never verified is not data.
    let mut unverified = Observed::default();
    claim(&mut unverified, "orders-data-16", ours("data"), &[]);
    assert_eq!(
        mounted_claim(&desired(&database, &unverified, 0)),
        "data-orders-0"
    );
}

#[test]
fn setting_the_previous_version_after_completion_switches_back_to_the_kept_volume() {
    let mut up = upgrade(UpgradePhase::Complete);
    up.major.as_mut().expect("major").switched_at = Some(status_time(at(STARTED + 30)));
    let database = with_upgrade(db("15", Some("16"), Some(true)), up.clone());
    let mut observed = Observed::default();
    claim(&mut observed, "data-orders-0", instance(), &[]);
    claim(
        &mut observed,
        "orders-data-16",
        ours("data"),
        &[(VERIFIED_ANNOTATION, "job")],
    );
    assert!(
        Upgrade.validate(&database, &observed).is_empty(),
        "not a refused downgrade"
    );
    let progress = progress(&database, &observed, at(STARTED + 500));
    assert_eq!(progress.transition, Some(Transition::ReturnedToPrevious));
    assert_eq!(progress.phase(), Some(UpgradePhase::RolledBack));
    let desired = desired(&database, &observed, STARTED + 500);
    assert_eq!(image(&desired), "postgres:15");
    assert_eq!(mounted_claim(&desired), "data-orders-0");
    assert!(
        desired
            .notes
            .iter()
            .any(|n| n.reason == "MajorUpgradeRolledBack")
    );

    // While it goes back the version check keeps letting it through.
    let going_back = with_upgrade(
        db("15", Some("16"), Some(true)),
        progress.upgrade.expect("an upgrade"),
    );
    assert!(Upgrade.validate(&going_back, &observed).is_empty());
    // Without the kept volume, or without allowMajor, it is a refused downgrade.
    let gone = with_upgrade(db("15", Some("16"), Some(true)), up.clone());
    assert_eq!(
        Upgrade.validate(&gone, &Observed::default())[0].reason,
        "RefusedDowngrade"
    );
    let disallowed = with_upgrade(db("15", Some("16"), Some(false)), up);
    assert_eq!(
        Upgrade.validate(&disallowed, &observed)[0].reason,
        "RefusedDowngrade"
    );
}

#[test]
fn a_smaller_size_than_an_operator_volume_is_refused() {
    let mut database = db("16", Some("16"), Some(true));
    database.spec.storage.size = "500Mi".into();
    let mut observed = Observed::default();
    claim(&mut observed, "orders-data-16", ours("data"), &[]);
    let problems = Upgrade.validate(&database, &observed);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].reason, "RefusedStorageShrink");
}

/// The cluster as it is when the new major serves from the new volume and
/// its server confirms it: the switch completes at the next reconcile.
fn serving_16() -> Observed {
    let mut observed = crate::tests::observed_pod(Some(Ok("16.4 (Debian 16.4-1.pgdg120+1)")));
    live_sts(
        &mut observed,
        "postgres:16",
        "16",
        Some("orders-data-16"),
        true,
    );
    claim(&mut observed, "orders-backup-16", ours("backup"), &[]);
    claim(
        &mut observed,
        "orders-data-16",
        ours("data"),
        &[(VERIFIED_ANNOTATION, "job")],
    );
    claim(&mut observed, "data-orders-0", instance(), &[]);
    observed
}

#[test]
fn the_retention_a_reconcile_writes_on_the_dump_is_the_one_it_records_in_status() {
    use shared::reconcile::{Decision, assess, decide};
    let mut up = upgrade(UpgradePhase::Switching);
    up.major.as_mut().expect("major").switched_at = Some(status_time(at(STARTED + 30)));
    let database = with_upgrade(db("16", Some("16"), Some(true)), up);
    let observed = serving_16();
    let level = crate::level();
    // One reconcile, its clock just before a second boundary: desire (the
    // dump's annotation) and assess (status) see the same instant.
    let now = jiff::Timestamp::new(STARTED + 40, 999_999_999).expect("a time");
    let decision = decide(&level, &database, &observed, now).expect("decides");
    let draft = assess(
        &level,
        &database,
        &observed,
        &decision,
        &ApplyReport::default(),
        now,
    );
    let status = draft.fields.upgrade.clone().expect("recorded");
    assert_eq!(status.phase, UpgradePhase::Complete);
    let until = status
        .major
        .as_ref()
        .and_then(|m| m.retain_until.clone())
        .expect("a retention");
    let Decision::Apply { changes, .. } = &decision else {
        panic!("{decision:?}");
    };
    let dump = changes
        .iter()
        .find(|(o, _)| o.name == "orders-backup-16")
        .map(|(o, _)| o.clone())
        .expect("the dump's retention is written");
    assert_eq!(
        dump.value["metadata"]["annotations"][RETAIN_UNTIL_ANNOTATION],
        attempt_text(&until).as_str()
    );

    // The next reconcile, a moment later in the next second, finds the
    // annotation it would write already there: at rest nothing is written.
    let mut next = database.clone();
    next.status.get_or_insert_with(Default::default).upgrade = Some(status);
    let mut applied = observed.clone();
    for (object, _) in changes {
        if object.resource.kind == "PersistentVolumeClaim" {
            let mut value = object.value.clone();
            value["metadata"]["resourceVersion"] = "1".into();
            applied.insert(
                &object.resource,
                serde_json::from_value(value).expect("an object"),
            );
        }
    }
    let later = jiff::Timestamp::new(STARTED + 41, 200_000_000).expect("a time");
    let Decision::Apply { changes, .. } = decide(&level, &next, &applied, later).expect("decides")
    else {
        panic!("applies");
    };
    let claims: Vec<&str> = changes
        .iter()
        .filter(|(o, _)| o.resource.kind == "PersistentVolumeClaim")
        .map(|(o, _)| o.name.as_str())
        .collect();
    assert!(claims.is_empty(), "rewritten at rest: {claims:?}");
}
