//! A PodDisruptionBudget for the database's pods.

use shared::capability::Capability;

/// The disruption-budget capability.
pub struct Disruption;

impl Capability for Disruption {
    fn name(&self) -> &'static str {
        "disruption"
    }
}
