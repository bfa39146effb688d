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
        observed.insert_sql(
            FILE_IS_NEWER,
            Ok(vec![vec![Some(server.file_is_newer.to_string())]]),
        );
    }
    observed
}

struct Server {
    pending: &'static [&'static str],
    file: &'static [(&'static str, &'static str)],
    file_is_newer: bool,
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
