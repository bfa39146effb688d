use super::*;

const OWNED: [&str; 2] = ["port", "listen_addresses"];

fn refused(major: u32, name: &str, value: &str) -> String {
    check(major, &OWNED, name, value)
        .err()
        .unwrap_or_else(|| panic!("{name} = {value:?} was accepted by PostgreSQL {major}"))
}

fn accepted(major: u32, name: &str, value: &str) {
    if let Err(why) = check(major, &OWNED, name, value) {
        panic!("{name} = {value:?} was refused by PostgreSQL {major}: {why}");
    }
}

#[test]
fn every_supported_major_has_a_table_of_its_settings() {
    for major in [14, 15, 16, 17, 18] {
        let table = Table::of(major).expect("a table");
        assert!(
            table.len() > 300,
            "PostgreSQL {major}: {} settings",
            table.len()
        );
        assert!(table.get("shared_buffers").is_some());
        assert!(
            table.get("server_version").is_none(),
            "internal settings are left out"
        );
    }
    assert!(Table::of(13).is_none());
}

#[test]
fn parameters_that_run_commands_load_code_or_touch_files_outside_the_data_directory_are_refused_in_every_major()
 {
    let cases = [
        ("archive_command", "cp %p /tmp/%f"),
        ("archive_cleanup_command", "rm -rf /"),
        ("restore_command", "cp /archive/%f %p"),
        ("recovery_end_command", "touch /tmp/done"),
        ("ssl_passphrase_command", "echo secret"),
        ("archive_library", "basic_archive"),
        ("dynamic_library_path", "/tmp:$libdir"),
        ("jit_provider", "llvmjit"),
        ("data_directory", "/tmp/data"),
        ("config_file", "/tmp/postgresql.conf"),
        ("hba_file", "/tmp/pg_hba.conf"),
        ("ident_file", "/tmp/pg_ident.conf"),
        ("external_pid_file", "/tmp/pid"),
        ("ssl_key_file", "/etc/shadow"),
        ("krb_server_keyfile", "/etc/krb5.keytab"),
        ("unix_socket_directories", "/tmp"),
        ("stats_temp_directory", "/tmp/stats"),
        ("log_directory", "/tmp"),
        ("log_directory", "../../escape"),
        ("log_filename", "../../x.log"),
        ("shared_preload_libraries", "/tmp/evil.so"),
        ("shared_preload_libraries", "$libdir/pg_stat_statements"),
        ("session_preload_libraries", "evil"),
        ("local_preload_libraries", "auto_explain, plugins/evil"),
        ("ARCHIVE_COMMAND", "cp %p /tmp/%f"),
    ];
    for major in [14, 15, 16, 17, 18] {
        for (name, value) in cases {
            let why = refused(major, name, value);
            assert!(why.starts_with("refused"), "{name}: {why}");
        }
    }
}

#[test]
fn preload_libraries_are_accepted_by_extension_name_only() {
    for major in [14, 15, 16, 17, 18] {
        accepted(major, "shared_preload_libraries", "pg_stat_statements");
        accepted(
            major,
            "shared_preload_libraries",
            "pg_stat_statements, \"auto_explain\"",
        );
        accepted(major, "session_preload_libraries", "auto_explain");
        accepted(major, "shared_preload_libraries", "");
    }
    let why = refused(16, "shared_preload_libraries", "timescaledb");
    assert!(
        why.contains("pg_stat_statements"),
        "names the allowed: {why}"
    );
}

#[test]
fn parameters_the_operator_owns_are_refused() {
    let why = refused(16, "port", "5433");
    assert!(why.contains("set by the operator"), "{why}");
}

#[test]
fn an_unknown_name_is_refused_for_the_major_that_does_not_know_it() {
    assert!(refused(16, "shared_bufers", "128MB").contains("PostgreSQL 16 has no parameter"));
    // io_method is new in 18; promote_trigger_file is refused by policy
    // everywhere, but the table alone would also refuse it from 16 on.
    accepted(18, "io_method", "worker");
    assert!(refused(17, "io_method", "worker").contains("no parameter"));
    // vacuum_defer_cleanup_age was removed in 16.
    accepted(15, "vacuum_defer_cleanup_age", "0");
    assert!(refused(16, "vacuum_defer_cleanup_age", "0").contains("no parameter"));
}

#[test]
fn extension_settings_pass_through() {
    accepted(16, "pg_stat_statements.max", "10000");
    accepted(16, "auto_explain.log_min_duration", "250ms");
}

#[test]
fn values_are_checked_against_type_range_enum_and_unit() {
    for major in [14, 15, 16, 17, 18] {
        accepted(major, "shared_buffers", "128MB");
        accepted(major, "shared_buffers", "16384");
        accepted(major, "work_mem", "4MB");
        accepted(major, "work_mem", "1GB");
        accepted(major, "max_connections", "200");
        accepted(major, "checkpoint_timeout", "5min");
        accepted(major, "statement_timeout", "1500ms");
        accepted(major, "log_min_duration_statement", "-1");
        accepted(major, "random_page_cost", "1.1");
        accepted(major, "vacuum_cost_delay", "2ms");
        accepted(major, "jit", "off");
        accepted(major, "jit", "FALSE");
        accepted(major, "wal_level", "logical");
        accepted(major, "synchronous_commit", "true");
        accepted(major, "log_statement", "DDL");
        accepted(major, "DateStyle", "ISO, MDY");
        accepted(major, "max_connections", "0x40");
    }
    let cases = [
        ("shared_buffers", "lots", "is not an integer"),
        (
            "shared_buffers",
            "1",
            "outside the valid range 16 .. 1073741823 (in units of 8kB)",
        ),
        (
            "shared_buffers",
            "128MiB",
            "is not a unit of this parameter",
        ),
        ("shared_buffers", "128mb", "is not a unit of this parameter"),
        (
            "checkpoint_timeout",
            "5 weeks",
            "is not a unit of this parameter",
        ),
        (
            "checkpoint_timeout",
            "10",
            "outside the valid range 30 .. 86400 (in units of s)",
        ),
        ("max_connections", "100MB", "takes no unit"),
        ("max_connections", "99999999999", "outside the valid range"),
        ("random_page_cost", "-1", "outside the valid range"),
        ("random_page_cost", "nan", "is not a number"),
        ("jit", "maybe", "is not a boolean"),
        (
            "wal_level",
            "archive-ish",
            "is not one of the values of wal_level (minimal, replica, logical)",
        ),
        ("log_statement", "true", "is not one of the values"),
    ];
    for major in [14, 15, 16, 17, 18] {
        for (name, value, expected) in cases {
            let why = refused(major, name, value);
            assert!(why.contains(expected), "{name} = {value:?}: {why}");
            assert!(why.ends_with(&format!("(PostgreSQL {major})")), "{why}");
        }
    }
}

#[test]
fn booleans_parse_as_postgresql_parses_them() {
    for yes in ["on", "ON", "true", "t", "tr", "yes", "y", "1"] {
        assert_eq!(table::parse_bool(yes), Some(true), "{yes}");
    }
    for no in ["off", "of", "false", "f", "no", "n", "0"] {
        assert_eq!(table::parse_bool(no), Some(false), "{no}");
    }
    for bad in ["o", "", "2", "onn", "yess"] {
        assert_eq!(table::parse_bool(bad), None, "{bad}");
    }
}
