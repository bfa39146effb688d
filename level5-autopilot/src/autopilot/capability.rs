//! Level 5's capability: read the instances ([`topology`]), decide the
//! roles ([`failover::progress`]), ask the core to act ([`instances`]).

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::ApiResource;
use shared::api::PostgresDB;
use shared::capability::{
    ApplyReport, Capability, Desired, Observed, Query, SpecProblem, StatusDraft,
};
use shared::error::Error;
use shared::sql::SqlProbe;

use super::{failover, instances, topology};

/// High availability: instances, failover, switchover, self-healing.
pub struct Autopilot;

impl Capability for Autopilot {
    fn name(&self) -> &'static str {
        "autopilot"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["instances", "primary", "failover", "replication"]
    }

    fn owned_kinds(&self) -> Vec<ApiResource> {
        vec![
            ApiResource::erase::<Service>(&()),
            ApiResource::erase::<ConfigMap>(&()),
            ApiResource::erase::<Secret>(&()),
        ]
    }

    fn observe(&self, db: &PostgresDB) -> Vec<Query> {
        instances::queries(db)
    }

    fn sql_probes(&self, db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
        let mut probes = topology::probes(db, observed);
        probes.extend(instances::probes(db, observed));
        probes
    }

    fn validate(&self, db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
        instances::validate(db, observed)
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        let topology = topology::observe(db, observed);
        let decision = failover::progress(db, &topology, now);
        for (type_, reason, message) in &decision.events {
            desired.note(*type_, reason, message.clone());
        }
        instances::desire(db, observed, &topology, &decision, desired)
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        let topology = topology::observe(db, observed);
        let decision = failover::progress(db, &topology, status.now);
        status.fields.current_primary = decision.current_primary.clone();
        status.fields.high_availability = Some(decision.status.clone());
        status
            .conditions
            .set(failover::PRIMARY_AVAILABLE, decision.available.clone());
        if let Some(progressing) = decision
            .progressing
            .clone()
            .or_else(|| instances::progressing(db, observed))
        {
            status
                .conditions
                .set(shared::conditions::PROGRESSING, progressing);
        }
        if let Some(at) = decision.wake_at {
            status.wake_at(at);
        }
    }
}
