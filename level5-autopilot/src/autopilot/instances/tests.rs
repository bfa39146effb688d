use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use shared::capability::{Desired, Observed};
use shared::ha::{HighAvailabilityStatus, ReplicationSpec};
use shared::keys::{FENCE_LABEL, ROLE_LABEL, VERSION_ANNOTATION};
use shared::testing::{DbBuilder, ObservedBuilder, PodBuilder, at, login_secret};

use super::replication::{self, ROLE_PROBE, SLOTS_PROBE, SlotChanges, slot_changes};
use super::template::{INSTANCE_SCRIPT_ANNOTATION, SCRIPT_DIR};
use super::*;
use crate::autopilot::failover::Decision;

fn decision(primary: &str, serving: Option<&str>, replicas: i32) -> Decision {
    Decision {
        recorded_primary: primary.into(),
        serving_primary: serving.map(String::from),
        bootstrapped: true,
        rebuild: Vec::new(),
        replicas,
        delete_pods: Vec::new(),
        promote: None,
        current_primary: serving.map(String::from),
        status: HighAvailabilityStatus::default(),
        available: shared::conditions::Assessment::unknown("T", "t"),
        progressing: None,
        events: Vec::new(),
        wake_at: None,
    }
}

/// Level 1's objects for `db`, as Level 1's desire makes them.
fn level1_desired(db: &PostgresDB) -> Desired {
    let mut desired = Desired::default();
    let observed = Observed::default();
    for capability in level1_install::api::capabilities() {
        capability
            .desire(db, &observed, at(0), &mut desired)
            .expect("level 1 desires");
    }
    desired
}

fn object<'a>(desired: &'a Desired, kind: &str, name: &str) -> Option<&'a serde_json::Value> {
    desired
        .objects()
        .iter()
        .find(|o| o.resource.kind == kind && o.name == name)
        .map(|o| &o.value)
}

fn server_pod(name: &str, ip: &str, annotated: bool) -> Pod {
    let mut pod = PodBuilder::named(name)
        .owned_by::<StatefulSet>("orders")
        .phase("Running")
        .ip(ip)
        .ready(true)
        .build();
    if annotated {
        pod.metadata.annotations =
            Some([(INSTANCE_SCRIPT_ANNOTATION.to_string(), "h".to_string())].into());
    }
    pod
}

fn db(instances: i32) -> PostgresDB {
    DbBuilder::named("orders").instances(instances).build()
}

fn live_sts(db: &PostgresDB, instance_mode: bool) -> StatefulSet {
    let mut sts = level1_install::api::statefulset(
        db,
        level1_install::api::PgVersion::parse("16").expect("a version"),
        None,
    );
    if instance_mode {
        super::template::into_instance_mode(&mut sts, db, 1);
    }
    sts
}

#[test]
fn a_single_instance_database_is_left_exactly_as_level_4_runs_it() {
    let db = db(1);
    let observed = ObservedBuilder::new()
        .with(&live_sts(&db, false))
        .with(&server_pod("orders-0", "10.0.0.1", false))
        .build();
    let before = level1_desired(&db);
    let mut after = before.clone();
    desire(
        &db,
        &observed,
        &Topology::default(),
        &decision("orders-0", Some("orders-0"), 1),
        &mut after,
    )
    .expect("desires");
    let values = |d: &Desired| {
        d.objects()
            .iter()
            .map(|o| o.value.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&before), values(&after));
    assert!(after.sql().is_empty());
    assert!(probes(&db, &observed).is_empty());
}

#[test]
fn instance_mode_starts_the_postgres_container_through_the_instance_script_with_the_roles_in_its_environment()
 {
    let db = db(3);
    let observed = ObservedBuilder::new()
        .with(&live_sts(&db, false))
        .with(&server_pod("orders-0", "10.0.0.1", true))
        .build();
    let mut desired = level1_desired(&db);
    desire(
        &db,
        &observed,
        &Topology::default(),
        &decision("orders-0", Some("orders-0"), 3),
        &mut desired,
    )
    .expect("desires");
    let sts = object(&desired, "StatefulSet", "orders").expect("the StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 3);
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["command"],
        serde_json::json!(["sh", format!("{SCRIPT_DIR}/instance.sh")])
    );
    assert_eq!(
        container["args"],
        serde_json::json!(["-c", "config_file=/etc/postgresql/postgresql.conf"])
    );
    let env = container["env"].as_array().expect("env");
    let var = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    assert_eq!(
        var("POD_NAME").expect("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        var("PRIMARY_HOST").expect("PRIMARY_HOST")["value"],
        "orders"
    );
    assert_eq!(
        var("PGDB_PRIMARY").expect("PGDB_PRIMARY")["valueFrom"]["configMapKeyRef"],
        serde_json::json!({"name": "orders-roles", "key": "primary", "optional": false})
    );
    assert_eq!(
        var("PGDB_REBUILD").expect("PGDB_REBUILD")["valueFrom"]["configMapKeyRef"]["optional"],
        true
    );
    assert_eq!(
        var("REPLICATION_PASSWORD").expect("REPLICATION_PASSWORD")["valueFrom"]["secretKeyRef"]["name"],
        "orders-replication"
    );
    assert!(var("PGDB_BOOTSTRAPPED").is_some());
    assert!(
        sts["spec"]["template"]["metadata"]["annotations"][INSTANCE_SCRIPT_ANNOTATION].is_string()
    );
    let roles = object(&desired, "ConfigMap", "orders-roles").expect("the roles ConfigMap");
    assert_eq!(roles["data"]["primary"], "orders-0");
    assert_eq!(roles["data"]["bootstrapped"], "true");
    assert_eq!(roles["data"]["rebuild"], "");
    assert!(
        roles["data"]["instance.sh"]
            .as_str()
            .is_some_and(|s| s.contains("pg_basebackup"))
    );
    let config = object(&desired, "ConfigMap", "orders-config").expect("Level 1's ConfigMap");
    assert!(
        config["data"]["pg_hba.conf"]
            .as_str()
            .is_some_and(|hba| hba.contains("replication  streaming_replica  0.0.0.0/0"))
    );
}

#[test]
fn no_replica_is_added_before_the_primary_s_pod_runs_the_instance_script() {
    let db = db(3);
    let observed = ObservedBuilder::new()
        .with(&live_sts(&db, false))
        .with(&server_pod("orders-0", "10.0.0.1", false))
        .build();
    let mut desired = level1_desired(&db);
    desire(
        &db,
        &observed,
        &Topology::default(),
        &decision("orders-0", Some("orders-0"), 3),
        &mut desired,
    )
    .expect("desires");
    let sts = object(&desired, "StatefulSet", "orders").expect("the StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 1);
    assert!(
        sts["spec"]["template"]["metadata"]["annotations"][INSTANCE_SCRIPT_ANNOTATION].is_string()
    );
}

#[test]
fn instance_mode_is_sticky_at_one_instance() {
    let db = db(1);
    let observed = ObservedBuilder::new().with(&live_sts(&db, true)).build();
    assert!(is_instance_mode(&db, &observed));
    let mut desired = level1_desired(&db);
    desire(
        &db,
        &observed,
        &Topology::default(),
        &decision("orders-0", Some("orders-0"), 1),
        &mut desired,
    )
    .expect("desires");
    let sts = object(&desired, "StatefulSet", "orders").expect("the StatefulSet");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["command"][0],
        "sh"
    );
}

#[test]
fn the_read_write_service_selects_the_serving_primary_and_is_fenced_without_one() {
    let db = db(2);
    let observed = ObservedBuilder::new()
        .with(&live_sts(&db, true))
        .with(&server_pod("orders-0", "10.0.0.1", true))
        .with(&server_pod("orders-1", "10.0.0.2", true))
        .build();
    let mut serving = level1_desired(&db);
    desire(
        &db,
        &observed,
        &Topology::default(),
        &decision("orders-0", Some("orders-0"), 2),
        &mut serving,
    )
    .expect("desires");
    let rw = object(&serving, "Service", "orders").expect("the read-write Service");
    assert_eq!(rw["spec"]["selector"][ROLE_LABEL], "primary");
    assert!(rw["spec"]["selector"][FENCE_LABEL].is_null());
    let ro = object(&serving, "Service", "orders-ro").expect("the read-only Service");
    assert_eq!(ro["spec"]["selector"][ROLE_LABEL], "replica");
    let any = object(&serving, "Service", "orders-r").expect("the any-instance Service");
    assert!(any["spec"]["selector"][ROLE_LABEL].is_null());
    assert_eq!(
        any["spec"]["selector"]["app.kubernetes.io/instance"],
        "orders"
    );
    assert_eq!(
        object(&serving, "Pod", "orders-0").expect("a label")["metadata"]["labels"][ROLE_LABEL],
        "primary"
    );
    assert_eq!(
        object(&serving, "Pod", "orders-1").expect("a label")["metadata"]["labels"][ROLE_LABEL],
        "replica"
    );
    let pod_patch = object(&serving, "Pod", "orders-0").expect("a label");
    assert!(
        pod_patch.get("spec").is_none_or(|s| s.is_null()),
        "a role label is a metadata-only apply"
    );

    let mut fenced = level1_desired(&db);
    desire(
        &db,
        &observed,
        &Topology::default(),
        &decision("orders-1", None, 2),
        &mut fenced,
    )
    .expect("desires");
    let rw = object(&fenced, "Service", "orders").expect("the read-write Service");
    assert_eq!(rw["spec"]["selector"][FENCE_LABEL], "failover");
    assert_eq!(
        object(&fenced, "Pod", "orders-0").expect("a label")["metadata"]["labels"][ROLE_LABEL],
        "replica"
    );
    assert_eq!(
        object(&fenced, "ConfigMap", "orders-roles").expect("roles")["data"]["primary"],
        "orders-1"
    );
}

#[test]
fn the_replication_password_is_generated_once_and_kept() {
    let db = db(2);
    let kept = replication::replication_secret(
        &db,
        Some(&login_secret(
            "orders-replication",
            "streaming_replica",
            "old",
        )),
        || "new".into(),
    );
    assert_eq!(kept.data.expect("data")["password"].0, b"old");
    let made = replication::replication_secret(&db, None, || "new".into());
    assert_eq!(made.data.expect("data")["password"].0, b"new");
}

fn sql_reasons(desired: &Desired) -> Vec<(String, Vec<(&'static str, String)>)> {
    desired
        .sql()
        .iter()
        .map(|a| (a.reason.clone(), a.settings.0.clone()))
        .collect()
}

fn answered(rows: &[&str]) -> shared::sql::SqlAnswer {
    Ok(rows.iter().map(|r| vec![Some(r.to_string())]).collect())
}

#[test]
fn the_replication_login_is_made_when_missing_with_its_password_as_a_setting() {
    let db = db(2);
    let base = || {
        ObservedBuilder::new()
            .with(&live_sts(&db, true))
            .with(&server_pod("orders-0", "10.0.0.1", true))
            .with(&login_secret("orders-superuser", "postgres", "pw"))
            .with(&login_secret(
                "orders-replication",
                "streaming_replica",
                "secret",
            ))
            .sql(SLOTS_PROBE, answered(&["instance_1"]))
    };
    let run = |observed: Observed| {
        let mut desired = level1_desired(&db);
        desire(
            &db,
            &observed,
            &Topology::default(),
            &decision("orders-0", Some("orders-0"), 2),
            &mut desired,
        )
        .expect("desires");
        desired
    };
    let missing = run(base().sql(ROLE_PROBE, answered(&["false"])).build());
    let login = missing
        .sql()
        .iter()
        .find(|a| a.reason == replication::LOGIN_READY)
        .expect("the login is made");
    assert_eq!(
        login.settings.0,
        vec![("pgdb.replication_password", "secret".to_string())]
    );
    assert!(!login.statement.contains("secret"));
    assert_eq!(login.target.pod, "orders-0");
    let present = run(base().sql(ROLE_PROBE, answered(&["true"])).build());
    assert!(
        sql_reasons(&present).is_empty(),
        "at rest nothing runs: {:?}",
        sql_reasons(&present)
    );
}

#[test]
fn slots_are_made_for_the_other_instances_and_dropped_for_instances_scaled_away() {
    let existing = ["instance_1", "instance_2", "instance_5"]
        .map(String::from)
        .into();
    assert_eq!(
        slot_changes(&existing, 2, 0),
        SlotChanges {
            create: Vec::new(),
            drop: vec!["instance_2".into(), "instance_5".into()],
        }
    );
    assert_eq!(
        slot_changes(&Default::default(), 3, 1),
        SlotChanges {
            create: vec!["instance_0".into(), "instance_2".into()],
            drop: Vec::new(),
        }
    );
    let db = db(3);
    let observed = ObservedBuilder::new()
        .with(&live_sts(&db, true))
        .with(&server_pod("orders-0", "10.0.0.1", true))
        .with(&login_secret("orders-superuser", "postgres", "pw"))
        .with(&login_secret(
            "orders-replication",
            "streaming_replica",
            "secret",
        ))
        .sql(ROLE_PROBE, answered(&["true"]))
        .sql(SLOTS_PROBE, answered(&["instance_1"]))
        .build();
    let mut desired = level1_desired(&db);
    desire(
        &db,
        &observed,
        &Topology::default(),
        &decision("orders-0", Some("orders-0"), 3),
        &mut desired,
    )
    .expect("desires");
    assert_eq!(
        sql_reasons(&desired),
        vec![(
            replication::SLOT_CREATED.to_string(),
            vec![("pgdb.slot", "instance_2".to_string())]
        )]
    );
}

#[test]
fn synchronous_replication_is_written_into_postgresql_conf_and_reloaded_where_the_file_has_it() {
    let db = DbBuilder::named("orders")
        .instances(2)
        .replication(ReplicationSpec {
            synchronous: true,
            synchronous_replicas: 1,
        })
        .build();
    let observed = ObservedBuilder::new()
        .with(&live_sts(&db, true))
        .with(&server_pod("orders-0", "10.0.0.1", true))
        .with(&login_secret("orders-superuser", "postgres", "pw"))
        .with(&login_secret(
            "orders-replication",
            "streaming_replica",
            "secret",
        ))
        .sql(ROLE_PROBE, answered(&["true"]))
        .sql(SLOTS_PROBE, answered(&["instance_1"]))
        .sql(
            &replication::synchronous_probe("orders-0"),
            Ok(vec![vec![Some(String::new()), Some("ANY 1 (*)".into())]]),
        )
        .build();
    let mut desired = level1_desired(&db);
    desire(
        &db,
        &observed,
        &Topology::default(),
        &decision("orders-0", Some("orders-0"), 2),
        &mut desired,
    )
    .expect("desires");
    let config = object(&desired, "ConfigMap", "orders-config").expect("Level 1's ConfigMap");
    assert!(
        config["data"]["postgresql.conf"]
            .as_str()
            .is_some_and(|c| c.contains("synchronous_standby_names = 'ANY 1 (*)'"))
    );
    assert_eq!(
        sql_reasons(&desired),
        vec![(replication::SYNCHRONOUS_RELOADED.to_string(), Vec::new())]
    );
    // The pod template's configuration hash is Level 1's: no restart.
    let level1 = level1_desired(&db);
    let hash = |d: &Desired| {
        object(d, "StatefulSet", "orders").expect("sts")["spec"]["template"]["metadata"]["annotations"]
            [shared::keys::CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_eq!(hash(&desired), hash(&level1));
    assert!(progressing(&db, &observed).is_some());
}

#[test]
fn bad_high_availability_specs_are_refused_naming_the_field() {
    let fields = |db: &PostgresDB, observed: &Observed| {
        validate(db, observed)
            .into_iter()
            .map(|p| p.field)
            .collect::<Vec<_>>()
    };
    let none = Observed::default();
    assert_eq!(fields(&db(0), &none), ["spec.instances"]);
    let sync_alone = DbBuilder::named("orders")
        .replication(ReplicationSpec {
            synchronous: true,
            synchronous_replicas: 1,
        })
        .build();
    assert_eq!(
        fields(&sync_alone, &none),
        ["spec.replication.synchronousReplicas"]
    );
    let too_many = DbBuilder::named("orders")
        .instances(2)
        .replication(ReplicationSpec {
            synchronous: true,
            synchronous_replicas: 2,
        })
        .build();
    assert_eq!(
        fields(&too_many, &none),
        ["spec.replication.synchronousReplicas"]
    );
    let elsewhere = DbBuilder::named("orders")
        .instances(2)
        .primary("orders-2")
        .build();
    assert_eq!(fields(&elsewhere, &none), ["spec.primary"]);
    let stranger = DbBuilder::named("orders")
        .instances(2)
        .primary("billing-0")
        .build();
    assert_eq!(fields(&stranger, &none), ["spec.primary"]);
    assert!(
        fields(
            &DbBuilder::named("orders")
                .instances(2)
                .primary("orders-1")
                .build(),
            &none
        )
        .is_empty()
    );
    let by_hand = DbBuilder::named("orders")
        .instances(2)
        .parameter("synchronous_standby_names", "*")
        .build();
    assert_eq!(
        fields(&by_hand, &none),
        ["spec.parameters.synchronous_standby_names"]
    );
}

#[test]
fn a_major_upgrade_with_replicas_is_refused() {
    let db = DbBuilder::named("orders")
        .instances(2)
        .version("17")
        .build();
    let mut sts = live_sts(&db, true);
    sts.set_template_annotation(VERSION_ANNOTATION, "16");
    let observed = ObservedBuilder::new().with(&sts).build();
    let problems = validate(&db, &observed);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "spec.version");
    assert_eq!(problems[0].reason, REFUSED_MAJOR_WITH_REPLICAS);
    let single = DbBuilder::named("orders")
        .instances(1)
        .version("17")
        .build();
    let observed = ObservedBuilder::new()
        .with(&live_sts(&single, false))
        .build();
    assert!(validate(&single, &observed).is_empty());
}
