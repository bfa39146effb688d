//! The StatefulSet in instance mode: how many pods run, and the instance
//! script each pod starts with instead of the image's entrypoint.
//!
//! A database run as one instance keeps Level 1's StatefulSet exactly
//! ([`is_instance_mode`] is false): replacing the Level 4 operator by Level
//! 5 restarts nothing. Instance mode starts when `spec.instances` first
//! exceeds 1 and is sticky: the template then runs `instance.sh` (marked by
//! [`INSTANCE_SCRIPT_ANNOTATION`]) for good, even at one instance again,
//! because a pod that may have been a replica, or whose primary moved, must
//! always start through the script that reads the roles. Entering it rolls
//! pod 0 once (the first replica restarts the primary once).
//!
//! The roles reach a starting pod through its environment (resolved by the
//! kubelet from the roles ConfigMap at every container start), not through
//! a mounted file, which the kubelet refreshes late and a restarting pod
//! could read stale.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, KeyToPath,
    ObjectFieldSelector, Pod, Volume, VolumeMount,
};
use kube::ResourceExt;
use level1_install::api::{CONTAINER, Names, env, secret_env};
use shared::api::PostgresDB;
use shared::apply::content_hash;
use shared::capability::Observed;
use shared::ext::StatefulSetExt;

use crate::autopilot::names::HaNames;

/// Pod template annotation marking instance mode: the hash of the
/// instance script the pods run (a new script rolls the pods).
pub const INSTANCE_SCRIPT_ANNOTATION: &str = "pgdb.example.com/instance-script";
/// The instance script (key `instance.sh` of the roles ConfigMap).
pub const INSTANCE_SCRIPT: &str = include_str!("../instance.sh");
/// The roles ConfigMap's key holding the script.
pub const SCRIPT_KEY: &str = "instance.sh";
/// Where the script is mounted in the database container.
pub const SCRIPT_DIR: &str = "/etc/pgdb/instance";
/// The name of the script's volume in the pod template.
pub const SCRIPT_VOLUME: &str = "instance";

/// The hash of [`INSTANCE_SCRIPT`], the annotation's value.
pub fn script_hash() -> String {
    content_hash(&serde_json::Value::String(INSTANCE_SCRIPT.to_string()))
}

/// `spec.instances`, 1 when unset.
pub fn spec_instances(db: &PostgresDB) -> i32 {
    db.spec.instances.unwrap_or(1)
}

/// Whether the database runs in instance mode: more than one instance is
/// asked for, or the live StatefulSet already runs the instance script
/// (instance mode is sticky).
pub fn is_instance_mode(db: &PostgresDB, observed: &Observed) -> bool {
    spec_instances(db) > 1
        || observed
            .get::<StatefulSet>(&Names::of(db).primary)
            .is_some_and(|sts| {
                sts.template_annotation(INSTANCE_SCRIPT_ANNOTATION)
                    .is_some()
            })
}

/// Whether `pod` was started from a template running the instance script.
pub fn runs_instance_script(pod: &Pod) -> bool {
    pod.annotations().contains_key(INSTANCE_SCRIPT_ANNOTATION)
}

/// How many pods the StatefulSet runs: the decision's count, except that
/// no replica is added before the primary's pod runs the instance script
/// (its server then allows replication connections, has the replication
/// login and serves the clone). Replicas started earlier would fail their
/// clone and, crash-looping, hold back the StatefulSet's rollout of the
/// primary's pod.
pub fn replicas(
    db: &PostgresDB,
    observed: &Observed,
    decided: i32,
    serving_primary: Option<&str>,
) -> i32 {
    let live = observed
        .get::<StatefulSet>(&Names::of(db).primary)
        .map(|sts| sts.replicas())
        .unwrap_or(1);
    let primary_ready = serving_primary
        .and_then(|name| observed.get::<Pod>(name))
        .is_some_and(|pod| runs_instance_script(&pod));
    if primary_ready || decided <= live {
        decided
    } else {
        live.max(1)
    }
}

fn config_map_env(name: &str, config_map: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: config_map.into(),
                key: key.into(),
                optional: Some(optional),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The environment the instance script reads, added to Level 1's.
pub fn instance_env(db: &PostgresDB) -> Vec<EnvVar> {
    let names = HaNames::of(db);
    vec![
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        // The read-write Service's short name: the pod's DNS search path
        // resolves it in the namespace.
        env("PRIMARY_HOST", &db.name_any()),
        // The server in this pod, for the script's own checks.
        env("LOCAL_HOST", "localhost"),
        config_map_env("PGDB_PRIMARY", &names.roles, super::ROLE_PRIMARY_KEY, false),
        config_map_env(
            "PGDB_BOOTSTRAPPED",
            &names.roles,
            super::ROLE_BOOTSTRAPPED_KEY,
            false,
        ),
        config_map_env("PGDB_REBUILD", &names.roles, super::ROLE_REBUILD_KEY, true),
        secret_env("REPLICATION_PASSWORD", &names.replication, "password"),
    ]
}

fn adjust_container(container: &mut Container, db: &PostgresDB) {
    container.command = Some(vec!["sh".into(), format!("{SCRIPT_DIR}/{SCRIPT_KEY}")]);
    let env = container.env.get_or_insert_with(Vec::new);
    for var in instance_env(db) {
        env.retain(|e| e.name != var.name);
        env.push(var);
    }
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    mounts.retain(|m| m.name != SCRIPT_VOLUME);
    mounts.push(VolumeMount {
        name: SCRIPT_VOLUME.into(),
        mount_path: SCRIPT_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
}

/// Turns Level 1's StatefulSet into instance mode's: `replicas` pods, the
/// database container started through the instance script (Level 1's
/// arguments kept), the script mounted from the roles ConfigMap, the
/// environment it reads, and the annotation marking instance mode.
pub fn into_instance_mode(sts: &mut StatefulSet, db: &PostgresDB, replicas: i32) {
    let roles = HaNames::of(db).roles;
    let Some(spec) = sts.spec.as_mut() else {
        return;
    };
    spec.replicas = Some(replicas);
    if let Some(pod) = spec.template.spec.as_mut() {
        for container in pod.containers.iter_mut().filter(|c| c.name == CONTAINER) {
            adjust_container(container, db);
        }
        let volumes = pod.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != SCRIPT_VOLUME);
        volumes.push(Volume {
            name: SCRIPT_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: roles,
                items: Some(vec![KeyToPath {
                    key: SCRIPT_KEY.into(),
                    path: SCRIPT_KEY.into(),
                    mode: Some(0o555),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    sts.set_template_annotation(INSTANCE_SCRIPT_ANNOTATION, &script_hash());
}
