//! Unit tests of the major upgrade's decisions: when a migration starts,
//! what the objects look like in each phase, when it switches, completes or
//! rolls back, how a restarted operator carries on, and what the retention
//! deletes (and never deletes). The fixtures are here; the tests are in
//! [`migrating`], [`switching`] and [`retention`].

mod migrating;
mod retention;
mod switching;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    PodTemplateSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use serde_json::Value;
use shared::api::status_time;
use shared::api::{MajorUpgradeStatus, PostgresDB, UpgradePhase, UpgradeSpec, UpgradeStatus};
use shared::capability::{ApplyReport, Capability, Desired, DesiredObject, Observed, StatusDraft};
use shared::conditions::{Assessment, READY};
use shared::keys::{
    INSTANCE_LABEL, JOB_NAME_LABEL, VERIFIED_ANNOTATION, VERSION_ANNOTATION, VOLUME_LABEL,
};
use shared::testing::{DbBuilder, PodBuilder, at, put};
use shared::volumes::claim_volume;

use level1_install::api::DATA_MOUNT;

use crate::upgrade::Upgrade;
use crate::upgrade::major::job::JOB_CONTAINER;
use crate::upgrade::major::names::{attempt_text, job_name};

pub(crate) const STARTED: i64 = 1_000_000;

/// A database asking for `wanted` while `running` runs, with a
/// `spec.upgrade` allowing a major change or not (none when `None`).
pub(crate) fn db(wanted: &str, running: Option<&str>, allow_major: Option<bool>) -> PostgresDB {
    DbBuilder::named("orders")
        .version(wanted)
        .running(running)
        .upgrade(allow_major.map(|allow_major| UpgradeSpec {
            health_timeout_seconds: 60,
            allow_major,
            retention_hours: 24,
            migration_timeout_seconds: None,
        }))
        .build()
}

/// The status of the 15 to 16 upgrade started at STARTED, in `phase`.
pub(crate) fn upgrade(phase: UpgradePhase) -> UpgradeStatus {
    let started_at = status_time(at(STARTED));
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
            job: job_name("orders", 16, &attempt_text(&started_at)),
            to_image: "postgres:16".into(),
            ..Default::default()
        }),
        started_at,
    }
}

pub(crate) fn with_upgrade(mut database: PostgresDB, up: UpgradeStatus) -> PostgresDB {
    database.status.get_or_insert_with(Default::default).upgrade = Some(up);
    database
}

/// The database in every phase of the 15 to 16 upgrade.
pub(crate) fn every_phase() -> Vec<PostgresDB> {
    [
        UpgradePhase::Migrating,
        UpgradePhase::Switching,
        UpgradePhase::Complete,
        UpgradePhase::RolledBack,
    ]
    .into_iter()
    .map(|phase| {
        let mut up = upgrade(phase);
        if let Some(major) = up.major.as_mut() {
            major.retain_until = Some(status_time(at(STARTED + 3600)));
        }
        with_upgrade(db("16", Some("15"), Some(true)), up)
    })
    .collect()
}

/// The volumes and the Job of the 15 to 16 upgrade, as the cluster holds
/// them once the Job ran.
pub(crate) fn every_volume_and_the_job() -> Observed {
    let up = upgrade(UpgradePhase::Migrating);
    let mut observed = Observed::default();
    claim(&mut observed, "orders-backup-16", ours("backup"), &[]);
    claim(
        &mut observed,
        "orders-data-16",
        ours("data"),
        &[(VERIFIED_ANNOTATION, "job")],
    );
    claim(&mut observed, "data-orders-0", instance(), &[]);
    job(&mut observed, &job_of(&up), active());
    live_sts(&mut observed, "postgres:15", "15", None, true);
    observed
}

pub(crate) fn job_of(up: &UpgradeStatus) -> String {
    up.major.as_ref().expect("major").job.clone()
}

/// The live StatefulSet: `image` with `version`, mounting `claim` through a
/// pod-template volume when given, rolled out and ready or not.
pub(crate) fn live_sts(
    observed: &mut Observed,
    image: &str,
    version: &str,
    claim: Option<&str>,
    ready: bool,
) {
    put(
        observed,
        &StatefulSet {
            metadata: ObjectMeta {
                name: Some("orders".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        annotations: Some(BTreeMap::from([(
                            VERSION_ANNOTATION.to_string(),
                            version.to_string(),
                        )])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "postgres".into(),
                            image: Some(image.into()),
                            ..Default::default()
                        }],
                        volumes: Some(
                            claim
                                .map(|c| claim_volume("data-16", c))
                                .into_iter()
                                .collect(),
                        ),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                replicas: 1,
                observed_generation: Some(3),
                updated_replicas: Some(1),
                ready_replicas: Some(i32::from(ready)),
                current_revision: Some("orders-new".into()),
                update_revision: Some("orders-new".into()),
                ..Default::default()
            }),
        },
    );
}

/// The labels of a volume of the database's that is not the operator's.
pub(crate) fn instance() -> Vec<(&'static str, &'static str)> {
    vec![(INSTANCE_LABEL, "orders")]
}

/// The labels of an operator volume holding `role`.
pub(crate) fn ours(role: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![(INSTANCE_LABEL, "orders"), (VOLUME_LABEL, role)]
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A 1Gi PVC with `labels` and `annotations`.
pub(crate) fn claim(
    observed: &mut Observed,
    name: &str,
    labels: Vec<(&str, &str)>,
    annotations: &[(&str, &str)],
) {
    put(
        observed,
        &PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(map(&labels)),
                annotations: Some(map(annotations)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity("1Gi".into()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
}

/// The Job named `name`, in `status`.
pub(crate) fn job(observed: &mut Observed, name: &str, status: JobStatus) {
    put(
        observed,
        &Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(status),
            ..Default::default()
        },
    );
}

/// A Job status with one pod active.
pub(crate) fn active() -> JobStatus {
    JobStatus {
        active: Some(1),
        ..Default::default()
    }
}

/// A true condition of a Job.
pub(crate) fn condition(type_: &str, reason: Option<&str>, message: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.map(String::from),
        message: Some(message.into()),
        ..Default::default()
    }
}

/// The pod of Job `job`, in `phase`, its container in `state`.
pub(crate) fn job_pod(observed: &mut Observed, job: &str, phase: &str, state: ContainerState) {
    put(
        observed,
        &PodBuilder::named(&format!("{job}-x1"))
            .label(JOB_NAME_LABEL, job)
            .phase(phase)
            .container(JOB_CONTAINER, state)
            .build(),
    );
}

pub(crate) fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}

pub(crate) fn terminated(exit_code: i32, message: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            message: Some(message.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some(message.into()),
        }),
        ..Default::default()
    }
}

/// What Level 2's capabilities desire, at `now`.
pub(crate) fn desired(database: &PostgresDB, observed: &Observed, now: i64) -> Desired {
    let mut desired = Desired::default();
    for capability in crate::capabilities() {
        capability
            .desire(database, observed, at(now), &mut desired)
            .expect("desires");
    }
    desired
}

pub(crate) fn object<'a>(
    desired: &'a Desired,
    kind: &str,
    name: &str,
) -> Option<&'a DesiredObject> {
    desired
        .objects()
        .iter()
        .find(|o| o.resource.kind == kind && o.name == name)
}

pub(crate) fn sts(desired: &Desired) -> &Value {
    &object(desired, "StatefulSet", "orders")
        .expect("a StatefulSet")
        .value
}

pub(crate) fn image(desired: &Desired) -> String {
    sts(desired)["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn version_annotation(desired: &Desired) -> String {
    sts(desired)["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The claim mounted at the data directory: the claim template's ("data")
/// unless a pod-template volume says otherwise.
pub(crate) fn mounted_claim(desired: &Desired) -> String {
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

pub(crate) fn fenced(desired: &Desired) -> bool {
    object(desired, "Service", "orders")
        .expect("the Service")
        .value["spec"]["selector"]
        .get(shared::keys::FENCE_LABEL)
        .is_some()
}

pub(crate) fn deleted(desired: &Desired, kind: &str) -> Vec<String> {
    desired
        .deletions()
        .iter()
        .filter(|d| d.resource.kind == kind)
        .map(|d| d.name.clone())
        .collect()
}

/// Runs the upgrade capability's assessment as the core would, after
/// Level 1 found the database ready.
pub(crate) fn assess(database: &PostgresDB, observed: &Observed, now: i64) -> StatusDraft {
    let mut draft = StatusDraft {
        now: at(now),
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
    draft
}
