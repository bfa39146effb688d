//! The Upgrade capability: version changes decided, watched and undone.
//!
//! Each reconcile compares the version that runs (`status.currentVersion`,
//! which Level 1 records once a rollout is complete and ready) with the one
//! asked for. A lower one is refused, and so is another major version. A
//! higher minor version is rolled out by Level 1's StatefulSet; this
//! capability records the rollout in `status.upgrade` (what ran before, when
//! it started, how long the database was seen unready) and, if the new
//! version is not ready when `healthTimeoutSeconds` has passed, puts the
//! previous image back. A StatefulSet does not replace a pod that never
//! became ready when its template is reverted (it waits for that pod
//! forever), so the stuck pod is deleted to let the old revision in.
//!
//! Everything it needs is in the cluster: a restarted operator reads
//! `status.upgrade` and carries on.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use shared::api::{PostgresDB, UpgradePhase, UpgradeSpec, UpgradeStatus};
use shared::capability::{ApplyReport, Capability, Desired, Observed, SpecProblem, StatusDraft};
use shared::conditions::{Assessment, PROGRESSING, READY};
use shared::error::Error;

use level1_install::objects::{CONTAINER, Names, VERSION_ANNOTATION};
use level1_install::version::PgVersion;
use shared::sql::SqlProbe;

use crate::server::{self, reported_version, satisfies};

/// Level 2's capability.
pub struct Upgrade;

/// How the asked-for version relates to the running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionChange {
    /// The same version.
    Same,
    /// A newer minor version of the same major (or the major's floating tag).
    Minor,
    /// Another major version, higher.
    Major,
    /// An older version.
    Downgrade,
}

/// Classifies a change from `running` to `wanted`.
///
/// A bare major ("16") is the image's floating tag, the newest 16.x: moving
/// to it from a pinned minor is an upgrade; pinning a minor after running
/// the floating tag is allowed too, since what the tag ran is unknown.
pub fn classify(running: PgVersion, wanted: PgVersion) -> VersionChange {
    if wanted.major < running.major {
        return VersionChange::Downgrade;
    }
    if wanted.major > running.major {
        return VersionChange::Major;
    }
    match (running.minor, wanted.minor) {
        (Some(r), Some(w)) if w < r => VersionChange::Downgrade,
        (Some(r), Some(w)) if w == r => VersionChange::Same,
        (None, None) => VersionChange::Same,
        _ => VersionChange::Minor,
    }
}

/// The version `status.currentVersion` records as running.
pub(crate) fn running_version(db: &PostgresDB) -> Option<PgVersion> {
    PgVersion::parse(db.status.as_ref()?.current_version.as_deref()?)
}

/// Makes a StatefulSet Level 1 built run `image`, recorded as `version`
/// (what a rollback, or a major upgrade's pin, changes).
pub(crate) fn run_version(sts: &mut StatefulSet, image: &str, version: &str) {
    let Some(template) = sts.spec.as_mut().map(|s| &mut s.template) else {
        return;
    };
    if let Some(container) = template
        .spec
        .as_mut()
        .and_then(|p| p.containers.iter_mut().find(|c| c.name == CONTAINER))
    {
        container.image = Some(image.to_string());
    }
    set_template_annotation(sts, VERSION_ANNOTATION, version);
}

/// Sets an annotation of the pod template Level 1 built (it always has
/// annotations).
pub(crate) fn set_template_annotation(sts: &mut StatefulSet, key: &str, value: &str) {
    if let Some(annotations) = sts
        .spec
        .as_mut()
        .and_then(|s| s.template.metadata.as_mut())
        .and_then(|m| m.annotations.as_mut())
    {
        annotations.insert(key.to_string(), value.to_string());
    }
}

/// The upgrade section, defaults when absent.
pub(crate) fn settings(db: &PostgresDB) -> UpgradeSpec {
    db.spec.upgrade.clone().unwrap_or_default()
}

/// Seconds from an RFC 3339 time recorded in status to `now` (0 when absent).
pub(crate) fn seconds_since(from: Option<&str>, now: jiff::Timestamp) -> i64 {
    from.and_then(|f| f.parse::<jiff::Timestamp>().ok())
        .map(|from| (now - from).get_seconds())
        .unwrap_or(0)
}

/// Pods a StatefulSet will never replace after its template is reverted:
/// on another revision than its update revision, not ready, not already
/// being deleted. A StatefulSet waits for such a pod for ever.
pub(crate) fn stuck_pods(observed: &Observed, sts: &StatefulSet) -> Vec<String> {
    let update_revision = sts.status.as_ref().and_then(|s| s.update_revision.clone());
    observed
        .all::<Pod>()
        .into_iter()
        .filter(|pod| {
            let revision = pod.labels().get("controller-revision-hash");
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            revision.is_some()
                && revision != update_revision.as_ref()
                && !ready
                && pod.metadata.deletion_timestamp.is_none()
        })
        .map(|pod| pod.name_any())
        .collect()
}

/// The image of the StatefulSet's PostgreSQL container.
pub(crate) fn image_of(sts: &StatefulSet) -> Option<String> {
    let containers = &sts.spec.as_ref()?.template.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == CONTAINER)?
        .image
        .clone()
}

/// Whether every running pod's server reports `wanted`: the SQL gate of a
/// rollout. `Ok` summarises what they report; `Err` says why the rollout
/// cannot be called done (a pod on another version, or one that does not
/// answer).
pub fn confirm_servers(
    db: &PostgresDB,
    observed: &Observed,
    wanted: &str,
) -> Result<String, String> {
    let wanted_version =
        PgVersion::parse(wanted).ok_or_else(|| format!("{wanted} is not a version"))?;
    let pods = server::server_pods(db, observed);
    if pods.is_empty() {
        return Err("no pod runs yet".into());
    }
    let mut reports = Vec::new();
    for pod in pods {
        let name = pod.name_any();
        match reported_version(observed.sql(&server::version_probe(&name))) {
            Ok(Some(actual)) if satisfies(actual, wanted_version) => {
                reports.push(format!("{name} reports {actual}"));
            }
            Ok(Some(actual)) => {
                return Err(format!(
                    "pod {name}'s server reports version {actual}, not {wanted}"
                ));
            }
            Ok(None) => return Err(format!("pod {name} is not running")),
            Err(error) => {
                return Err(format!(
                    "pod {name}'s server did not answer SHOW server_version: {error}"
                ));
            }
        }
    }
    Ok(reports.join(", "))
}

impl Capability for Upgrade {
    fn name(&self) -> &'static str {
        "upgrade"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["upgrade"]
    }

    fn sql_probes(&self, db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
        // Asked only while a rollout (or a major upgrade's switch) waits
        // for confirmation: at rest the operator does not log in to the
        // database at every reconcile.
        let rolling = db
            .status
            .as_ref()
            .and_then(|s| s.upgrade.as_ref())
            .is_some_and(|u| {
                (u.phase == UpgradePhase::Rolling && u.major.is_none())
                    || u.phase == UpgradePhase::Switching
            });
        if rolling {
            server::version_probes(db, observed)
        } else {
            Vec::new()
        }
    }

    fn validate(&self, db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
        let (Some(running), Some(wanted)) =
            (running_version(db), PgVersion::parse(&db.spec.version))
        else {
            return Vec::new();
        };
        match classify(running, wanted) {
            // Back to the data a completed major upgrade kept (see `major`).
            VersionChange::Downgrade if crate::major::returns_to_previous_major(db, observed) => {
                Vec::new()
            }
            VersionChange::Downgrade => vec![SpecProblem::new(
                "spec.version",
                "RefusedDowngrade",
                format!(
                    "{wanted} is older than the running {running}; PostgreSQL does not support running older binaries on newer data, so downgrades are refused"
                ),
            )],
            // Carried out by the MajorUpgrade capability (see `major`).
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

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        desired: &mut Desired,
    ) -> Result<(), Error> {
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
        let reverted =
            live.as_ref().and_then(image_of).as_deref() == Some(upgrade.from_image.as_str());
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

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        let now = status.now.unwrap_or_else(jiff::Timestamp::now);
        let previous = db.status.as_ref().and_then(|s| s.upgrade.clone());
        let wanted = db.spec.version.clone();
        let running = status.fields.current_version.clone();
        let ready = status.conditions.is_true(READY);
        let timeout = i64::from(settings(db).health_timeout_seconds);
        if previous
            .as_ref()
            .is_some_and(|up| up.major.is_some() && up.to_version == wanted)
        {
            // A major upgrade: the MajorUpgrade capability carries it on.
            status.fields.upgrade = previous;
            return;
        }

        let mut upgrade = match previous {
            Some(up) if up.to_version == wanted => up,
            _ => {
                // A new target: start a rollout when it is a minor upgrade
                // of what runs (validate refused everything else).
                let start = running
                    .as_deref()
                    .and_then(PgVersion::parse)
                    .zip(PgVersion::parse(&wanted))
                    .is_some_and(|(r, w)| classify(r, w) == VersionChange::Minor);
                if !start {
                    status.fields.upgrade = db.status.as_ref().and_then(|s| s.upgrade.clone());
                    return;
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
                    started_at: now.to_string(),
                    phase: UpgradePhase::Rolling,
                    observed_downtime_seconds: 0,
                    unready_since: None,
                    major: None,
                }
            }
        };

        if upgrade.phase == UpgradePhase::Rolling {
            match (&upgrade.unready_since, ready) {
                (None, false) => upgrade.unready_since = Some(now.to_string()),
                (Some(since), true) => {
                    let down =
                        u32::try_from(seconds_since(Some(since), now).max(0)).unwrap_or(u32::MAX);
                    upgrade.observed_downtime_seconds =
                        upgrade.observed_downtime_seconds.saturating_add(down);
                    upgrade.unready_since = None;
                }
                _ => {}
            }
            let elapsed = seconds_since(Some(&upgrade.started_at), now);
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
                            upgrade.from_version,
                            upgrade.to_version,
                            upgrade.observed_downtime_seconds
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
        status.fields.upgrade = Some(upgrade);
    }
}
