//! Initialising a new database from a backup, verified table by table.

pub mod script;

use shared::capability::Capability;

/// The restore capability.
pub struct Restore;

impl Capability for Restore {
    fn name(&self) -> &'static str {
        "restore"
    }
}
