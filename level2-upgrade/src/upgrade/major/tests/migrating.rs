//! A major upgrade from its start to the end of its migration: when it
//! starts, the Job it runs, and the ways a migration ends early.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::JobStatus;
use serde_json::Value;
use shared::api::{PostgresDB, UpgradePhase};
use shared::capability::{Capability, Observed, StatusDraft};
use shared::conditions::{PROGRESSING, READY};
use shared::keys::ATTEMPT_ANNOTATION;
use shared::keys::INSTANCE_LABEL;
use shared::testing::at;

use super::*;
use crate::upgrade::Upgrade;
use crate::upgrade::major::job::{
    INCOMPLETE_MARKER, MIGRATION_SCRIPT, Migration, migration_job, migration_outcome,
};
use crate::upgrade::major::names::job_name;
use crate::upgrade::major::progress::{Transition, progress};
use shared::conditions::ConditionStatus;

#[test]
fn a_major_change_is_refused_unless_the_spec_allows_it_and_a_downgrade_always_is() {
    let reasons = |database: &PostgresDB| -> Vec<String> {
        Upgrade
            .validate(database, &Observed::default())
            .into_iter()
            .map(|p| p.reason)
            .collect()
    };
    assert_eq!(
        reasons(&db("16", Some("15"), None)),
        ["RefusedMajorUpgrade"]
    );
    assert_eq!(
        reasons(&db("16", Some("15"), Some(false))),
        ["RefusedMajorUpgrade"]
    );
    assert!(reasons(&db("16", Some("15"), Some(true))).is_empty());
    assert!(
        reasons(&db("17", Some("15"), Some(true))).is_empty(),
        "skipping a major works: pg_dumpall and psql of the new major read any older one"
    );
    assert_eq!(
        reasons(&db("15", Some("16"), Some(true))),
        ["RefusedDowngrade"]
    );
    assert!(
        progress(
            &db("16", Some("15"), Some(false)),
            &Observed::default(),
            at(0)
        )
        .upgrade
        .is_none()
    );
}

#[test]
fn job_names_fit_a_label_and_differ_per_attempt() {
    let long = "a".repeat(52);
    let name = job_name(&long, 16, "2026-01-01T00:00:00Z");
    assert!(name.len() <= 63, "{name}");
    assert!(name.contains("-upgrade-16-"), "{name}");
    assert_ne!(
        job_name("orders", 16, "2026-01-01T00:00:00Z"),
        job_name("orders", 16, "2026-01-01T00:00:01Z")
    );
    assert_eq!(
        job_name("orders", 16, "2026-01-01T00:00:00Z"),
        job_name("orders", 16, "2026-01-01T00:00:00Z")
    );
}

#[test]
fn an_allowed_major_change_starts_a_migration_recorded_from_the_cluster() {
    let database = db("16", Some("15"), Some(true));
    let mut observed = Observed::default();
    live_sts(&mut observed, "postgres:15", "15", None, true);
    let progress = progress(&database, &observed, at(STARTED));
    assert_eq!(progress.transition, Some(Transition::Started));
    assert!(!progress.recorded);
    let up = progress.upgrade.expect("an upgrade");
    assert_eq!(up, upgrade(UpgradePhase::Migrating));

    // The status is written by assess; the minor capability does not start a rollout.
    let draft = assess(&database, &observed, STARTED);
    assert_eq!(draft.fields.upgrade, Some(upgrade(UpgradePhase::Migrating)));
    let progressing = draft.conditions.get(PROGRESSING).expect("set");
    assert!(
        progressing.status == ConditionStatus::True
            && progressing.reason == "MajorUpgradeMigrating"
    );
    let ready = draft.conditions.get(READY).expect("set");
    assert!(
        ready.status == ConditionStatus::False && ready.reason == "MajorUpgradeMigrating",
        "{ready:?}"
    );
}

#[test]
fn a_major_upgrade_in_a_refused_reconcile_is_not_recorded_as_started() {
    // Allowed by Level 2, but the reconcile is refused for another reason
    // (a higher level's check, another field): nothing was applied.
    let database = db("16", Some("15"), Some(true));
    let mut observed = Observed::default();
    live_sts(&mut observed, "postgres:15", "15", None, true);
    let mut draft = StatusDraft {
        now: at(STARTED),
        refused: true,
        ..Default::default()
    };
    Upgrade.assess(&database, &observed, &ApplyReport::default(), &mut draft);
    assert_eq!(draft.fields.upgrade, None, "no attempt recorded");
    assert!(draft.conditions.get(PROGRESSING).is_none());
    // Once the reconcile is not refused, the attempt starts, at its time.
    let later = assess(&database, &observed, STARTED + 600);
    let up = later.fields.upgrade.expect("started");
    assert_eq!(up.phase, UpgradePhase::Migrating);
    assert_eq!(up.started_at, shared::api::status_time(at(STARTED + 600)));
}

#[test]
fn the_first_reconcile_pins_the_old_image_and_fences_writes_before_any_job_exists() {
    let database = db("16", Some("15"), Some(true));
    let desired = desired(&database, &Observed::default(), STARTED);
    assert_eq!(
        image(&desired),
        "postgres:15",
        "Level 1 would run 16 on 15's data"
    );
    assert_eq!(version_annotation(&desired), "15");
    assert_eq!(mounted_claim(&desired), "data-orders-0");
    assert!(fenced(&desired));
    assert!(object(&desired, "PersistentVolumeClaim", "orders-data-16").is_some());
    assert!(
        desired.objects().iter().all(|o| o.resource.kind != "Job"),
        "the Job's name is known once the attempt is recorded"
    );
    assert!(
        desired
            .notes
            .iter()
            .any(|n| n.reason == "MajorUpgradeStarted")
    );
}

#[test]
fn while_migrating_a_job_of_the_new_image_dumps_restores_and_verifies_onto_unowned_volumes() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let desired = desired(&database, &Observed::default(), STARTED + 5);
    assert_eq!(image(&desired), "postgres:15");
    assert!(fenced(&desired));
    for name in ["orders-data-16", "orders-backup-16"] {
        let claim = object(&desired, "PersistentVolumeClaim", name).expect("a PVC");
        assert!(!claim.owned, "volumes outlive the database");
        assert_eq!(
            claim.value["spec"]["resources"]["requests"]["storage"],
            "1Gi"
        );
    }
    let job = object(&desired, "Job", &job_of(&up)).expect("the Job");
    assert!(job.owned);
    let spec = &job.value["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["suspend"], false);
    assert_eq!(
        job.value["metadata"]["annotations"][ATTEMPT_ANNOTATION], "1970-01-12T13:46:40Z",
        "the attempt's start, as status records it"
    );
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "postgres:16");
    assert_eq!(container["command"][0], "sh");
    let env: BTreeMap<String, Value> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e.clone(),
            )
        })
        .collect();
    assert_eq!(
        env["PGHOST"]["value"], "orders-0.orders-headless.shop.svc",
        "the old server, past the fenced Service"
    );
    assert_eq!(
        env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"],
        "orders-superuser"
    );
    assert_eq!(env["PGDATA"]["value"], "/var/lib/postgresql/data/pgdata");
    assert_eq!(env["FROM_VERSION"]["value"], "15");
    assert_eq!(env["TO_VERSION"]["value"], "16");
    let claims: Vec<&str> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .collect();
    assert_eq!(claims, ["orders-data-16", "orders-backup-16"]);

    // The Job's pod is read by the operator but served by no Service.
    let service = object(&desired, "Service", "orders-headless").expect("the headless Service");
    let pod_labels = &spec["template"]["metadata"]["labels"];
    let selected = service.value["spec"]["selector"]
        .as_object()
        .expect("a selector")
        .iter()
        .all(|(k, v)| pod_labels.get(k) == Some(v));
    assert!(!selected, "{pod_labels}");
    assert_eq!(pod_labels[INSTANCE_LABEL], "orders");
}

#[test]
fn the_job_is_the_same_at_every_reconcile_so_a_restarted_operator_changes_nothing() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let mut observed = Observed::default();
    job(&mut observed, &job_of(&up), active());
    job_pod(&mut observed, &job_of(&up), "Running", running());
    let first = desired(&database, &observed, STARTED + 5);
    let later = desired(&database, &observed, STARTED + 5000);
    assert_eq!(
        object(&first, "Job", &job_of(&up)),
        object(&later, "Job", &job_of(&up))
    );
    let progress = progress(&database, &observed, at(STARTED + 5000));
    assert_eq!(
        progress.phase(),
        Some(UpgradePhase::Migrating),
        "a running Job has no deadline"
    );
    assert_eq!(progress.transition, None);
}

#[test]
fn the_migration_script_is_valid_sh_and_does_every_step() {
    let status = std::process::Command::new("sh")
        .args(["-n", "-c", MIGRATION_SCRIPT])
        .status()
        .expect("sh runs");
    assert!(status.success());
    for step in [
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "pg_reload_conf()",
        "pg_terminate_backend",
        "pg_dumpall",
        "initdb",
        "pg_ctl",
        "ON_ERROR_STOP=1",
        "md5(t::text)",
        "last_value, is_called",
        "trap 'exit 143' TERM",
        "lo_get(oid)",
        "cmp -s",
        "/dev/termination-log",
        INCOMPLETE_MARKER,
    ] {
        assert!(MIGRATION_SCRIPT.contains(step), "{step}");
    }
}

#[test]
fn the_migration_timeout_is_the_job_s_deadline_and_unset_means_none() {
    let up = upgrade(UpgradePhase::Migrating);
    let mut database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let deadline = |database: &PostgresDB| {
        migration_job(database, &up, false).and_then(|job| job.spec?.active_deadline_seconds)
    };
    assert_eq!(deadline(&database), None);
    if let Some(upgrade) = database.spec.upgrade.as_mut() {
        upgrade.migration_timeout_seconds = Some(3600);
    }
    assert_eq!(deadline(&database), Some(3600));
}

#[test]
fn a_migration_past_its_deadline_rolls_back_naming_the_setting() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let mut observed = Observed::default();
    job(
        &mut observed,
        &job_of(&up),
        JobStatus {
            failed: Some(1),
            conditions: Some(vec![condition(
                "Failed",
                Some("DeadlineExceeded"),
                "Job was active longer than specified deadline",
            )]),
            ..Default::default()
        },
    );
    let draft = assess(&database, &observed, STARTED + 30);
    let after = draft.fields.upgrade.clone().expect("recorded");
    assert_eq!(after.phase, UpgradePhase::RolledBack);
    let failure = after.major.and_then(|m| m.failure).unwrap_or_default();
    assert!(
        failure.contains("spec.upgrade.migrationTimeoutSeconds"),
        "{failure}"
    );
}

#[test]
fn a_job_marked_to_fail_has_failed_even_if_its_stopping_pod_exits_0() {
    let up = upgrade(UpgradePhase::Migrating);
    let mut observed = Observed::default();
    job(
        &mut observed,
        &job_of(&up),
        JobStatus {
            succeeded: Some(1),
            conditions: Some(vec![condition(
                "FailureTarget",
                Some("DeadlineExceeded"),
                "Job was active longer than specified deadline",
            )]),
            ..Default::default()
        },
    );
    assert!(matches!(
        migration_outcome(&observed, &job_of(&up)),
        Migration::Failed(why) if why.contains("migrationTimeoutSeconds")
    ));
}

#[test]
fn a_job_that_cannot_start_within_the_health_timeout_is_rolled_back_and_stopped() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let mut observed = Observed::default();
    job(&mut observed, &job_of(&up), active());
    job_pod(
        &mut observed,
        &job_of(&up),
        "Pending",
        waiting("ImagePullBackOff", "no such image"),
    );
    let within = progress(&database, &observed, at(STARTED + 59));
    assert_eq!(within.phase(), Some(UpgradePhase::Migrating));
    let after = progress(&database, &observed, at(STARTED + 61));
    assert_eq!(after.phase(), Some(UpgradePhase::RolledBack));
    let failure = after
        .parts()
        .and_then(|(_, m)| m.failure.clone())
        .unwrap_or_default();
    assert!(failure.contains("ImagePullBackOff"), "{failure}");

    let rolled_back = with_upgrade(database, after.upgrade.expect("an upgrade"));
    let desired = desired(&rolled_back, &observed, STARTED + 62);
    let stopped = object(&desired, "Job", &job_of(&up)).expect("the Job is suspended");
    assert_eq!(stopped.value["spec"]["suspend"], true);
    assert_eq!(deleted(&desired, "Pod"), [format!("{}-x1", job_of(&up))]);
}

#[test]
fn job_outcomes_are_read_from_the_job_and_its_pod() {
    let mut observed = Observed::default();
    assert_eq!(migration_outcome(&observed, "j"), Migration::Absent);
    job(&mut observed, "j", active());
    assert!(matches!(
        migration_outcome(&observed, "j"),
        Migration::Pending(_)
    ));
    job(
        &mut observed,
        "j",
        JobStatus {
            failed: Some(1),
            ..Default::default()
        },
    );
    let Migration::Failed(why) = migration_outcome(&observed, "j") else {
        panic!("failed");
    };
    assert!(
        why.contains("kubectl logs job/j"),
        "without a termination message, where to look: {why}"
    );
}

#[test]
fn changing_the_version_during_the_migration_cancels_it_and_stops_the_job() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("15", Some("15"), Some(true)), up.clone());
    let mut observed = Observed::default();
    job(&mut observed, &job_of(&up), active());
    job_pod(&mut observed, &job_of(&up), "Running", running());
    let progress = progress(&database, &observed, at(STARTED + 10));
    assert_eq!(progress.transition, Some(Transition::Cancelled));
    assert!(
        progress
            .parts()
            .is_some_and(|(u, m)| u.phase == UpgradePhase::RolledBack && m.closed)
    );
    let desired = desired(&database, &observed, STARTED + 10);
    assert!(!fenced(&desired));
    assert_eq!(image(&desired), "postgres:15");
    assert_eq!(
        object(&desired, "Job", &job_of(&up))
            .expect("suspended")
            .value["spec"]["suspend"],
        true
    );
}

#[test]
fn the_minor_capability_leaves_a_major_upgrade_alone() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let mut draft = StatusDraft {
        now: at(STARTED + 10_000),
        ..Default::default()
    };
    draft.fields.current_version = Some("15".into());
    let minor = crate::upgrade::minor::assess(&database, &Observed::default(), &mut draft);
    assert_eq!(minor, Some(up), "handed on to the major upgrade as it was");
    assert!(draft.conditions.get(PROGRESSING).is_none());
}

#[test]
fn a_paused_database_freezes_the_upgrade_where_it_is() {
    let up = upgrade(UpgradePhase::Switching);
    let mut database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    database.spec.paused = true;
    let progress = progress(&database, &Observed::default(), at(STARTED + 100_000));
    assert_eq!(progress.upgrade, Some(up));
    assert_eq!(progress.transition, None);
}
