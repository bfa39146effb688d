//! Names of what Level 3 creates for a database and its backups.

/// The PostgreSQL role backups log in as: read-only (`pg_read_all_data`),
/// never the superuser.
pub const BACKUP_ROLE: &str = "pgdb_backup";

/// The Secret holding the backup role's password.
pub fn backup_credentials_secret(db: &str) -> String {
    format!("{db}-backup-credentials")
}

/// The PersistentVolumeClaim backups of `db` are written to when the
/// destination is a volume.
pub fn backup_volume(db: &str) -> String {
    format!("{db}-backups")
}

/// The file, in a backup's folder, holding its [`super::manifest::Manifest`].
pub const MANIFEST_FILE: &str = "manifest.json";
/// The file, in a backup's folder, holding `pg_dumpall --globals-only`.
pub const GLOBALS_FILE: &str = "globals.sql";
