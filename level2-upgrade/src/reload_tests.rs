//! Unit tests of the reload-or-restart decision.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use shared::api::{ConfigurationMethod, PostgresDB};
use shared::capability::{ApplyReport, Capability, Desired, Observed, StatusDraft};
use shared::conditions::PROGRESSING;

use super::*;
use crate::tests::observed_pod;
use level1_install::api::{self as level1, PgVersion};
use shared::testing::{at, put};

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A database at 16.4 with `parameters`.
fn db(parameters: &[(&str, &str)]) -> PostgresDB {
    let mut db = crate::tests::db("16.4", Some("16.4"));
    db.spec.parameters = params(parameters);
    db
}

/// The cluster as Level 1 left it for `running` (its ConfigMap and
/// StatefulSet), with pod orders-0 answering the settings probes with
/// `server` (nothing when `None`).
fn cluster(running: &PostgresDB, server: Option<Server>) -> Observed {
    let mut observed = observed_pod(None);
    let mut config: ConfigMap = level1::config_map(running);
    config.metadata.namespace = Some("shop".into());
    put(&mut observed, &config);
    let sts: StatefulSet = level1::statefulset(running, PgVersion::parse("16.4").expect("v"), None);
    put(&mut observed, &sts);
    if let Some(server) = server {
        let list = |names: &[&str]| Ok(names.iter().map(|n| vec![Some(n.to_string())]).collect());
        observed.insert_sql(POSTMASTER, list(&["shared_buffers", "max_connections"]));
        observed.insert_sql(PENDING_RESTART, list(server.pending));
        observed.insert_sql(
            FILE,
            Ok(server
                .file
                .iter()
                .map(|(n, v)| vec![Some(n.to_string()), Some(v.to_string())])
                .collect()),
        );
        // Loaded at 1000.5 s; the file from a later second, or an earlier one.
        let (modified, loaded) = server.file_times.unwrap_or(if server.file_is_newer {
            (1_001_000_000, 1_000_500_000)
        } else {
            (999_000_000, 1_000_500_000)
        });
        observed.insert_sql(
            FILE_TIMES,
            Ok(vec![vec![
                Some(modified.to_string()),
                Some(loaded.to_string()),
            ]]),
        );
    }
    observed
}

struct Server {
    pending: &'static [&'static str],
    file: &'static [(&'static str, &'static str)],
    file_is_newer: bool,
    /// The file's modification and the server's last load, in microseconds
    /// since the epoch as the server reports them, instead of times that
    /// say `file_is_newer`.
    file_times: Option<(i64, i64)>,
}

fn desired_for(db: &PostgresDB, observed: &Observed) -> Desired {
    let mut desired = Desired::default();
    for capability in level1_install::api::capabilities() {
        capability
            .desire(db, observed, at(1_000), &mut desired)
            .expect("desires");
    }
    Reload
        .desire(db, observed, at(1_000), &mut desired)
        .expect("desires");
    desired
}

fn template_hash_of(desired: &Desired) -> String {
    let sts = desired
        .objects()
        .iter()
        .find(|o| o.resource.kind == "StatefulSet")
        .expect("a StatefulSet");
    sts.value["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        .as_str()
        .expect("annotated")
        .to_string()
}

#[test]
fn level1_configuration_files_parse_back_into_parameters() {
    let conf =
        "# comment\nlisten_addresses = '*'\nwork_mem = '8MB'\nsearch_path = '\"$user\", it''s'\n";
    let parsed = parse_conf(conf);
    assert_eq!(parsed["work_mem"], "8MB");
    assert_eq!(parsed["search_path"], "\"$user\", it's");
    assert_eq!(
        user_parameters(conf).keys().collect::<Vec<_>>(),
        ["search_path", "work_mem"]
    );
}

#[test]
fn set_changed_and_removed_parameters_all_count_as_changed() {
    let before = params(&[("work_mem", "4MB"), ("jit", "off")]);
    let after = params(&[("work_mem", "8MB"), ("statement_timeout", "5s")]);
    assert_eq!(
        changed_parameters(&before, &after),
        ["jit", "statement_timeout", "work_mem"]
    );
}

#[test]
fn a_change_of_a_postmaster_parameter_needs_a_restart() {
    let server = ServerSettings {
        postmaster: Some(["shared_buffers".to_string()].into()),
        pending_restart: Some(Default::default()),
        ..Default::default()
    };
    let plan = plan(
        &params(&[("shared_buffers", "128MB")]),
        &params(&[("shared_buffers", "256MB")]),
        &server,
    );
    assert_eq!(plan, Plan::Restart(vec!["shared_buffers".into()]));
}

#[test]
fn a_parameter_the_server_reports_pending_restart_for_needs_a_restart() {
    let server = ServerSettings {
        postmaster: Some(Default::default()),
        pending_restart: Some(["max_connections".to_string()].into()),
        ..Default::default()
    };
    let same = params(&[("max_connections", "50")]);
    assert_eq!(
        plan(&same, &same, &server),
        Plan::Restart(vec!["max_connections".into()])
    );
}

#[test]
fn without_the_server_s_answers_nothing_is_decided() {
    let plan = plan(
        &params(&[]),
        &params(&[("work_mem", "8MB")]),
        &ServerSettings::default(),
    );
    assert_eq!(plan, Plan::Unknown);
}

#[test]
fn a_reloadable_change_keeps_the_pods_until_the_file_arrives() {
    let before = db(&[("work_mem", "4MB")]);
    let after = db(&[("work_mem", "8MB")]);
    // The file in the pod still has the old value.
    let observed = cluster(
        &before,
        Some(Server {
            pending: &[],
            file: &[("work_mem", "4MB")],
            file_is_newer: false,
            file_times: None,
        }),
    );
    let desired = desired_for(&after, &observed);
    assert_eq!(template_hash_of(&desired), level1::config_hash(&before));
    assert!(desired.sql().is_empty(), "nothing to reload yet");
}

#[test]
fn a_reloadable_change_is_reloaded_once_the_new_file_is_in_the_pod() {
    let before = db(&[("work_mem", "4MB")]);
    let after = db(&[("work_mem", "8MB")]);
    let mut observed = cluster(
        &before,
        Some(Server {
            pending: &[],
            file: &[("work_mem", "8MB"), ("listen_addresses", "*")],
            file_is_newer: true,
            file_times: None,
        }),
    );
    // The ConfigMap already holds the new parameters (written a reconcile ago).
    let mut config = level1::config_map(&after);
    config.metadata.namespace = Some("shop".into());
    put(&mut observed, &config);
    let desired = desired_for(&after, &observed);
    assert_eq!(template_hash_of(&desired), level1::config_hash(&before));
    let reload = desired.sql();
    assert_eq!(reload.len(), 1);
    assert_eq!(reload[0].statement, "SELECT pg_reload_conf()::text");
    assert_eq!(reload[0].target.pod, "orders-0");
}

#[test]
fn a_restart_change_lets_level1_restart_the_pods_and_says_so() {
    let before = db(&[("shared_buffers", "128MB")]);
    let after = db(&[("shared_buffers", "256MB")]);
    let observed = cluster(
        &before,
        Some(Server {
            pending: &[],
            file: &[("shared_buffers", "128MB")],
            file_is_newer: false,
            file_times: None,
        }),
    );
    let desired = desired_for(&after, &observed);
    assert_eq!(template_hash_of(&desired), level1::config_hash(&after));
    assert!(
        desired
            .notes
            .iter()
            .any(|n| n.reason == "RestartingForParameters" && n.message.contains("shared_buffers"))
    );
}

#[test]
fn an_unreachable_server_is_not_restarted_for_a_change() {
    let before = db(&[("work_mem", "4MB")]);
    let after = db(&[("work_mem", "8MB")]);
    let desired = desired_for(&after, &cluster(&before, None));
    assert_eq!(template_hash_of(&desired), level1::config_hash(&before));
}

#[test]
fn at_rest_the_server_is_not_asked_anything() {
    let running = db(&[("work_mem", "4MB")]);
    let observed = cluster(&running, None);
    assert!(Reload.sql_probes(&running, &observed).is_empty());
    let changed = db(&[("work_mem", "8MB")]);
    let probes = Reload.sql_probes(&changed, &observed);
    assert_eq!(probes.len(), 4);
    assert!(probes.iter().all(|p| p.target.pod == "orders-0"));
}

#[test]
fn a_setting_the_server_took_from_its_command_line_is_never_reported_pending() {
    let changed = db(&[("work_mem", "8MB")]);
    let observed = cluster(&db(&[("work_mem", "4MB")]), None);
    let probes = Reload.sql_probes(&changed, &observed);
    let pending = probes
        .iter()
        .find(|p| p.name == PENDING_RESTART)
        .expect("a pending_restart probe");
    assert!(
        pending.statement.contains("source <> 'command line'"),
        "{}",
        pending.statement
    );
}

#[test]
fn status_says_a_change_was_reloaded_and_when_it_is_applied() {
    let before = db(&[("work_mem", "4MB")]);
    let after = db(&[("work_mem", "8MB")]);
    let observed = cluster(
        &before,
        Some(Server {
            pending: &[],
            file: &[("work_mem", "4MB")],
            file_is_newer: false,
            file_times: None,
        }),
    );
    let mut draft = StatusDraft::default();
    Reload.assess(&after, &observed, &ApplyReport::default(), &mut draft);
    let configuration = draft.fields.configuration.expect("reported");
    assert_eq!(configuration.changed, ["work_mem"]);
    assert_eq!(configuration.applied_by, ConfigurationMethod::Reload);
    assert!(!configuration.applied);
    assert!(draft.conditions.is_true(PROGRESSING));

    // A reconcile later the ConfigMap is written and the reload ran.
    let mut after_reload = after.clone();
    after_reload.status.as_mut().expect("status").configuration = Some(configuration);
    let mut observed = observed;
    let mut config = level1::config_map(&after);
    config.metadata.namespace = Some("shop".into());
    put(&mut observed, &config);
    let report = ApplyReport {
        sql_ran: vec![RELOADED.into()],
        ..Default::default()
    };
    let mut draft = StatusDraft::default();
    Reload.assess(&after_reload, &observed, &report, &mut draft);
    let configuration = draft.fields.configuration.expect("reported");
    assert!(configuration.applied);
    assert_eq!(configuration.changed, ["work_mem"]);
    assert!(!draft.conditions.is_true(PROGRESSING));
}

/// The cluster a reconcile after the spec's change sees: the ConfigMap
/// already holds `after` (written a reconcile ago), the pods run with
/// `before`'s hash, and status says the change is being reloaded.
fn after_the_configmap_write(
    before: &PostgresDB,
    after: &PostgresDB,
    server: Option<Server>,
    applied: bool,
) -> (PostgresDB, Observed) {
    let mut observed = cluster(before, server);
    let mut config = level1::config_map(after);
    config.metadata.namespace = Some("shop".into());
    put(&mut observed, &config);
    let mut db = after.clone();
    db.status.as_mut().expect("status").configuration = Some(shared::api::ConfigurationStatus {
        changed: vec!["work_mem".into()],
        applied_by: ConfigurationMethod::Reload,
        applied,
        pending_restart: Vec::new(),
    });
    (db, observed)
}

#[test]
fn a_file_modified_in_the_same_second_as_the_last_load_counts_as_newer() {
    // PostgreSQL reports the file's modification in whole seconds: a file
    // written at 1000.9 s reads as 1000 s, before a load at 1000.4 s.
    assert!(file_is_newer(1_000_000_000, 1_000_400_000));
    assert!(file_is_newer(1_001_000_000, 1_000_400_000));
    assert!(!file_is_newer(999_000_000, 1_000_400_000));
    assert!(!file_is_newer(999_000_000, 1_000_000_000));
}

#[test]
fn a_file_delivered_in_the_second_the_server_loaded_its_configuration_is_reloaded() {
    let before = db(&[("work_mem", "4MB")]);
    let after = db(&[("work_mem", "8MB")]);
    // The server loaded its file at 1000.4 s; the new file arrived at
    // 1000.9 s, which pg_stat_file reports as 1000 s.
    let (db, observed) = after_the_configmap_write(
        &before,
        &after,
        Some(Server {
            pending: &[],
            file: &[("work_mem", "8MB"), ("listen_addresses", "*")],
            file_is_newer: true,
            file_times: Some((1_000_000_000, 1_000_400_000)),
        }),
        false,
    );
    let desired = desired_for(&db, &observed);
    let reload = desired.sql();
    assert_eq!(reload.len(), 1, "the new file is reloaded");
    assert_eq!(reload[0].statement, "SELECT pg_reload_conf()::text");

    // Had the reload not run, the change is not applied.
    let mut draft = StatusDraft::default();
    Reload.assess(&db, &observed, &ApplyReport::default(), &mut draft);
    assert!(!draft.fields.configuration.expect("reported").applied);
    assert!(draft.conditions.is_true(PROGRESSING));
}

#[test]
fn a_failed_reload_leaves_the_change_unapplied_and_is_asked_again() {
    let before = db(&[("work_mem", "4MB")]);
    let after = db(&[("work_mem", "8MB")]);
    let server = || Server {
        pending: &[],
        file: &[("work_mem", "8MB")],
        file_is_newer: true,
        file_times: None,
    };
    let (db, observed) = after_the_configmap_write(&before, &after, Some(server()), false);
    let failed = ApplyReport {
        sql_failed: vec![RELOADED.into()],
        ..Default::default()
    };
    let mut draft = StatusDraft::default();
    Reload.assess(&db, &observed, &failed, &mut draft);
    let configuration = draft.fields.configuration.expect("reported");
    assert!(!configuration.applied);
    assert!(
        draft.conditions.is_true(PROGRESSING),
        "the core looks again soon"
    );

    // The next reconcile asks for the reload again.
    let mut next = db.clone();
    next.status.as_mut().expect("status").configuration = Some(configuration);
    let desired = desired_for(&next, &observed);
    assert_eq!(desired.sql().len(), 1);
}

#[test]
fn a_server_that_does_not_answer_keeps_an_unapplied_change_in_progress() {
    let before = db(&[("work_mem", "4MB")]);
    let after = db(&[("work_mem", "8MB")]);
    // The reload failed a reconcile ago; now the probes get no answer.
    let (db, observed) = after_the_configmap_write(&before, &after, None, false);
    let mut draft = StatusDraft::default();
    Reload.assess(&db, &observed, &ApplyReport::default(), &mut draft);
    assert!(!draft.fields.configuration.expect("reported").applied);
    assert!(
        draft.conditions.is_true(PROGRESSING),
        "not settled, so the core looks again soon rather than at its resync"
    );
}

#[test]
fn a_server_that_does_not_answer_for_a_moment_keeps_a_reloaded_change_applied() {
    let before = db(&[("work_mem", "4MB")]);
    let after = db(&[("work_mem", "8MB")]);
    let (db, observed) = after_the_configmap_write(&before, &after, None, true);
    let mut draft = StatusDraft::default();
    Reload.assess(&db, &observed, &ApplyReport::default(), &mut draft);
    assert!(draft.fields.configuration.expect("reported").applied);
    assert!(!draft.conditions.is_true(PROGRESSING));
}
