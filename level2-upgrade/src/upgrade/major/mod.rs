//! A major upgrade: a new major version, offline, verified, reversible.
//!
//! A data directory of one major cannot be read by the next, so a major
//! upgrade (15 to 16) is a migration, carried out only when
//! `spec.upgrade.allowMajor` is true:
//!
//! 1. **Migrating.** The StatefulSet stays on the old image (Level 1 would
//!    swap it), the read-write Service selects no pod (writes stop), and a
//!    Job of the new image makes the old server read-only (see
//!    [`crate::upgrade::write_fence`]), dumps every database of the old server with
//!    `pg_dumpall` to a backup volume, initialises the new major on a new
//!    data volume, restores the dump into it, and compares every database,
//!    old against new: each user table's row count and a checksum of its
//!    rows, each sequence's position, the materialized views that exist,
//!    and the large objects' count and checksum. Any error or difference
//!    fails the Job.
//! 2. **Switching.** Once the Job succeeded, the StatefulSet runs the new
//!    image on the new volume and the Service selects the pod again.
//! 3. **Complete** when the pod is ready at the new version, within
//!    `healthTimeoutSeconds`; the previous data volume and the dump are kept
//!    for `retentionHours`, and setting `spec.version` back to the previous
//!    version until then switches back to them.
//!
//! A failed or stuck Job, a new major that is not ready in time, and a
//! change of `spec.version` during the migration all roll back: old image,
//! old volume, Service open, write fence lifted. Nothing is deleted then:
//! the Job and the volumes stay as evidence.
//!
//! The new data lives on a PVC of the operator's, `<db>-data-<major>`:
//! a StatefulSet's claim templates cannot change, and its claim-template
//! volume takes precedence over a pod-template volume of the same name, so
//! the new PVC is mounted through a pod-template volume named
//! `data-<major>` at the same path. Which PVC is current is read from the
//! cluster: `<db>-data-<major>` of the running major once a migration into
//! it was verified (an annotation on the PVC), else the claim template's.
//!
//! Every decision is a pure function of the database, what was observed and
//! the reconcile's clock: [`progress::progress`] says where the upgrade
//! stands, [`plan::plan`] what the objects must look like, and
//! [`plan::apply_plan`] is the one place that changes the desired state; a
//! restarted operator reads `status.upgrade`, the PVCs, the Job and the live
//! StatefulSet and carries on. The Job and its script are in [`job`], the
//! names of the Job and the volumes in [`names`], and the conditions'
//! wording in [`conditions`].

pub mod conditions;
pub mod job;
pub mod names;
pub mod plan;
pub mod progress;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::ResourceExt;
use level1_install::api::Names;
use shared::api::{PostgresDB, UpgradeStatus};
use shared::capability::{Desired, Observed, Query, SpecProblem, StatusDraft};
use shared::error::Error;
use shared::ext::PvcExt;
use shared::quantity;
use shared::volumes::is_owned;

/// What a major upgrade reads: the StatefulSet and the read-write Service
/// it adjusts, the volumes, the Job and its pod.
pub fn observe(db: &PostgresDB) -> Vec<Query> {
    let names = Names::of(db);
    vec![
        Query::named::<StatefulSet>(&names.primary),
        Query::named::<Service>(&names.primary),
        Query::labelled::<PersistentVolumeClaim>(),
        Query::labelled::<Pod>(),
        Query::labelled::<Job>(),
    ]
}

/// A size smaller than one of the operator's volumes is refused, as Level 1
/// refuses one smaller than its own.
pub fn validate(db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
    let wanted = &db.spec.storage.size;
    observed
        .all::<PersistentVolumeClaim>()
        .into_iter()
        .filter(|c| is_owned(c) && !c.is_deleting())
        .filter_map(|c| {
            let size = c.storage_request()?;
            (quantity::compare(wanted, &size) == Some(std::cmp::Ordering::Less)).then(|| {
                SpecProblem::new(
                    "spec.storage.size",
                    "RefusedStorageShrink",
                    format!(
                        "{wanted} is smaller than PVC {} ({size}); volumes cannot shrink without losing data",
                        c.name_any()
                    ),
                )
            })
        })
        .take(1)
        .collect()
}

/// The objects of the major upgrade as it stands at `now`.
pub fn desire(
    db: &PostgresDB,
    observed: &Observed,
    now: jiff::Timestamp,
    desired: &mut Desired,
) -> Result<(), Error> {
    let progress = progress::progress(db, observed, now);
    // The Job the status names stays, finished or not, as the evidence the
    // status points to; the core prunes an earlier attempt's Job.
    if let Some((_, major)) = progress.parts() {
        desired.keep::<Job>(&major.job);
    }
    plan::apply_plan(db, plan::plan(db, observed, &progress, now), desired)
}

/// What `status.upgrade` becomes, given what the minor upgrade concluded
/// (`minor`), with the conditions of a major upgrade. A minor rollout the
/// minor upgrade has just started (or changed) keeps `status.upgrade`.
pub fn assess(
    db: &PostgresDB,
    observed: &Observed,
    minor: Option<UpgradeStatus>,
    status: &mut StatusDraft,
) -> Option<UpgradeStatus> {
    let previous = db.status.as_ref().and_then(|s| s.upgrade.as_ref());
    if let Some(rollout) = minor.as_ref()
        && rollout.major.is_none()
        && Some(rollout) != previous
    {
        return minor;
    }
    let progress = progress::progress(db, observed, status.now);
    if status.refused && progress.transition == Some(progress::Transition::Started) {
        // Refused (by another field, or a higher level's check): nothing
        // ran, so no attempt is recorded; one starts once the spec can be
        // served, with its own clock.
        return previous.cloned().or(minor);
    }
    conditions::assess_conditions(db, observed, &progress, status);
    progress.upgrade.or(minor)
}

#[cfg(test)]
pub(crate) mod tests;
