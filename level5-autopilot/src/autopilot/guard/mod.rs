//! Configuration self-healing: a configuration with which the servers do
//! not start, or do not become ready, is rolled back to the last one that
//! ran, and held back until the spec's parameters change again.
//!
//! (Skeleton: the decision is to be written; see the Level 5 part 2 brief.)

use std::collections::BTreeMap;

use shared::api::PostgresDB;
use shared::capability::Capability;

/// The parameters the servers should run: `wanted` (the spec's, with the
/// derived ones), or the last configuration that ran while `wanted` is
/// held back.
pub fn effective_parameters(
    db: &PostgresDB,
    wanted: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let _ = db;
    wanted
}

/// Configuration self-healing.
pub struct ConfigurationGuard;

impl Capability for ConfigurationGuard {
    fn name(&self) -> &'static str {
        "configuration-guard"
    }
}
