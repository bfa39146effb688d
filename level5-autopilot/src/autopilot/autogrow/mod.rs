//! Storage auto-grow (`spec.storage.autoGrow`): every instance's volume
//! grown before it fills, up to a maximum, never shrunk.
//!
//! (Skeleton: the decision is to be written; see the Level 5 part 2 brief.)

use shared::api::PostgresDB;
use shared::capability::Capability;

/// The size the volumes were grown to, the effective `spec.storage.size`;
/// `None` while they were not grown beyond the spec's size.
pub fn effective_size(db: &PostgresDB) -> Option<String> {
    let _ = db;
    None
}

/// Storage auto-grow.
pub struct AutoGrow;

impl Capability for AutoGrow {
    fn name(&self) -> &'static str {
        "autogrow"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["storage.autoGrow"]
    }
}
