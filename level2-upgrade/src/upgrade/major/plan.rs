//! What the objects must look like during a major upgrade, as changes to
//! what the lower capabilities built, and the one place they are applied.
//!
//! [`plan`] turns the [`Progress`] into a [`Plan`]: data, a pure value
//! (which image and version the StatefulSet runs, which volume it mounts,
//! whether the read-write Service is fenced, the volumes and the Job, what
//! to delete, which Events to publish), unit-tested without a cluster.
//! [`apply_plan`] is the only code that changes the desired state from it.
//! The retention of kept volumes ends here too: once it passed, the
//! operator's volumes nothing mounts are deleted; the StatefulSet's
//! claim-template volume never is.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::ResourceExt;
use level1_install::api::{CONTAINER, DATA_MOUNT, Names, PgVersion};
use shared::api::{MajorUpgradeStatus, PostgresDB, UpgradePhase};
use shared::capability::{Desired, EventType, Observed};
use shared::error::Error;
use shared::ext::{PodExt, PvcExt, StatefulSetExt};
use shared::job::job_pods;
use shared::keys::FENCE_LABEL;
use shared::retention::expired;
use shared::volumes::{
    DATA_TEMPLATE, OwnedClaim, VolumeRole, claim_volume, is_owned, major_of_data_claim, owned_claim,
};

use crate::upgrade::major::conditions::retention_text;
use crate::upgrade::major::job::{migration_job, migration_outcome};
use crate::upgrade::major::names::{claim_exists, data_claim_of, template_data_claim};
use crate::upgrade::major::progress::{Progress, Transition};
use crate::upgrade::statefulset::{run_version, stuck_pods};
use crate::upgrade::versions::running_version;

/// The value of the fence label on the read-write Service's selector.
pub const FENCED_BY: &str = "major-upgrade";

/// The desired objects of a major upgrade, as changes to what the lower
/// capabilities built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Run the StatefulSet on this image and version annotation (the old
    /// major, while migrating or rolled back).
    pub pin: Option<(String, String)>,
    /// Mount this PVC (and the major it holds) at the data directory instead
    /// of the claim template's.
    pub mount: Option<(String, u32)>,
    /// The read-write Service selects no pod.
    pub fence: bool,
    /// PVCs to apply (unowned).
    pub claims: Vec<PersistentVolumeClaim>,
    /// The Job to apply.
    pub job: Option<Job>,
    /// Pods to delete, with why.
    pub delete_pods: Vec<(String, String)>,
    /// PVCs to delete, with why.
    pub delete_claims: Vec<(String, String)>,
    /// Events: (type, reason, message).
    pub notes: Vec<(EventType, String, String)>,
}

/// One of the operator's PVCs for this database (see `shared::volumes`).
fn owned(
    db: &PostgresDB,
    observed: &Observed,
    name: &str,
    role: VolumeRole,
    major: u32,
    retain_until: Option<jiff::Timestamp>,
    verified_by: Option<&str>,
) -> PersistentVolumeClaim {
    owned_claim(
        db,
        observed.get::<PersistentVolumeClaim>(name).as_ref(),
        &OwnedClaim {
            name,
            role,
            major,
            retain_until,
            verified_by,
        },
    )
}

/// The claims the live StatefulSet's template mounts (pod-template volumes).
fn live_claims(observed: &Observed, db: &PostgresDB) -> Vec<String> {
    observed
        .get::<StatefulSet>(&Names::of(db).primary)
        .map(|s| s.template_claims())
        .unwrap_or_default()
}

/// What the objects must look like, given the progress.
pub fn plan(
    db: &PostgresDB,
    observed: &Observed,
    progress: &Progress,
    now: jiff::Timestamp,
) -> Plan {
    let names = Names::of(db);
    let mut plan = Plan::default();
    let current = progress.is_current(db);
    let template_claim = template_data_claim(db);

    // Which data volume is mounted.
    let claim = match progress.parts() {
        Some((up, major)) => match up.phase {
            UpgradePhase::Switching | UpgradePhase::Complete => major.data_volume.clone(),
            _ => major.previous_data_volume.clone(),
        },
        None => {
            let major = running_version(db)
                .or_else(|| PgVersion::parse(&db.spec.version))
                .map(|v| v.major);
            major.map_or(template_claim.clone(), |m| data_claim_of(db, observed, m))
        }
    };
    if claim != template_claim
        && let Some(major) = major_of_data_claim(&names.primary, &claim)
    {
        plan.mount = Some((claim.clone(), major));
    }

    let Some((up, major)) = progress.parts() else {
        // No major upgrade: keep the current operator volume growing with
        // the spec, and let expired volumes go.
        if let Some((claim, m)) = &plan.mount
            && claim_exists(observed, claim)
        {
            plan.claims
                .push(owned(db, observed, claim, VolumeRole::Data, *m, None, None));
        }
        return with_cleanup(db, observed, plan, now);
    };
    let to_major = PgVersion::parse(&up.to_version).map_or(0, |v| v.major);
    let from_major = PgVersion::parse(&up.from_version).map_or(0, |v| v.major);
    let backup = |name: &str, until| {
        owned(
            db,
            observed,
            name,
            VolumeRole::Backup,
            to_major,
            until,
            None,
        )
    };
    let data = |name: &str, major, until, verified_by| {
        owned(
            db,
            observed,
            name,
            VolumeRole::Data,
            major,
            until,
            verified_by,
        )
    };

    match up.phase {
        UpgradePhase::Migrating if current => {
            plan.pin = Some((up.from_image.clone(), up.from_version.clone()));
            plan.fence = true;
            plan.claims.push(backup(&major.backup_volume, None));
            plan.claims
                .push(data(&major.data_volume, to_major, None, None));
            if progress.recorded {
                plan.job = migration_job(db, up, false);
            }
        }
        UpgradePhase::Switching => {
            plan.claims.push(backup(&major.backup_volume, None));
            plan.claims
                .push(data(&major.data_volume, to_major, None, Some(&major.job)));
        }
        UpgradePhase::Complete => {
            plan.claims
                .push(data(&major.data_volume, to_major, None, Some(&major.job)));
            let until = major.retain_until.as_ref().map(|t| t.0);
            let keep = |claim: &str| {
                observed
                    .get::<PersistentVolumeClaim>(claim)
                    .is_some_and(|c| !c.is_deleting() && !expired(&c, now))
            };
            if keep(&major.backup_volume) {
                plan.claims.push(backup(&major.backup_volume, until));
            }
            if major.previous_data_volume != template_claim && keep(&major.previous_data_volume) {
                plan.claims
                    .push(data(&major.previous_data_volume, from_major, until, None));
            }
        }
        UpgradePhase::Migrating | UpgradePhase::RolledBack => {
            if current {
                plan.pin = Some((up.from_image.clone(), up.from_version.clone()));
            }
            // The previous volume serves again: it is not to be deleted.
            if major.previous_data_volume != template_claim
                && claim_exists(observed, &major.previous_data_volume)
            {
                plan.claims
                    .push(data(&major.previous_data_volume, from_major, None, None));
            }
            // An abandoned Job that still runs (or waits to) is stopped.
            if observed.get::<Job>(&major.job).is_some()
                && !migration_outcome(observed, &major.job).is_finished()
            {
                plan.job = migration_job(db, up, true);
                for pod in job_pods(observed, &major.job) {
                    if !pod.is_finished() && !pod.is_deleting() {
                        plan.delete_pods.push((
                            pod.name_any(),
                            format!("the major upgrade to {} was abandoned", up.to_version),
                        ));
                    }
                }
            }
            // After a switch, a pod stuck on the new revision is never
            // replaced by the StatefulSet once its template is reverted.
            if major.switched_at.is_some() {
                delete_stuck_pods(db, observed, major, &up.to_version, &mut plan);
            }
        }
        UpgradePhase::Rolling => {}
    }

    match progress.transition {
        Some(Transition::Started) => plan.notes.push((
            EventType::Normal,
            "MajorUpgradeStarted".into(),
            format!(
                "upgrading {} to {}: writes stop (Service {} selects no pod) while a Job dumps every database to PVC {}, restores them into {} on PVC {} and verifies every user table",
                up.from_version, up.to_version, names.primary, major.backup_volume, up.to_version, major.data_volume
            ),
        )),
        Some(Transition::Verified) => plan.notes.push((
            EventType::Normal,
            "MajorUpgradeVerified".into(),
            format!(
                "Job {}: {}; switching the StatefulSet to {} on PVC {}",
                major.job,
                major.verified.clone().unwrap_or_default(),
                up.to_version,
                major.data_volume
            ),
        )),
        Some(Transition::Completed) => plan.notes.push((
            EventType::Normal,
            "MajorUpgradeComplete".into(),
            format!(
                "{} runs on PVC {}; {}",
                up.to_version,
                major.data_volume,
                retention_text(db, up, major)
            ),
        )),
        Some(Transition::Cancelled) | Some(Transition::ReturnedToPrevious) => plan.notes.push((
            EventType::Normal,
            "MajorUpgradeRolledBack".into(),
            major.failure.clone().unwrap_or_default(),
        )),
        // Failures are reported by the Progressing condition's Warning.
        Some(Transition::RolledBack) | None => {}
    }
    if matches!(up.phase, UpgradePhase::Complete) {
        return with_cleanup(db, observed, plan, now);
    }
    plan
}

/// Adds the deletion of the operator's PVCs whose retention has passed and
/// that nothing mounts.
fn with_cleanup(
    db: &PostgresDB,
    observed: &Observed,
    mut plan: Plan,
    now: jiff::Timestamp,
) -> Plan {
    let template_claim = template_data_claim(db);
    let mounted = plan.mount.as_ref().map(|(c, _)| c.clone());
    let live = live_claims(observed, db);
    let mut deleted = Vec::new();
    for claim in observed.all::<PersistentVolumeClaim>() {
        let name = claim.name_any();
        if !is_owned(&claim)
            || claim.is_deleting()
            || !expired(&claim, now)
            || name == template_claim
            || mounted.as_deref() == Some(name.as_str())
            || live.contains(&name)
        {
            continue;
        }
        plan.claims
            .retain(|c| c.metadata.name.as_deref() != Some(name.as_str()));
        let what = match VolumeRole::of(&claim) {
            Some(VolumeRole::Backup) => "the pre-upgrade dump",
            _ => "a previous major's data",
        };
        plan.delete_claims
            .push((name.clone(), format!("its retention ({what}) passed")));
        deleted.push(format!("{name} ({what})"));
    }
    if !deleted.is_empty() {
        let template_note = if claim_exists(observed, &template_claim) && mounted.is_some() {
            format!(
                "; PVC {template_claim} is kept: it is the StatefulSet's claim-template volume, which the StatefulSet would recreate (see docs/level2-upgrade.md to free it)"
            )
        } else {
            String::new()
        };
        plan.notes.push((
            EventType::Normal,
            "RetentionExpired".into(),
            format!(
                "deleted PVC {} after spec.upgrade.retentionHours{template_note}",
                deleted.join(", PVC ")
            ),
        ));
    }
    plan
}

/// Pods stuck on the new major's revision once the template is reverted.
fn delete_stuck_pods(
    db: &PostgresDB,
    observed: &Observed,
    major: &MajorUpgradeStatus,
    to_version: &str,
    plan: &mut Plan,
) {
    let names = Names::of(db);
    let Some(live) = observed.get::<StatefulSet>(&names.primary) else {
        return;
    };
    if live_claims(observed, db).contains(&major.data_volume) {
        return; // not reverted yet
    }
    for pod in stuck_pods(observed, &live) {
        plan.delete_pods.push((
            pod,
            format!("stuck on the rolled-back {to_version} revision"),
        ));
    }
}

/// Applies a plan to the desired state Level 1 (and the minor upgrade) built.
pub fn apply_plan(db: &PostgresDB, plan: Plan, desired: &mut Desired) -> Result<(), Error> {
    let names = Names::of(db);
    if plan.pin.is_some() || plan.mount.is_some() {
        desired.modify::<StatefulSet>(&names.primary, |sts| {
            if let Some((image, version)) = &plan.pin {
                run_version(sts, image, version);
            }
            let Some(template) = sts.spec.as_mut().map(|s| &mut s.template) else {
                return;
            };
            if let Some((claim, major)) = &plan.mount
                && let Some(pod) = template.spec.as_mut()
            {
                let volume = format!("{DATA_TEMPLATE}-{major}");
                for container in pod.containers.iter_mut().filter(|c| c.name == CONTAINER) {
                    for mount in container.volume_mounts.iter_mut().flatten() {
                        if mount.mount_path == DATA_MOUNT {
                            mount.name = volume.clone();
                        }
                    }
                }
                let volumes = pod.volumes.get_or_insert_with(Vec::new);
                volumes.retain(|v| v.name != volume);
                volumes.push(claim_volume(&volume, claim));
            }
        })?;
    }
    if plan.fence {
        desired.modify::<Service>(&names.primary, |svc| {
            if let Some(selector) = svc.spec.as_mut().and_then(|s| s.selector.as_mut()) {
                selector.insert(FENCE_LABEL.to_string(), FENCED_BY.to_string());
            }
        })?;
    }
    for claim in &plan.claims {
        desired.add_unowned(claim)?;
    }
    if let Some(job) = &plan.job {
        desired.add(job)?;
    }
    for (pod, reason) in plan.delete_pods {
        desired.delete::<Pod>(&pod, reason);
    }
    for (claim, reason) in plan.delete_claims {
        desired.delete::<PersistentVolumeClaim>(&claim, reason);
    }
    for (type_, reason, message) in plan.notes {
        desired.note(type_, &reason, message);
    }
    Ok(())
}
