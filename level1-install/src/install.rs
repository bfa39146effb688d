//! The Install capability: everything Level 1 knows.
//!
//! It reads the database's children, refuses specs it cannot serve, builds
//! the desired children (see [`crate::objects`]) and reports readiness from
//! the StatefulSet and its pods. It knows nothing about upgrading data,
//! backups or failover: a version change simply swaps the image.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::ApiResource;
use rand::RngExt;
use shared::api::{Endpoint, PostgresDB};
use shared::apply::resource_of;
use shared::capability::{
    ApplyReport, Capability, Desired, EventType, Observed, Query, SpecProblem, StatusDraft,
};
use shared::conditions::{Assessment, ConditionStatus, DEGRADED, PROGRESSING, READY};
use shared::error::Error;
use shared::ext::{PvcExt, Rollout, StatefulSetExt};
use shared::keys::VERSION_ANNOTATION;
use shared::parameters;
use shared::quantity::{self, Quantity};
use shared::volumes::{DATA_TEMPLATE, template_claim_ordinal};

use crate::objects::{self, Names, PORT, RESERVED_PARAMETERS};
use crate::version::{PgVersion, SUPPORTED_MAJORS};

/// Container waiting reasons that mean the pod will not come up by itself.
const FAILING_REASONS: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Level 1's capability.
pub struct Install;

/// A new random password: 32 letters and digits (about 190 bits).
pub fn generate_password() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
        .collect()
}

/// The parsed, supported version of the spec, if it is one.
pub fn spec_version(db: &PostgresDB) -> Option<PgVersion> {
    PgVersion::parse(&db.spec.version).filter(|v| v.is_supported())
}

/// The data volumes of the database's pods: the PVCs the StatefulSet's
/// claim template made, one per ordinal.
pub fn data_claims(db: &PostgresDB, observed: &Observed) -> Vec<PersistentVolumeClaim> {
    let names = Names::of(db);
    observed
        .all::<PersistentVolumeClaim>()
        .into_iter()
        .filter(|c| template_claim_ordinal(&names.primary, &c.name_any()).is_some())
        .collect()
}

/// The size the data volumes have now: the largest PVC request, or the
/// StatefulSet's claim template when no PVC exists yet.
pub fn current_storage_size(db: &PostgresDB, observed: &Observed) -> Option<String> {
    let names = Names::of(db);
    let from_claims = data_claims(db, observed)
        .iter()
        .filter_map(PvcExt::storage_request)
        .max_by(|a, b| quantity::compare(a, b).unwrap_or(std::cmp::Ordering::Equal));
    from_claims.or_else(|| {
        observed
            .get::<StatefulSet>(&names.primary)?
            .claim_template_request(DATA_TEMPLATE)
    })
}

/// Each parameter against the core's policy and PostgreSQL's own table of
/// the target major (`spec.version`'s: a version change is re-checked
/// before anything moves), see [`shared::parameters`].
fn validate_parameters(db: &PostgresDB, problems: &mut Vec<SpecProblem>) {
    let major = PgVersion::parse(&db.spec.version).map(|v| v.major);
    for (name, value) in &db.spec.parameters {
        let field = format!("spec.parameters.{name}");
        let well_formed = !name.is_empty()
            && name.split('.').count() <= 2
            && name.split('.').all(|part| {
                part.starts_with(|c: char| c.is_ascii_lowercase())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        let why = if !well_formed {
            Err("not a PostgreSQL parameter name (lowercase letters, digits and '_', optionally prefixed by an extension name and '.')".to_string())
        } else if value.contains(['\n', '\r', '\0']) {
            Err("a value cannot contain line breaks".to_string())
        } else {
            // An unsupported version is refused on its own; the policy
            // still applies.
            parameters::check(major.unwrap_or(0), &RESERVED_PARAMETERS, name, value)
        };
        if let Err(why) = why {
            problems.push(SpecProblem::new(field, "InvalidParameter", why));
        }
    }
}

fn validate_resources(db: &PostgresDB, problems: &mut Vec<SpecProblem>) {
    let resources = &db.spec.resources;
    let pairs = [
        (
            "cpu",
            resources.requests.as_ref().and_then(|r| r.cpu.as_deref()),
            resources.limits.as_ref().and_then(|r| r.cpu.as_deref()),
        ),
        (
            "memory",
            resources
                .requests
                .as_ref()
                .and_then(|r| r.memory.as_deref()),
            resources.limits.as_ref().and_then(|r| r.memory.as_deref()),
        ),
    ];
    for (name, request, limit) in pairs {
        if let (Some(request), Some(limit)) = (request, limit)
            && quantity::compare(request, limit) == Some(std::cmp::Ordering::Greater)
        {
            problems.push(SpecProblem::new(
                format!("spec.resources.requests.{name}"),
                "InvalidResources",
                format!("request {request} is larger than the limit {limit}"),
            ));
        }
    }
}

fn validate_storage(db: &PostgresDB, observed: &Observed, problems: &mut Vec<SpecProblem>) {
    let wanted = &db.spec.storage.size;
    if Quantity::parse(wanted).is_none_or(Quantity::is_zero) {
        problems.push(SpecProblem::new(
            "spec.storage.size",
            "InvalidStorageSize",
            format!("{wanted:?} is not a positive quantity"),
        ));
        return;
    }
    if let Some(current) = current_storage_size(db, observed)
        && quantity::compare(wanted, &current) == Some(std::cmp::Ordering::Less)
    {
        problems.push(SpecProblem::new(
            "spec.storage.size",
            "RefusedStorageShrink",
            format!("{wanted} is smaller than the current volume size {current}; volumes cannot shrink without losing data"),
        ));
    }
    if let Some(wanted_class) = &db.spec.storage.storage_class_name {
        let existing_class = data_claims(db, observed)
            .iter()
            .find_map(PvcExt::storage_class);
        if let Some(existing_class) = existing_class.filter(|c| c != wanted_class) {
            problems.push(SpecProblem::new(
                "spec.storage.storageClassName",
                "RefusedStorageClassChange",
                format!("the data volume exists with class {existing_class:?}; a volume cannot change class"),
            ));
        }
    }
}

impl Capability for Install {
    fn name(&self) -> &'static str {
        "install"
    }

    fn owned_kinds(&self) -> Vec<ApiResource> {
        vec![
            resource_of::<StatefulSet>(),
            resource_of::<Service>(),
            resource_of::<Secret>(),
            resource_of::<ConfigMap>(),
        ]
    }

    fn observe(&self, db: &PostgresDB) -> Vec<Query> {
        let names = Names::of(db);
        vec![
            Query::named::<Secret>(&names.credentials),
            Query::named::<Secret>(&names.superuser),
            Query::named::<ConfigMap>(&names.config),
            Query::named::<Service>(&names.headless),
            Query::named::<Service>(&names.primary),
            Query::named::<StatefulSet>(&names.primary),
            Query::labelled::<PersistentVolumeClaim>(),
            Query::labelled::<Pod>(),
        ]
    }

    fn validate(&self, db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
        let mut problems = Vec::new();
        match PgVersion::parse(&db.spec.version) {
            None => problems.push(SpecProblem::new(
                "spec.version",
                "InvalidVersion",
                format!(
                    "{:?} is not a version like \"16\" or \"16.4\"",
                    db.spec.version
                ),
            )),
            Some(version) if !version.is_supported() => problems.push(SpecProblem::new(
                "spec.version",
                "InvalidVersion",
                format!(
                    "major version {} is not supported (supported: {})",
                    version.major,
                    SUPPORTED_MAJORS.map(|m| m.to_string()).join(", ")
                ),
            )),
            Some(_) => {}
        }
        let database = &db.spec.database;
        if database.owner == "postgres" {
            problems.push(SpecProblem::new(
                "spec.database.owner",
                "InvalidDatabase",
                "\"postgres\" is the superuser; choose another role name",
            ));
        }
        if ["postgres", "template0", "template1"].contains(&database.name.as_str()) {
            problems.push(SpecProblem::new(
                "spec.database.name",
                "InvalidDatabase",
                format!(
                    "{:?} is a system database; choose another name",
                    database.name
                ),
            ));
        }
        if let Some(image) = &db.spec.image
            && !shared::api::is_image_reference(image)
        {
            problems.push(SpecProblem::new(
                "spec.image",
                "InvalidImage",
                format!("{image:?} is not an image reference like \"postgres:16\" or \"registry.example.com/team/postgres:16.4\" (lowercase repository, optional tag and digest)"),
            ));
        }
        validate_storage(db, observed, &mut problems);
        validate_resources(db, &mut problems);
        validate_parameters(db, &mut problems);
        problems
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        let names = Names::of(db);
        let version = spec_version(db).ok_or_else(|| Error::Desired {
            what: format!("unsupported version {}", db.spec.version),
        })?;
        let existing_credentials = observed.get::<Secret>(&names.credentials);
        let has_data = !data_claims(db, observed).is_empty();
        if existing_credentials.is_none() && has_data {
            desired.note(
                EventType::Warning,
                "CredentialsRecreated",
                format!(
                    "Secret {} was missing and is recreated with a new password, but the existing data volume keeps the password it was initialised with; restore the old Secret or set the new password with ALTER ROLE",
                    names.credentials
                ),
            );
        }
        desired.add(&objects::credentials_secret(
            db,
            existing_credentials.as_ref(),
            generate_password,
        ))?;
        desired.add(&objects::superuser_secret(
            db,
            observed.get::<Secret>(&names.superuser).as_ref(),
            generate_password,
        ))?;
        desired.add(&objects::config_map(db))?;
        desired.add(&objects::headless_service(db))?;
        desired.add(&objects::primary_service(db))?;
        desired.add(&objects::statefulset(
            db,
            version,
            observed.get::<StatefulSet>(&names.primary).as_ref(),
        ))?;
        for claim in data_claims(db, observed) {
            let smaller = claim.storage_request().is_some_and(|size| {
                quantity::compare(&size, &db.spec.storage.size) == Some(std::cmp::Ordering::Less)
            });
            if smaller {
                desired.add_unowned(&objects::grown_claim(
                    &claim.name_any(),
                    &db.spec.storage.size,
                ))?;
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
        let names = Names::of(db);
        status.fields.credentials_secret = Some(names.credentials.clone());
        status.fields.endpoint = Some(Endpoint {
            host: objects::service_host(db),
            port: PORT,
        });
        status.fields.current_version = db.status.as_ref().and_then(|s| s.current_version.clone());
        let conditions = &mut status.conditions;

        if let Some(failure) = failing_pod(observed) {
            conditions.set(DEGRADED, Assessment::yes("PodFailing", failure).warn());
        }
        let Some(sts) = observed.get::<StatefulSet>(&names.primary) else {
            conditions.set(
                READY,
                Assessment::no(
                    "Creating",
                    format!("StatefulSet {} does not exist yet", names.primary),
                ),
            );
            return;
        };
        let desired_replicas = sts.replicas();
        let ready = sts.ready_replicas();
        status.fields.ready_replicas = ready;
        let rollout = sts.rollout();
        if let Rollout::Pending(why) = &rollout {
            conditions.set(PROGRESSING, Assessment::yes("RollingOut", why.clone()));
        }
        if ready >= desired_replicas {
            conditions.set(
                READY,
                Assessment::yes(
                    "DatabaseReady",
                    format!(
                        "{ready}/{desired_replicas} pods ready; clients connect to {}:{PORT}",
                        objects::service_host(db)
                    ),
                ),
            );
            if rollout.is_done()
                && let Some(running) = sts.template_annotation(VERSION_ANNOTATION)
            {
                status.fields.current_version = Some(running.to_string());
            }
        } else {
            conditions.set(
                READY,
                Assessment::no(
                    "PodsNotReady",
                    format!("{ready}/{desired_replicas} pods ready"),
                ),
            );
        }
    }
}

/// The first pod failing in a way that will not fix itself, described.
fn failing_pod(observed: &Observed) -> Option<String> {
    observed.all::<Pod>().into_iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let waiting = status.container_statuses.iter().flatten().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.clone()?;
            FAILING_REASONS.contains(&reason.as_str()).then(|| {
                let said = c
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.message.as_deref())
                    .and_then(server_reason)
                    .map(|line| format!("; the server said: {line}"))
                    .unwrap_or_default();
                format!(
                    "pod {} container {}: {reason}: {}{said}",
                    pod.name_any(),
                    c.name,
                    waiting.message.clone().unwrap_or_default()
                )
            })
        });
        let unschedulable = status.conditions.iter().flatten().find_map(|c| {
            (c.type_ == "PodScheduled"
                && ConditionStatus::parse(&c.status) == ConditionStatus::False
                && c.reason.as_deref() == Some("Unschedulable"))
            .then(|| {
                format!(
                    "pod {} cannot be scheduled: {}",
                    pod.name_any(),
                    c.message.clone().unwrap_or_default()
                )
            })
        });
        waiting.or(unschedulable)
    })
}

/// The server's own reason for stopping, from a termination message (under
/// `FallbackToLogsOnError`, the end of its log): the last line with a
/// PANIC, FATAL or ERROR, from its severity on (log line prefixes dropped).
pub fn server_reason(message: &str) -> Option<String> {
    message.lines().rev().find_map(|line| {
        ["PANIC:", "FATAL:", "ERROR:"]
            .iter()
            .filter_map(|severity| line.find(severity))
            .min()
            .map(|at| line[at..].split_whitespace().collect::<Vec<_>>().join(" "))
    })
}
