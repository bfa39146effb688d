//! Symptoms as conditions, Events on transitions and `status.insights`.
//! (Stub: H3 builds it.)

use shared::capability::Capability;

/// The symptoms capability.
pub struct Symptoms;

impl Capability for Symptoms {
    fn name(&self) -> &'static str {
        "symptoms"
    }
}
