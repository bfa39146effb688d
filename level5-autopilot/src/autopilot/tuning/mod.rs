//! Auto-tuning (`spec.tuning: auto`): postgresql.conf's memory and
//! parallelism parameters derived from the container's limits.
//!
//! What it models: an administrator sizing postgresql.conf to the machine
//! (PGTune's formulas, see [`formulas`]), here to the container's memory
//! limit and, when set, its CPU limit. The derived parameters are a pure
//! function of `spec.resources`, so they need no record to take effect:
//! [`effective_parameters`] puts them under the user's `spec.parameters`
//! (the user's always win) in the effective spec, Level 1 renders them
//! into postgresql.conf and checks each against PostgreSQL's table, and
//! Level 2 reloads or restarts as each needs (shared_buffers and
//! max_connections restart the server; work_mem reloads). A change of the
//! limits changes them the same way.
//!
//! Explained: `status.autopilot.tuning` shows the inputs (the memory and
//! CPU limits) and the derived parameters in effect (those the user set are
//! left out: theirs are in effect), and a `Tuned` Event names them when
//! they change.
//!
//! Refused: `tuning: auto` without a memory limit
//! (`spec.resources.limits.memory`): there is nothing to derive from, and a
//! guess (the node's memory) would size the server beyond what the kernel
//! lets it keep.
//!
//! Where it stops: the limits are taken as the memory and CPUs the server
//! has; what the node really has free, and the workload's kind, are not
//! measured.

pub mod formulas;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use shared::api::PostgresDB;
use shared::autopilot::tuning::{Tuning, TuningStatus};
use shared::capability::{
    ApplyReport, Capability, Desired, EventType, Observed, SpecProblem, StatusDraft,
};
use shared::error::Error;
use shared::quantity::Quantity;

/// The Event naming the derived parameters when they change.
pub const TUNED: &str = "Tuned";
/// The reason of a refused `tuning: auto`.
pub const INVALID: &str = "InvalidTuning";

fn limits(db: &PostgresDB) -> (Option<&str>, Option<&str>) {
    let limits = db.spec.resources.limits.as_ref();
    (
        limits.and_then(|l| l.memory.as_deref()),
        limits.and_then(|l| l.cpu.as_deref()),
    )
}

fn whole(millis: i128) -> Option<u64> {
    u64::try_from(millis).ok()
}

/// The resources `db` is tuned for: `None` unless `spec.tuning` is `auto`
/// and a positive memory limit parses.
pub fn resources(db: &PostgresDB) -> Option<formulas::Resources> {
    if db.spec.tuning != Some(Tuning::Auto) {
        return None;
    }
    let (memory, cpu) = limits(db);
    let memory_bytes = whole(Quantity::parse(memory?)?.millis() / 1000).filter(|b| *b > 0)?;
    let cpu_millis = cpu
        .and_then(Quantity::parse)
        .and_then(|q| whole(q.millis()))
        .filter(|m| *m > 0);
    Some(formulas::Resources {
        memory_bytes,
        cpu_millis,
    })
}

/// The parameters derived from `spec.resources` when `spec.tuning` is
/// `auto` (empty otherwise).
pub fn derived_parameters(db: &PostgresDB) -> BTreeMap<String, String> {
    resources(db).map(formulas::derive).unwrap_or_default()
}

/// The parameters wanted: the derived ones, then the user's
/// `spec.parameters` over them (the user's always win).
pub fn effective_parameters(db: &PostgresDB) -> BTreeMap<String, String> {
    let mut parameters = derived_parameters(db);
    parameters.extend(db.spec.parameters.clone());
    parameters
}

/// What status shows of the tuning of `db`: the inputs and the derived
/// parameters the user did not set. `spec.parameters` is the written
/// spec's (the effective spec's hold the derived ones too).
pub fn tuning_status(db: &PostgresDB, observed: &Observed) -> Option<TuningStatus> {
    let derived = derived_parameters(db);
    if derived.is_empty() {
        return None;
    }
    let users = observed
        .written_spec()
        .map_or(&db.spec.parameters, |written| &written.parameters);
    let (memory, cpu) = limits(db);
    Some(TuningStatus {
        memory: memory.unwrap_or_default().to_string(),
        cpu: cpu.map(String::from),
        parameters: derived
            .into_iter()
            .filter(|(name, _)| !users.contains_key(name))
            .collect(),
    })
}

fn recorded(db: &PostgresDB) -> Option<&TuningStatus> {
    db.status.as_ref()?.autopilot.as_ref()?.tuning.as_ref()
}

/// Auto-tuning.
pub struct AutoTuning;

impl Capability for AutoTuning {
    fn name(&self) -> &'static str {
        "tuning"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["tuning"]
    }

    fn validate(&self, db: &PostgresDB, _observed: &Observed) -> Vec<SpecProblem> {
        if db.spec.tuning != Some(Tuning::Auto) || resources(db).is_some() {
            return Vec::new();
        }
        let why = match limits(db).0 {
            None => "tuning: auto derives shared_buffers, work_mem and the other memory parameters from the container's memory limit, and none is set; set a memory limit, or tuning: off".to_string(),
            Some(memory) => format!("{memory:?} is not a positive memory quantity to derive the parameters of tuning: auto from"),
        };
        vec![SpecProblem::new(
            "spec.resources.limits.memory",
            INVALID,
            why,
        )]
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        let Some(tuned) = tuning_status(db, observed) else {
            return Ok(());
        };
        if recorded(db) == Some(&tuned) {
            return Ok(());
        }
        let values: Vec<String> = tuned
            .parameters
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let cpu = tuned
            .cpu
            .as_ref()
            .map_or(String::new(), |cpu| format!(" and the CPU limit {cpu}"));
        desired.note(
            EventType::Normal,
            TUNED,
            format!(
                "Derived from the memory limit {}{cpu}: {} (parameters set in spec.parameters win).",
                tuned.memory,
                values.join(", ")
            ),
        );
        Ok(())
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        if let Some(tuned) = tuning_status(db, observed) {
            status.fields.autopilot.get_or_insert_default().tuning = Some(tuned);
        }
    }
}
