//! The parameter policy: what a database's author may not set, and why.
//!
//! PostgreSQL lets its configuration run shell commands (`archive_command`),
//! load shared libraries from any path (`dynamic_library_path`,
//! `shared_preload_libraries = '/tmp/x.so'`) and read or write files
//! anywhere the server's user can (`ssl_key_file`, `external_pid_file`).
//! In a PostgresDB each of these would run the author's code in the
//! database's pod, so they are refused in every supported major, whether or
//! not the major knows the name. Each entry of [`REFUSED`] says why;
//! docs/level1-install.md shows the same table. Preload libraries are
//! accepted only by the name of an extension the official image ships and
//! that is meant to be preloaded ([`PRELOADABLE`]), never by path. The log
//! directory and file stay inside the data directory.

/// Parameters refused in every major, with the reason given to the author.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "archive_command",
        "runs a shell command for every WAL segment",
    ),
    (
        "archive_cleanup_command",
        "runs a shell command at every restart point",
    ),
    (
        "restore_command",
        "runs a shell command to fetch archived WAL",
    ),
    (
        "recovery_end_command",
        "runs a shell command at the end of recovery",
    ),
    (
        "ssl_passphrase_command",
        "runs a shell command to obtain the SSL key's passphrase",
    ),
    (
        "archive_library",
        "loads a shared library to archive WAL (basic_archive writes files outside the data directory)",
    ),
    (
        "dynamic_library_path",
        "makes the server load shared libraries from the directories it names",
    ),
    (
        "extension_control_path",
        "makes the server load extension scripts from the directories it names",
    ),
    (
        "extension_destdir",
        "makes the server load extensions and their libraries from the directory it names",
    ),
    (
        "jit_provider",
        "loads the shared library it names as the JIT provider",
    ),
    (
        "oauth_validator_libraries",
        "loads the shared libraries it names to validate OAuth tokens",
    ),
    (
        "data_directory",
        "moves the data directory out of the database's volume",
    ),
    ("config_file", "reads the configuration from another file"),
    (
        "hba_file",
        "reads client authentication rules from another file",
    ),
    ("ident_file", "reads user name maps from another file"),
    (
        "external_pid_file",
        "writes a file outside the data directory",
    ),
    (
        "stats_temp_directory",
        "writes statistics files to the directory it names",
    ),
    (
        "promote_trigger_file",
        "watches a file outside the data directory",
    ),
    ("ssl_cert_file", "reads a file outside the data directory"),
    ("ssl_key_file", "reads a file outside the data directory"),
    ("ssl_ca_file", "reads a file outside the data directory"),
    ("ssl_crl_file", "reads a file outside the data directory"),
    (
        "ssl_crl_dir",
        "reads files from a directory outside the data directory",
    ),
    (
        "ssl_dh_params_file",
        "reads a file outside the data directory",
    ),
    (
        "krb_server_keyfile",
        "reads a file outside the data directory",
    ),
    (
        "unix_socket_directories",
        "creates sockets and lock files in the directories it names (the pod's socket is the operator's: the entrypoint and probes use it)",
    ),
    (
        "unix_socket_group",
        "changes the owner group of the pod's socket, which the entrypoint and probes use",
    ),
    (
        "unix_socket_permissions",
        "changes the permissions of the pod's socket, which the entrypoint and probes use",
    ),
    (
        "primary_conninfo",
        "a connection string may name files outside the data directory (sslkey, sslcert, passfile, service)",
    ),
];

/// Parameters whose value is a list of libraries to load: accepted only by
/// the name of an extension in [`PRELOADABLE`].
pub const PRELOAD_PARAMETERS: [&str; 3] = [
    "shared_preload_libraries",
    "session_preload_libraries",
    "local_preload_libraries",
];

/// Extensions the official `postgres` image ships (contrib) that are loaded
/// by a preload parameter, in every supported major.
pub const PRELOADABLE: [&str; 5] = [
    "auth_delay",
    "auto_explain",
    "passwordcheck",
    "pg_prewarm",
    "pg_stat_statements",
];

/// Why the policy refuses `name = value`, or `Ok`. `owned` are the
/// parameters the calling level sets itself.
pub fn check(owned: &[&str], name: &str, value: &str) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    if owned.contains(&lower.as_str()) {
        return Err("set by the operator itself and cannot be overridden".into());
    }
    if let Some((_, why)) = REFUSED.iter().find(|(refused, _)| *refused == lower) {
        return Err(format!("refused: it {why}"));
    }
    if PRELOAD_PARAMETERS.contains(&lower.as_str()) {
        return preload_list(value);
    }
    match lower.as_str() {
        "log_directory" => inside_data_directory(value),
        "log_filename" if value.contains('/') => {
            Err("refused: a log file name with a '/' writes outside the log directory".into())
        }
        _ => Ok(()),
    }
}

/// A preload list: names of [`PRELOADABLE`] extensions, separated by
/// commas, optionally double-quoted (as PostgreSQL splits it).
fn preload_list(value: &str) -> Result<(), String> {
    for item in value.split(',') {
        let library = item.trim().trim_matches('"').trim();
        if library.is_empty() {
            continue;
        }
        if library.contains(['/', '\\', '$']) {
            return Err(format!(
                "refused: {library:?} is a path; libraries are loaded only by extension name ({})",
                PRELOADABLE.join(", ")
            ));
        }
        if !PRELOADABLE.contains(&library) {
            return Err(format!(
                "refused: {library:?} is not an extension the official image ships for preloading ({})",
                PRELOADABLE.join(", ")
            ));
        }
    }
    Ok(())
}

/// The log directory: relative to the data directory, never leaving it.
fn inside_data_directory(value: &str) -> Result<(), String> {
    let escapes = value.starts_with('/')
        || value.trim().is_empty()
        || value.split('/').any(|part| part == "..");
    if escapes {
        Err(format!(
            "refused: {value:?} is outside the data directory; give a relative path such as \"log\""
        ))
    } else {
        Ok(())
    }
}
