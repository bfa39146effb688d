//! Level 2, Seamless Upgrades: Level 1 plus the [`upgrade::Upgrade`] capability.
//!
//! Level 1 swaps the image whenever `spec.version` changes. Level 2 decides
//! first: a lower version is refused, a major version change is refused (the
//! data directory of one major cannot be read by the next) unless
//! `spec.upgrade.allowMajor` lets [`major::MajorUpgrade`] migrate the data,
//! and a minor upgrade is rolled out under watch: it must become ready within
//! `spec.upgrade.healthTimeoutSeconds`, or the previous version comes back.

pub mod major;
pub mod reload;
pub mod server;
pub mod upgrade;
pub mod write_fence;

#[cfg(test)]
mod major_tests;
#[cfg(test)]
mod prune_tests;
#[cfg(test)]
mod tests;

use shared::capability::{Capability, Level};

/// Level 2's capabilities: Level 1's, then the upgrade capability.
pub fn capabilities() -> Vec<Box<dyn Capability>> {
    let mut capabilities = level1_install::capabilities();
    capabilities.push(Box::new(upgrade::Upgrade));
    capabilities.push(Box::new(major::MajorUpgrade));
    capabilities.push(Box::new(reload::Reload));
    capabilities
}

/// Level 2.
pub fn level() -> Level {
    Level {
        number: 2,
        name: "level2-upgrade",
        capabilities: capabilities(),
    }
}
