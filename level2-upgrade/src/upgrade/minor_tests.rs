//! Unit tests of the minor upgrade and of the version policy: which version
//! changes are refused, when a rollout starts, completes or is rolled back,
//! and what a rollback changes in the desired StatefulSet.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use kube::api::ObjectMeta;
use shared::api::{PostgresDB, UpgradePhase, UpgradeStatus, status_time};
use shared::capability::{ApplyReport, Capability, Desired, Observed, StatusDraft};
use shared::conditions::{Assessment, PROGRESSING, READY};
use shared::keys::{CONTROLLER_REVISION_LABEL, INSTANCE_LABEL};
use shared::testing::{PodBuilder, at, put};

use crate::tests::{db, observed_pod, v};
use crate::upgrade::Upgrade;
use crate::upgrade::versions::{VersionChange, classify};
use shared::conditions::ConditionStatus;

fn rollout(started: i64, phase: UpgradePhase) -> UpgradeStatus {
    UpgradeStatus {
        from_version: "16.2".into(),
        from_image: "postgres:16.2".into(),
        to_version: "16.4".into(),
        started_at: status_time(at(started)),
        phase,
        observed_downtime_seconds: 0,
        unready_since: None,
        major: None,
    }
}

/// Runs Upgrade::assess as the core would, after Level 1 concluded `ready`
/// and recorded `running`, with the server confirming `running`.
fn assess(db: &PostgresDB, running: &str, ready: bool, now: i64) -> StatusDraft {
    let reports = format!("{running} (Debian {running}-1.pgdg120+1)");
    assess_with(db, running, ready, now, &observed_pod(Some(Ok(&reports))))
}

fn assess_with(
    db: &PostgresDB,
    running: &str,
    ready: bool,
    now: i64,
    observed: &Observed,
) -> StatusDraft {
    let mut draft = StatusDraft {
        now: at(now),
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
    Upgrade.assess(db, observed, &ApplyReport::default(), &mut draft);
    draft
}

#[test]
fn a_ready_rollout_is_not_complete_until_the_server_reports_the_new_version() {
    let mut database = db("16.4", Some("16.2"));
    database.status.as_mut().expect("status").upgrade = Some(rollout(100, UpgradePhase::Rolling));
    let other = assess_with(
        &database,
        "16.4",
        true,
        110,
        &observed_pod(Some(Ok("16.14"))),
    );
    assert_eq!(
        other.fields.upgrade.expect("recorded").phase,
        UpgradePhase::Rolling
    );
    let progressing = other.conditions.get(PROGRESSING).expect("set");
    assert!(
        progressing
            .message
            .contains("reports version 16.14, not 16.4"),
        "{progressing:?}"
    );
    let silent = assess_with(
        &database,
        "16.4",
        true,
        110,
        &observed_pod(Some(Err("connection refused"))),
    );
    let progressing = silent.conditions.get(PROGRESSING).expect("set");
    assert!(
        progressing
            .message
            .contains("did not answer SHOW server_version: connection refused"),
        "{progressing:?}"
    );
    let confirmed = assess_with(
        &database,
        "16.4",
        true,
        110,
        &observed_pod(Some(Ok("16.4"))),
    );
    assert_eq!(
        confirmed.fields.upgrade.expect("recorded").phase,
        UpgradePhase::Complete
    );
}

#[test]
fn a_rollout_whose_server_never_confirms_is_rolled_back_at_the_timeout() {
    let mut database = db("16.4", Some("16.2"));
    database.status.as_mut().expect("status").upgrade = Some(rollout(100, UpgradePhase::Rolling));
    let draft = assess_with(
        &database,
        "16.4",
        true,
        161,
        &observed_pod(Some(Ok("16.14"))),
    );
    assert_eq!(
        draft.fields.upgrade.expect("recorded").phase,
        UpgradePhase::RolledBack
    );
}

#[test]
fn the_server_is_asked_its_version_only_while_a_rollout_waits() {
    let observed = observed_pod(None);
    let at_rest = db("16.4", Some("16.4"));
    assert!(crate::upgrade::minor::sql_probes(&at_rest, &observed).is_empty());
    let mut rolling = db("16.4", Some("16.2"));
    rolling.status.as_mut().expect("status").upgrade = Some(rollout(100, UpgradePhase::Rolling));
    let probes = crate::upgrade::minor::sql_probes(&rolling, &observed);
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].statement, "SHOW server_version");
    assert_eq!(probes[0].target.pod_ip.as_deref(), Some("10.0.0.7"));
    assert_eq!(probes[0].target.user, "postgres");
}

#[test]
fn server_versions_are_read_from_their_leading_numbers() {
    use crate::logins::{parse_server_version, satisfies};
    assert_eq!(
        parse_server_version("16.4 (Debian 16.4-1.pgdg120+1)"),
        Some(v("16.4"))
    );
    assert_eq!(parse_server_version("17.0"), Some(v("17.0")));
    assert_eq!(parse_server_version("devel"), None);
    assert!(
        satisfies(v("16.14"), v("16")),
        "a floating tag is any minor"
    );
    assert!(satisfies(v("16.4"), v("16.4")));
    assert!(!satisfies(v("16.14"), v("16.4")));
    assert!(!satisfies(v("17.0"), v("16")));
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
    assert_eq!(upgrade.started_at, status_time(at(100)));
    assert!(draft.conditions.is_true(PROGRESSING));
}

#[test]
fn a_rollout_completes_when_the_new_version_runs_and_is_ready_and_reports_downtime() {
    let mut database = db("16.4", Some("16.2"));
    let mut unready = rollout(100, UpgradePhase::Rolling);
    unready.unready_since = Some(status_time(at(110)));
    database.status.as_mut().expect("status").upgrade = Some(unready);
    let draft = assess(&database, "16.4", true, 114);
    let upgrade = draft.fields.upgrade.expect("recorded");
    assert_eq!(upgrade.phase, UpgradePhase::Complete);
    assert_eq!(upgrade.observed_downtime_seconds, 4);
    let progressing = draft.conditions.get(PROGRESSING).expect("set");
    assert!(
        progressing.status == ConditionStatus::False && progressing.reason == "UpgradeComplete",
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
        progressing.is_warning() && progressing.reason == "UpgradeRolledBack",
        "{progressing:?}"
    );
}

fn desired_statefulset(database: &PostgresDB) -> (Desired, Observed) {
    let mut desired = Desired::default();
    let observed = Observed::default();
    for capability in crate::capabilities() {
        capability
            .desire(database, &observed, at(1_000), &mut desired)
            .expect("desires");
    }
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
    put(
        &mut observed,
        &StatefulSet {
            metadata: ObjectMeta {
                name: Some("orders".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "postgres".into(),
                            image: Some("postgres:16.2".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                replicas: 1,
                update_revision: Some("orders-old".into()),
                ..Default::default()
            }),
        },
    );
    put(
        &mut observed,
        &PodBuilder::named("orders-0")
            .label(CONTROLLER_REVISION_LABEL, "orders-new")
            .ready(false)
            .build(),
    );
    let mut desired = Desired::default();
    for capability in crate::capabilities() {
        capability
            .desire(&database, &observed, at(1_000), &mut desired)
            .expect("desires");
    }
    let deleted: Vec<&str> = desired
        .deletions()
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(deleted, ["orders-0"]);
}

#[test]
fn a_finished_job_pod_of_the_database_is_not_asked_its_version() {
    let mut database = db("16.4", Some("16.2"));
    database.status.as_mut().expect("status").upgrade = Some(rollout(100, UpgradePhase::Rolling));
    let mut observed = observed_pod(Some(Ok("16.4")));
    put(
        &mut observed,
        &PodBuilder::named("orders-upgrade-16-abc-x1")
            .label(INSTANCE_LABEL, "orders")
            .owned_by::<k8s_openapi::api::batch::v1::Job>("orders-upgrade-16-abc")
            .phase("Succeeded")
            .ip("10.0.0.9")
            .build(),
    );
    assert_eq!(
        crate::upgrade::minor::sql_probes(&database, &observed).len(),
        1
    );
    let draft = assess_with(&database, "16.4", true, 110, &observed);
    assert_eq!(
        draft.fields.upgrade.expect("recorded").phase,
        UpgradePhase::Complete
    );
}
