//! Reload instead of restart: a parameter change applied the way PostgreSQL
//! needs it, not always by restarting.
//!
//! Level 1 puts a hash of the configuration in the pod template, so any
//! change of `spec.parameters` restarts the pod. PostgreSQL re-reads most
//! parameters on `pg_reload_conf()`; only those of `postmaster` context need
//! a restart. Level 2 asks the server which is which, and:
//! - when every changed parameter can be reloaded, keeps the pod template's
//!   hash as it is (no restart), waits for the kubelet to deliver the new
//!   ConfigMap file into the pod (the file is newer than the server's last
//!   load of it, and holds the new values), then runs `pg_reload_conf()`;
//! - when one needs a restart (or the server reports `pending_restart`),
//!   lets Level 1's new hash through: the StatefulSet restarts the pod.
//!
//! `status.configuration` says which happened and whether the server has
//! applied it. When the server cannot be asked, nothing is restarted: a
//! server that is down reads the new file when it starts. Until a change is
//! applied, Progressing stays True, so the core looks again soon (a failed
//! reload, or a moment the server did not answer, is tried again).
//!
//! Whether the file is newer than the server's last load of it compares
//! `pg_stat_file`'s modification time, which PostgreSQL reports in whole
//! seconds, with `pg_conf_load_time()`, which has microseconds. A file
//! written later in the same second as the load reads as older than it; so
//! a file whose second is the load's counts as newer ([`file_is_newer`]):
//! a reload too many is harmless, a reload missed leaves the change
//! unapplied while status says it is applied.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use shared::api::{ConfigurationMethod, ConfigurationStatus, PostgresDB};
use shared::capability::{ApplyReport, Capability, Desired, EventType, Observed, StatusDraft};
use shared::conditions::{Assessment, PROGRESSING};
use shared::error::Error;
use shared::sql::{SqlAction, SqlAnswer, SqlProbe};

use level1_install::api::{Names, RESERVED_PARAMETERS, config_hash, postgresql_conf};
use shared::ext::StatefulSetExt;
use shared::keys::CONFIG_HASH_ANNOTATION;

use crate::logins;

/// Level 2's parameter capability.
pub struct Reload;

const POSTMASTER: &str = "settings/postmaster";
const PENDING_RESTART: &str = "settings/pending_restart";
const FILE: &str = "settings/file";
const FILE_TIMES: &str = "settings/file_times";
/// The Event reason of a reload, also how the report names it.
pub const RELOADED: &str = "ParametersReloaded";

/// What the server said about its settings; `None` where it could not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerSettings {
    /// Parameters that only a restart changes.
    pub postmaster: Option<BTreeSet<String>>,
    /// Parameters changed in the file that wait for a restart.
    pub pending_restart: Option<BTreeSet<String>>,
    /// What the configuration file in the pod says now, by name.
    pub file: Option<BTreeMap<String, String>>,
    /// Whether the file changed since the server last read it.
    pub file_is_newer: Option<bool>,
}

fn names(answer: Option<&SqlAnswer>) -> Option<BTreeSet<String>> {
    let rows = answer?.as_ref().ok()?;
    Some(
        rows.iter()
            .filter_map(|row| row.first().cloned().flatten())
            .collect(),
    )
}

impl ServerSettings {
    /// Reads the probes' answers.
    pub fn from(observed: &Observed) -> Self {
        let file = observed
            .sql(FILE)
            .and_then(|a| a.as_ref().ok())
            .map(|rows| {
                rows.iter()
                    .filter_map(|row| match row.as_slice() {
                        [Some(name), Some(setting)] => Some((name.clone(), setting.clone())),
                        _ => None,
                    })
                    .collect()
            });
        Self {
            postmaster: names(observed.sql(POSTMASTER)),
            pending_restart: names(observed.sql(PENDING_RESTART)),
            file,
            file_is_newer: file_times(observed.sql(FILE_TIMES))
                .map(|(modified, loaded)| file_is_newer(modified, loaded)),
        }
    }
}

/// The configuration file's modification time and the server's last load
/// of it, in microseconds since the epoch, from the [`FILE_TIMES`] probe.
fn file_times(answer: Option<&SqlAnswer>) -> Option<(i64, i64)> {
    let rows = answer?.as_ref().ok()?;
    let [Some(modified), Some(loaded)] = rows.first()?.as_slice() else {
        return None;
    };
    Some((modified.parse().ok()?, loaded.parse().ok()?))
}

const MICROS: i64 = 1_000_000;

/// Whether a configuration file modified at `modified` may be newer than the
/// server's load of it at `loaded` (microseconds since the epoch).
/// PostgreSQL reports the modification time truncated to the second, so
/// only a file from an earlier second than the load is surely older; one
/// from the load's second may have been written after it, and counts as
/// newer (it is reloaded once more rather than never).
pub fn file_is_newer(modified: i64, loaded: i64) -> bool {
    modified.div_euclid(MICROS) >= loaded.div_euclid(MICROS)
}

/// The `name = 'value'` settings of a postgresql.conf written by Level 1.
pub fn parse_conf(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (name, value) = line.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .map(|v| v.replace("''", "'"))
                .unwrap_or_else(|| value.to_string());
            Some((name.trim().to_string(), value))
        })
        .collect()
}

/// Parameters a higher level writes into postgresql.conf itself, from its
/// own spec section (Level 5's synchronous replication, reloaded by that
/// level): not the user's, so a difference in them is no change of
/// `spec.parameters`.
pub const SET_BY_HIGHER_LEVELS: [&str; 1] = ["synchronous_standby_names"];

fn is_users(name: &str) -> bool {
    !RESERVED_PARAMETERS.contains(&name) && !SET_BY_HIGHER_LEVELS.contains(&name)
}

/// The user's parameters in a postgresql.conf (what the operator sets
/// itself is left out: its paths differ inside a sandbox pod).
fn user_parameters(conf: &str) -> BTreeMap<String, String> {
    parse_conf(conf)
        .into_iter()
        .filter(|(name, _)| is_users(name))
        .collect()
}

/// Names whose value differs between two sets of parameters (set,
/// changed or removed).
pub fn changed_parameters(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .cloned()
        .collect()
}

/// How to apply a configuration change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Restart the pods, for these parameters.
    Restart(Vec<String>),
    /// Keep the pods; reload now (`true`) or once the file arrives.
    Reload {
        /// Whether the file in the pod holds the new values and the server
        /// has not read it yet.
        now: bool,
    },
    /// The server could not be asked: keep the pods as they are.
    Unknown,
}

/// Decides how `wanted` (the user's parameters) reaches a server whose
/// ConfigMap held `live`, from what the server says.
pub fn plan(
    live: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
    server: &ServerSettings,
) -> Plan {
    let changed = changed_parameters(live, wanted);
    let (Some(postmaster), Some(pending)) = (&server.postmaster, &server.pending_restart) else {
        return Plan::Unknown;
    };
    let mut restart: Vec<String> = changed
        .iter()
        .filter(|name| postmaster.contains(*name))
        .cloned()
        .collect();
    restart.extend(pending.iter().cloned());
    restart.sort();
    restart.dedup();
    if !restart.is_empty() {
        return Plan::Restart(restart);
    }
    Plan::Reload {
        now: file_is_current(wanted, server) && server.file_is_newer == Some(true),
    }
}

/// Whether the file in the pod holds exactly the user's parameters.
fn file_is_current(wanted: &BTreeMap<String, String>, server: &ServerSettings) -> bool {
    server.file.as_ref().is_some_and(|file| {
        let in_file: BTreeMap<String, String> = file
            .iter()
            .filter(|(name, _)| is_users(name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        &in_file == wanted
    })
}

fn template_hash(sts: &StatefulSet) -> Option<String> {
    sts.template_annotation(CONFIG_HASH_ANNOTATION)
        .map(String::from)
}

/// What the reconcile knows about the configuration: the live and wanted
/// parameters and hashes. `None` before the database's objects exist.
struct Situation {
    live: BTreeMap<String, String>,
    wanted: BTreeMap<String, String>,
    live_hash: String,
    wanted_hash: String,
}

fn situation(db: &PostgresDB, observed: &Observed) -> Option<Situation> {
    let names = Names::of(db);
    let live_sts = observed.get::<StatefulSet>(&names.primary)?;
    let live_hash = template_hash(&live_sts)?;
    let live_conf = observed
        .get::<ConfigMap>(&names.config)?
        .data?
        .get("postgresql.conf")?
        .clone();
    let wanted_conf = postgresql_conf(db);
    let wanted_hash = config_hash(db);
    Some(Situation {
        live: user_parameters(&live_conf),
        wanted: user_parameters(&wanted_conf),
        live_hash,
        wanted_hash,
    })
}

impl Situation {
    /// Whether the server may not run the wanted configuration: the pods
    /// were not restarted with it (it was reloaded, or is not applied yet).
    fn unsettled(&self) -> bool {
        self.live_hash != self.wanted_hash
    }
}

impl Capability for Reload {
    fn name(&self) -> &'static str {
        "reload"
    }

    fn sql_probes(&self, db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
        let Some(situation) = situation(db, observed) else {
            return Vec::new();
        };
        let Some(target) = logins::primary_target(db, observed) else {
            return Vec::new();
        };
        if !situation.unsettled() {
            return Vec::new();
        }
        [
            (POSTMASTER, "SELECT name FROM pg_settings WHERE context = 'postmaster'"),
            // A setting given on the server's command line (the sandbox's
            // pods listen on their own address so) overrides the file, and
            // is reported pending after every reload although no restart
            // would change it.
            (
                PENDING_RESTART,
                "SELECT name FROM pg_settings WHERE pending_restart AND source <> 'command line'",
            ),
            (
                FILE,
                "SELECT name, setting FROM pg_file_settings \
                 WHERE sourcefile = current_setting('config_file') AND error IS NULL ORDER BY seqno",
            ),
            // Compared by `file_is_newer`: the modification time comes in
            // whole seconds, the load time with microseconds.
            (
                FILE_TIMES,
                "SELECT (extract(epoch FROM (pg_stat_file(current_setting('config_file'))).modification) \
                 * 1000000)::bigint::text, \
                 (extract(epoch FROM pg_conf_load_time()) * 1000000)::bigint::text",
            ),
        ]
        .into_iter()
        .map(|(name, statement)| SqlProbe {
            name: name.into(),
            target: target.clone(),
            statement,
        })
        .collect()
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        if db
            .status
            .as_ref()
            .and_then(|s| s.upgrade.as_ref())
            .is_some_and(|u| {
                u.to_version == db.spec.version && u.phase == shared::api::UpgradePhase::Rolling
            })
        {
            // A version rollout restarts the pods anyway.
            return Ok(());
        }
        let Some(situation) = situation(db, observed) else {
            return Ok(());
        };
        if !situation.unsettled() {
            return Ok(());
        }
        let server = ServerSettings::from(observed);
        let names = Names::of(db);
        match plan(&situation.live, &situation.wanted, &server) {
            Plan::Restart(parameters) => {
                desired.note(
                    EventType::Normal,
                    "RestartingForParameters",
                    format!(
                        "{} can only change with a restart: restarting the pods",
                        parameters.join(", ")
                    ),
                );
            }
            Plan::Reload { now } => {
                keep_pods(desired, &names.primary, &situation.live_hash)?;
                if now && let Some(target) = logins::primary_target(db, observed) {
                    desired.run_sql(SqlAction {
                        target,
                        statement: "SELECT pg_reload_conf()::text",
                        reason: RELOADED.into(),
                        message: format!(
                            "reloaded the configuration without a restart: {}",
                            describe(&changed_parameters(&situation.live, &situation.wanted))
                                .or_else(|| {
                                    let previous = db.status.as_ref()?.configuration.as_ref()?;
                                    describe(&previous.changed)
                                })
                                .unwrap_or_else(|| "the file changed".into())
                        ),
                        settings: Default::default(),
                    });
                }
            }
            Plan::Unknown => keep_pods(desired, &names.primary, &situation.live_hash)?,
        }
        Ok(())
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        let previous = db.status.as_ref().and_then(|s| s.configuration.clone());
        let Some(situation) = situation(db, observed) else {
            status.fields.configuration = previous;
            return;
        };
        let server = ServerSettings::from(observed);
        let changed = changed_parameters(&situation.live, &situation.wanted);
        let plan = plan(&situation.live, &situation.wanted, &server);
        let mut configuration = match (changed.is_empty(), previous) {
            (false, _) => ConfigurationStatus {
                changed,
                applied_by: match plan {
                    Plan::Restart(_) => ConfigurationMethod::Restart,
                    _ => ConfigurationMethod::Reload,
                },
                applied: false,
                pending_restart: Vec::new(),
            },
            (true, Some(previous)) => previous,
            (true, None) => return,
        };
        configuration.pending_restart = server.pending_restart.iter().flatten().cloned().collect();
        configuration.applied = if !situation.unsettled() {
            // Restarted with the wanted configuration: applied once the
            // pods run it, which Level 1's rollout assessment tracks.
            configuration.applied || !status.conditions.is_true(PROGRESSING)
        } else {
            match plan {
                Plan::Reload { .. } => {
                    applied.sql_ran.iter().any(|r| r == RELOADED)
                        || (file_is_current(&situation.wanted, &server)
                            && server.file_is_newer == Some(false))
                }
                // The server did not answer this time: what was known stays.
                Plan::Unknown => configuration.applied,
                Plan::Restart(_) => false,
            }
        };
        if !configuration.applied {
            // Not settled until applied, so the core looks again soon: the
            // file may arrive, a failed reload is tried again, a server that
            // did not answer is asked again. A restart is Level 1's rollout,
            // which says so itself.
            let waiting = match plan {
                Plan::Reload { .. } => Some((
                    "ReloadingParameters",
                    "waiting for the new configuration file to reach the pod, then reloading",
                )),
                // Whatever else is in progress (a pod starting) says so first.
                Plan::Unknown if status.conditions.is_true(PROGRESSING) => None,
                Plan::Unknown => Some((
                    "AskingServerSettings",
                    "waiting for the server to say how it applies the change",
                )),
                Plan::Restart(_) => None,
            };
            if let Some((reason, waiting)) = waiting {
                status.conditions.set(
                    PROGRESSING,
                    Assessment::yes(
                        reason,
                        format!("{waiting}: {}", configuration.changed.join(", ")),
                    ),
                );
            }
        }
        status.fields.configuration = Some(configuration);
    }
}

fn describe(names: &[String]) -> Option<String> {
    (!names.is_empty()).then(|| names.join(", "))
}

/// Keeps the pod template's configuration hash at `live_hash`, so the
/// StatefulSet does not restart its pods for this change.
fn keep_pods(desired: &mut Desired, statefulset: &str, live_hash: &str) -> Result<(), Error> {
    desired.modify::<StatefulSet>(statefulset, |sts| {
        sts.set_template_annotation(CONFIG_HASH_ANNOTATION, live_hash);
    })?;
    Ok(())
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
