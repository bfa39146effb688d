//! Level 2, Seamless Upgrades: Level 1 plus the [`upgrade`] and [`reload`]
//! capabilities.
//!
//! A level is the level below it plus its own capabilities: level N-1's
//! list, unchanged and first, then level N's. Level 1 swaps the image
//! whenever `spec.version` changes. Level 2 decides first ([`upgrade`]): a
//! lower version is refused, a major version change is refused (the data
//! directory of one major cannot be read by the next) unless
//! `spec.upgrade.allowMajor` lets [`upgrade::major`] migrate the data, and a
//! minor upgrade ([`upgrade::minor`]) is rolled out under watch: it must
//! become ready within `spec.upgrade.healthTimeoutSeconds`, or the previous
//! version comes back. A change of `spec.parameters` is reloaded instead of
//! restarting the server when PostgreSQL allows it ([`reload`]). Both speak
//! SQL to the servers Level 1 runs, through the logins of [`logins`].

pub mod logins;
pub mod reload;
pub mod upgrade;

#[cfg(test)]
mod prune_tests;
#[cfg(test)]
mod tests;

use shared::capability::{Capability, Level};

/// Level 2's capabilities: Level 1's, then the upgrade and reload capabilities.
pub fn capabilities() -> Vec<Box<dyn Capability>> {
    let mut capabilities = level1_install::api::capabilities();
    capabilities.push(Box::new(upgrade::Upgrade));
    capabilities.push(Box::new(reload::Reload));
    capabilities
}

/// Level 2.
pub fn level() -> Level {
    Level {
        number: 2,
        name: "level2-upgrade",
        capabilities: capabilities(),
        companions: Vec::new(),
        insights: None,
        effective_spec: shared::capability::as_written,
    }
}
