//! The objects a database is made of, built from its spec.
//!
//! Pure functions from a `PostgresDB` (and, where history matters, what
//! already exists) to Kubernetes objects: two credential Secrets, a
//! ConfigMap with postgresql.conf, pg_hba.conf and the first-start script, a
//! headless Service for the StatefulSet, a read-write Service for clients,
//! and a StatefulSet of [`INSTANCES`] pod running the official `postgres`
//! image. Names that differ per pod take the pod's ordinal.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use shared::api::{ComputeResources, PostgresDB};
use shared::apply::content_hash;
use shared::ext::PvcExt;
use shared::keys::{CONFIG_HASH_ANNOTATION, MANAGED_BY_LABEL, VERSION_ANNOTATION};
use shared::names::common_labels;
use shared::volumes::{DATA_TEMPLATE, claim_spec, storage_request, template_claim};

use crate::version::PgVersion;

/// PostgreSQL's port, in the pod and on the Services.
pub const PORT: i32 = 5432;
/// The container's name.
pub const CONTAINER: &str = "postgres";
/// How many instances (pods) Level 1 runs per database: one server.
pub const INSTANCES: i32 = 1;
/// The ordinal of the pod running the primary: the StatefulSet's first.
pub const PRIMARY_ORDINAL: u32 = 0;
/// Where the volume is mounted; the data directory is a subdirectory, as the
/// image recommends, so a filesystem's lost+found does not upset initdb.
pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
/// The data directory.
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// Where postgresql.conf and pg_hba.conf are mounted.
pub const CONFIG_DIR: &str = "/etc/postgresql";
/// The user id of the `postgres` user in the official (Debian) image.
pub const POSTGRES_UID: i64 = 999;
/// Parameters the operator sets itself and refuses from `spec.parameters`.
pub const RESERVED_PARAMETERS: [&str; 8] = [
    "listen_addresses",
    "port",
    "hba_file",
    "ident_file",
    "config_file",
    "data_directory",
    "external_pid_file",
    "password_encryption",
];

/// Names of a database's children.
pub struct Names {
    /// The StatefulSet and the read-write Service.
    pub primary: String,
    /// The headless Service the StatefulSet's pods are named under.
    pub headless: String,
    /// The owner's credentials.
    pub credentials: String,
    /// The superuser's credentials.
    pub superuser: String,
    /// postgresql.conf, pg_hba.conf and the first-start script.
    pub config: String,
}

impl Names {
    /// The children's names for `db`.
    pub fn of(db: &PostgresDB) -> Self {
        let name = db.name_any();
        Self {
            headless: format!("{name}-headless"),
            credentials: format!("{name}-credentials"),
            superuser: format!("{name}-superuser"),
            config: format!("{name}-config"),
            primary: name,
        }
    }

    /// The PVC of the pod with `ordinal` (from the StatefulSet's claim template).
    pub fn data_claim(&self, ordinal: u32) -> String {
        template_claim(&self.primary, ordinal)
    }

    /// The pod with `ordinal`.
    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.primary)
    }

    /// The DNS name of the pod with `ordinal` in `namespace`, through the
    /// headless Service (it resolves before the pod is ready).
    pub fn pod_host(&self, ordinal: u32, namespace: &str) -> String {
        format!("{}.{}.{namespace}.svc", self.pod(ordinal), self.headless)
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// The in-cluster DNS name of the read-write Service.
pub fn service_host(db: &PostgresDB) -> String {
    format!(
        "{}.{}.svc",
        db.name_any(),
        db.namespace().unwrap_or_else(|| "default".into())
    )
}

/// The owner's credentials. An existing Secret's password is kept: the
/// database was initialised with it, and a new one would lock clients out.
pub fn credentials_secret(
    db: &PostgresDB,
    existing: Option<&Secret>,
    new_password: impl FnOnce() -> String,
) -> Secret {
    let names = Names::of(db);
    let password = existing_password(existing).unwrap_or_else(new_password);
    let owner = &db.spec.database.owner;
    let dbname = &db.spec.database.name;
    let host = service_host(db);
    let data = BTreeMap::from([
        ("username".to_string(), owner.clone()),
        ("password".to_string(), password.clone()),
        ("dbname".to_string(), dbname.clone()),
        ("host".to_string(), host.clone()),
        ("port".to_string(), PORT.to_string()),
        (
            "uri".to_string(),
            format!("postgresql://{owner}:{password}@{host}:{PORT}/{dbname}"),
        ),
    ]);
    secret(&names.credentials, data)
}

/// The superuser's (`postgres`) credentials, kept once generated.
pub fn superuser_secret(
    db: &PostgresDB,
    existing: Option<&Secret>,
    new_password: impl FnOnce() -> String,
) -> Secret {
    let password = existing_password(existing).unwrap_or_else(new_password);
    let data = BTreeMap::from([
        ("username".to_string(), "postgres".to_string()),
        ("password".to_string(), password),
    ]);
    secret(&Names::of(db).superuser, data)
}

fn existing_password(existing: Option<&Secret>) -> Option<String> {
    let bytes = existing?.data.as_ref()?.get("password")?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|p| !p.is_empty())
}

fn secret(name: &str, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: meta(name),
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// postgresql.conf: what the operator needs, then the user's parameters.
pub fn postgresql_conf(db: &PostgresDB) -> String {
    let mut text = String::from(
        "# Managed by the PostgresDB operator: set spec.parameters instead of editing this file.\n\
         listen_addresses = '*'\n",
    );
    text.push_str(&format!("port = {PORT}\n"));
    text.push_str(&format!("hba_file = '{CONFIG_DIR}/pg_hba.conf'\n"));
    text.push_str("password_encryption = 'scram-sha-256'\n");
    for (name, value) in &db.spec.parameters {
        text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
    }
    text
}

/// pg_hba.conf: local socket connections inside the pod are trusted (the
/// image's entrypoint and probes use them); every network connection must
/// authenticate with SCRAM.
pub fn pg_hba_conf() -> String {
    "# Managed by the PostgresDB operator.\n\
     # TYPE  DATABASE  USER  ADDRESS    METHOD\n\
     local   all       all              trust\n\
     host    all       all   0.0.0.0/0  scram-sha-256\n\
     host    all       all   ::/0       scram-sha-256\n"
        .to_string()
}

/// The script the image's entrypoint runs once, after initdb: it creates the
/// owner role and the application database. The password comes from the
/// environment, never from the ConfigMap.
pub fn init_script() -> String {
    r#"#!/bin/sh
# Run once by the postgres image's entrypoint, when the data directory is new.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  --set=owner="$APP_OWNER" --set=password="$APP_PASSWORD" --set=dbname="$APP_DATABASE" <<'SQL'
CREATE ROLE :"owner" LOGIN PASSWORD :'password';
CREATE DATABASE :"dbname" OWNER :"owner";
SQL
"#
    .to_string()
}

/// The ConfigMap holding the configuration files and the first-start script.
pub fn config_map(db: &PostgresDB) -> ConfigMap {
    ConfigMap {
        metadata: meta(&Names::of(db).config),
        data: Some(BTreeMap::from([
            ("postgresql.conf".to_string(), postgresql_conf(db)),
            ("pg_hba.conf".to_string(), pg_hba_conf()),
            ("init-app.sh".to_string(), init_script()),
        ])),
        ..Default::default()
    }
}

/// The labels the Services, the StatefulSet and (Level 3) the
/// PodDisruptionBudget select the database's pods by.
pub fn selector_labels(db: &PostgresDB) -> BTreeMap<String, String> {
    let mut labels = common_labels(&db.name_any());
    labels.remove(MANAGED_BY_LABEL);
    labels
}

fn postgres_port() -> ServicePort {
    ServicePort {
        name: Some("postgres".into()),
        port: PORT,
        target_port: Some(IntOrString::String("postgres".into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The Service the StatefulSet's pods get their DNS names from. It lists
/// pods before they are ready, so they can find each other while starting.
pub fn headless_service(db: &PostgresDB) -> Service {
    Service {
        metadata: meta(&Names::of(db).headless),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(db)),
            ports: Some(vec![postgres_port()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service clients connect to.
pub fn primary_service(db: &PostgresDB) -> Service {
    Service {
        metadata: meta(&Names::of(db).primary),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(db)),
            ports: Some(vec![postgres_port()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quantities(resources: Option<&ComputeResources>) -> Option<BTreeMap<String, Quantity>> {
    let resources = resources?;
    let map: BTreeMap<String, Quantity> = [("cpu", &resources.cpu), ("memory", &resources.memory)]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_string(), Quantity(value.clone()?))))
        .collect();
    (!map.is_empty()).then_some(map)
}

/// The volume claim template for a new StatefulSet.
pub fn data_claim_template(db: &PostgresDB) -> PersistentVolumeClaim {
    data_claim_template_of(
        db,
        &db.spec.storage.size,
        db.spec.storage.storage_class_name.clone(),
    )
}

fn data_claim_template_of(
    db: &PostgresDB,
    size: &str,
    storage_class_name: Option<String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_TEMPLATE.into()),
            labels: Some(common_labels(&db.name_any())),
            ..Default::default()
        },
        spec: Some(claim_spec(size, storage_class_name)),
        ..Default::default()
    }
}

fn pg_isready() -> Option<ExecAction> {
    Some(ExecAction {
        command: Some(vec![
            "pg_isready".into(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            PORT.to_string(),
        ]),
    })
}

/// An environment variable read from a Secret's key.
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An environment variable with a value.
pub fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The database container: the official image's entrypoint initialises the
/// data directory on first start, then runs the server with our
/// configuration file.
pub fn postgres_container(db: &PostgresDB, version: PgVersion) -> Container {
    let names = Names::of(db);
    let image = db
        .spec
        .image
        .clone()
        .unwrap_or_else(|| version.official_image());
    Container {
        name: CONTAINER.into(),
        image: Some(image),
        args: Some(vec![
            "-c".into(),
            format!("config_file={CONFIG_DIR}/postgresql.conf"),
        ]),
        env: Some(vec![
            env("PGDATA", PGDATA),
            secret_env("POSTGRES_PASSWORD", &names.superuser, "password"),
            env("POSTGRES_INITDB_ARGS", "--data-checksums"),
            env("APP_OWNER", &db.spec.database.owner),
            env("APP_DATABASE", &db.spec.database.name),
            secret_env("APP_PASSWORD", &names.credentials, "password"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: quantities(db.spec.resources.requests.as_ref()),
            limits: quantities(db.spec.resources.limits.as_ref()),
            ..Default::default()
        }),
        // A server that will not start says why: its last log lines become
        // the container's termination message (see `install::failing_pod`).
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        // Initialising or recovering a large database can take minutes: the
        // startup probe gives it ten before liveness may restart it.
        startup_probe: Some(Probe {
            exec: pg_isready(),
            period_seconds: Some(5),
            failure_threshold: Some(120),
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            exec: pg_isready(),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            exec: pg_isready(),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_TEMPLATE.into(),
                mount_path: DATA_MOUNT.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "initdb".into(),
                mount_path: "/docker-entrypoint-initdb.d".into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        security_context: Some(container_security()),
        ..Default::default()
    }
}

fn config_volume(name: &str, config_map: &str, items: &[(&str, i32)]) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            items: Some(
                items
                    .iter()
                    .map(|(key, mode)| KeyToPath {
                        key: (*key).into(),
                        path: (*key).into(),
                        mode: Some(*mode),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The StatefulSet: [`INSTANCES`] pod, its volume, and a pod template whose
/// annotations change whenever the configuration or version does, so the
/// pod is restarted to pick them up.
///
/// Volume claim templates cannot change once a StatefulSet exists, so the
/// size and class of `existing`'s template are kept (a larger size is
/// applied to the PVCs directly). The template is rebuilt rather than copied
/// so fields the API server defaulted in it do not become part of what the
/// operator applies.
pub fn statefulset(
    db: &PostgresDB,
    version: PgVersion,
    existing: Option<&StatefulSet>,
) -> StatefulSet {
    let names = Names::of(db);
    let existing_template = existing
        .and_then(|sts| {
            sts.spec
                .as_ref()?
                .volume_claim_templates
                .as_ref()?
                .first()
                .cloned()
        })
        .filter(|template| template.spec.is_some());
    let claim_templates = match existing_template {
        Some(template) => {
            let size = template
                .storage_request()
                .unwrap_or_else(|| db.spec.storage.size.clone());
            vec![data_claim_template_of(db, &size, template.storage_class())]
        }
        None => vec![data_claim_template(db)],
    };
    let config_hash = config_hash(db);
    let mut pod_labels = common_labels(&db.name_any());
    pod_labels.extend(selector_labels(db));
    StatefulSet {
        metadata: meta(&names.primary),
        spec: Some(StatefulSetSpec {
            replicas: Some(INSTANCES),
            service_name: Some(names.headless.clone()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(db)),
                ..Default::default()
            },
            pod_management_policy: Some("OrderedReady".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        (CONFIG_HASH_ANNOTATION.to_string(), config_hash),
                        (VERSION_ANNOTATION.to_string(), version.to_string()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![postgres_container(db, version)],
                    security_context: Some(pod_security()),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(60),
                    volumes: Some(vec![
                        config_volume(
                            "config",
                            &names.config,
                            &[("postgresql.conf", 0o444), ("pg_hba.conf", 0o444)],
                        ),
                        config_volume("initdb", &names.config, &[("init-app.sh", 0o555)]),
                    ]),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(claim_templates),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What every PostgreSQL container runs with: no privilege escalation, no
/// capabilities, never root (the image's postgres user, see [`pod_security`]).
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        run_as_non_root: Some(true),
        ..Default::default()
    }
}

/// What every pod touching the data runs as: the image's postgres user
/// (uid 999), which owns the volumes, under the runtime's seccomp profile.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(POSTGRES_UID),
        run_as_group: Some(POSTGRES_UID),
        fs_group: Some(POSTGRES_UID),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The hash of everything the server reads from the ConfigMap: it is in the
/// pod template, so a change of configuration restarts the pod.
pub fn config_hash(db: &PostgresDB) -> String {
    content_hash(&serde_json::json!([
        postgresql_conf(db),
        pg_hba_conf(),
        init_script()
    ]))
}

/// A patch growing an existing PVC to the spec's size.
pub fn grown_claim(claim_name: &str, size: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(claim_name),
        spec: Some(PersistentVolumeClaimSpec {
            resources: Some(storage_request(size)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
