//! The restore-and-verify script, and the result it reports.
//!
//! [`RESTORE_SCRIPT`] (`restore.sh`, next to this file) is shared by the
//! two places a backup is restored: the init container that initialises a
//! new database from a backup (`spec.restore`, see [`super`]) and the
//! scratch Job that proves each new backup restores
//! (`spec.backup.verify`, see [`crate::lifecycle::verify`]). Given a backup
//! folder (the files and manifest of [`crate::lifecycle::manifest`]), it
//! initialises a data directory as the image's entrypoint would, restores
//! the roles (keeping the new server's own credentials) and every database
//! with `pg_restore`, then computes each table of the manifest with the
//! expressions of `table_facts.sql` (the row count, and the digest where the
//! manifest has one) and compares. Its verdict is one line of JSON on the
//! container's termination message, read back with [`RestoreResult::parse`].

use serde::Deserialize;

/// The script; its environment is documented at its top.
pub const RESTORE_SCRIPT: &str = include_str!("restore.sh");

/// The marker file, at the data volume's root, saying a restore completed
/// there (it holds the result): a restarted pod does not restore again.
pub const DONE_MARKER: &str = ".pgdb-restored";

/// The first table whose restored facts differ from the manifest's.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Mismatch {
    /// Its database.
    pub database: String,
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub table: String,
}

/// What the script reported.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RestoreResult {
    /// Whether every table matched the manifest.
    pub passed: bool,
    /// The backup restored.
    #[serde(default)]
    pub backup: String,
    /// Databases restored.
    #[serde(default)]
    pub databases: u64,
    /// Tables compared.
    #[serde(default)]
    pub tables: u64,
    /// Rows the manifest recorded over those tables.
    #[serde(default)]
    pub rows: i64,
    /// What was verified, or why it failed.
    pub message: String,
    /// The first table that differed, when one did.
    #[serde(default)]
    pub mismatch: Option<Mismatch>,
}

impl RestoreResult {
    /// The result in a termination message: its last line that parses (a
    /// container that failed before writing one falls back to its log,
    /// which is then not a result).
    pub fn parse(message: &str) -> Option<Self> {
        message
            .lines()
            .rev()
            .map(str::trim)
            .filter(|line| line.starts_with('{'))
            .find_map(|line| serde_json::from_str(line).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_result_reads_back() {
        let result = RestoreResult::parse(
            r#"{"passed":true,"backup":"b1","databases":2,"tables":3,"rows":42,"message":"restored and verified"}"#,
        )
        .expect("parses");
        assert!(result.passed);
        assert_eq!((result.databases, result.tables, result.rows), (2, 3, 42));
        assert_eq!(result.mismatch, None);
    }

    #[test]
    fn a_mismatch_names_the_table() {
        let result = RestoreResult::parse(
            "some log line\n{\"passed\":false,\"backup\":\"b1\",\"databases\":1,\"tables\":2,\"rows\":5,\"message\":\"verification failed\",\"mismatch\":{\"database\":\"app\",\"schema\":\"public\",\"table\":\"items\"}}\n",
        )
        .expect("parses");
        assert!(!result.passed);
        assert_eq!(result.mismatch.map(|m| m.table), Some("items".to_string()));
    }

    #[test]
    fn a_log_is_not_a_result() {
        assert_eq!(
            RestoreResult::parse("initdb: error: could not create directory"),
            None
        );
    }

    #[test]
    fn the_script_computes_digests_with_the_expression_of_table_facts() {
        let facts = include_str!("../table_facts.sql");
        let expression =
            "md5(coalesce(string_agg(md5(t::text), '''' ORDER BY md5(t::text)), ''''))";
        assert!(
            facts.contains(expression),
            "table_facts.sql changed its digest"
        );
        assert!(
            RESTORE_SCRIPT.contains(expression),
            "restore.sh must use the same digest"
        );
    }
}
