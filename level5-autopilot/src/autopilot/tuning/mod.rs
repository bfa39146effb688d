//! Auto-tuning (`spec.tuning: auto`): postgresql.conf's memory and
//! parallelism parameters derived from the container's limits.
//!
//! (Skeleton: the formulas are to be written; see the Level 5 part 2
//! brief.)

use std::collections::BTreeMap;

use shared::api::PostgresDB;
use shared::capability::Capability;

/// The parameters derived from `spec.resources` when `spec.tuning` is
/// `auto` (empty otherwise).
pub fn derived_parameters(db: &PostgresDB) -> BTreeMap<String, String> {
    let _ = db;
    BTreeMap::new()
}

/// The parameters wanted: the derived ones, then the user's
/// `spec.parameters` over them (the user's always win).
pub fn effective_parameters(db: &PostgresDB) -> BTreeMap<String, String> {
    let mut parameters = derived_parameters(db);
    parameters.extend(db.spec.parameters.clone());
    parameters
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
}
