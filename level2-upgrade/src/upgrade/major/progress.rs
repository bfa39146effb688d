//! Where a major upgrade stands after this reconcile: a pure function of
//! the database, what was observed and the reconcile's clock.
//!
//! [`progress`] reads `status.upgrade` (what earlier reconciles recorded),
//! the Job, the volumes and the live StatefulSet, and returns the upgrade
//! as it is now (started, advanced a phase, rolled back, or as it was) and
//! what changed, for Events. A restarted operator computes the same. What
//! the objects must look like for it is the plan module's business.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use level1_install::api::{Names, PgVersion};
use shared::api::{MajorUpgradeStatus, PostgresDB, UpgradePhase, UpgradeStatus, status_time};
use shared::capability::Observed;
use shared::ext::{PvcExt, StatefulSetExt};
use shared::keys::VERSION_ANNOTATION;
use shared::retention;
use shared::volumes::{backup_claim, data_claim};

use crate::upgrade::major::job::{Migration, migration_outcome};
use crate::upgrade::major::names::{attempt_text, data_claim_of, job_name};
use crate::upgrade::statefulset::image_of;
use crate::upgrade::versions::{
    VersionChange, classify, confirm_servers, running_version, seconds_since, settings,
};

/// What happened to the major upgrade in this reconcile, for Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A migration starts.
    Started,
    /// The Job verified the restored data; the StatefulSet switches.
    Verified,
    /// The new major is ready.
    Completed,
    /// The Job failed, did not start, or the new major was not ready in time.
    RolledBack,
    /// `spec.version` changed during the migration or the switch.
    Cancelled,
    /// `spec.version` went back to the previous major after completion.
    ReturnedToPrevious,
}

/// The major upgrade after this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The status, with `major` set; `None` when no major upgrade concerns
    /// the database (the minor-upgrade capability owns `status.upgrade`).
    pub upgrade: Option<UpgradeStatus>,
    /// Whether the status was recorded by an earlier reconcile (a Job is
    /// only created for a recorded attempt, whose name is known).
    pub recorded: bool,
    /// What changed in this reconcile.
    pub transition: Option<Transition>,
}

impl Progress {
    fn unchanged(upgrade: Option<UpgradeStatus>) -> Self {
        Self {
            upgrade,
            recorded: true,
            transition: None,
        }
    }

    /// The upgrade and its major part, if any.
    pub fn parts(&self) -> Option<(&UpgradeStatus, &MajorUpgradeStatus)> {
        let up = self.upgrade.as_ref()?;
        Some((up, up.major.as_ref()?))
    }

    /// The phase, if a major upgrade concerns the database.
    pub fn phase(&self) -> Option<UpgradePhase> {
        self.parts().map(|(up, _)| up.phase)
    }

    /// Whether the upgrade is for the version the spec asks for (not a
    /// closed or superseded attempt).
    pub fn is_current(&self, db: &PostgresDB) -> bool {
        self.parts()
            .is_some_and(|(up, major)| up.to_version == db.spec.version && !major.closed)
    }
}

/// Whether the StatefulSet has rolled out a template of `version` that
/// mounts `claim`, and its pods are ready.
pub fn serving(observed: &Observed, db: &PostgresDB, version: &str, claim: &str) -> bool {
    let names = Names::of(db);
    let Some(sts) = observed.get::<StatefulSet>(&names.primary) else {
        return false;
    };
    sts.spec.is_some()
        && sts.template_annotation(VERSION_ANNOTATION) == Some(version)
        && sts.template_claims().iter().any(|c| c == claim)
        && sts.rollout().is_done()
        && sts.ready_replicas() >= sts.replicas()
}

/// Whether asking for `spec.version` goes back to the major a completed
/// upgrade came from while its data volume is kept (or is doing so): the
/// version check lets this "downgrade" through, as it returns to data that
/// major wrote.
pub fn returns_to_previous_major(db: &PostgresDB, observed: &Observed) -> bool {
    let Some(up) = db.status.as_ref().and_then(|s| s.upgrade.as_ref()) else {
        return false;
    };
    let Some(major) = up.major.as_ref() else {
        return false;
    };
    let (Some(from), Some(wanted)) = (
        PgVersion::parse(&up.from_version),
        PgVersion::parse(&db.spec.version),
    ) else {
        return false;
    };
    let back = matches!(
        classify(from, wanted),
        VersionChange::Same | VersionChange::Minor
    );
    let allowed = settings(db).allow_major;
    let kept = observed
        .get::<PersistentVolumeClaim>(&major.previous_data_volume)
        .is_some_and(|c| !c.is_deleting());
    back && allowed
        && match up.phase {
            UpgradePhase::Complete => kept,
            UpgradePhase::RolledBack => major.switched_at.is_some(),
            _ => false,
        }
}

/// The major upgrade after this reconcile: started, advanced, rolled back,
/// or left as it was.
pub fn progress(db: &PostgresDB, observed: &Observed, now: jiff::Timestamp) -> Progress {
    let previous = db
        .status
        .as_ref()
        .and_then(|s| s.upgrade.clone())
        // Rolling is the minor capability's, whatever it carries.
        .filter(|u| u.major.is_some() && u.phase != UpgradePhase::Rolling);
    if db.spec.paused {
        return Progress::unchanged(previous);
    }
    let wanted = db.spec.version.clone();
    if let Some(up) = previous.clone()
        && up.to_version == wanted
        && !up.major.as_ref().is_some_and(|m| m.closed)
    {
        return advance(db, observed, up, now);
    }
    if let Some(mut up) = previous.clone()
        && up.to_version != wanted
    {
        let major = up.major.get_or_insert_with(Default::default);
        match up.phase {
            UpgradePhase::Migrating | UpgradePhase::Switching => {
                major.failure = Some(format!(
                    "cancelled: spec.version changed to {wanted} during the {}",
                    if up.phase == UpgradePhase::Migrating {
                        "migration"
                    } else {
                        "switch"
                    }
                ));
                major.closed = true;
                up.phase = UpgradePhase::RolledBack;
                return Progress {
                    upgrade: Some(up),
                    recorded: true,
                    transition: Some(Transition::Cancelled),
                };
            }
            UpgradePhase::Complete if returns_to_previous_major(db, observed) => {
                major.failure = Some(format!(
                    "rolled back on request: spec.version is {wanted}; {} runs again on PVC {}, and what was written to {} since the switch stays on PVC {}",
                    up.from_version, major.previous_data_volume, up.to_version, major.data_volume
                ));
                major.closed = true;
                up.phase = UpgradePhase::RolledBack;
                return Progress {
                    upgrade: Some(up),
                    recorded: true,
                    transition: Some(Transition::ReturnedToPrevious),
                };
            }
            _ => {}
        }
    }
    if let Some(started) = start(db, observed, now) {
        return Progress {
            upgrade: Some(started),
            recorded: false,
            transition: Some(Transition::Started),
        };
    }
    // History: a rolled-back attempt whose target the spec no longer asks
    // for is closed, so asking for it again starts a new attempt.
    Progress::unchanged(previous.map(|mut up| {
        if up.phase == UpgradePhase::RolledBack
            && up.to_version != wanted
            && let Some(major) = up.major.as_mut()
        {
            major.closed = true;
        }
        up
    }))
}

/// A new major upgrade, when the spec asks for another major than runs and allows it.
fn start(db: &PostgresDB, observed: &Observed, now: jiff::Timestamp) -> Option<UpgradeStatus> {
    let running = running_version(db)?;
    let wanted = PgVersion::parse(&db.spec.version).filter(|v| v.is_supported())?;
    if classify(running, wanted) != VersionChange::Major || !settings(db).allow_major {
        return None;
    }
    let names = Names::of(db);
    let started_at = status_time(now);
    let attempt = attempt_text(&started_at);
    let from_version = running.to_string();
    let from_image = observed
        .get::<StatefulSet>(&names.primary)
        .as_ref()
        .and_then(image_of)
        .unwrap_or_else(|| running.official_image());
    Some(UpgradeStatus {
        from_version,
        from_image,
        to_version: db.spec.version.clone(),
        phase: UpgradePhase::Migrating,
        observed_downtime_seconds: 0,
        unready_since: None,
        major: Some(MajorUpgradeStatus {
            previous_data_volume: data_claim_of(db, observed, running.major),
            data_volume: data_claim(&names.primary, wanted.major),
            backup_volume: backup_claim(&names.primary, wanted.major),
            job: job_name(&names.primary, wanted.major, &attempt),
            to_image: db
                .spec
                .image
                .clone()
                .unwrap_or_else(|| wanted.official_image()),
            ..Default::default()
        }),
        started_at,
    })
}

/// One step of the current attempt.
fn advance(
    db: &PostgresDB,
    observed: &Observed,
    mut up: UpgradeStatus,
    now: jiff::Timestamp,
) -> Progress {
    let timeout = i64::from(settings(db).health_timeout_seconds);
    let mut transition = None;
    let Some(major) = up.major.as_mut() else {
        return Progress::unchanged(Some(up));
    };
    match up.phase {
        UpgradePhase::Migrating => match migration_outcome(observed, &major.job) {
            Migration::Succeeded(summary) => {
                up.phase = UpgradePhase::Switching;
                major.verified = Some(summary);
                major.switched_at = Some(status_time(now));
                transition = Some(Transition::Verified);
            }
            Migration::Failed(why) => {
                up.phase = UpgradePhase::RolledBack;
                major.failure = Some(why);
                transition = Some(Transition::RolledBack);
            }
            Migration::Pending(why) if seconds_since(Some(up.started_at.0), now) > timeout => {
                up.phase = UpgradePhase::RolledBack;
                major.failure = Some(format!(
                    "the upgrade Job {} did not start within {timeout}s (spec.upgrade.healthTimeoutSeconds): {why}",
                    major.job
                ));
                transition = Some(Transition::RolledBack);
            }
            Migration::Absent | Migration::Pending(_) | Migration::Running => {}
        },
        UpgradePhase::Switching => {
            // Ready is not enough: the server must say it runs the new major.
            if serving(observed, db, &up.to_version, &major.data_volume)
                && confirm_servers(db, observed, &up.to_version).is_ok()
            {
                up.phase = UpgradePhase::Complete;
                let hours = settings(db).retention_hours;
                major.retain_until = retention::retain_until(now, hours).map(status_time);
                transition = Some(Transition::Completed);
            } else if seconds_since(major.switched_at.as_ref().map(|t| t.0), now) > timeout {
                up.phase = UpgradePhase::RolledBack;
                major.failure = Some(format!(
                    "{} on PVC {} was not ready within {timeout}s of the switch (spec.upgrade.healthTimeoutSeconds)",
                    up.to_version, major.data_volume
                ));
                transition = Some(Transition::RolledBack);
            }
        }
        UpgradePhase::Rolling | UpgradePhase::Complete | UpgradePhase::RolledBack => {}
    }
    Progress {
        upgrade: Some(up),
        recorded: true,
        transition,
    }
}
