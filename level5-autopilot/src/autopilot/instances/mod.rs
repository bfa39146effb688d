//! The objects that run a database as instances and carry out a
//! [`Decision`]: the StatefulSet's replicas and the instance script each
//! pod starts with (`instance.sh`), the Services by role (`<name>` the
//! primary, `<name>-ro` the replicas, `<name>-r` any), the pods' role
//! labels, the roles ConfigMap, the replication login and its slots, and
//! synchronous replication in postgresql.conf.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use shared::api::PostgresDB;
use shared::capability::{Desired, Observed, Query, SpecProblem};
use shared::error::Error;

use super::failover::Decision;
use super::names::HaNames;
use super::topology::Topology;

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

/// Problems with the spec's high-availability sections.
pub fn validate(_db: &PostgresDB, _observed: &Observed) -> Vec<SpecProblem> {
    Vec::new()
}

/// The objects and statements that carry `decision` out.
pub fn desire(
    _db: &PostgresDB,
    _observed: &Observed,
    _topology: &Topology,
    _decision: &Decision,
    _desired: &mut Desired,
) -> Result<(), Error> {
    Ok(())
}
