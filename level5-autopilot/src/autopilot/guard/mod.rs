//! Configuration self-healing: a configuration with which the servers do
//! not start, or do not become ready, or whose values they refuse, is
//! rolled back to the last one that ran, and held back until the spec's
//! parameters change again.
//!
//! Why: a parameter can be valid on its own (Level 1 checks each value
//! against PostgreSQL's own table) and still stop the server, with another
//! (`wal_level = 'minimal'` beside the default `max_wal_senders`) or with
//! the machine (`shared_buffers` beyond its memory, `huge_pages = 'on'`
//! without huge pages). Below Level 5 the database then stays down,
//! Degraded with the server's reason, until a human edits the spec.
//!
//! How, without ever editing the spec:
//! - the last configuration every instance ran and was ready with is kept
//!   in `status.autopilot.configuration.lastGood`, recorded once per
//!   change ([`decision`]);
//! - a new configuration is on trial until then; a pod made from it whose
//!   server exits, or stays not ready, or a server that refuses one of its
//!   values on reload, rejects it ([`evidence`]): `heldBack` records the
//!   parameters, the server's message and the parameter it names;
//! - while the spec asks for the held-back parameters, the effective
//!   parameters are `lastGood` ([`effective_parameters`]), so Level 1
//!   renders the old configuration again and Level 2 reloads or restarts
//!   for it; pods that failed on the rejected configuration are deleted
//!   so the StatefulSet replaces them (it would wait for them for ever);
//! - Degraded says it all: True `ConfigurationRejected` (a Warning Event
//!   naming the parameter and quoting the server), True
//!   `ConfigurationRolledBack` while the instances go back, False
//!   `Recovered` once they run the old configuration again (a Normal
//!   Event), each message saying the spec is held back until it changes.
//!
//! Where it stops: there is nothing to roll back to before a first
//! configuration ran (a database created with a bad parameter stays
//! Degraded, as below Level 5); a version change is Level 2's to roll back
//! (pods failing while a version rolls out are not evidence); and a server
//! that runs but misbehaves with a configuration is not one that "does not
//! run".

pub mod decision;
pub mod evidence;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use level1_install::api::{Names, RESERVED_PARAMETERS, config_hash, postgresql_conf};
use level2_upgrade::logins::{reachable_pods, server_pods};
use level2_upgrade::reload::{SET_BY_HIGHER_LEVELS, parse_conf};
use shared::api::PostgresDB;
use shared::autopilot::guard::ConfigurationGuardStatus;
use shared::capability::{ApplyReport, Capability, Desired, EventType, Observed, StatusDraft};
use shared::conditions::{DEGRADED, PROGRESSING, READY};
use shared::error::Error;
use shared::ext::{PodExt, StatefulSetExt};
use shared::keys::CONFIG_HASH_ANNOTATION;
use shared::sql::SqlProbe;

use super::tuning;
use decision::{Inputs, decide};
use evidence::{FILE_ERRORS_SQL, evidence, failure, pods_of, probe_name};

/// What status recorded, if anything.
fn recorded(db: &PostgresDB) -> Option<&ConfigurationGuardStatus> {
    db.status
        .as_ref()?
        .autopilot
        .as_ref()?
        .configuration
        .as_ref()
}

/// The parameters the servers should run: `wanted` (the spec's, with the
/// derived ones), or the last configuration that ran while `wanted` is
/// held back.
pub fn effective_parameters(
    db: &PostgresDB,
    wanted: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    match recorded(db) {
        Some(status)
            if status
                .held_back
                .as_ref()
                .is_some_and(|held| held.parameters == wanted) =>
        {
            status.last_good.clone()
        }
        _ => wanted,
    }
}

/// The parameters the spec as written asks for, with the derived ones:
/// what [`effective_parameters`] was given. `db` is the effective
/// database; the spec as written is the observed one when it differs.
pub fn wanted_parameters(db: &PostgresDB, observed: &Observed) -> BTreeMap<String, String> {
    match observed.written_spec() {
        Some(spec) => {
            let mut written = db.clone();
            written.spec = spec.clone();
            tuning::effective_parameters(&written)
        }
        None => tuning::effective_parameters(db),
    }
}

/// The user's parameters in a postgresql.conf (what the levels set
/// themselves left out), to compare two renderings.
fn users_parameters(conf: &str) -> BTreeMap<String, String> {
    parse_conf(conf)
        .into_iter()
        .filter(|(name, _)| {
            !RESERVED_PARAMETERS.contains(&name.as_str())
                && !SET_BY_HIGHER_LEVELS.contains(&name.as_str())
        })
        .collect()
}

/// Whether the ConfigMap holds the parameters `db` runs.
fn config_map_current(db: &PostgresDB, observed: &Observed) -> bool {
    observed
        .get::<ConfigMap>(&Names::of(db).config)
        .and_then(|cm| cm.data?.get("postgresql.conf").cloned())
        .is_some_and(|live| users_parameters(&live) == users_parameters(&postgresql_conf(db)))
}

/// Whether any server refuses a value of its configuration file.
fn file_refused(observed: &Observed, pods: &[Pod]) -> bool {
    pods.iter().any(|pod| {
        observed
            .sql(&probe_name(&pod.name_any()))
            .and_then(|a| a.as_ref().ok())
            .is_some_and(|rows| !rows.is_empty())
    })
}

/// Whether every instance is ready with the parameters `db` runs, applied:
/// the ConfigMap holds them, the StatefulSet's rollout is done, every
/// server pod is ready, Level 2 says the change is applied, no server
/// refuses a value, and nothing is in progress or was written now.
fn settled(
    db: &PostgresDB,
    observed: &Observed,
    applied: &ApplyReport,
    status: &StatusDraft,
) -> bool {
    let Some(sts) = observed.get::<StatefulSet>(&Names::of(db).primary) else {
        return false;
    };
    let pods = server_pods(db, observed);
    let replicas = usize::try_from(sts.replicas()).unwrap_or(0);
    !applied.wrote_anything()
        && config_map_current(db, observed)
        && sts.rollout().is_done()
        && sts.ready_replicas() >= sts.replicas()
        && pods.len() >= replicas
        && pods.iter().all(|pod| pod.is_ready() && !pod.is_deleting())
        && status.conditions.is_true(READY)
        && !status.conditions.is_true(PROGRESSING)
        && status
            .fields
            .configuration
            .as_ref()
            .is_none_or(|c| c.applied)
        && !file_refused(observed, &pods)
}

/// Whether the servers run parameters that have not run yet, or nothing
/// was recorded yet: the file-errors probes are asked then only.
fn on_trial(db: &PostgresDB) -> bool {
    recorded(db)
        .is_none_or(|status| status.held_back.is_none() && status.last_good != db.spec.parameters)
}

/// Configuration self-healing.
pub struct ConfigurationGuard;

impl Capability for ConfigurationGuard {
    fn name(&self) -> &'static str {
        "configuration-guard"
    }

    fn sql_probes(&self, db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
        if !on_trial(db) {
            return Vec::new();
        }
        reachable_pods(db, observed)
            .into_iter()
            .filter(|(pod, _)| pod.is_ready())
            .map(|(pod, target)| SqlProbe {
                name: probe_name(&pod.name_any()),
                target,
                statement: FILE_ERRORS_SQL,
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
        if db.spec.paused {
            return Ok(());
        }
        let Some(held) = recorded(db).and_then(|s| s.held_back.as_ref()) else {
            return Ok(());
        };
        if held.parameters != wanted_parameters(db, observed) {
            return Ok(());
        }
        let mut rejected = db.clone();
        rejected.spec.parameters = held.parameters.clone();
        let rejected_hash = config_hash(&rejected);
        // Level 2 keeps the pod template's hash as it is when it reloads
        // (a server that is down reads the restored file when it starts),
        // which can leave the rejected configuration's hash on a template
        // that runs the last good one: asking for the rejected parameters
        // again would then restart nothing. The template says what it runs.
        desired.modify::<StatefulSet>(&Names::of(db).primary, |sts| {
            if sts.template_annotation(CONFIG_HASH_ANNOTATION) == Some(rejected_hash.as_str()) {
                sts.set_template_annotation(CONFIG_HASH_ANNOTATION, &config_hash(db));
            }
        })?;
        if held.recovered_at.is_some() {
            return Ok(());
        }
        // The pods that failed on the rejected configuration: the
        // StatefulSet waits for them for ever, and a crash-looping server
        // would only read the restored file at its next back-off. They are
        // deleted after this reconcile's applies (the restored ConfigMap
        // and pod template), so their replacements start with them.
        for pod in pods_of(db, observed, &rejected_hash) {
            let started_before = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .is_some_and(|start| start.0 < held.since.0);
            if failure(&pod).is_none() && (pod.is_ready() || !started_before) {
                continue;
            }
            let name = pod.name_any();
            desired.delete_observed::<Pod>(
                &name,
                pod.uid(),
                "it runs a configuration that was rolled back",
            );
            desired.note(
                EventType::Normal,
                "ReplacingRejectedPod",
                format!(
                    "deleting pod {name}, which failed with the rejected parameters, so that it starts again with the last configuration that ran"
                ),
            );
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
        let previous = recorded(db);
        let outcome = if db.spec.paused {
            decision::Outcome {
                status: previous.cloned(),
                degraded: None,
                wake_at: None,
            }
        } else {
            let wanted = wanted_parameters(db, observed);
            let evidence = evidence(db, observed, &wanted, status.now);
            decide(&Inputs {
                previous,
                wanted: &wanted,
                running: &db.spec.parameters,
                evidence: &evidence,
                settled: settled(db, observed, applied, status),
                now: status.now,
            })
        };
        if let Some(degraded) = outcome.degraded {
            // A failure another capability reports stays reported once the
            // configuration recovered.
            if degraded.is_true() || !status.conditions.is_true(DEGRADED) {
                status.conditions.set(DEGRADED, degraded);
            }
        }
        if let Some(at) = outcome.wake_at {
            status.wake_at(at);
        }
        if outcome.status.is_some() {
            status
                .fields
                .autopilot
                .get_or_insert_default()
                .configuration = outcome.status;
        }
    }
}
