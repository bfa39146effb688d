//! Level 3, Full Lifecycle: Level 2 plus the [`lifecycle`] module.
//!
//! A level is the level below it plus its own capabilities: level N-1's
//! list, unchanged and first, then level N's. Level 3 manages what happens
//! to a database's data over its whole life: logical backups with pg_dump,
//! on a schedule and on demand, tracked as `PostgresDBBackup` objects
//! ([`lifecycle::backups`], taken by [`lifecycle::backup_controller`]);
//! retention that really deletes; restores into a new database verified
//! table by table against what the backup recorded
//! ([`lifecycle::restore`]); what deleting the database does to its data
//! ([`lifecycle::deletion`]); and a PodDisruptionBudget
//! ([`lifecycle::disruption`]).

pub mod lifecycle;

use shared::capability::{Capability, Level};

/// Level 3's capabilities: Level 2's, then the lifecycle's.
pub fn capabilities() -> Vec<Box<dyn Capability>> {
    let mut capabilities = level2_upgrade::capabilities();
    capabilities.push(Box::new(lifecycle::backup_access::BackupAccess));
    capabilities.push(Box::new(lifecycle::backups::Backups));
    capabilities.push(Box::new(lifecycle::restore::Restore));
    capabilities.push(Box::new(lifecycle::deletion::Deletion));
    capabilities.push(Box::new(lifecycle::disruption::Disruption));
    capabilities
}

/// Level 3.
pub fn level() -> Level {
    Level {
        number: 3,
        name: "level3-lifecycle",
        capabilities: capabilities(),
        companions: vec![lifecycle::backup_controller::companion()],
        insights: None,
        effective_spec: shared::capability::as_written,
    }
}
