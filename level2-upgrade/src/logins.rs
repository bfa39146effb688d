//! SQL logins to the servers Level 1 runs, and what Level 2 asks them first.
//!
//! Level 1 never speaks SQL: it trusts the image tag and the readiness
//! probe. Level 2 asks the server itself: its version (is the upgrade really
//! done?) and its settings (can a change be reloaded, or does it need a
//! restart?). This module says as whom and where: the superuser whose
//! password Level 1 generated, on each pod of the StatefulSet by ordinal;
//! the core connects (see `shared::sql`).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Resource, ResourceExt};
use level1_install::api::{Names, PORT, PgVersion};
use shared::api::PostgresDB;
use shared::capability::Observed;
use shared::ext::PodExt;
use shared::sql::{SqlAnswer, SqlProbe, SqlTarget};

/// Name of the probe asking `pod` for its version.
pub fn version_probe(pod: &str) -> String {
    format!("server_version/{pod}")
}

/// The superuser's login to `pod`, when its Secret exists and the pod has
/// an IP and runs.
pub fn superuser_target(db: &PostgresDB, observed: &Observed, pod: &Pod) -> Option<SqlTarget> {
    let names = Names::of(db);
    let secret = observed.get::<Secret>(&names.superuser)?;
    let data = secret.data?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    Some(SqlTarget {
        pod: pod.name_any(),
        pod_ip: Some(status.pod_ip.clone()?),
        port: u16::try_from(PORT).unwrap_or(5432),
        user: text("username")?,
        password: text("password")?,
        database: "postgres".into(),
    })
}

/// The pods of the database's StatefulSet: the servers. Other pods carry
/// the database's labels too (a major upgrade's Job), and are not servers.
pub fn server_pods(db: &PostgresDB, observed: &Observed) -> Vec<Pod> {
    let primary = Names::of(db).primary;
    observed
        .all::<Pod>()
        .into_iter()
        .filter(|pod| pod.is_owned_by(&StatefulSet::kind(&()), &primary))
        .collect()
}

/// The pods of the database's StatefulSet that a login can reach, by name.
pub fn reachable_pods(db: &PostgresDB, observed: &Observed) -> Vec<(Pod, SqlTarget)> {
    let mut pods: Vec<(Pod, SqlTarget)> = server_pods(db, observed)
        .into_iter()
        .filter(|pod| !pod.is_deleting())
        .filter_map(|pod| {
            let target = superuser_target(db, observed, &pod)?;
            Some((pod, target))
        })
        .collect();
    pods.sort_by_key(|(pod, _)| pod.name_any());
    pods
}

/// The login to the pod with `ordinal`, when it can be reached.
pub fn pod_target(db: &PostgresDB, observed: &Observed, ordinal: u32) -> Option<SqlTarget> {
    let pod_name = Names::of(db).pod(ordinal);
    reachable_pods(db, observed)
        .into_iter()
        .find(|(pod, _)| pod.name_any() == pod_name)
        .map(|(_, target)| target)
}

/// The primary's login (the pod `status.currentPrimary` names, see
/// `shared::ha::primary_ordinal`).
pub fn primary_target(db: &PostgresDB, observed: &Observed) -> Option<SqlTarget> {
    pod_target(db, observed, shared::ha::primary_ordinal(db))
}

/// A probe of every reachable pod's `server_version`.
pub fn version_probes(db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
    reachable_pods(db, observed)
        .into_iter()
        .map(|(pod, target)| SqlProbe {
            name: version_probe(&pod.name_any()),
            target,
            statement: "SHOW server_version",
        })
        .collect()
}

/// The major and minor version at the start of a `server_version` string
/// ("16.4 (Debian 16.4-1.pgdg120+1)" is 16.4).
pub fn parse_server_version(text: &str) -> Option<PgVersion> {
    let leading: String = text
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = leading.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok());
    Some(PgVersion { major, minor })
}

/// What a pod's server said its version is: `Ok(None)` when it was not
/// asked (not running), `Err` when it could not answer.
pub fn reported_version(answer: Option<&SqlAnswer>) -> Result<Option<PgVersion>, String> {
    match answer {
        None => Ok(None),
        Some(Err(error)) => Err(error.clone()),
        Some(Ok(_)) => shared::sql::scalar(answer)
            .and_then(parse_server_version)
            .map(Some)
            .ok_or_else(|| "the server answered SHOW server_version with nothing usable".into()),
    }
}

/// Whether a server at `actual` is what `wanted` asks for: the same major,
/// and the same minor when `wanted` pins one (a bare major is the image's
/// floating tag, any minor of it).
pub fn satisfies(actual: PgVersion, wanted: PgVersion) -> bool {
    actual.major == wanted.major && (wanted.minor.is_none() || actual.minor == wanted.minor)
}
