//! What a major upgrade says in the Ready and Progressing conditions, and
//! how it words the retention of what it kept.
//!
//! Each phase has its reason (`MajorUpgradeMigrating`, `...Switching`,
//! `...Complete`, `...RolledBack`) and a message naming the volumes, the
//! Job and what to do next; a rollback the user did not ask for is a
//! Warning. Only words are decided here: the phase comes from
//! the progress module.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use level1_install::api::Names;
use shared::api::{MajorUpgradeStatus, PostgresDB, UpgradePhase, UpgradeStatus};
use shared::capability::{Observed, StatusDraft};
use shared::conditions::{Assessment, PROGRESSING, READY};

use crate::upgrade::major::names::{claim_exists, template_data_claim};
use crate::upgrade::major::progress::Progress;
use crate::upgrade::versions::settings;

/// A time recorded in status, as its RFC 3339 text (empty when absent).
fn text(time: Option<&Time>) -> String {
    time.map(|t| t.0.to_string()).unwrap_or_default()
}

/// What is kept after a completed upgrade, until when, and how to go back.
pub fn retention_text(db: &PostgresDB, up: &UpgradeStatus, major: &MajorUpgradeStatus) -> String {
    let template_claim = template_data_claim(db);
    let until = text(major.retain_until.as_ref());
    let previous = if major.previous_data_volume == template_claim {
        format!(
            "PVC {} ({}'s data) is kept (it is the StatefulSet's claim-template volume: only an administrator deletes it)",
            major.previous_data_volume, up.from_version
        )
    } else {
        format!(
            "PVC {} ({}'s data) is kept until {until}",
            major.previous_data_volume, up.from_version
        )
    };
    format!(
        "{previous}; PVC {} (the dump) is kept until {until}; until then, setting spec.version to {} switches back to the previous data",
        major.backup_volume, up.from_version
    )
}

/// The Ready and Progressing conditions of a major upgrade.
pub fn assess_conditions(
    db: &PostgresDB,
    observed: &Observed,
    progress: &Progress,
    status: &mut StatusDraft,
) {
    let Some((up, major)) = progress.parts() else {
        return;
    };
    let names = Names::of(db);
    let timeout = settings(db).health_timeout_seconds;
    let current = progress.is_current(db);
    match up.phase {
        UpgradePhase::Migrating if current => {
            status.conditions.set(
                READY,
                Assessment::no(
                    "MajorUpgradeMigrating",
                    format!(
                        "writes are stopped: Service {} selects no pod while {} is migrated to {}",
                        names.primary, up.from_version, up.to_version
                    ),
                ),
            );
            status.conditions.set(
                PROGRESSING,
                Assessment::yes(
                    "MajorUpgradeMigrating",
                    format!(
                        "since {}: Job {} dumps {} to PVC {}, restores it into {} on PVC {} and verifies every user table",
                        text(Some(&up.started_at)),
                        major.job,
                        up.from_version,
                        major.backup_volume,
                        up.to_version,
                        major.data_volume
                    ),
                ),
            );
        }
        UpgradePhase::Switching => {
            status.conditions.set(
                PROGRESSING,
                Assessment::yes(
                    "MajorUpgradeSwitching",
                    format!(
                        "{}; the StatefulSet runs {} on PVC {} since {} and must be ready within {timeout}s",
                        major.verified.clone().unwrap_or_default(),
                        up.to_version,
                        major.data_volume,
                        text(major.switched_at.as_ref())
                    ),
                ),
            );
        }
        UpgradePhase::Complete => {
            let now = status.now;
            let until = text(major.retain_until.as_ref());
            let passed = major
                .retain_until
                .as_ref()
                .is_some_and(|until| until.0 <= now);
            let retention = if passed {
                let template_claim = template_data_claim(db);
                let previous = format!("{}'s data", up.from_version);
                let volumes = [
                    (&major.backup_volume, "the dump"),
                    (&major.previous_data_volume, previous.as_str()),
                ];
                let fates: Vec<String> = volumes
                    .into_iter()
                    .map(|(claim, what)| {
                        if *claim == template_claim {
                            format!("PVC {claim} ({what}) is kept: it is the StatefulSet's claim-template volume (see docs/level2-upgrade.md to free it)")
                        } else if claim_exists(observed, claim) {
                            format!("PVC {claim} ({what}) is being deleted")
                        } else {
                            format!("PVC {claim} ({what}) was deleted")
                        }
                    })
                    .collect();
                format!("The retention passed at {until}: {}", fates.join("; "))
            } else {
                retention_text(db, up, major)
            };
            status.conditions.set(
                PROGRESSING,
                Assessment::no(
                    "MajorUpgradeComplete",
                    format!(
                        "{} to {} complete: {}. {retention}",
                        up.from_version,
                        up.to_version,
                        major.verified.clone().unwrap_or_default()
                    ),
                ),
            );
        }
        UpgradePhase::RolledBack => {
            let evidence = format!(
                "Job {}, PVC {} (the dump) and PVC {} are kept for inspection",
                major.job, major.backup_volume, major.data_volume
            );
            let assessment = Assessment::no(
                "MajorUpgradeRolledBack",
                format!(
                    "{} to {} rolled back: {}. {} runs on PVC {}; {evidence}{}",
                    up.from_version,
                    up.to_version,
                    major.failure.clone().unwrap_or_default(),
                    up.from_version,
                    major.previous_data_volume,
                    if major.closed {
                        String::new()
                    } else {
                        format!(
                            ". To retry, set spec.version to {}, fix the cause, then set it to {} again",
                            up.from_version, up.to_version
                        )
                    }
                ),
            );
            status.conditions.set(
                PROGRESSING,
                if major.closed {
                    assessment
                } else {
                    assessment.warn()
                },
            );
        }
        UpgradePhase::Migrating | UpgradePhase::Rolling => {}
    }
}
