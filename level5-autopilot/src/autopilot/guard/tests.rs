use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use shared::api::{PostgresDB, UpgradePhase, UpgradeStatus, status_time};
use shared::autopilot::AutopilotStatus;
use shared::autopilot::guard::{ConfigurationGuardStatus, HeldBack};
use shared::capability::{ApplyReport, Capability, Desired, EventType, StatusDraft};
use shared::conditions::{ConditionStatus, DEGRADED};
use shared::keys::CONFIG_HASH_ANNOTATION;
use shared::sql::SqlAnswer;
use shared::testing::{DbBuilder, ObservedBuilder, PodBuilder, at};

use super::decision::{
    CONFIGURATION_REJECTED, CONFIGURATION_ROLLED_BACK, Inputs, Outcome, RECOVERED, decide,
};
use super::evidence::{
    Evidence, READY_WITHIN, Rejection, evidence, probe_name, rejected_parameter,
};
use super::*;

const WAL_FATAL: &str = "2026-12-01 20:00:00.000 UTC [41] LOG:  starting PostgreSQL 15.10\n\
2026-12-01 20:00:00.001 UTC [41] FATAL:  WAL streaming (max_wal_senders > 0) requires wal_level \"replica\" or \"logical\"\n";

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn good() -> BTreeMap<String, String> {
    params(&[("work_mem", "8MB")])
}

fn bad() -> BTreeMap<String, String> {
    params(&[("wal_level", "minimal"), ("work_mem", "8MB")])
}

fn recorded_good() -> ConfigurationGuardStatus {
    ConfigurationGuardStatus {
        last_good: good(),
        since: Some(status_time(at(10))),
        held_back: None,
    }
}

fn held(recovered: Option<i64>) -> ConfigurationGuardStatus {
    ConfigurationGuardStatus {
        held_back: Some(HeldBack {
            parameters: bad(),
            rejected_parameter: Some("wal_level".into()),
            message: "pod orders-0: its container exited with code 1; the server said: FATAL: no"
                .into(),
            since: status_time(at(100)),
            recovered_at: recovered.map(|s| status_time(at(s))),
        }),
        ..recorded_good()
    }
}

fn rejection() -> Rejection {
    Rejection {
        pod: "orders-0".into(),
        seen: "its container exited with code 1".into(),
        said: level1_install::install::server_reason(WAL_FATAL),
        text: WAL_FATAL.into(),
        parameter: None,
    }
}

fn decided(
    previous: Option<&ConfigurationGuardStatus>,
    wanted: &BTreeMap<String, String>,
    running: &BTreeMap<String, String>,
    evidence: &Evidence,
    settled: bool,
) -> Outcome {
    decide(&Inputs {
        previous,
        wanted,
        running,
        evidence,
        settled,
        now: at(200),
    })
}

fn db_with(
    status: Option<ConfigurationGuardStatus>,
    parameters: &BTreeMap<String, String>,
) -> PostgresDB {
    let mut builder = DbBuilder::named("orders").version("15");
    for (name, value) in parameters {
        builder = builder.parameter(name, value);
    }
    if let Some(status) = status {
        builder = builder.autopilot_status(AutopilotStatus {
            configuration: Some(status),
            ..Default::default()
        });
    }
    builder.build()
}

// The effective parameters.

#[test]
fn the_wanted_parameters_run_when_nothing_is_held_back() {
    let db = db_with(Some(recorded_good()), &bad());
    assert_eq!(effective_parameters(&db, bad()), bad());
    let db = db_with(None, &bad());
    assert_eq!(effective_parameters(&db, bad()), bad());
}

#[test]
fn the_last_good_parameters_run_while_the_wanted_ones_are_held_back() {
    let db = db_with(Some(held(None)), &bad());
    assert_eq!(effective_parameters(&db, bad()), good());
}

#[test]
fn a_changed_spec_releases_the_hold() {
    let db = db_with(Some(held(Some(150))), &bad());
    let fixed = params(&[("wal_level", "logical"), ("work_mem", "8MB")]);
    assert_eq!(effective_parameters(&db, fixed.clone()), fixed);
}

#[test]
fn the_effective_spec_carries_the_rollback_and_leaves_the_spec_alone() {
    let db = db_with(Some(held(None)), &bad());
    let effective = crate::autopilot::effective::effective_spec(&db);
    assert_eq!(effective.spec.parameters, good());
    assert_eq!(db.spec.parameters, bad(), "the spec is never edited");
    // Level 1 renders the last configuration that ran.
    let conf = level1_install::api::postgresql_conf(&effective);
    assert!(conf.contains("work_mem = '8MB'"), "{conf}");
    assert!(!conf.contains("wal_level"), "{conf}");
}

// The decision.

#[test]
fn the_first_configuration_every_instance_runs_is_recorded_as_the_last_good_one() {
    let outcome = decided(None, &good(), &good(), &Evidence::Clear, true);
    let status = outcome.status.expect("recorded");
    assert_eq!(status.last_good, good());
    assert_eq!(status.since, Some(status_time(at(200))));
    assert_eq!(outcome.degraded, None);
}

#[test]
fn nothing_is_recorded_before_every_instance_runs_it() {
    let outcome = decided(None, &good(), &good(), &Evidence::Clear, false);
    assert_eq!(outcome.status, None);
}

#[test]
fn there_is_nothing_to_roll_back_to_before_a_first_configuration_ran() {
    let outcome = decided(
        None,
        &bad(),
        &bad(),
        &Evidence::Rejected(rejection()),
        false,
    );
    assert_eq!(outcome.status, None);
    assert_eq!(outcome.degraded, None);
}

#[test]
fn a_new_configuration_every_instance_runs_becomes_the_last_good_one() {
    let fixed = params(&[("wal_level", "logical"), ("work_mem", "8MB")]);
    let outcome = decided(
        Some(&recorded_good()),
        &fixed,
        &fixed,
        &Evidence::Clear,
        true,
    );
    let status = outcome.status.expect("kept");
    assert_eq!(status.last_good, fixed);
    assert_eq!(status.since, Some(status_time(at(200))));
}

#[test]
fn a_configuration_still_rolling_out_is_not_yet_the_last_good_one() {
    let outcome = decided(
        Some(&recorded_good()),
        &bad(),
        &bad(),
        &Evidence::Clear,
        false,
    );
    assert_eq!(outcome.status, Some(recorded_good()));
    assert_eq!(outcome.degraded, None);
}

#[test]
fn the_last_good_configuration_is_recorded_once_and_left_alone_at_rest() {
    let outcome = decided(
        Some(&recorded_good()),
        &good(),
        &good(),
        &Evidence::Clear,
        true,
    );
    assert_eq!(
        outcome.status,
        Some(recorded_good()),
        "since is not rewritten"
    );
}

#[test]
fn a_configuration_that_does_not_run_is_held_back_naming_the_parameter_and_quoting_the_server() {
    let outcome = decided(
        Some(&recorded_good()),
        &bad(),
        &bad(),
        &Evidence::Rejected(rejection()),
        false,
    );
    let status = outcome.status.expect("kept");
    assert_eq!(status.last_good, good(), "the last good one stays");
    let held = status.held_back.expect("held back");
    assert_eq!(held.parameters, bad());
    assert_eq!(held.rejected_parameter.as_deref(), Some("wal_level"));
    assert_eq!(held.since, status_time(at(200)));
    assert!(
        held.message.contains(
            "FATAL: WAL streaming (max_wal_senders > 0) requires wal_level \"replica\" or \"logical\""
        ),
        "{}",
        held.message
    );
    let degraded = outcome.degraded.expect("Degraded");
    assert_eq!(degraded.status, ConditionStatus::True);
    assert_eq!(degraded.reason, CONFIGURATION_REJECTED);
    assert!(degraded.is_warning(), "a Warning Event announces it");
    assert!(
        degraded
            .message
            .starts_with("wal_level = 'minimal' did not run"),
        "{}",
        degraded.message
    );
    assert!(degraded.message.contains("the server said: FATAL"));
    assert!(degraded.message.contains("held back until it changes"));
}

#[test]
fn while_the_instances_go_back_degraded_says_rolled_back_the_same_way_each_time() {
    let first = decided(Some(&held(None)), &bad(), &good(), &Evidence::Clear, false);
    let again = decided(Some(&held(None)), &bad(), &good(), &Evidence::Clear, false);
    assert_eq!(first, again, "nothing changes while it rolls back");
    assert_eq!(first.status, Some(held(None)));
    let degraded = first.degraded.expect("Degraded");
    assert_eq!(degraded.status, ConditionStatus::True);
    assert_eq!(degraded.reason, CONFIGURATION_ROLLED_BACK);
    assert!(degraded.is_warning());
    assert!(degraded.message.contains("wal_level = 'minimal'"));
    assert!(degraded.message.contains("held back until it changes"));
}

#[test]
fn once_every_instance_runs_the_last_good_configuration_again_it_has_recovered() {
    let outcome = decided(Some(&held(None)), &bad(), &good(), &Evidence::Clear, true);
    let status = outcome.status.clone().expect("kept");
    let held_back = status.held_back.expect("still held back");
    assert_eq!(held_back.recovered_at, Some(status_time(at(200))));
    let degraded = outcome.degraded.clone().expect("Degraded");
    assert_eq!(degraded.status, ConditionStatus::False);
    assert_eq!(degraded.reason, RECOVERED);
    assert!(degraded.announced, "a Normal Event announces it");
    assert!(!degraded.is_warning());
    assert!(degraded.message.contains("held back until it changes"));
    // And it stays so, quietly.
    let later = decided(
        Some(&status_of(&outcome)),
        &bad(),
        &good(),
        &Evidence::Clear,
        true,
    );
    assert_eq!(later, outcome);
}

fn status_of(outcome: &Outcome) -> ConfigurationGuardStatus {
    outcome.status.clone().expect("a status")
}

#[test]
fn evidence_against_the_last_good_configuration_is_no_reason_to_hold_anything_else() {
    let outcome = decided(
        Some(&held(Some(150))),
        &bad(),
        &good(),
        &Evidence::Rejected(rejection()),
        false,
    );
    assert_eq!(outcome.status, Some(held(Some(150))));
}

#[test]
fn a_spec_that_changes_again_is_tried_and_recorded_once_it_runs() {
    let fixed = params(&[("wal_level", "logical"), ("work_mem", "8MB")]);
    let trying = decided(
        Some(&held(Some(150))),
        &fixed,
        &fixed,
        &Evidence::Clear,
        false,
    );
    assert_eq!(
        trying.status,
        Some(recorded_good()),
        "released, not yet good"
    );
    assert_eq!(trying.degraded, None);
    let ran = decided(
        Some(&held(Some(150))),
        &fixed,
        &fixed,
        &Evidence::Clear,
        true,
    );
    assert_eq!(ran.status.expect("kept").last_good, fixed);
}

#[test]
fn a_pod_of_the_trial_not_ready_yet_is_judged_again_at_its_deadline() {
    let outcome = decided(
        Some(&recorded_good()),
        &bad(),
        &bad(),
        &Evidence::Pending(at(260)),
        false,
    );
    assert_eq!(outcome.wake_at, Some(at(260)));
    assert_eq!(outcome.status, Some(recorded_good()));
}

// The evidence.

fn trial_db() -> PostgresDB {
    db_with(Some(recorded_good()), &bad())
}

/// A server pod of `db` made from the pod template of `parameters`, its
/// PostgreSQL container in `container`.
fn server_pod(
    db: &PostgresDB,
    name: &str,
    parameters: &BTreeMap<String, String>,
    ready: bool,
    container: ContainerStatus,
) -> Pod {
    let mut of = db.clone();
    of.spec.parameters = parameters.clone();
    let mut pod = PodBuilder::named(name)
        .owned_by::<StatefulSet>("orders")
        .phase("Running")
        .ip("10.0.0.1")
        .ready(ready)
        .build();
    pod.metadata.uid = Some(format!("{name}-uid"));
    pod.metadata.annotations = Some(
        [(
            CONFIG_HASH_ANNOTATION.to_string(),
            level1_install::api::config_hash(&of),
        )]
        .into(),
    );
    let status = pod.status.get_or_insert_default();
    status.start_time = Some(Time(at(100)));
    status.container_statuses = Some(vec![ContainerStatus {
        name: level1_install::api::CONTAINER.into(),
        ..container
    }]);
    pod
}

fn exited(code: i32, message: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: code,
        message: Some(message.into()),
        ..Default::default()
    }
}

fn crash_looping() -> ContainerStatus {
    ContainerStatus {
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        last_state: Some(ContainerState {
            terminated: Some(exited(1, WAL_FATAL)),
            ..Default::default()
        }),
        restart_count: 2,
        ..Default::default()
    }
}

fn running_since(seconds: i64, ready: bool) -> ContainerStatus {
    ContainerStatus {
        ready,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(at(seconds))),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn rejected(found: Evidence) -> Rejection {
    match found {
        Evidence::Rejected(rejection) => rejection,
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn a_crash_looping_pod_of_the_trial_rejects_it_with_the_servers_fatal_line() {
    let db = trial_db();
    let observed = ObservedBuilder::new()
        .with(&server_pod(&db, "orders-0", &bad(), false, crash_looping()))
        .build();
    let found = rejected(evidence(&db, &observed, &bad(), at(200)));
    assert_eq!(found.pod, "orders-0");
    assert!(found.seen.contains("CrashLoopBackOff"), "{}", found.seen);
    assert_eq!(
        found.said.as_deref(),
        Some(
            "FATAL: WAL streaming (max_wal_senders > 0) requires wal_level \"replica\" or \"logical\""
        )
    );
}

#[test]
fn a_pod_whose_server_just_exited_with_an_error_rejects_the_trial() {
    let db = trial_db();
    let container = ContainerStatus {
        state: Some(ContainerState {
            terminated: Some(exited(1, WAL_FATAL)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let observed = ObservedBuilder::new()
        .with(&server_pod(&db, "orders-0", &bad(), false, container))
        .build();
    let found = rejected(evidence(&db, &observed, &bad(), at(200)));
    assert_eq!(found.seen, "its container exited with code 1");
}

#[test]
fn a_failing_pod_of_another_configuration_is_no_evidence_against_the_trial() {
    let db = trial_db();
    let observed = ObservedBuilder::new()
        .with(&server_pod(
            &db,
            "orders-0",
            &good(),
            false,
            crash_looping(),
        ))
        .build();
    assert_eq!(evidence(&db, &observed, &bad(), at(200)), Evidence::Clear);
}

#[test]
fn pods_failing_while_a_version_rolls_out_are_level_2s_to_roll_back() {
    let mut db = trial_db();
    db.status.get_or_insert_default().upgrade = Some(UpgradeStatus {
        from_version: "15.9".into(),
        from_image: "postgres:15.9".into(),
        to_version: db.spec.version.clone(),
        started_at: status_time(at(150)),
        phase: UpgradePhase::Rolling,
        observed_downtime_seconds: 0,
        unready_since: None,
        major: None,
    });
    let observed = ObservedBuilder::new()
        .with(&server_pod(&db, "orders-0", &bad(), false, crash_looping()))
        .build();
    assert_eq!(evidence(&db, &observed, &bad(), at(200)), Evidence::Clear);
}

#[test]
fn a_pod_of_the_trial_not_ready_within_the_bound_is_pending_then_rejects_it() {
    let db = trial_db();
    let observed = ObservedBuilder::new()
        .with(&server_pod(
            &db,
            "orders-0",
            &bad(),
            false,
            running_since(190, false),
        ))
        .build();
    let deadline = at(190).checked_add(READY_WITHIN).expect("in range");
    assert_eq!(
        evidence(&db, &observed, &bad(), at(200)),
        Evidence::Pending(deadline)
    );
    let found = rejected(evidence(&db, &observed, &bad(), deadline));
    assert!(found.seen.contains("not ready 60s"), "{}", found.seen);
    assert_eq!(found.said, None);
}

#[test]
fn a_ready_pod_of_the_trial_is_no_evidence() {
    let db = trial_db();
    let observed = ObservedBuilder::new()
        .with(&server_pod(
            &db,
            "orders-0",
            &bad(),
            true,
            running_since(100, true),
        ))
        .build();
    assert_eq!(evidence(&db, &observed, &bad(), at(1000)), Evidence::Clear);
}

fn refusing(value: &str) -> SqlAnswer {
    Ok(vec![vec![
        Some("log_timezone".into()),
        Some(value.into()),
        Some("setting could not be applied".into()),
    ]])
}

#[test]
fn a_value_the_server_refuses_on_reload_rejects_the_trial_naming_it() {
    let wanted = params(&[("log_timezone", "Bad/Zone"), ("work_mem", "8MB")]);
    let db = db_with(Some(recorded_good()), &wanted);
    let observed = ObservedBuilder::new()
        .with(&server_pod(
            &db,
            "orders-0",
            &good(),
            true,
            running_since(100, true),
        ))
        .sql(&probe_name("orders-0"), refusing("Bad/Zone"))
        .build();
    let found = rejected(evidence(&db, &observed, &wanted, at(200)));
    assert_eq!(found.parameter.as_deref(), Some("log_timezone"));
    assert_eq!(
        found.said.as_deref(),
        Some("pg_file_settings: setting could not be applied")
    );
    assert_eq!(
        rejected_parameter(&found, &["log_timezone".into()]).as_deref(),
        Some("log_timezone")
    );
    // A refused value the spec no longer asks for is not the trial's.
    let observed = ObservedBuilder::new()
        .with(&server_pod(
            &db,
            "orders-0",
            &good(),
            true,
            running_since(100, true),
        ))
        .sql(&probe_name("orders-0"), refusing("Other/Zone"))
        .build();
    assert_eq!(evidence(&db, &observed, &wanted, at(200)), Evidence::Clear);
}

#[test]
fn the_rejected_parameter_is_the_changed_one_the_server_names() {
    // The FATAL line names wal_level and max_wal_senders; only wal_level
    // changed.
    let changed = vec!["wal_level".to_string()];
    assert_eq!(
        rejected_parameter(&rejection(), &changed).as_deref(),
        Some("wal_level")
    );
    // Named in the log's HINT only.
    let log = "FATAL:  could not map anonymous shared memory: Cannot allocate memory\n\
               HINT:  This error usually means that PostgreSQL's request for a shared memory segment exceeded available memory, swap space, or huge pages. To reduce the request size (currently 70255853568 bytes), reduce PostgreSQL's shared memory usage, perhaps by reducing shared_buffers or max_connections.\n";
    let memory = Rejection {
        said: level1_install::install::server_reason(log),
        text: log.into(),
        ..rejection()
    };
    assert_eq!(
        rejected_parameter(&memory, &["shared_buffers".to_string()]).as_deref(),
        Some("shared_buffers")
    );
    // Not named at all (a word that merely contains it does not count).
    assert_eq!(
        rejected_parameter(
            &memory,
            &["huge_pages".to_string(), "connections".to_string()]
        ),
        None
    );
}

// The capability.

fn deletions(db: &PostgresDB, observed: &shared::capability::Observed) -> Vec<String> {
    let mut desired = Desired::default();
    ConfigurationGuard
        .desire(db, observed, at(200), &mut desired)
        .expect("desires");
    desired.deletions().iter().map(|d| d.name.clone()).collect()
}

#[test]
fn pods_that_failed_with_the_rejected_configuration_are_replaced() {
    let db = db_with(Some(held(None)), &bad());
    let observed = ObservedBuilder::new()
        .with(&server_pod(&db, "orders-1", &bad(), false, crash_looping()))
        .with(&server_pod(
            &db,
            "orders-0",
            &good(),
            true,
            running_since(50, true),
        ))
        .build();
    assert_eq!(deletions(&db, &observed), ["orders-1"]);
    let mut desired = Desired::default();
    ConfigurationGuard
        .desire(&db, &observed, at(200), &mut desired)
        .expect("desires");
    assert_eq!(desired.deletions()[0].uid.as_deref(), Some("orders-1-uid"));
    assert!(
        desired
            .notes
            .iter()
            .any(|n| n.type_ == EventType::Normal && n.message.contains("orders-1"))
    );
}

#[test]
fn a_pod_starting_again_after_the_rollback_is_left_to_start() {
    let db = db_with(Some(held(None)), &bad());
    // Made from the rejected template (Level 2 may keep it while the server
    // is down), started after the rollback with the restored file.
    let mut starting = server_pod(&db, "orders-0", &bad(), false, running_since(150, false));
    starting.status.get_or_insert_default().start_time = Some(Time(at(150)));
    let observed = ObservedBuilder::new().with(&starting).build();
    assert!(deletions(&db, &observed).is_empty());
}

#[test]
fn nothing_is_deleted_once_recovered_or_released() {
    let observed_of = |db: &PostgresDB| {
        ObservedBuilder::new()
            .with(&server_pod(db, "orders-0", &bad(), false, crash_looping()))
            .build()
    };
    let recovered = db_with(Some(held(Some(150))), &bad());
    assert!(deletions(&recovered, &observed_of(&recovered)).is_empty());
    let released = db_with(Some(held(None)), &params(&[("wal_level", "logical")]));
    assert!(deletions(&released, &observed_of(&released)).is_empty());
}

#[test]
fn the_guard_records_its_decision_in_status_and_degraded() {
    let db = trial_db();
    let observed = ObservedBuilder::new()
        .with(&server_pod(&db, "orders-0", &bad(), false, crash_looping()))
        .build();
    let mut draft = StatusDraft {
        now: at(200),
        ..Default::default()
    };
    ConfigurationGuard.assess(&db, &observed, &ApplyReport::default(), &mut draft);
    let status = draft
        .fields
        .autopilot
        .and_then(|a| a.configuration)
        .expect("recorded");
    assert_eq!(
        status.held_back.map(|h| h.parameters),
        Some(bad()),
        "held back"
    );
    let degraded = draft.conditions.get(DEGRADED).expect("Degraded");
    assert_eq!(degraded.reason, CONFIGURATION_REJECTED);
}

#[test]
fn a_paused_database_keeps_what_was_recorded_and_decides_nothing() {
    let mut db = trial_db();
    db.spec.paused = true;
    let observed = ObservedBuilder::new()
        .with(&server_pod(&db, "orders-0", &bad(), false, crash_looping()))
        .build();
    let mut draft = StatusDraft {
        now: at(200),
        ..Default::default()
    };
    ConfigurationGuard.assess(&db, &observed, &ApplyReport::default(), &mut draft);
    assert_eq!(
        draft.fields.autopilot.and_then(|a| a.configuration),
        Some(recorded_good())
    );
    assert!(draft.conditions.get(DEGRADED).is_none());
}

#[test]
fn the_servers_are_asked_for_refused_values_only_while_a_configuration_is_on_trial() {
    let secret = shared::testing::login_secret("orders-superuser", "postgres", "pw");
    let ready_pod = |db: &PostgresDB, parameters: &BTreeMap<String, String>| {
        server_pod(db, "orders-0", parameters, true, running_since(100, true))
    };
    let trial = trial_db();
    let observed = ObservedBuilder::new()
        .with(&secret)
        .with(&ready_pod(&trial, &bad()))
        .build();
    let probes = ConfigurationGuard.sql_probes(&trial, &observed);
    assert_eq!(
        probes.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        [probe_name("orders-0")]
    );
    let at_rest = db_with(Some(recorded_good()), &good());
    let observed = ObservedBuilder::new()
        .with(&secret)
        .with(&ready_pod(&at_rest, &good()))
        .build();
    assert!(
        ConfigurationGuard
            .sql_probes(&at_rest, &observed)
            .is_empty()
    );
}

#[test]
fn an_exit_the_server_did_not_explain_is_no_evidence_against_the_trial() {
    let db = trial_db();
    let script = "instance.sh: starting as a replica of orders-0\n\
                  instance.sh: the primary (orders-0.orders-headless) does not answer yet; exiting so the kubelet retries\n";
    let container = ContainerStatus {
        state: Some(ContainerState {
            terminated: Some(exited(1, script)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let observed = ObservedBuilder::new()
        .with(&server_pod(&db, "orders-1", &bad(), false, container))
        .build();
    assert_eq!(evidence(&db, &observed, &bad(), at(200)), Evidence::Clear);
}

#[test]
fn a_server_killed_for_its_memory_rejects_the_trial() {
    let db = trial_db();
    let container = ContainerStatus {
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("OOMKilled".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let observed = ObservedBuilder::new()
        .with(&server_pod(&db, "orders-0", &bad(), false, container))
        .build();
    let found = rejected(evidence(&db, &observed, &bad(), at(200)));
    assert_eq!(found.seen, "its container exited with code 137 (OOMKilled)");
}

// What "every instance runs it" reads.

/// A single-instance database's world with every instance ready: its
/// StatefulSet rolled out, its pod ready, and a ConfigMap rendered with
/// `in_config_map`.
fn ready_world(
    db: &PostgresDB,
    in_config_map: &BTreeMap<String, String>,
) -> shared::capability::Observed {
    let version = level1_install::api::PgVersion::parse("15").expect("a version");
    let mut sts = level1_install::api::statefulset(db, version, None);
    sts.metadata.generation = Some(1);
    sts.status = Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
        replicas: 1,
        ready_replicas: Some(1),
        updated_replicas: Some(1),
        observed_generation: Some(1),
        current_revision: Some("orders-1".into()),
        update_revision: Some("orders-1".into()),
        ..Default::default()
    });
    let mut rendered = db.clone();
    rendered.spec.parameters = in_config_map.clone();
    ObservedBuilder::new()
        .with(&sts)
        .with(&level1_install::api::config_map(&rendered))
        .with(&server_pod(
            db,
            "orders-0",
            &db.spec.parameters,
            true,
            running_since(100, true),
        ))
        .build()
}

fn assessed(
    db: &PostgresDB,
    observed: &shared::capability::Observed,
    progressing: bool,
) -> Option<ConfigurationGuardStatus> {
    let mut draft = StatusDraft {
        now: at(200),
        ..Default::default()
    };
    draft.conditions.set(
        shared::conditions::READY,
        shared::conditions::Assessment::yes("DatabaseReady", "1/1 pods ready"),
    );
    if progressing {
        draft.conditions.set(
            shared::conditions::PROGRESSING,
            shared::conditions::Assessment::yes("RollingOut", "0/1 pods run the current template"),
        );
    }
    ConfigurationGuard.assess(db, observed, &ApplyReport::default(), &mut draft);
    draft.fields.autopilot.and_then(|a| a.configuration)
}

#[test]
fn a_configuration_every_instance_is_ready_with_is_recorded_by_the_capability() {
    let db = db_with(None, &good());
    let recorded = assessed(&db, &ready_world(&db, &good()), false).expect("recorded");
    assert_eq!(recorded.last_good, good());
}

#[test]
fn a_configuration_not_yet_in_the_config_map_or_still_rolling_out_is_not_recorded() {
    let db = db_with(None, &good());
    assert_eq!(assessed(&db, &ready_world(&db, &bad()), false), None);
    assert_eq!(assessed(&db, &ready_world(&db, &good()), true), None);
}

/// Level 1's StatefulSet for `db`, its template's hash set to `hash` (as
/// Level 2 keeps it on a reload).
fn desired_with_template_hash(db: &PostgresDB, hash: &str) -> Desired {
    use shared::ext::StatefulSetExt;
    let version = level1_install::api::PgVersion::parse("15").expect("a version");
    let mut sts = level1_install::api::statefulset(db, version, None);
    sts.set_template_annotation(CONFIG_HASH_ANNOTATION, hash);
    let mut desired = Desired::default();
    desired.add(&sts).expect("serialises");
    desired
}

fn template_hash(desired: &Desired) -> Option<String> {
    desired.objects()[0].value["spec"]["template"]["metadata"]["annotations"]
        [CONFIG_HASH_ANNOTATION]
        .as_str()
        .map(String::from)
}

#[test]
fn a_template_left_with_the_rejected_configurations_hash_gets_the_hash_of_what_it_runs() {
    let db = db_with(Some(held(Some(150))), &bad());
    let effective = crate::autopilot::effective::effective_spec(&db);
    let mut rejected = db.clone();
    rejected.spec.parameters = bad();
    let rejected_hash = level1_install::api::config_hash(&rejected);
    let mut desired = desired_with_template_hash(&effective, &rejected_hash);
    ConfigurationGuard
        .desire(
            &effective,
            &ObservedBuilder::new().written_spec(db.spec.clone()).build(),
            at(200),
            &mut desired,
        )
        .expect("desires");
    assert_eq!(
        template_hash(&desired),
        Some(level1_install::api::config_hash(&effective))
    );
    // A hash Level 2 kept for a reload of something else stays.
    let mut desired = desired_with_template_hash(&effective, "older");
    ConfigurationGuard
        .desire(
            &effective,
            &ObservedBuilder::new().written_spec(db.spec.clone()).build(),
            at(200),
            &mut desired,
        )
        .expect("desires");
    assert_eq!(template_hash(&desired).as_deref(), Some("older"));
}
