//! Level 1, Basic Install: one `PostgresDB` becomes a running PostgreSQL.
//!
//! The level is the shared core plus one capability, [`install::Install`].
//! Unlike a create-only handler, it reconciles forever: a deleted or edited
//! child is put back, and the status always says what is running.

pub mod api;
pub mod install;
pub mod objects;
pub mod version;

#[cfg(test)]
mod tests;

use shared::capability::{Capability, Level};

/// Level 1's capabilities; every higher level starts from this list.
pub fn capabilities() -> Vec<Box<dyn Capability>> {
    vec![Box::new(install::Install)]
}

/// Level 1.
pub fn level() -> Level {
    Level {
        number: 1,
        name: "level1-install",
        capabilities: capabilities(),
    }
}
