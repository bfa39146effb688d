//! Replica autoscaling (`spec.autoscaling`): instances added under read
//! load and removed after it, decided from the operator's own SQL
//! measurements.
//!
//! (Skeleton: the decision is to be written; see the Level 5 part 2 brief.)

use shared::api::PostgresDB;
use shared::capability::Capability;

/// The instance count the autoscaler decided, the effective
/// `spec.instances`; `None` without `spec.autoscaling`.
pub fn effective_instances(db: &PostgresDB) -> Option<i32> {
    let _ = db;
    None
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
}
