//! Unit tests of the major upgrade's decisions: when a migration starts,
//! what the objects look like in each phase, when it switches, completes or
//! rolls back, how a restarted operator carries on, and what the retention
//! deletes (and never deletes).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Resource;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use shared::api::{MajorUpgradeStatus, PostgresDB, UpgradePhase, UpgradeSpec, UpgradeStatus};
use shared::capability::{ApplyReport, Capability, Desired, Observed, StatusDraft};
use shared::conditions::{Assessment, PROGRESSING, READY};

use crate::major::{
    self, ATTEMPT_ANNOTATION, FENCE_LABEL, JobOutcome, MIGRATION_SCRIPT, MajorUpgrade,
    RETAIN_UNTIL_ANNOTATION, Transition, VERIFIED_ANNOTATION, VOLUME_LABEL,
};
use crate::tests::at;
use crate::upgrade::Upgrade;
use level1_install::objects::{DATA_MOUNT, VERSION_ANNOTATION};

const STARTED: i64 = 1_000_000;

/// A database asking for `wanted` while `running` runs, with a
/// `spec.upgrade` allowing a major change or not (none when `None`).
fn db(wanted: &str, running: Option<&str>, allow_major: Option<bool>) -> PostgresDB {
    let mut db = crate::tests::db(wanted, running);
    db.spec.upgrade = allow_major.map(|allow_major| UpgradeSpec {
        health_timeout_seconds: 60,
        allow_major,
        retention_hours: 24,
        migration_timeout_seconds: None,
    });
    db
}

/// The status of the 15 to 16 upgrade started at STARTED, in `phase`.
pub(crate) fn upgrade(phase: UpgradePhase) -> UpgradeStatus {
    let started_at = at(STARTED).to_string();
    UpgradeStatus {
        from_version: "15".into(),
        from_image: "postgres:15".into(),
        to_version: "16".into(),
        phase,
        observed_downtime_seconds: 0,
        unready_since: None,
        major: Some(MajorUpgradeStatus {
            previous_data_volume: "data-orders-0".into(),
            data_volume: "orders-data-16".into(),
            backup_volume: "orders-backup-16".into(),
            job: major::job_name("orders", 16, &started_at),
            to_image: "postgres:16".into(),
            ..Default::default()
        }),
        started_at,
    }
}

fn with_upgrade(mut database: PostgresDB, up: UpgradeStatus) -> PostgresDB {
    database.status.get_or_insert_with(Default::default).upgrade = Some(up);
    database
}

fn job_of(up: &UpgradeStatus) -> String {
    up.major.as_ref().expect("major").job.clone()
}

fn put<K: Resource<DynamicType = ()>>(observed: &mut Observed, value: Value) {
    observed.insert(
        &ApiResource::erase::<K>(&()),
        serde_json::from_value::<DynamicObject>(value).expect("a valid object"),
    );
}

/// The live StatefulSet: `image` with `version`, mounting `claim` through a
/// pod-template volume when given, rolled out and ready or not.
fn live_sts(observed: &mut Observed, image: &str, version: &str, claim: Option<&str>, ready: bool) {
    let volumes: Vec<Value> = claim
        .map(|c| json!({"name": "data-16", "persistentVolumeClaim": {"claimName": c}}))
        .into_iter()
        .collect();
    put::<StatefulSet>(
        observed,
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "orders", "generation": 3},
            "spec": {"replicas": 1, "selector": {}, "template": {
                "metadata": {"annotations": {VERSION_ANNOTATION: version}},
                "spec": {"containers": [{"name": "postgres", "image": image}], "volumes": volumes}}},
            "status": {"replicas": 1, "observedGeneration": 3, "updatedReplicas": 1,
                       "readyReplicas": if ready { 1 } else { 0 },
                       "currentRevision": "orders-new", "updateRevision": "orders-new"}
        }),
    );
}

fn claim(observed: &mut Observed, name: &str, labels: Value, annotations: Value) {
    put::<PersistentVolumeClaim>(
        observed,
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }),
    );
}

fn ours(role: &str) -> Value {
    json!({"pgdb.example.com/instance": "orders", VOLUME_LABEL: role})
}

fn job(observed: &mut Observed, name: &str, status: Value) {
    put::<Job>(
        observed,
        json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": []}}},
            "status": status
        }),
    );
}

fn job_pod(observed: &mut Observed, job: &str, phase: &str, state: Value) {
    put::<Pod>(
        observed,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{job}-x1"), "labels": {"job-name": job}},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "upgrade", "image": "postgres:16", "imageID": "", "ready": false,
                "restartCount": 0, "state": state}]}
        }),
    );
}

/// What Level 1, the minor upgrade and the major upgrade desire, at `now`.
fn desired(database: &PostgresDB, observed: &Observed, now: i64) -> Desired {
    let mut desired = Desired::default();
    level1_install::install::Install
        .desire(database, observed, &mut desired)
        .expect("Level 1 desires");
    Upgrade
        .desire(database, observed, &mut desired)
        .expect("the minor upgrade adjusts");
    let progress = major::progress(database, observed, at(now));
    major::apply_plan(
        database,
        major::plan(database, observed, &progress, at(now)),
        &mut desired,
    )
    .expect("the major upgrade adjusts");
    desired
}

fn object<'a>(
    desired: &'a Desired,
    kind: &str,
    name: &str,
) -> Option<&'a shared::capability::DesiredObject> {
    desired
        .objects()
        .iter()
        .find(|o| o.resource.kind == kind && o.name == name)
}

fn sts(desired: &Desired) -> &Value {
    &object(desired, "StatefulSet", "orders")
        .expect("a StatefulSet")
        .value
}

fn image(desired: &Desired) -> String {
    sts(desired)["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn version_annotation(desired: &Desired) -> String {
    sts(desired)["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The claim mounted at the data directory: the claim template's ("data")
/// unless a pod-template volume says otherwise.
fn mounted_claim(desired: &Desired) -> String {
    let pod = &sts(desired)["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["mountPath"] == DATA_MOUNT))
        .and_then(|m| m["name"].as_str())
        .unwrap_or_default()
        .to_string();
    if mount == "data" {
        return "data-orders-0".into();
    }
    pod["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == mount.as_str()))
        .and_then(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .unwrap_or("no such volume")
        .to_string()
}

fn fenced(desired: &Desired) -> bool {
    object(desired, "Service", "orders")
        .expect("the Service")
        .value["spec"]["selector"]
        .get(FENCE_LABEL)
        .is_some()
}

fn deleted(desired: &Desired, kind: &str) -> Vec<String> {
    desired
        .deletions()
        .iter()
        .filter(|d| d.resource.kind == kind)
        .map(|d| d.name.clone())
        .collect()
}

fn assess(database: &PostgresDB, observed: &Observed, now: i64) -> StatusDraft {
    let mut draft = StatusDraft {
        now: Some(at(now)),
        ..Default::default()
    };
    draft.fields.current_version = database
        .status
        .as_ref()
        .and_then(|s| s.current_version.clone());
    draft
        .conditions
        .set(READY, Assessment::yes("DatabaseReady", ""));
    Upgrade.assess(database, observed, &ApplyReport::default(), &mut draft);
    MajorUpgrade.assess(database, observed, &ApplyReport::default(), &mut draft);
    draft
}

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
        major::progress(
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
    let name = major::job_name(&long, 16, "2026-01-01T00:00:00Z");
    assert!(name.len() <= 63, "{name}");
    assert!(name.contains("-upgrade-16-"), "{name}");
    assert_ne!(
        major::job_name("orders", 16, "2026-01-01T00:00:00Z"),
        major::job_name("orders", 16, "2026-01-01T00:00:01Z")
    );
    assert_eq!(
        major::job_name("orders", 16, "2026-01-01T00:00:00Z"),
        major::job_name("orders", 16, "2026-01-01T00:00:00Z")
    );
}

#[test]
fn an_allowed_major_change_starts_a_migration_recorded_from_the_cluster() {
    let database = db("16", Some("15"), Some(true));
    let mut observed = Observed::default();
    live_sts(&mut observed, "postgres:15", "15", None, true);
    let progress = major::progress(&database, &observed, at(STARTED));
    assert_eq!(progress.transition, Some(Transition::Started));
    assert!(!progress.recorded);
    let up = progress.upgrade.expect("an upgrade");
    assert_eq!(up, upgrade(UpgradePhase::Migrating));

    // The status is written by assess; the minor capability does not start a rollout.
    let draft = assess(&database, &observed, STARTED);
    assert_eq!(draft.fields.upgrade, Some(upgrade(UpgradePhase::Migrating)));
    let progressing = draft.conditions.get(PROGRESSING).expect("set");
    assert!(progressing.status && progressing.reason == "MajorUpgradeMigrating");
    let ready = draft.conditions.get(READY).expect("set");
    assert!(
        !ready.status && ready.reason == "MajorUpgradeMigrating",
        "{ready:?}"
    );
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
        job.value["metadata"]["annotations"][ATTEMPT_ANNOTATION],
        up.started_at
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
    assert_eq!(pod_labels["pgdb.example.com/instance"], "orders");
}

#[test]
fn the_job_is_the_same_at_every_reconcile_so_a_restarted_operator_changes_nothing() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let mut observed = Observed::default();
    job(&mut observed, &job_of(&up), json!({"active": 1}));
    job_pod(
        &mut observed,
        &job_of(&up),
        "Running",
        json!({"running": {}}),
    );
    let first = desired(&database, &observed, STARTED + 5);
    let later = desired(&database, &observed, STARTED + 5000);
    assert_eq!(
        object(&first, "Job", &job_of(&up)),
        object(&later, "Job", &job_of(&up))
    );
    let progress = major::progress(&database, &observed, at(STARTED + 5000));
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
        major::INCOMPLETE_MARKER,
    ] {
        assert!(MIGRATION_SCRIPT.contains(step), "{step}");
    }
}

#[test]
fn a_succeeded_job_switches_the_statefulset_to_the_new_image_on_the_new_volume() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let mut observed = Observed::default();
    job(
        &mut observed,
        &job_of(&up),
        json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
    );
    job_pod(
        &mut observed,
        &job_of(&up),
        "Succeeded",
        json!({"terminated": {"exitCode": 0, "message": "verified 3 databases, 2 tables, 5 rows"}}),
    );
    let progress = major::progress(&database, &observed, at(STARTED + 30));
    assert_eq!(progress.transition, Some(Transition::Verified));
    let (after, major_status) = progress.parts().expect("an upgrade");
    assert_eq!(after.phase, UpgradePhase::Switching);
    assert_eq!(
        major_status.verified.as_deref(),
        Some("verified 3 databases, 2 tables, 5 rows")
    );
    assert_eq!(major_status.switched_at, Some(at(STARTED + 30).to_string()));

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
        json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "message": "backoff"}]}),
    );
    job_pod(
        &mut observed,
        &job_of(&up),
        "Failed",
        json!({"terminated": {"exitCode": 1, "message": "restoring the dump into 16 failed: ERROR: unrecognized configuration parameter"}}),
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
        progressing.warning && progressing.reason == "MajorUpgradeRolledBack",
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
fn the_migration_timeout_is_the_job_s_deadline_and_unset_means_none() {
    let up = upgrade(UpgradePhase::Migrating);
    let mut database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let deadline = |database: &PostgresDB| {
        major::migration_job(database, &up, false).and_then(|job| job.spec?.active_deadline_seconds)
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
        json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True",
               "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}),
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
        json!({"succeeded": 1, "conditions": [{"type": "FailureTarget", "status": "True",
               "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}),
    );
    assert!(matches!(
        major::job_outcome(&observed, &job_of(&up)),
        JobOutcome::Failed(why) if why.contains("migrationTimeoutSeconds")
    ));
}

#[test]
fn a_job_that_cannot_start_within_the_health_timeout_is_rolled_back_and_stopped() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let mut observed = Observed::default();
    job(&mut observed, &job_of(&up), json!({"active": 1}));
    job_pod(
        &mut observed,
        &job_of(&up),
        "Pending",
        json!({"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}),
    );
    let within = major::progress(&database, &observed, at(STARTED + 59));
    assert_eq!(within.phase(), Some(UpgradePhase::Migrating));
    let after = major::progress(&database, &observed, at(STARTED + 61));
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
fn the_switch_completes_when_the_new_major_serves_from_the_new_volume_confirmed_by_sql_and_starts_the_retention()
 {
    let mut up = upgrade(UpgradePhase::Switching);
    up.major.as_mut().expect("major").switched_at = Some(at(STARTED + 30).to_string());
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
        major::progress(&database, &observed, at(STARTED + 40)).phase(),
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
    put::<Pod>(
        &mut observed,
        json!({"metadata": {"name": "orders-0", "namespace": "shop",
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                 "name": "orders", "uid": "sts-1"}]},
               "status": {"phase": "Running", "podIP": "10.0.0.7"}}),
    );
    assert_eq!(
        major::progress(&database, &observed, at(STARTED + 40)).phase(),
        Some(UpgradePhase::Switching),
        "ready, but its server has not said it runs 16"
    );
    observed.insert_sql(
        "server_version/orders-0",
        Ok(vec![vec![Some("16.4 (Debian 16.4-1.pgdg120+1)".into())]]),
    );
    let progress = major::progress(&database, &observed, at(STARTED + 40));
    assert_eq!(progress.transition, Some(Transition::Completed));
    let (after, major_status) = progress.parts().expect("an upgrade");
    assert_eq!(after.phase, UpgradePhase::Complete);
    let until = at(STARTED + 40)
        .checked_add(jiff::SignedDuration::from_hours(24))
        .expect("a time");
    assert_eq!(major_status.retain_until, Some(until.to_string()));
}

#[test]
fn a_switch_not_ready_within_the_health_timeout_is_rolled_back_and_the_stuck_pod_deleted() {
    let mut up = upgrade(UpgradePhase::Switching);
    up.major.as_mut().expect("major").switched_at = Some(at(STARTED + 30).to_string());
    let database = with_upgrade(db("16", Some("15"), Some(true)), up);
    let mut observed = Observed::default();
    live_sts(
        &mut observed,
        "postgres:16",
        "16",
        Some("orders-data-16"),
        false,
    );
    let progress = major::progress(&database, &observed, at(STARTED + 91));
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
    put::<StatefulSet>(
        &mut reverted,
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "orders"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "postgres", "image": "postgres:15"}]}}},
            "status": {"replicas": 1, "updateRevision": "orders-old"}
        }),
    );
    put::<Pod>(
        &mut reverted,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "orders-0", "labels": {"controller-revision-hash": "orders-new"}},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        }),
    );
    let desired_then = desired(&rolled_back, &reverted, STARTED + 95);
    assert_eq!(deleted(&desired_then, "Pod"), ["orders-0"]);
}

#[test]
fn after_completion_the_new_volume_stays_mounted_and_kept_volumes_are_marked_with_their_retention()
{
    let mut up = upgrade(UpgradePhase::Complete);
    let until = at(STARTED + 3600).to_string();
    up.major.as_mut().expect("major").retain_until = Some(until.clone());
    let database = with_upgrade(db("16", Some("16"), Some(true)), up);
    let mut observed = Observed::default();
    claim(&mut observed, "orders-backup-16", ours("backup"), json!({}));
    claim(
        &mut observed,
        "orders-data-16",
        ours("data"),
        json!({VERIFIED_ANNOTATION: "job"}),
    );
    claim(
        &mut observed,
        "data-orders-0",
        json!({"pgdb.example.com/instance": "orders"}),
        json!({}),
    );
    let desired = desired(&database, &observed, STARTED + 100);
    assert_eq!(image(&desired), "postgres:16");
    assert_eq!(mounted_claim(&desired), "orders-data-16");
    let backup = object(&desired, "PersistentVolumeClaim", "orders-backup-16").expect("kept");
    assert_eq!(
        backup.value["metadata"]["annotations"][RETAIN_UNTIL_ANNOTATION],
        until.as_str()
    );
    assert!(
        object(&desired, "PersistentVolumeClaim", "data-orders-0").is_none(),
        "the claim-template volume is the StatefulSet's, not annotated"
    );
    assert!(desired.deletions().is_empty());

    let draft = assess(&database, &observed, STARTED + 100);
    let progressing = draft.conditions.get(PROGRESSING).expect("set");
    assert!(!progressing.status && progressing.reason == "MajorUpgradeComplete");
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
    up.major.as_mut().expect("major").retain_until = Some(at(STARTED + 3600).to_string());
    let database = with_upgrade(db("16", Some("16"), Some(true)), up);
    let mut observed = Observed::default();
    let expired = json!({RETAIN_UNTIL_ANNOTATION: at(STARTED + 3600).to_string()});
    claim(
        &mut observed,
        "orders-backup-16",
        ours("backup"),
        expired.clone(),
    );
    claim(
        &mut observed,
        "orders-data-16",
        ours("data"),
        json!({VERIFIED_ANNOTATION: "job"}),
    );
    claim(
        &mut observed,
        "orders-data-14",
        ours("data"),
        expired.clone(),
    );
    claim(
        &mut observed,
        "data-orders-0",
        json!({"pgdb.example.com/instance": "orders"}),
        json!({}),
    );
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
        json!({VERIFIED_ANNOTATION: "job", RETAIN_UNTIL_ANNOTATION: at(0).to_string()}),
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
        json!({VERIFIED_ANNOTATION: "job"}),
    );
    assert_eq!(
        mounted_claim(&desired(&database, &observed, 0)),
        "orders-data-16"
    );
    // A volume whose migration was never verified is not data.
    let mut unverified = Observed::default();
    claim(&mut unverified, "orders-data-16", ours("data"), json!({}));
    assert_eq!(
        mounted_claim(&desired(&database, &unverified, 0)),
        "data-orders-0"
    );
}

#[test]
fn setting_the_previous_version_after_completion_switches_back_to_the_kept_volume() {
    let mut up = upgrade(UpgradePhase::Complete);
    up.major.as_mut().expect("major").switched_at = Some(at(STARTED + 30).to_string());
    let database = with_upgrade(db("15", Some("16"), Some(true)), up.clone());
    let mut observed = Observed::default();
    claim(
        &mut observed,
        "data-orders-0",
        json!({"pgdb.example.com/instance": "orders"}),
        json!({}),
    );
    claim(
        &mut observed,
        "orders-data-16",
        ours("data"),
        json!({VERIFIED_ANNOTATION: "job"}),
    );
    assert!(
        Upgrade.validate(&database, &observed).is_empty(),
        "not a refused downgrade"
    );
    let progress = major::progress(&database, &observed, at(STARTED + 500));
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
fn changing_the_version_during_the_migration_cancels_it_and_stops_the_job() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("15", Some("15"), Some(true)), up.clone());
    let mut observed = Observed::default();
    job(&mut observed, &job_of(&up), json!({"active": 1}));
    job_pod(
        &mut observed,
        &job_of(&up),
        "Running",
        json!({"running": {}}),
    );
    let progress = major::progress(&database, &observed, at(STARTED + 10));
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
fn a_rolled_back_attempt_is_retried_once_the_spec_went_back_to_what_runs_and_forth_again() {
    let mut failed = upgrade(UpgradePhase::RolledBack);
    failed.major.as_mut().expect("major").failure = Some("restore failed".into());
    let same_target = with_upgrade(db("16", Some("15"), Some(true)), failed.clone());
    let stays = major::progress(&same_target, &Observed::default(), at(STARTED + 100));
    assert_eq!(stays.phase(), Some(UpgradePhase::RolledBack));
    assert_eq!(
        stays.transition, None,
        "no new attempt while the spec still asks for the failed one"
    );

    let back = with_upgrade(db("15", Some("15"), Some(true)), failed);
    let closed = major::progress(&back, &Observed::default(), at(STARTED + 200));
    assert!(closed.parts().is_some_and(|(_, m)| m.closed));

    let again = with_upgrade(
        db("16", Some("15"), Some(true)),
        closed.upgrade.expect("an upgrade"),
    );
    let retry = major::progress(&again, &Observed::default(), at(STARTED + 300));
    assert_eq!(retry.transition, Some(Transition::Started));
    let (up, major_status) = retry.parts().expect("an upgrade");
    assert_eq!(up.started_at, at(STARTED + 300).to_string());
    assert_ne!(
        major_status.job,
        major::job_name("orders", 16, &at(STARTED).to_string()),
        "a new Job"
    );
}

#[test]
fn the_minor_capability_leaves_a_major_upgrade_alone() {
    let up = upgrade(UpgradePhase::Migrating);
    let database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    let mut draft = StatusDraft {
        now: Some(at(STARTED + 10_000)),
        ..Default::default()
    };
    draft.fields.current_version = Some("15".into());
    Upgrade.assess(
        &database,
        &Observed::default(),
        &ApplyReport::default(),
        &mut draft,
    );
    assert_eq!(draft.fields.upgrade, Some(up));
    assert!(draft.conditions.get(PROGRESSING).is_none());
}

#[test]
fn a_paused_database_freezes_the_upgrade_where_it_is() {
    let up = upgrade(UpgradePhase::Switching);
    let mut database = with_upgrade(db("16", Some("15"), Some(true)), up.clone());
    database.spec.paused = true;
    let progress = major::progress(&database, &Observed::default(), at(STARTED + 100_000));
    assert_eq!(progress.upgrade, Some(up));
    assert_eq!(progress.transition, None);
}

#[test]
fn job_outcomes_are_read_from_the_job_and_its_pod() {
    let mut observed = Observed::default();
    assert_eq!(major::job_outcome(&observed, "j"), JobOutcome::Absent);
    job(&mut observed, "j", json!({"active": 1}));
    assert!(matches!(
        major::job_outcome(&observed, "j"),
        JobOutcome::Pending(_)
    ));
    job(&mut observed, "j", json!({"failed": 1}));
    let JobOutcome::Failed(why) = major::job_outcome(&observed, "j") else {
        panic!("failed");
    };
    assert!(
        why.contains("kubectl logs job/j"),
        "without a termination message, where to look: {why}"
    );
}

#[test]
fn a_smaller_size_than_an_operator_volume_is_refused() {
    let mut database = db("16", Some("16"), Some(true));
    database.spec.storage.size = "500Mi".into();
    let mut observed = Observed::default();
    claim(&mut observed, "orders-data-16", ours("data"), json!({}));
    let problems = MajorUpgrade.validate(&database, &observed);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].reason, "RefusedStorageShrink");
}
