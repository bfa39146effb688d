//! The manifest a backup writes beside its files, and a restore verifies
//! against.
//!
//! A `PostgresDBBackup`'s status says where the files are and what they
//! hold in a few numbers; the manifest holds the detail: every file with
//! its size and SHA-256, and every table of every database with the row
//! count (and, for tables small enough, a digest of the rows) taken in the
//! same snapshot `pg_dump` dumped (see `table_facts.sql`). It is JSON, in
//! the backup's folder, named [`super::names::MANIFEST_FILE`].

use serde::{Deserialize, Serialize};

/// The version of the manifest's format.
pub const FORMAT: u32 = 1;

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The `PostgresDBBackup`'s name.
    pub backup: String,
    /// The `PostgresDB` backed up.
    pub database: String,
    /// `server_version` of the server dumped.
    pub server_version: String,
    /// When the dump's snapshot was taken (RFC 3339).
    pub snapshot_at: String,
    /// Every file of the backup but the manifest.
    pub files: Vec<ManifestFile>,
    /// Every database dumped (templates excluded).
    pub databases: Vec<ManifestDatabase>,
}

/// One file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFile {
    /// Its name in the backup's folder.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, in lowercase hex.
    pub sha256: String,
}

/// One database of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDatabase {
    /// The database's name.
    pub name: String,
    /// The file holding its `pg_dump` (custom format).
    pub file: String,
    /// Its user tables.
    pub tables: Vec<ManifestTable>,
}

/// One table, as the dump's snapshot saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestTable {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its rows.
    pub rows: i64,
    /// md5 over the sorted md5s of its rows (see `table_facts.sql`), for
    /// tables small enough to afford it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}
