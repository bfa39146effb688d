//! What deleting a `PostgresDB` does to its data: `spec.deletionPolicy`.

use shared::capability::Capability;

/// The deletion-policy capability.
pub struct Deletion;

impl Capability for Deletion {
    fn name(&self) -> &'static str {
        "deletion"
    }
}
