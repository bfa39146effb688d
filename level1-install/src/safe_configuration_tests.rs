//! Unit tests of Level 1's safe configuration: parameters checked against
//! the core's policy and PostgreSQL's table of the target major, image
//! references, and the server's own reason in the Degraded condition.

use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStateWaiting};
use shared::api::PostgresDB;
use shared::capability::{ApplyReport, Observed};
use shared::conditions::{ConditionStatus, DEGRADED, READY};
use shared::reconcile::{Decision, assess, decide};
use shared::testing::{DbBuilder, ObservedBuilder, PodBuilder, at};

use crate::install::server_reason;

fn problems_of(db: &PostgresDB) -> Vec<(String, String, String)> {
    match decide(&crate::level(), db, &Observed::default(), at(1_000)).expect("decides") {
        Decision::Invalid(problems) => problems
            .into_iter()
            .map(|p| (p.field, p.reason, p.message))
            .collect(),
        _ => Vec::new(),
    }
}

fn refusal(db: &PostgresDB) -> (String, String, String) {
    let problems = problems_of(db);
    assert_eq!(problems.len(), 1, "one problem: {problems:?}");
    problems.into_iter().next().expect("one problem")
}

#[test]
fn every_unsafe_or_invalid_parameter_is_a_refusal_naming_its_field() {
    let cases = [
        ("archive_command", "cp %p /tmp/%f", "runs a shell command"),
        ("restore_command", "cp /a/%f %p", "runs a shell command"),
        ("ssl_passphrase_command", "echo x", "runs a shell command"),
        ("dynamic_library_path", "/tmp", "load shared libraries"),
        ("shared_preload_libraries", "/tmp/evil.so", "is a path"),
        ("session_preload_libraries", "evil", "not an extension"),
        ("external_pid_file", "/tmp/pid", "set by the operator"),
        ("ssl_key_file", "/etc/shadow", "outside the data directory"),
        ("log_directory", "/tmp", "outside the data directory"),
        ("shared_bufers", "128MB", "PostgreSQL 16 has no parameter"),
        ("shared_buffers", "1", "outside the valid range"),
        ("work_mem", "4 parsecs", "not a unit"),
        ("max_connections", "many", "not an integer"),
        ("wal_level", "maximal", "not one of the values"),
        ("fsync", "perhaps", "not a boolean"),
    ];
    for (name, value, why) in cases {
        let db = DbBuilder::named("orders")
            .version("16")
            .parameter(name, value)
            .build();
        let (field, reason, message) = refusal(&db);
        assert_eq!(field, format!("spec.parameters.{name}"));
        assert_eq!(reason, "InvalidParameter");
        assert!(message.contains(why), "{name} = {value:?}: {message}");
    }
}

#[test]
fn valid_parameters_and_extension_settings_are_accepted() {
    let db = DbBuilder::named("orders")
        .version("16")
        .parameter("shared_buffers", "256MB")
        .parameter("max_connections", "200")
        .parameter(
            "shared_preload_libraries",
            "pg_stat_statements,auto_explain",
        )
        .parameter("pg_stat_statements.max", "10000")
        .parameter("log_directory", "log")
        .build();
    assert_eq!(problems_of(&db), []);
}

#[test]
fn a_version_change_rechecks_the_parameters_against_the_new_major() {
    // vacuum_defer_cleanup_age exists up to 15 and was removed in 16.
    let on_15 = DbBuilder::named("orders")
        .version("15")
        .parameter("vacuum_defer_cleanup_age", "0")
        .build();
    assert_eq!(problems_of(&on_15), []);
    let mut to_16 = on_15.clone();
    to_16.spec.version = "16".into();
    let (field, reason, message) = refusal(&to_16);
    assert_eq!(
        (field.as_str(), reason.as_str()),
        (
            "spec.parameters.vacuum_defer_cleanup_age",
            "InvalidParameter"
        )
    );
    assert!(
        message.contains("PostgreSQL 16 has no parameter"),
        "{message}"
    );
}

#[test]
fn a_malformed_image_reference_is_refused_naming_spec_image() {
    for image in [
        "Postgres:16",
        "postgres:16 ",
        "postgres::16",
        "-postgres",
        "postgres:16@sha256:xyz",
    ] {
        let db = DbBuilder::named("orders").image(image).build();
        let (field, reason, _) = refusal(&db);
        assert_eq!(
            (field.as_str(), reason.as_str()),
            ("spec.image", "InvalidImage"),
            "{image:?}"
        );
    }
    for image in [
        "postgres:16",
        "docker.io/library/postgres:16.4-bookworm",
        "localhost:5000/team/postgres",
        "postgres@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(shared::api::is_image_reference(image), "{image:?}");
    }
}

#[test]
fn the_server_reason_is_its_last_fatal_or_error_line() {
    let log = "2026-12-01 20:00:00.000 UTC [42] LOG:  starting PostgreSQL 16.14\n\
               2026-12-01 20:00:00.001 UTC [42] FATAL:  WAL streaming (max_wal_senders > 0) requires wal_level \"replica\" or \"logical\"\n\
               2026-12-01 20:00:00.002 UTC [42] LOG:  database system is shut down\n";
    assert_eq!(
        server_reason(log).as_deref(),
        Some(
            "FATAL: WAL streaming (max_wal_senders > 0) requires wal_level \"replica\" or \"logical\""
        )
    );
    assert_eq!(server_reason("LOG:  all fine\n"), None);
}

#[test]
fn a_crash_looping_server_degrades_the_database_with_its_own_reason() {
    let db = DbBuilder::named("orders").build();
    let mut pod = PodBuilder::named("orders-0")
        .container(
            "postgres",
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: Some("back-off 40s".into()),
                }),
                ..Default::default()
            },
        )
        .build();
    let statuses = pod
        .status
        .as_mut()
        .and_then(|s| s.container_statuses.as_mut())
        .expect("the builder sets container statuses");
    statuses[0].last_state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 1,
            reason: Some("Error".into()),
            message: Some(
                "LOG:  starting\nFATAL:  invalid value for parameter \"x\"\nLOG:  shut down\n"
                    .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    });
    let observed = ObservedBuilder::new().with(&pod).build();
    let decision = Decision::Apply {
        changes: vec![],
        deletions: vec![],
        sql: vec![],
        notes: vec![],
    };
    let draft = assess(
        &crate::level(),
        &db,
        &observed,
        &decision,
        &ApplyReport::default(),
        jiff::Timestamp::UNIX_EPOCH,
    );
    let degraded = draft.conditions.get(DEGRADED).expect("Degraded is set");
    assert!(
        degraded.status == ConditionStatus::True
            && degraded.is_warning()
            && degraded.message.contains("CrashLoopBackOff")
            && degraded
                .message
                .ends_with("the server said: FATAL: invalid value for parameter \"x\""),
        "{degraded:?}"
    );
    assert!(draft.conditions.get(READY).is_some());
}
