//! The objects that run a database as instances and carry out a
//! [`Decision`]: the StatefulSet's replicas and the instance script each
//! pod starts with ([`template`]), the Services by role and the pods' role
//! labels ([`services`]), the roles ConfigMap, the replication login and
//! its slots, and synchronous replication ([`replication`]).
//!
//! A database asked for one instance, whose StatefulSet never ran the
//! instance script, is left exactly as Level 4 runs it: nothing here is
//! added or changed, so a Level 4 → Level 5 swap restarts nothing. From
//! the first `spec.instances > 1` on, the database is in instance mode for
//! good (see [`template`]).
//!
//! It carries decisions out; it does not make them: who is primary, who
//! serves, which pods to delete or rebuild is `failover`'s, and deleting
//! pods and promoting a replica (`Decision::delete_pods`,
//! `Decision::promote`) are carried out there too.

pub mod replication;
pub mod services;
pub mod template;

#[cfg(test)]
mod tests;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use level1_install::api::{Names, PgVersion};
use shared::api::PostgresDB;
use shared::capability::{Desired, Observed, Query, SpecProblem};
use shared::conditions::Assessment;
use shared::error::Error;
use shared::ext::{PodExt, StatefulSetExt};
use shared::ha::MAX_INSTANCES;
use shared::keys::VERSION_ANNOTATION;
use shared::sql::{SqlProbe, SqlTarget};

use super::failover::Decision;
use super::names::{HaNames, ordinal_of};
use super::topology::Topology;

pub use template::{is_instance_mode, spec_instances};

/// Roles ConfigMap key: the pod that is to be the primary.
pub const ROLE_PRIMARY_KEY: &str = "primary";
/// Roles ConfigMap key: "true" once the database was initialised.
pub const ROLE_BOOTSTRAPPED_KEY: &str = "bootstrapped";
/// Roles ConfigMap key: pods to clone anew at their next start.
pub const ROLE_REBUILD_KEY: &str = "rebuild";

/// What to read besides what lower levels read.
pub fn queries(db: &PostgresDB) -> Vec<Query> {
    let names = HaNames::of(db);
    vec![
        Query::named::<Service>(names.read_only),
        Query::named::<Service>(names.any),
        Query::named::<ConfigMap>(names.roles),
        Query::named::<Secret>(names.replication),
        Query::labelled::<Pod>(),
    ]
}

/// The reason of a refused major upgrade while replicas run.
pub const REFUSED_MAJOR_WITH_REPLICAS: &str = "RefusedMajorUpgradeWithReplicas";

/// Problems with the spec's high-availability sections.
pub fn validate(db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    let instances = spec_instances(db);
    if !(1..=MAX_INSTANCES).contains(&instances) {
        problems.push(SpecProblem::new(
            "spec.instances",
            "InvalidInstances",
            format!(
                "spec.instances is {instances}: a database runs 1 to {MAX_INSTANCES} instances"
            ),
        ));
    }
    if let Some(replication) = db.spec.replication.as_ref().filter(|r| r.synchronous) {
        let replicas = instances.max(1) - 1;
        if i64::from(replication.synchronous_replicas) > i64::from(replicas) {
            problems.push(SpecProblem::new(
                "spec.replication.synchronousReplicas",
                "InvalidSynchronousReplicas",
                format!(
                    "synchronous replication waits for {} replica(s), but spec.instances {instances} runs {replicas}: \
                     commits would wait for ever; set spec.instances to at least {} or turn spec.replication.synchronous off",
                    replication.synchronous_replicas,
                    replication.synchronous_replicas + 1
                ),
            ));
        }
    }
    if db.spec.parameters.contains_key("synchronous_standby_names") {
        problems.push(SpecProblem::new(
            "spec.parameters.synchronous_standby_names",
            "RefusedParameter",
            "synchronous_standby_names is set by the operator from spec.replication: remove it from spec.parameters",
        ));
    }
    if let Some(primary) = db.spec.primary.as_deref() {
        let ordinal = ordinal_of(db, primary);
        if ordinal.is_none_or(|k| i64::from(k) >= i64::from(instances)) {
            problems.push(SpecProblem::new(
                "spec.primary",
                "InvalidPrimary",
                format!(
                    "spec.primary {primary:?} is not an instance of this database: name one of {}-0 to {}-{}",
                    db.name_any(),
                    db.name_any(),
                    instances.max(1) - 1
                ),
            ));
        }
    }
    if let Some(problem) = major_change_with_replicas(db, observed) {
        problems.push(problem);
    }
    problems
}

/// A major version change while more than one instance runs or is asked
/// for: Level 2's migration moves one data directory, not replicas'.
fn major_change_with_replicas(db: &PostgresDB, observed: &Observed) -> Option<SpecProblem> {
    let sts = observed.get::<StatefulSet>(&Names::of(db).primary)?;
    let running = PgVersion::parse(sts.template_annotation(VERSION_ANNOTATION)?)?;
    let wanted = PgVersion::parse(&db.spec.version)?;
    let instances = spec_instances(db).max(sts.replicas());
    (running.major != wanted.major && instances > 1).then(|| {
        SpecProblem::new(
            "spec.version",
            REFUSED_MAJOR_WITH_REPLICAS,
            format!(
                "a major upgrade from {running} to {wanted} moves one data directory, and {instances} instances run: \
                 scale to spec.instances 1 first, upgrade, then scale up again"
            ),
        )
    })
}

/// The login to `pod` when it can be reached.
fn target_of(db: &PostgresDB, observed: &Observed, pod: &str) -> Option<SqlTarget> {
    level2_upgrade::logins::pod_target(db, observed, ordinal_of(db, pod)?)
}

/// The probes of the servers' replication settings, in instance mode:
/// the login and slots asked of the primary status names (probes are
/// asked before the decision is made), the synchronous setting of every
/// reachable server.
pub fn probes(db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
    if !is_instance_mode(db, observed) {
        return Vec::new();
    }
    let primary = Names::of(db).pod(shared::ha::primary_ordinal(db));
    let target = target_of(db, observed, &primary);
    replication::probes(db, observed, target.as_ref())
}

/// Progressing while a server runs another synchronous replication
/// setting than the spec's (the new file has not reached it, or its
/// reload failed), so the reconcile looks again soon.
pub fn progressing(db: &PostgresDB, observed: &Observed) -> Option<Assessment> {
    (is_instance_mode(db, observed) && replication::synchronous_pending(db, observed)).then(|| {
        Assessment::yes(
            "ReloadingReplicationSettings",
            "waiting for the servers to run the new synchronous replication setting",
        )
    })
}

/// Whether the database was initialised: the decision says so, the roles
/// ConfigMap said so, or a server pod passed readiness (its data directory
/// holds a database). Never goes back to false.
fn bootstrapped(db: &PostgresDB, observed: &Observed, decision: &Decision) -> bool {
    let recorded = observed
        .get::<ConfigMap>(&HaNames::of(db).roles)
        .and_then(|cm| cm.data?.get(ROLE_BOOTSTRAPPED_KEY).cloned())
        .is_some_and(|v| v == "true");
    decision.bootstrapped
        || recorded
        || services::server_pods(db, observed)
            .iter()
            .any(|pod| pod.is_ready())
}

/// The roles ConfigMap for `decision`.
pub fn roles_config_map(db: &PostgresDB, decision: &Decision, bootstrapped: bool) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(HaNames::of(db).roles),
            ..Default::default()
        },
        data: Some(replication::roles_data(
            &decision.recorded_primary,
            bootstrapped,
            &decision.rebuild,
        )),
        ..Default::default()
    }
}

/// The objects and statements that carry `decision` out.
pub fn desire(
    db: &PostgresDB,
    observed: &Observed,
    _topology: &Topology,
    decision: &Decision,
    desired: &mut Desired,
) -> Result<(), Error> {
    if !is_instance_mode(db, observed) {
        return Ok(());
    }
    let names = Names::of(db);
    let serving = decision.serving_primary.as_deref();
    let replicas = template::replicas(db, observed, decision.replicas, serving);
    let secret = replication::replication_secret(
        db,
        observed
            .get::<Secret>(&HaNames::of(db).replication)
            .as_ref(),
        level1_install::api::generate_password,
    );
    desired.add(&secret)?;
    desired.add(&roles_config_map(
        db,
        decision,
        bootstrapped(db, observed, decision),
    ))?;
    replication::configure(db, desired)?;
    desired.modify::<StatefulSet>(&names.primary, |sts| {
        template::into_instance_mode(sts, db, replicas);
    })?;
    services::desire(db, observed, serving, desired)?;
    let serving_target = serving.and_then(|pod| Some((pod, target_of(db, observed, pod)?)));
    replication::act(db, observed, serving_target, &secret, replicas, desired);
    Ok(())
}
