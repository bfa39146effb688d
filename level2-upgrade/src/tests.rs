//! Unit tests of Level 2's decisions: which version changes are refused,
//! when a rollout starts, completes or is rolled back, and what a rollback
//! changes in the desired StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{ApiResource, DynamicObject};
use shared::api::{
    PostgresDB, PostgresDBSpec, PostgresDBStatus, StorageSpec, UpgradePhase, UpgradeSpec,
    UpgradeStatus,
};
use shared::capability::{ApplyReport, Capability, Desired, Observed, StatusDraft};
use shared::conditions::{Assessment, PROGRESSING, READY};

use crate::upgrade::{Upgrade, VersionChange, classify};
use level1_install::version::PgVersion;

fn v(text: &str) -> PgVersion {
    PgVersion::parse(text).expect("a valid version")
}

/// A database asking for `wanted` while `running` runs.
fn db(wanted: &str, running: Option<&str>) -> PostgresDB {
    let spec = PostgresDBSpec {
        version: wanted.into(),
        image: None,
        storage: StorageSpec {
            size: "1Gi".into(),
            storage_class_name: None,
        },
        resources: shared::api::ResourcesSpec::default_for_database(),
        database: Default::default(),
        parameters: BTreeMap::new(),
        paused: false,
        upgrade: Some(UpgradeSpec {
            health_timeout_seconds: 60,
        }),
    };
    let mut db = PostgresDB::new("orders", spec);
    db.metadata.namespace = Some("shop".into());
    db.metadata.uid = Some("uid-1".into());
    db.status = Some(PostgresDBStatus {
        current_version: running.map(String::from),
        ..Default::default()
    });
    db
}

fn at(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).expect("a valid time")
}

fn rollout(started: i64, phase: UpgradePhase) -> UpgradeStatus {
    UpgradeStatus {
        from_version: "16.2".into(),
        from_image: "postgres:16.2".into(),
        to_version: "16.4".into(),
        started_at: at(started).to_string(),
        phase,
        observed_downtime_seconds: 0,
        unready_since: None,
        major: None,
    }
}

/// Runs Upgrade::assess as the core would, after Level 1 concluded `ready`
/// and recorded `running`.
fn assess(db: &PostgresDB, running: &str, ready: bool, now: i64) -> StatusDraft {
    let mut draft = StatusDraft {
        now: Some(at(now)),
        ..Default::default()
    };
    draft.fields.current_version = Some(running.into());
    draft.conditions.set(
        READY,
        if ready {
            Assessment::yes("DatabaseReady", "")
        } else {
            Assessment::no("PodsNotReady", "")
        },
    );
    Upgrade.assess(
        db,
        &Observed::default(),
        &ApplyReport::default(),
        &mut draft,
    );
    draft
}

#[test]
fn versions_are_classified_by_major_then_minor() {
    assert_eq!(classify(v("16.4"), v("16.4")), VersionChange::Same);
    assert_eq!(classify(v("16.2"), v("16.4")), VersionChange::Minor);
    assert_eq!(
        classify(v("16.4"), v("16")),
        VersionChange::Minor,
        "the floating tag is the newest 16.x"
    );
    assert_eq!(classify(v("16.4"), v("16.2")), VersionChange::Downgrade);
    assert_eq!(classify(v("17.0"), v("16.9")), VersionChange::Downgrade);
    assert_eq!(classify(v("16.4"), v("17")), VersionChange::Major);
}

#[test]
fn a_lower_version_is_refused_naming_the_field() {
    let problems = Upgrade.validate(&db("16.2", Some("16.4")), &Observed::default());
    assert_eq!(problems.len(), 1);
    assert_eq!(
        (problems[0].field.as_str(), problems[0].reason.as_str()),
        ("spec.version", "RefusedDowngrade")
    );
}

#[test]
fn a_major_version_change_is_refused() {
    let problems = Upgrade.validate(&db("17", Some("16.4")), &Observed::default());
    assert_eq!(problems[0].reason, "RefusedMajorUpgrade");
}

#[test]
fn a_first_install_and_a_minor_upgrade_are_accepted() {
    assert!(
        Upgrade
            .validate(&db("16.4", None), &Observed::default())
            .is_empty()
    );
    assert!(
        Upgrade
            .validate(&db("16.4", Some("16.2")), &Observed::default())
            .is_empty()
    );
}

#[test]
fn a_minor_upgrade_starts_a_recorded_rollout() {
    let draft = assess(&db("16.4", Some("16.2")), "16.2", true, 100);
    let upgrade = draft.fields.upgrade.expect("a rollout is recorded");
    assert_eq!(
        (upgrade.from_version.as_str(), upgrade.to_version.as_str()),
        ("16.2", "16.4")
    );
    assert_eq!(upgrade.phase, UpgradePhase::Rolling);
    assert_eq!(upgrade.started_at, at(100).to_string());
    assert!(draft.conditions.is_true(PROGRESSING));
}

#[test]
fn a_rollout_completes_when_the_new_version_runs_and_is_ready_and_reports_downtime() {
    let mut database = db("16.4", Some("16.2"));
    let mut unready = rollout(100, UpgradePhase::Rolling);
    unready.unready_since = Some(at(110).to_string());
    database.status.as_mut().expect("status").upgrade = Some(unready);
    let draft = assess(&database, "16.4", true, 114);
    let upgrade = draft.fields.upgrade.expect("recorded");
    assert_eq!(upgrade.phase, UpgradePhase::Complete);
    assert_eq!(upgrade.observed_downtime_seconds, 4);
    let progressing = draft.conditions.get(PROGRESSING).expect("set");
    assert!(
        !progressing.status && progressing.reason == "UpgradeComplete",
        "{progressing:?}"
    );
}

#[test]
fn a_rollout_not_ready_within_the_health_timeout_is_rolled_back_with_a_warning() {
    let mut database = db("16.4", Some("16.2"));
    database.status.as_mut().expect("status").upgrade = Some(rollout(100, UpgradePhase::Rolling));
    let within = assess(&database, "16.2", false, 150);
    assert_eq!(
        within.fields.upgrade.expect("recorded").phase,
        UpgradePhase::Rolling
    );
    let after = assess(&database, "16.2", false, 161);
    assert_eq!(
        after.fields.upgrade.expect("recorded").phase,
        UpgradePhase::RolledBack
    );
    let progressing = after.conditions.get(PROGRESSING).expect("set");
    assert!(
        progressing.warning && progressing.reason == "UpgradeRolledBack",
        "{progressing:?}"
    );
}

fn desired_statefulset(database: &PostgresDB) -> (Desired, Observed) {
    let mut desired = Desired::default();
    let observed = Observed::default();
    level1_install::install::Install
        .desire(database, &observed, &mut desired)
        .expect("Level 1 desires");
    Upgrade
        .desire(database, &observed, &mut desired)
        .expect("Level 2 adjusts");
    (desired, observed)
}

fn image(desired: &Desired) -> String {
    let sts = desired
        .objects()
        .iter()
        .find(|o| o.resource.kind == "StatefulSet")
        .expect("a StatefulSet");
    sts.value["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn after_a_rollback_the_previous_image_stays_until_the_version_changes_again() {
    let mut database = db("16.4", Some("16.2"));
    database.status.as_mut().expect("status").upgrade =
        Some(rollout(100, UpgradePhase::RolledBack));
    assert_eq!(image(&desired_statefulset(&database).0), "postgres:16.2");
    database.spec.version = "16.5".into();
    assert_eq!(image(&desired_statefulset(&database).0), "postgres:16.5");
}

#[test]
fn a_rolled_back_pod_stuck_on_the_failed_revision_is_deleted() {
    let mut database = db("16.4", Some("16.2"));
    database.status.as_mut().expect("status").upgrade =
        Some(rollout(100, UpgradePhase::RolledBack));
    let mut observed = Observed::default();
    let sts = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "orders"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "postgres", "image": "postgres:16.2"}]}}},
        "status": {"replicas": 1, "updateRevision": "orders-old"}
    });
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-0", "labels": {"controller-revision-hash": "orders-new"}},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]}
    });
    observed.insert(
        &ApiResource::erase::<StatefulSet>(&()),
        serde_json::from_value::<DynamicObject>(sts).expect("valid"),
    );
    observed.insert(
        &ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        serde_json::from_value::<DynamicObject>(pod).expect("valid"),
    );
    let mut desired = Desired::default();
    level1_install::install::Install
        .desire(&database, &observed, &mut desired)
        .expect("Level 1 desires");
    Upgrade
        .desire(&database, &observed, &mut desired)
        .expect("Level 2 adjusts");
    let deleted: Vec<&str> = desired
        .deletions()
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(deleted, ["orders-0"]);
}

#[test]
fn level2_is_level1_plus_the_upgrade_capability() {
    let names: Vec<&str> = crate::capabilities().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["install", "upgrade"]);
    assert!(
        crate::level()
            .unimplemented_sections(&db("16.4", None))
            .is_empty()
    );
    assert_eq!(
        level1_install::level().unimplemented_sections(&db("16.4", None)),
        ["upgrade"]
    );
}
