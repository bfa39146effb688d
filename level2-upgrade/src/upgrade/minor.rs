//! A minor upgrade: rolled out by Level 1's StatefulSet, watched, undone.
//!
//! A higher minor version of the running major is rolled out by Level 1's
//! StatefulSet. This module records the rollout (what ran before, when it
//! started, how long the database was seen unready) and, if the new version
//! is not ready and confirmed by its servers when `healthTimeoutSeconds`
//! has passed, marks it rolled back, which puts the previous image back. A
//! StatefulSet does not replace a pod that never became ready when its
//! template is reverted (it waits for that pod forever), so the stuck pod
//! is deleted to let the old revision in.
//!
//! It leaves a major upgrade alone (see the major module); the upgrade
//! capability (`Upgrade`) decides which of the two writes
//! `status.upgrade`.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use level1_install::api::{Names, PgVersion};
use shared::api::{PostgresDB, UpgradePhase, UpgradeStatus, status_time};
use shared::capability::{Desired, Observed, StatusDraft};
use shared::conditions::{Assessment, PROGRESSING, READY};
use shared::error::Error;
use shared::sql::SqlProbe;

use crate::logins;
use crate::upgrade::statefulset::{image_of, run_version, stuck_pods};
use crate::upgrade::versions::{VersionChange, classify, confirm_servers, seconds_since, settings};

/// The version probes, asked only while a rollout (or a major upgrade's
/// switch) waits for confirmation: at rest the operator does not log in to
/// the database at every reconcile.
pub fn sql_probes(db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
    let rolling = db
        .status
        .as_ref()
        .and_then(|s| s.upgrade.as_ref())
        .is_some_and(|u| {
            (u.phase == UpgradePhase::Rolling && u.major.is_none())
                || u.phase == UpgradePhase::Switching
        });
    if rolling {
        logins::version_probes(db, observed)
    } else {
        Vec::new()
    }
}

/// After a rollback, the previous image (and the deletion of pods stuck on
/// the failed revision) until `spec.version` changes again.
pub fn desire(db: &PostgresDB, observed: &Observed, desired: &mut Desired) -> Result<(), Error> {
    let Some(upgrade) = db.status.as_ref().and_then(|s| s.upgrade.clone()) else {
        return Ok(());
    };
    if upgrade.major.is_some()
        || upgrade.phase != UpgradePhase::RolledBack
        || upgrade.to_version != db.spec.version
    {
        return Ok(());
    }
    let names = Names::of(db);
    desired.modify::<StatefulSet>(&names.primary, |sts| {
        run_version(sts, &upgrade.from_image, &upgrade.from_version);
    })?;
    // Pods still on the failed revision and not ready are never replaced
    // by the StatefulSet controller: delete them so the old revision runs.
    let live = observed.get::<StatefulSet>(&names.primary);
    let reverted = live.as_ref().and_then(image_of).as_deref() == Some(upgrade.from_image.as_str());
    if let (true, Some(live)) = (reverted, live) {
        for pod in stuck_pods(observed, &live) {
            desired.delete::<Pod>(
                &pod,
                format!("stuck on the failed {} revision", upgrade.to_version),
            );
        }
    }
    Ok(())
}

/// What `status.upgrade` becomes as far as minor upgrades go, with the
/// Progressing condition of a rollout: the previous value carried on, a
/// rollout started, advanced, completed or rolled back. A major upgrade
/// for the version asked for is returned as it was, for the major upgrade
/// to carry on.
pub fn assess(
    db: &PostgresDB,
    observed: &Observed,
    status: &mut StatusDraft,
) -> Option<UpgradeStatus> {
    let now = status.now;
    let previous = db.status.as_ref().and_then(|s| s.upgrade.clone());
    let wanted = db.spec.version.clone();
    let running = status.fields.current_version.clone();
    let ready = status.conditions.is_true(READY);
    let timeout = i64::from(settings(db).health_timeout_seconds);
    if previous
        .as_ref()
        .is_some_and(|up| up.major.is_some() && up.to_version == wanted)
    {
        // A major upgrade: the major module carries it on.
        return previous;
    }

    let mut upgrade = match previous {
        Some(up) if up.to_version == wanted => up,
        previous => {
            // A new target: start a rollout when it is a minor upgrade
            // of what runs (validate refused everything else).
            let start = running
                .as_deref()
                .and_then(PgVersion::parse)
                .zip(PgVersion::parse(&wanted))
                .is_some_and(|(r, w)| classify(r, w) == VersionChange::Minor);
            if !start {
                return previous;
            }
            let names = Names::of(db);
            let from_version = running.clone().unwrap_or_default();
            let from_image = observed
                .get::<StatefulSet>(&names.primary)
                .as_ref()
                .and_then(image_of)
                .filter(|image| !image.ends_with(&format!(":{wanted}")))
                .unwrap_or_else(|| format!("postgres:{from_version}"));
            UpgradeStatus {
                from_version,
                from_image,
                to_version: wanted.clone(),
                started_at: status_time(now),
                phase: UpgradePhase::Rolling,
                observed_downtime_seconds: 0,
                unready_since: None,
                major: None,
            }
        }
    };

    if upgrade.phase == UpgradePhase::Rolling {
        match (&upgrade.unready_since, ready) {
            (None, false) => upgrade.unready_since = Some(status_time(now)),
            (Some(since), true) => {
                let down =
                    u32::try_from(seconds_since(Some(since.0), now).max(0)).unwrap_or(u32::MAX);
                upgrade.observed_downtime_seconds =
                    upgrade.observed_downtime_seconds.saturating_add(down);
                upgrade.unready_since = None;
            }
            _ => {}
        }
        let elapsed = seconds_since(Some(upgrade.started_at.0), now);
        let rolled_out = running.as_deref() == Some(wanted.as_str()) && ready;
        let confirmed = confirm_servers(db, observed, &wanted);
        if let (true, Ok(reports)) = (rolled_out, &confirmed) {
            upgrade.phase = UpgradePhase::Complete;
            status.conditions.set(
                PROGRESSING,
                Assessment::no(
                    "UpgradeComplete",
                    format!(
                        "{} to {} rolled out in {elapsed}s ({reports}); observed downtime {}s",
                        upgrade.from_version, upgrade.to_version, upgrade.observed_downtime_seconds
                    ),
                ),
            );
        } else if elapsed > timeout {
            upgrade.phase = UpgradePhase::RolledBack;
            upgrade.unready_since = None;
        } else {
            let waiting_for = match (rolled_out, &confirmed) {
                (true, Err(why)) => format!("; pods ready, but {why}"),
                _ => String::new(),
            };
            status.conditions.set(
                PROGRESSING,
                Assessment::yes(
                    "Upgrading",
                    format!(
                        "rolling out {} (from {}): {elapsed}s of {timeout}s allowed{waiting_for}",
                        upgrade.to_version, upgrade.from_version
                    ),
                ),
            );
        }
    }
    if upgrade.phase == UpgradePhase::RolledBack {
        status.conditions.set(
            PROGRESSING,
            Assessment::no(
                "UpgradeRolledBack",
                format!(
                    "{} was not ready and confirmed by its server within {timeout}s; rolled back to {}. Change spec.version to try again",
                    upgrade.to_version, upgrade.from_version
                ),
            )
            .warn(),
        );
    }
    Some(upgrade)
}
