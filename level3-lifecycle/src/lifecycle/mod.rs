//! The lifecycle of a database's data: backups, retention, restores and
//! deletion.
//!
//! Two controllers share the work, and talk only through the cluster:
//! - the `PostgresDB` reconcile, through the capabilities here, decides
//!   what a database needs: the backup volume and role
//!   ([`backup_access`]), a
//!   `PostgresDBBackup` for each schedule slot, retention, restores
//!   ([`restore`]), the deletion policy ([`deletion`]) and a
//!   PodDisruptionBudget ([`disruption`]);
//! - the backup controller ([`backup_controller`]) takes each
//!   `PostgresDBBackup`, however it was created, with a Job, reports it in
//!   the object's status and deletes its files before the object goes.
//!
//! [`manifest`] is the record a backup leaves beside its files, which a
//! restore verifies against; [`names`] names what the level creates;
//! [`verify`] builds the scratch-restore Job of `spec.backup.verify` and
//! reads its verdict, with the restore's script.

pub mod backup_access;
pub mod backup_controller;
pub mod backups;
pub mod deletion;
pub mod disruption;
pub mod manifest;
pub mod names;
pub mod restore;
pub mod verify;
