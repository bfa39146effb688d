//! Replica autoscaling (`spec.autoscaling`): instances added under read
//! load and removed after it, decided from the operator's own SQL
//! measurements; no external autoscaler or metrics API is involved.
//!
//! - [`load`]: what is measured (client connections over the usable
//!   connections on the instances serving reads, every
//!   [`decision::PROBE_INTERVAL`]), whether the instances have settled,
//!   which replica lags;
//! - [`decision`]: the HorizontalPodAutoscaler's rule with its tolerance
//!   and stabilisation windows, held while a replica lags, as a pure
//!   function;
//! - [`validate`]: the spec's bounds, refused naming the field.
//!
//! The decision is recorded in `status.autopilot.autoscaling` (the count,
//! the last decision with the load measured, a pending recommendation,
//! a hold) and in an Event; it never edits the spec. [`effective_instances`]
//! reads it back into the effective `spec.instances`, and the instances
//! module carries it out in the next reconcile (adding replicas, or
//! removing the highest ordinals, switching the primary away first when it
//! is one of them).
//!
//! Where it stops: it scales on connections, not on queries per second or
//! CPU; it moves the count, never routes clients (a client keeps its
//! connection to the instance it reached; new connections through the
//! `-ro` and `-r` Services reach the new replicas).

pub mod decision;
pub mod load;
pub mod validate;

#[cfg(test)]
mod tests;

use shared::api::PostgresDB;
use shared::autopilot::autoscaling::AutoscalingSpec;
use shared::capability::{ApplyReport, Capability, Desired, Observed, SpecProblem, StatusDraft};
use shared::error::Error;
use shared::sql::SqlProbe;

use super::topology;
use decision::{Inputs, Outcome};

/// The instance count autoscaling starts from: `spec.instances` (1 when
/// unset) within the bounds.
pub fn initial_instances(spec: &AutoscalingSpec, instances: Option<i32>) -> i32 {
    decision::bounded(spec, instances.unwrap_or(1))
}

/// The instance count the autoscaler decided, the effective
/// `spec.instances`: the last decision recorded in status (or the initial
/// count before the first), within the bounds the spec has now; `None`
/// without `spec.autoscaling`.
pub fn effective_instances(db: &PostgresDB) -> Option<i32> {
    let spec = db.spec.autoscaling.as_ref()?;
    let recorded = db
        .status
        .as_ref()
        .and_then(|s| s.autopilot.as_ref())
        .and_then(|a| a.autoscaling.as_ref())
        .map(|a| a.instances);
    Some(match recorded {
        Some(instances) => decision::bounded(spec, instances),
        None => initial_instances(spec, db.spec.instances),
    })
}

/// The decision for this reconcile, `None` without `spec.autoscaling`, or
/// while the database is paused or the section is refused.
fn outcome(db: &PostgresDB, observed: &Observed, now: jiff::Timestamp) -> Option<Outcome> {
    let spec = db.spec.autoscaling.as_ref()?;
    if db.spec.paused || !validate::problems(db).is_empty() {
        return None;
    }
    let decided = effective_instances(db)?;
    let topology = topology::observe(db, observed);
    let measured = load::measure(observed, &topology, decided);
    let previous = db
        .status
        .as_ref()
        .and_then(|s| s.autopilot.as_ref())
        .and_then(|a| a.autoscaling.as_ref());
    Some(decision::decide(Inputs {
        spec,
        previous,
        decided,
        measured: &measured,
        lagging: load::lagging(&topology),
        now,
    }))
}

/// Replica autoscaling.
pub struct Autoscaler;

impl Capability for Autoscaler {
    fn name(&self) -> &'static str {
        "autoscaling"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["autoscaling"]
    }

    fn sql_probes(&self, db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
        if db.spec.autoscaling.is_none() {
            return Vec::new();
        }
        load::probes(db, observed)
    }

    fn validate(&self, db: &PostgresDB, _observed: &Observed) -> Vec<SpecProblem> {
        validate::problems(db)
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        if let Some(outcome) = outcome(db, observed, now) {
            for (type_, reason, message) in outcome.events {
                desired.note(type_, reason, message);
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
        if db.spec.autoscaling.is_none() {
            return;
        }
        let previous = db
            .status
            .as_ref()
            .and_then(|s| s.autopilot.as_ref())
            .and_then(|a| a.autoscaling.clone());
        let recorded = match outcome(db, observed, status.now) {
            Some(outcome) => {
                status.wake_at(outcome.wake_at);
                Some(outcome.status)
            }
            // Paused or refused: what was decided stands.
            None => previous,
        };
        if let Some(recorded) = recorded {
            status
                .fields
                .autopilot
                .get_or_insert_with(Default::default)
                .autoscaling = Some(recorded);
        }
    }
}
