//! What streaming replication needs on the servers: a login for it, a
//! slot per replica on the primary, the configuration that lets replicas
//! connect, and synchronous commits when the spec asks for them.
//!
//! - The login: the Secret `<name>-replication` (user `streaming_replica`,
//!   a password generated once and kept, as Level 1 keeps credentials) and
//!   the role on the primary, created or given the Secret's password by a
//!   statement that receives it as a session setting, never as SQL text,
//!   when a probe says the role is missing or the Secret was just made.
//! - Slots: the serving primary keeps one physical slot `instance_<k>` per
//!   other instance the StatefulSet runs, so WAL a replica has not
//!   received is kept for it; the slot of an instance scaled away is
//!   dropped, so it does not hold WAL for ever. Only a difference between
//!   what the probe lists and what should exist is acted on.
//! - pg_hba.conf allows `streaming_replica` replication connections.
//! - `synchronous_standby_names = 'ANY <n> (*)'` in postgresql.conf when
//!   `spec.replication.synchronous`; every instance reads the same file,
//!   so a promoted replica already commits synchronously. A change is
//!   reloaded, never restarted: each server whose file holds the wanted
//!   value but whose running value differs is asked to `pg_reload_conf()`.
//!
//! It stops at the servers' configuration: who is primary is decided
//! elsewhere (`failover`); without a serving primary it does nothing on
//! the servers.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use level1_install::api::Names;
use shared::api::PostgresDB;
use shared::capability::{Desired, Observed};
use shared::error::Error;
use shared::sql::{SessionSettings, SqlAction, SqlAnswer, SqlProbe, SqlTarget};

use crate::autopilot::names::{HaNames, REPLICATION_USER, ordinal_of, slot};

/// Probe: whether the role `streaming_replica` can log in to replicate.
pub const ROLE_PROBE: &str = "autopilot/replication-role";
/// Probe: the physical slots on the serving primary.
pub const SLOTS_PROBE: &str = "autopilot/slots";
/// Event reason: the replication login was created or its password set.
pub const LOGIN_READY: &str = "ReplicationLoginReady";
/// Event reason: a slot was created.
pub const SLOT_CREATED: &str = "ReplicationSlotCreated";
/// Event reason: a slot was dropped.
pub const SLOT_DROPPED: &str = "ReplicationSlotDropped";
/// Event reason: synchronous replication settings were reloaded.
pub const SYNCHRONOUS_RELOADED: &str = "SynchronousReplicationReloaded";

const ROLE_STATEMENT: &str = "SELECT (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'streaming_replica' \
     AND rolreplication AND rolcanlogin))::text";
const SLOTS_STATEMENT: &str = "SELECT slot_name::text FROM pg_replication_slots WHERE slot_type = 'physical' \
     ORDER BY slot_name";
const SYNCHRONOUS_STATEMENT: &str = "SELECT current_setting('synchronous_standby_names'), \
     coalesce((SELECT setting FROM pg_file_settings WHERE name = 'synchronous_standby_names' \
     AND sourcefile = current_setting('config_file') AND error IS NULL \
     ORDER BY seqno DESC LIMIT 1), '')";
/// Creates the role, or sets its password and rights, from the session
/// setting `pgdb.replication_password`.
const LOGIN_STATEMENT: &str = "DO $$ BEGIN \
     IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'streaming_replica') THEN \
       EXECUTE format('ALTER ROLE streaming_replica WITH REPLICATION LOGIN PASSWORD %L', \
                      current_setting('pgdb.replication_password')); \
     ELSE \
       EXECUTE format('CREATE ROLE streaming_replica WITH REPLICATION LOGIN PASSWORD %L', \
                      current_setting('pgdb.replication_password')); \
     END IF; END $$";
const CREATE_SLOT: &str =
    "SELECT pg_create_physical_replication_slot(current_setting('pgdb.slot'))::text";
const DROP_SLOT: &str = "SELECT pg_drop_replication_slot(current_setting('pgdb.slot'))::text";

/// The name of the probe of `pod`'s synchronous replication setting.
pub fn synchronous_probe(pod: &str) -> String {
    format!("autopilot/synchronous/{pod}")
}

/// The Secret of the replication login, its password kept once made.
pub fn replication_secret(
    db: &PostgresDB,
    existing: Option<&Secret>,
    new_password: impl FnOnce() -> String,
) -> Secret {
    let password = existing
        .and_then(|s| s.data.as_ref()?.get("password").cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(new_password);
    Secret {
        metadata: ObjectMeta {
            name: Some(HaNames::of(db).replication),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                "username".to_string(),
                ByteString(REPLICATION_USER.as_bytes().to_vec()),
            ),
            ("password".to_string(), ByteString(password.into_bytes())),
        ])),
        ..Default::default()
    }
}

fn password_of(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get("password")?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// `synchronous_standby_names` as the spec wants it ("" when off).
pub fn wanted_synchronous_names(db: &PostgresDB) -> String {
    match &db.spec.replication {
        Some(r) if r.synchronous => format!("ANY {} (*)", r.synchronous_replicas.max(1)),
        _ => String::new(),
    }
}

/// The lines instance mode adds to pg_hba.conf.
pub const HBA_LINES: &str = "host    replication  streaming_replica  0.0.0.0/0  scram-sha-256\n\
     host    replication  streaming_replica  ::/0       scram-sha-256\n";

/// Adds instance mode's lines to Level 1's configuration files:
/// replication connections in pg_hba.conf, and synchronous replication
/// in postgresql.conf when asked for.
pub fn configure(db: &PostgresDB, desired: &mut Desired) -> Result<(), Error> {
    let names = wanted_synchronous_names(db);
    desired.modify::<ConfigMap>(&Names::of(db).config, |cm| {
        let data = cm.data.get_or_insert_with(Default::default);
        if let Some(hba) = data.get_mut("pg_hba.conf")
            && !hba.contains(HBA_LINES)
        {
            hba.push_str(HBA_LINES);
        }
        if let Some(conf) = data.get_mut("postgresql.conf")
            && !names.is_empty()
        {
            conf.push_str(&format!("synchronous_standby_names = '{names}'\n"));
        }
    })?;
    Ok(())
}

/// The probes: the login and slots on the serving primary, the
/// synchronous setting on every reachable instance.
pub fn probes(db: &PostgresDB, observed: &Observed, serving: Option<&SqlTarget>) -> Vec<SqlProbe> {
    let mut probes = Vec::new();
    if let Some(target) = serving {
        probes.push(SqlProbe {
            name: ROLE_PROBE.into(),
            target: target.clone(),
            statement: ROLE_STATEMENT,
        });
        probes.push(SqlProbe {
            name: SLOTS_PROBE.into(),
            target: target.clone(),
            statement: SLOTS_STATEMENT,
        });
    }
    for (pod, target) in level2_upgrade::logins::reachable_pods(db, observed) {
        probes.push(SqlProbe {
            name: synchronous_probe(&pod.name_any()),
            target,
            statement: SYNCHRONOUS_STATEMENT,
        });
    }
    probes
}

fn rows(answer: Option<&SqlAnswer>) -> Option<&Vec<Vec<Option<String>>>> {
    answer?.as_ref().ok()
}

/// The slots the probe listed; `None` when it was not answered.
pub fn listed_slots(observed: &Observed) -> Option<BTreeSet<String>> {
    Some(
        rows(observed.sql(SLOTS_PROBE))?
            .iter()
            .filter_map(|row| row.first().cloned().flatten())
            .collect(),
    )
}

/// What the slots should be: created for every other instance below
/// `replicas`, dropped for `instance_<k>` with `k` at or above it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotChanges {
    /// Slots to create.
    pub create: Vec<String>,
    /// Slots to drop.
    pub drop: Vec<String>,
}

/// The slot changes from what exists on the serving primary.
pub fn slot_changes(existing: &BTreeSet<String>, replicas: i32, serving: u32) -> SlotChanges {
    let replicas = u32::try_from(replicas).unwrap_or(0);
    let wanted: BTreeSet<String> = (0..replicas).filter(|k| *k != serving).map(slot).collect();
    let create = wanted.difference(existing).cloned().collect();
    let drop = existing
        .iter()
        .filter(|name| {
            name.strip_prefix("instance_")
                .and_then(|k| k.parse::<u32>().ok())
                .is_some_and(|k| k >= replicas && k != serving)
        })
        .cloned()
        .collect();
    SlotChanges { create, drop }
}

/// Asks for the login, the slots and the reloads the probes show are
/// needed, on the serving primary (`serving`) and the reachable servers.
pub fn act(
    db: &PostgresDB,
    observed: &Observed,
    serving: Option<(&str, SqlTarget)>,
    secret: &Secret,
    replicas: i32,
    desired: &mut Desired,
) {
    if let Some((pod, target)) = serving {
        let secret_is_new = observed
            .get::<Secret>(&HaNames::of(db).replication)
            .is_none();
        let role_missing = shared::sql::scalar(observed.sql(ROLE_PROBE)) == Some("false");
        if (secret_is_new || role_missing)
            && let Some(password) = password_of(secret)
        {
            desired.run_sql(SqlAction {
                target: target.clone(),
                statement: LOGIN_STATEMENT,
                reason: LOGIN_READY.into(),
                message: format!("the replication login {REPLICATION_USER} is ready on {pod}"),
                settings: SessionSettings(vec![("pgdb.replication_password", password)]),
            });
        }
        if let (Some(existing), Some(ordinal)) = (listed_slots(observed), ordinal_of(db, pod)) {
            let changes = slot_changes(&existing, replicas, ordinal);
            for name in changes.create {
                desired.run_sql(SqlAction {
                    target: target.clone(),
                    statement: CREATE_SLOT,
                    reason: SLOT_CREATED.into(),
                    message: format!("created the replication slot {name} on {pod}"),
                    settings: SessionSettings(vec![("pgdb.slot", name)]),
                });
            }
            for name in changes.drop {
                desired.run_sql(SqlAction {
                    target: target.clone(),
                    statement: DROP_SLOT,
                    reason: SLOT_DROPPED.into(),
                    message: format!(
                        "dropped the replication slot {name} on {pod}: its instance was scaled away"
                    ),
                    settings: SessionSettings(vec![("pgdb.slot", name)]),
                });
            }
        }
    }
    let wanted = wanted_synchronous_names(db);
    for (pod, target) in level2_upgrade::logins::reachable_pods(db, observed) {
        let name = pod.name_any();
        if synchronous_reload_needed(observed.sql(&synchronous_probe(&name)), &wanted) {
            desired.run_sql(SqlAction {
                target,
                statement: "SELECT pg_reload_conf()::text",
                reason: SYNCHRONOUS_RELOADED.into(),
                message: format!(
                    "reloaded {name}'s configuration: synchronous_standby_names is now '{wanted}'"
                ),
                settings: SessionSettings::default(),
            });
        }
    }
}

/// Whether a server's answer to the synchronous probe says its file holds
/// `wanted` while it runs another value (a reload applies it).
pub fn synchronous_reload_needed(answer: Option<&SqlAnswer>, wanted: &str) -> bool {
    let Some(row) = rows(answer).and_then(|rows| rows.first()) else {
        return false;
    };
    let (Some(Some(running)), Some(Some(file))) = (row.first(), row.get(1)) else {
        return false;
    };
    running != wanted && file == wanted
}

/// Whether some server still runs another synchronous setting than the
/// spec's: the change is not applied yet, the reconcile should look again.
pub fn synchronous_pending(db: &PostgresDB, observed: &Observed) -> bool {
    let wanted = wanted_synchronous_names(db);
    level2_upgrade::logins::reachable_pods(db, observed)
        .iter()
        .any(|(pod, _)| {
            rows(observed.sql(&synchronous_probe(&pod.name_any())))
                .and_then(|rows| rows.first())
                .and_then(|row| row.first().cloned().flatten())
                .is_some_and(|running| running != wanted)
        })
}

/// The roles ConfigMap's `data`, from the decision.
pub fn roles_data(
    primary: &str,
    bootstrapped: bool,
    rebuild: &[String],
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (super::ROLE_PRIMARY_KEY.to_string(), primary.to_string()),
        (
            super::ROLE_BOOTSTRAPPED_KEY.to_string(),
            bootstrapped.to_string(),
        ),
        (super::ROLE_REBUILD_KEY.to_string(), rebuild.join(",")),
        (
            super::template::SCRIPT_KEY.to_string(),
            super::template::INSTANCE_SCRIPT.to_string(),
        ),
    ])
}
