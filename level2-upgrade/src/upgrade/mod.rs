//! The Upgrade capability: version changes decided, carried out, watched
//! and undone. It alone writes `status.upgrade`.
//!
//! Each reconcile compares the version that runs (`status.currentVersion`,
//! which Level 1 records once a rollout is complete and ready) with the one
//! asked for ([`versions`]). A lower one is refused, and so is another major
//! version unless `spec.upgrade.allowMajor` is set. What is accepted is
//! carried out by one of two submodules:
//!
//! - [`minor`]: a newer minor version is rolled out by Level 1's StatefulSet,
//!   watched, and rolled back when it is not ready in time;
//! - [`major`]: a newer major version is migrated offline by a Job (dump,
//!   restore, verify) onto a new volume, then switched to.
//!
//! Both record their progress in `status.upgrade`; this capability asks
//! the minor upgrade first, then lets the major upgrade carry on what is
//! its own, and writes the one result. A major upgrade's write fence on the
//! old server is lifted by [`write_fence`] once it no longer belongs there.
//! What both change in Level 1's StatefulSet is in [`statefulset`].
//!
//! Everything it needs is in the cluster: a restarted operator reads
//! `status.upgrade`, the Job, the volumes and the StatefulSet, and carries on.

pub mod major;
pub mod minor;
pub mod statefulset;
pub mod versions;
pub mod write_fence;

use k8s_openapi::api::batch::v1::Job;
use kube::api::ApiResource;
use level1_install::api::PgVersion;
use shared::api::PostgresDB;
use shared::apply::resource_of;
use shared::capability::{
    ApplyReport, Capability, Desired, Observed, Query, SpecProblem, StatusDraft,
};
use shared::error::Error;
use shared::sql::SqlProbe;

use crate::upgrade::major::progress::returns_to_previous_major;
use crate::upgrade::versions::{VersionChange, classify, running_version, settings};

/// Level 2's upgrade capability.
pub struct Upgrade;

/// Whether the version change the spec asks for is refused, and why.
fn validate_version(db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
    let (Some(running), Some(wanted)) = (running_version(db), PgVersion::parse(&db.spec.version))
    else {
        return Vec::new();
    };
    match classify(running, wanted) {
        // Back to the data a completed major upgrade kept (see `major`).
        VersionChange::Downgrade if returns_to_previous_major(db, observed) => Vec::new(),
        VersionChange::Downgrade => vec![SpecProblem::new(
            "spec.version",
            "RefusedDowngrade",
            format!(
                "{wanted} is older than the running {running}; PostgreSQL does not support running older binaries on newer data, so downgrades are refused"
            ),
        )],
        // Carried out by the major upgrade (see `major`).
        VersionChange::Major if settings(db).allow_major => Vec::new(),
        VersionChange::Major => vec![SpecProblem::new(
            "spec.version",
            "RefusedMajorUpgrade",
            format!(
                "{running} to {wanted} changes the major version, whose data directory format differs; set spec.upgrade.allowMajor to migrate the data (dump, restore, verify)"
            ),
        )],
        VersionChange::Same | VersionChange::Minor => Vec::new(),
    }
}

impl Capability for Upgrade {
    fn name(&self) -> &'static str {
        "upgrade"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["upgrade"]
    }

    fn owned_kinds(&self) -> Vec<ApiResource> {
        vec![resource_of::<Job>()]
    }

    fn observe(&self, db: &PostgresDB) -> Vec<Query> {
        major::observe(db)
    }

    fn sql_probes(&self, db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
        let mut probes = minor::sql_probes(db, observed);
        probes.extend(write_fence::probes(db, observed));
        probes
    }

    fn validate(&self, db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
        let mut problems = validate_version(db, observed);
        problems.extend(major::validate(db, observed));
        problems
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        minor::desire(db, observed, desired)?;
        for action in write_fence::actions(db, observed) {
            desired.run_sql(action);
        }
        major::desire(db, observed, now, desired)
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        let minor = minor::assess(db, observed, status);
        status.fields.upgrade = major::assess(db, observed, minor, status);
    }
}

#[cfg(test)]
mod minor_tests;
