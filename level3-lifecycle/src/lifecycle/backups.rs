//! What a database needs to be backed up: the backup volume, the backup
//! role, a `PostgresDBBackup` for each schedule slot, retention, and
//! `status.backup`.

use shared::capability::Capability;

/// The backup capability of the `PostgresDB` reconcile.
pub struct Backups;

impl Capability for Backups {
    fn name(&self) -> &'static str {
        "backups"
    }
}
