//! Which version runs, which is asked for, how the two relate, and whether
//! the servers confirm what runs.
//!
//! `status.currentVersion` (recorded by Level 1 once a rollout is complete
//! and ready) is what runs; `spec.version` is what is asked for. Both the
//! minor and the major upgrade classify the change the same way, and both
//! ask the servers themselves (`SHOW server_version`, see
//! [`crate::logins`]) before calling a rollout done.

use kube::ResourceExt;
use level1_install::api::PgVersion;
use shared::api::{PostgresDB, UpgradeSpec};
use shared::capability::Observed;

use crate::logins::{self, reported_version, satisfies};

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
pub fn running_version(db: &PostgresDB) -> Option<PgVersion> {
    PgVersion::parse(db.status.as_ref()?.current_version.as_deref()?)
}

/// The upgrade section, defaults when absent.
pub fn settings(db: &PostgresDB) -> UpgradeSpec {
    db.spec.upgrade.clone().unwrap_or_default()
}

/// Seconds from `from` to `now` (0 when absent).
pub fn seconds_since(from: Option<jiff::Timestamp>, now: jiff::Timestamp) -> i64 {
    from.map(|from| (now - from).get_seconds()).unwrap_or(0)
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
    let pods = logins::server_pods(db, observed);
    if pods.is_empty() {
        return Err("no pod runs yet".into());
    }
    let mut reports = Vec::new();
    for pod in pods {
        let name = pod.name_any();
        match reported_version(observed.sql(&logins::version_probe(&name))) {
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
