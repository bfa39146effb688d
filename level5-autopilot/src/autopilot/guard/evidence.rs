//! What says a configuration does not run, read from the pods and the
//! servers: a server pod made from the configuration under trial whose
//! container exits with an error (a crash loop), one that stays not ready
//! [`READY_WITHIN`] after it started, and a value the running servers
//! refuse (`pg_file_settings` reports an error for it: PostgreSQL keeps
//! the old value on reload and logs why).
//!
//! An exit counts when the server said why (a FATAL, PANIC or ERROR line
//! at the end of its log, which the kubelet keeps as the termination
//! message) or the kubelet killed it for its memory: Level 5's instance
//! script also exits, with a line of its own, when a replica's primary
//! does not answer yet, and that says nothing about the parameters.
//!
//! A pod is of the trial configuration when its configuration-hash
//! annotation (copied from the pod template by the StatefulSet) is the
//! hash of the parameters under trial: only such pods are judged, so a pod
//! failing on the previous configuration, or on a version Level 2 rolls
//! out (and rolls back itself), is no evidence against the parameters.
//!
//! Where it stops: it reads what the kubelet and the servers report; a
//! server that starts and is ready but misbehaves (too little memory for
//! a workload) is not a configuration that "does not run".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use kube::ResourceExt;
use level1_install::api::{CONTAINER, config_hash};
use level1_install::install::server_reason;
use level2_upgrade::logins::server_pods;
use shared::api::{PostgresDB, UpgradePhase};
use shared::capability::Observed;
use shared::ext::PodExt;
use shared::keys::CONFIG_HASH_ANNOTATION;

/// How long a pod of a new configuration has to become ready after its
/// container started before the configuration counts as one that does not
/// run. A restart for a parameter change is a clean shutdown and a start
/// without recovery: seconds, even on a busy machine.
pub const READY_WITHIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// The kubelet's reason for a container killed for exceeding its memory
/// limit (`shared_buffers` beyond `resources.limits.memory`).
const OOM_KILLED: &str = "OOMKilled";

/// The name prefix of the probes asking each ready server which values of
/// its configuration file it refuses.
pub const FILE_ERRORS: &str = "guard/file_errors";

/// The probe statement (see the file).
pub const FILE_ERRORS_SQL: &str = include_str!("file_errors.sql");

/// The name of the file-errors probe of `pod`.
pub fn probe_name(pod: &str) -> String {
    format!("{FILE_ERRORS}/{pod}")
}

/// A configuration seen not to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The pod it was seen on.
    pub pod: String,
    /// What was seen, as words ("its container exited with code 1").
    pub seen: String,
    /// The server's own words, when it gave some (its log's FATAL line, or
    /// `pg_file_settings`' error).
    pub said: Option<String>,
    /// Everything the server left (a termination message is its log's
    /// end), to find the parameter it names.
    pub text: String,
    /// The parameter the evidence is about, when it names one directly
    /// (a refused value of the file).
    pub parameter: Option<String>,
}

/// What the pods and servers say about the configuration under trial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// It does not run.
    Rejected(Rejection),
    /// A pod of it is not ready yet: it is judged again at this instant.
    Pending(jiff::Timestamp),
    /// Nothing against it.
    Clear,
}

/// Whether Level 2 is changing the version: pods then fail or wait for
/// the version's sake, and Level 2 rolls a failed version back itself.
fn version_changing(db: &PostgresDB) -> bool {
    db.status
        .as_ref()
        .and_then(|s| s.upgrade.as_ref())
        .is_some_and(|u| {
            u.to_version == db.spec.version
                && (u.major.as_ref().is_some_and(|m| !m.closed)
                    || matches!(u.phase, UpgradePhase::Rolling | UpgradePhase::Switching))
        })
}

/// The server pods made from the pod template of `hash`, not being deleted.
pub fn pods_of(db: &PostgresDB, observed: &Observed, hash: &str) -> Vec<Pod> {
    server_pods(db, observed)
        .into_iter()
        .filter(|pod| {
            !pod.is_deleting()
                && pod
                    .annotations()
                    .get(CONFIG_HASH_ANNOTATION)
                    .map(String::as_str)
                    == Some(hash)
        })
        .collect()
}

fn container(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)
}

/// How the PostgreSQL container of `pod` last failed, when it did and did
/// not run ready since: the termination it reports now or last.
pub fn failure(pod: &Pod) -> Option<(String, ContainerStateTerminated)> {
    let status = container(pod)?;
    let state = status.state.as_ref();
    let waiting = state
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone());
    let terminated = state
        .and_then(|s| s.terminated.clone())
        .filter(|t| t.exit_code != 0);
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .filter(|t| t.exit_code != 0);
    let crash_looping = waiting.as_deref() == Some("CrashLoopBackOff");
    let reason = |t: &ContainerStateTerminated| {
        t.reason
            .as_deref()
            .filter(|r| *r == OOM_KILLED)
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    };
    if let Some(now) = terminated {
        return Some((
            format!("exited with code {}{}", now.exit_code, reason(&now)),
            now,
        ));
    }
    if let (true, Some(last)) = (crash_looping || !status.ready, last) {
        let seen = if crash_looping {
            format!(
                "exited with code {}{} and is waiting to be restarted (CrashLoopBackOff)",
                last.exit_code,
                reason(&last)
            )
        } else {
            format!(
                "exited with code {}{} and is not ready since",
                last.exit_code,
                reason(&last)
            )
        };
        return Some((seen, last));
    }
    None
}

/// When the PostgreSQL container of `pod` started this time (the pod's
/// start when it has not yet).
fn started(pod: &Pod) -> Option<jiff::Timestamp> {
    let running = container(pod)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .map(|t| t.0);
    running.or_else(|| pod.status.as_ref()?.start_time.as_ref().map(|t| t.0))
}

/// What the pods of the trial configuration (the parameters `db` runs:
/// the effective database) and the servers' probe answers say about it.
/// `wanted` are the parameters under trial, for the file's refused values.
pub fn evidence(
    db: &PostgresDB,
    observed: &Observed,
    wanted: &BTreeMap<String, String>,
    now: jiff::Timestamp,
) -> Evidence {
    if version_changing(db) {
        return Evidence::Clear;
    }
    let mut pending: Option<jiff::Timestamp> = None;
    for pod in pods_of(db, observed, &config_hash(db)) {
        if let Some((seen, terminated)) = failure(&pod) {
            let text = terminated.message.unwrap_or_default();
            let said = server_reason(&text);
            let killed = terminated.reason.as_deref() == Some(OOM_KILLED);
            if said.is_none() && !killed {
                // Not the server's exit: Level 5's instance script exits
                // when a replica's primary does not answer yet, and the
                // kubelet retries.
                continue;
            }
            return Evidence::Rejected(Rejection {
                pod: pod.name_any(),
                seen: format!("its container {seen}"),
                said,
                text,
                parameter: None,
            });
        }
        if pod.is_ready() {
            continue;
        }
        let Some(started) = started(&pod) else {
            continue;
        };
        let Ok(deadline) = started.checked_add(READY_WITHIN) else {
            continue;
        };
        if now >= deadline {
            return Evidence::Rejected(Rejection {
                pod: pod.name_any(),
                seen: format!(
                    "it was not ready {}s after its container started",
                    READY_WITHIN.as_secs()
                ),
                said: None,
                text: String::new(),
                parameter: None,
            });
        }
        pending = Some(pending.map_or(deadline, |p| p.min(deadline)));
    }
    if let Some(refused) = refused_values(db, observed, wanted) {
        return Evidence::Rejected(refused);
    }
    pending.map_or(Evidence::Clear, Evidence::Pending)
}

/// The first value of `wanted` a server's file-errors probe reports
/// refused.
fn refused_values(
    db: &PostgresDB,
    observed: &Observed,
    wanted: &BTreeMap<String, String>,
) -> Option<Rejection> {
    server_pods(db, observed).into_iter().find_map(|pod| {
        let rows = observed.sql(&probe_name(&pod.name_any()))?.as_ref().ok()?;
        rows.iter().find_map(|row| {
            let [Some(name), Some(setting), Some(error)] = row.as_slice() else {
                return None;
            };
            (wanted.get(name) == Some(setting)).then(|| Rejection {
                pod: pod.name_any(),
                seen: format!("its server refuses {name} = '{setting}' in its configuration file"),
                said: Some(format!("pg_file_settings: {error}")),
                text: String::new(),
                parameter: Some(name.clone()),
            })
        })
    })
}

/// The parameter a rejection is about: the one it names directly, else
/// the first of `changed` (the parameters that differ from the last
/// configuration that ran) that the server's words name, else the first
/// its whole log names. `None` when the server names none of them.
pub fn rejected_parameter(rejection: &Rejection, changed: &[String]) -> Option<String> {
    if let Some(name) = &rejection.parameter {
        return Some(name.clone());
    }
    let named_in = |text: &str| changed.iter().find(|name| names(text, name)).cloned();
    rejection
        .said
        .as_deref()
        .and_then(named_in)
        .or_else(|| named_in(&rejection.text))
}

/// Whether `text` names the parameter `name` as a word of its own.
fn names(text: &str, name: &str) -> bool {
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_part) && !after.is_some_and(is_part)
    })
}
