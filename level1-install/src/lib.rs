//! Level 1, Basic Install: the shared core plus the [`install`] capability.
//!
//! A level is the level below it plus its own capabilities: level N-1's
//! list, unchanged and first, then level N's. Below Level 1 is the shared
//! core alone, with no capability: Level 1's one capability,
//! [`install::Install`], turns a `PostgresDB` into a running PostgreSQL.
//! Unlike a create-only handler, it reconciles forever: a deleted or edited
//! child is put back, and the status always says what is running. What it
//! offers the levels built on it is named in [`api`].

pub mod api;
pub mod install;
pub mod objects;
pub mod version;

#[cfg(test)]
mod safe_configuration_tests;
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
        companions: Vec::new(),
        insights: None,
        effective_spec: shared::capability::as_written,
    }
}
