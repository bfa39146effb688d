//! Unit tests of Level 1's pure parts: the desired objects built from
//! representative specs, spec validation, and the reconcile decisions the
//! core makes with this level (what to create, what to leave alone, when to
//! write status).

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ApiResource;
use shared::api::PostgresDB;
use shared::apply::Change;
use shared::capability::{ApplyReport, Desired, Observed};
use shared::conditions::{DEGRADED, READY};
use shared::reconcile::{Decision, assess, decide, next_status};
use shared::testing::{
    DbBuilder, ObservedBuilder, PodBuilder, assert_reads_what_it_applies, at, raw,
};

use crate::install::{Install, current_storage_size, generate_password};
use crate::objects::{self, Names};
use crate::version::PgVersion;
use shared::capability::Capability;
use shared::capability::EventType;
use shared::conditions::ConditionStatus;

fn db() -> PostgresDB {
    DbBuilder::named("orders").build()
}

/// What the cluster would hold after the changes were applied: the applied
/// bodies plus a resourceVersion, as the API server would return them.
fn observed_after(decision: &Decision) -> Observed {
    let mut observed = Observed::default();
    if let Decision::Apply { changes, .. } = decision {
        for (object, _) in changes {
            let mut value = object.value.clone();
            value["metadata"]["resourceVersion"] = "1".into();
            observed.insert(
                &object.resource,
                serde_json::from_value(value).expect("is an object"),
            );
        }
    }
    observed
}

fn level() -> shared::Level {
    crate::level()
}

fn changes(decision: &Decision) -> Vec<(String, Change)> {
    match decision {
        Decision::Apply { changes, .. } => changes
            .iter()
            .map(|(o, c)| (format!("{}/{}", o.resource.kind, o.name), *c))
            .collect(),
        other => panic!("expected changes, got {other:?}"),
    }
}

#[test]
fn a_new_database_creates_its_secrets_config_services_and_statefulset() {
    let decision = decide(&level(), &db(), &Observed::default(), at(1_000)).expect("decides");
    let created = changes(&decision);
    let names: Vec<&str> = created.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Secret/orders-credentials",
            "Secret/orders-superuser",
            "ConfigMap/orders-config",
            "Service/orders-headless",
            "Service/orders",
            "StatefulSet/orders"
        ]
    );
    assert!(created.iter().all(|(_, c)| *c == Change::Create));
}

#[test]
fn at_rest_a_reconcile_writes_nothing() {
    let db = db();
    let first = decide(&level(), &db, &Observed::default(), at(1_000)).expect("decides");
    let observed = observed_after(&first);
    let second = decide(&level(), &db, &observed, at(1_000)).expect("decides");
    assert_eq!(changes(&second), []);
}

#[test]
fn an_edited_child_is_repaired_and_a_deleted_one_recreated() {
    let db = db();
    let first = decide(&level(), &db, &Observed::default(), at(1_000)).expect("decides");
    let mut observed = Observed::default();
    if let Decision::Apply { changes, .. } = &first {
        for (object, _) in changes {
            let mut value = object.value.clone();
            if object.resource.kind == "ConfigMap" {
                value["data"]["postgresql.conf"] = "edited by hand".into();
            }
            if object.resource.kind == "Service" && object.name == "orders" {
                continue; // deleted
            }
            observed.insert(
                &object.resource,
                serde_json::from_value(value).expect("is an object"),
            );
        }
    }
    let repairs = changes(&decide(&level(), &db, &observed, at(1_000)).expect("decides"));
    assert_eq!(
        repairs,
        [
            ("ConfigMap/orders-config".to_string(), Change::Repair),
            ("Service/orders".to_string(), Change::Create)
        ]
    );
}

#[test]
fn the_generated_password_is_kept_once_the_secret_exists() {
    let db = db();
    let first = objects::credentials_secret(&db, None, || "first-password".into());
    let again = objects::credentials_secret(&db, Some(&first), || "second-password".into());
    assert_eq!(again, first);
    let data = first.data.expect("has data");
    assert_eq!(data["password"].0, b"first-password");
    assert_eq!(data["username"].0, b"app");
    assert_eq!(
        data["uri"].0,
        b"postgresql://app:first-password@orders.shop.svc:5432/app".to_vec()
    );
}

#[test]
fn generated_passwords_are_long_random_and_alphanumeric() {
    let a = generate_password();
    let b = generate_password();
    assert_eq!(a.len(), 32);
    assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(a, b);
}

#[test]
fn the_statefulset_runs_the_version_image_as_a_non_root_user_with_probes_and_resources() {
    let sts = objects::statefulset(&db(), PgVersion::parse("16.4").expect("valid"), None);
    let spec = sts.spec.expect("spec");
    assert_eq!(spec.replicas, Some(objects::INSTANCES));
    assert_eq!(spec.service_name.as_deref(), Some("orders-headless"));
    let pod = spec.template.spec.expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("postgres:16.4"));
    assert!(
        container.readiness_probe.is_some()
            && container.liveness_probe.is_some()
            && container.startup_probe.is_some()
    );
    let resources = container.resources.as_ref().expect("resources");
    assert_eq!(
        resources.requests.as_ref().expect("requests")["memory"].0,
        "256Mi"
    );
    assert_eq!(
        resources.limits.as_ref().expect("limits")["memory"].0,
        "512Mi"
    );
    let security = pod.security_context.expect("pod security context");
    assert_eq!(security.run_as_user, Some(999));
    assert_eq!(security.run_as_non_root, Some(true));
    let claim = &spec.volume_claim_templates.expect("claim templates")[0];
    assert_eq!(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
            .map(|q| q.0.as_str()),
        Some("1Gi")
    );
    let env: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        env.contains(&"POSTGRES_PASSWORD") && env.contains(&"APP_PASSWORD"),
        "{env:?}"
    );
    assert!(
        container
            .env
            .iter()
            .flatten()
            .all(|e| e.name.ends_with("PASSWORD") == e.value_from.is_some()),
        "passwords come from Secrets"
    );
}

#[test]
fn an_image_override_replaces_the_official_image() {
    let mut db = db();
    db.spec.image = Some("registry.example/postgres:16.4-custom".into());
    let sts = objects::statefulset(&db, PgVersion::parse("16.4").expect("valid"), None);
    let image = sts
        .spec
        .and_then(|s| s.template.spec?.containers[0].image.clone());
    assert_eq!(
        image.as_deref(),
        Some("registry.example/postgres:16.4-custom")
    );
}

#[test]
fn an_existing_statefulset_keeps_its_immutable_claim_templates() {
    let version = PgVersion::parse("16.4").expect("valid");
    let old = objects::statefulset(&db(), version, None);
    let mut live = old.clone();
    // The API server defaults fields inside claim templates; they must not
    // leak into what the operator applies.
    if let Some(spec) = live
        .spec
        .as_mut()
        .and_then(|s| s.volume_claim_templates.as_mut())
        .and_then(|t| t[0].spec.as_mut())
    {
        spec.volume_mode = Some("Filesystem".into());
    }
    let bigger = DbBuilder::named("orders").storage("5Gi").build();
    let new = objects::statefulset(&bigger, version, Some(&live));
    assert_eq!(
        new.spec.and_then(|s| s.volume_claim_templates),
        old.spec.and_then(|s| s.volume_claim_templates)
    );
}

#[test]
fn the_config_map_carries_parameters_and_scram_authentication() {
    let db = DbBuilder::named("orders")
        .parameter("max_connections", "200")
        .parameter("search_path", "'$user', public")
        .build();
    let config = objects::config_map(&db).data.expect("data");
    let conf = &config["postgresql.conf"];
    assert!(conf.contains("max_connections = '200'"), "{conf}");
    assert!(
        conf.contains("search_path = '''$user'', public'"),
        "quotes are doubled: {conf}"
    );
    assert!(conf.contains("listen_addresses = '*'"));
    let hba = &config["pg_hba.conf"];
    assert!(
        hba.contains("0.0.0.0/0  scram-sha-256")
            && !hba.contains("md5")
            && !hba.contains("host    all       all   0.0.0.0/0  trust")
    );
}

#[test]
fn a_parameter_change_changes_the_pod_template_so_the_pod_restarts() {
    let version = PgVersion::parse("16.4").expect("valid");
    let before = objects::statefulset(&db(), version, None);
    let after = objects::statefulset(
        &DbBuilder::named("orders")
            .parameter("work_mem", "64MB")
            .build(),
        version,
        None,
    );
    let annotation = |sts: &StatefulSet| {
        sts.spec.as_ref().and_then(|s| {
            s.template
                .metadata
                .as_ref()?
                .annotations
                .as_ref()?
                .get(shared::keys::CONFIG_HASH_ANNOTATION)
                .cloned()
        })
    };
    assert_ne!(annotation(&before), annotation(&after));
}

#[test]
fn the_services_select_the_database_pods_on_port_5432() {
    let headless = objects::headless_service(&db()).spec.expect("spec");
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    let primary = objects::primary_service(&db()).spec.expect("spec");
    assert_eq!(primary.ports.expect("ports")[0].port, 5432);
    let selector = primary.selector.expect("selector");
    assert_eq!(
        selector
            .get(shared::keys::INSTANCE_LABEL)
            .map(String::as_str),
        Some("orders")
    );
}

fn problems_of(db: &PostgresDB, observed: &Observed) -> Vec<(String, String)> {
    match decide(&level(), db, observed, at(1_000)).expect("decides") {
        Decision::Invalid(problems) => problems.into_iter().map(|p| (p.field, p.reason)).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn an_unknown_major_version_is_refused_naming_the_field() {
    let problems = problems_of(
        &DbBuilder::named("orders").version("9.6").build(),
        &Observed::default(),
    );
    assert_eq!(
        problems,
        [("spec.version".to_string(), "InvalidVersion".to_string())]
    );
}

#[test]
fn a_name_too_long_for_the_derived_names_is_refused() {
    let problems = problems_of(
        &DbBuilder::named(&"a".repeat(60)).build(),
        &Observed::default(),
    );
    assert_eq!(
        problems,
        [("metadata.name".to_string(), "InvalidName".to_string())]
    );
}

#[test]
fn reserved_and_malformed_parameters_are_refused() {
    let db = DbBuilder::named("orders")
        .parameter("port", "5433")
        .parameter("Bad-Name", "1")
        .parameter("work_mem", "1\n2")
        .build();
    let fields: Vec<String> = problems_of(&db, &Observed::default())
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(
        fields,
        [
            "spec.parameters.Bad-Name",
            "spec.parameters.port",
            "spec.parameters.work_mem"
        ]
    );
}

#[test]
fn a_memory_request_above_the_limit_is_refused_before_anything_is_applied() {
    let mut db = db();
    db.spec
        .resources
        .requests
        .as_mut()
        .expect("defaults have requests")
        .memory = Some("1Gi".into());
    assert_eq!(
        problems_of(&db, &Observed::default()),
        [(
            "spec.resources.requests.memory".to_string(),
            "InvalidResources".to_string()
        )]
    );
}

fn observed_claim(db: &PostgresDB, size: &str) -> Observed {
    let mut claim = objects::data_claim_template(db);
    claim.metadata.name = Some(Names::of(db).data_claim(0));
    if let Some(requests) = claim
        .spec
        .as_mut()
        .and_then(|s| s.resources.as_mut())
        .and_then(|r| r.requests.as_mut())
    {
        requests.insert(
            "storage".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(size.into()),
        );
    }
    let mut observed = Observed::default();
    observed.insert(
        &ApiResource::erase::<PersistentVolumeClaim>(&()),
        raw(&claim),
    );
    observed
}

#[test]
fn a_storage_shrink_is_refused_and_nothing_is_applied() {
    let db = DbBuilder::named("orders").storage("500Mi").build();
    let observed = observed_claim(&db, "1Gi");
    assert_eq!(current_storage_size(&db, &observed).as_deref(), Some("1Gi"));
    let decision = decide(&level(), &db, &observed, at(1_000)).expect("decides");
    assert!(
        matches!(decision, Decision::Invalid(ref p) if p[0].field == "spec.storage.size" && p[0].reason == "RefusedStorageShrink"),
        "{decision:?}"
    );
}

#[test]
fn a_larger_storage_size_grows_the_existing_claim() {
    let db = DbBuilder::named("orders").storage("2Gi").build();
    let names: Vec<String> = changes(
        &decide(&level(), &db, &observed_claim(&db, "1024Mi"), at(1_000)).expect("decides"),
    )
    .into_iter()
    .map(|(n, _)| n)
    .collect();
    assert!(
        names.contains(&"PersistentVolumeClaim/data-orders-0".to_string()),
        "{names:?}"
    );
    let same = DbBuilder::named("orders").storage("1Gi").build();
    let names: Vec<String> = changes(
        &decide(&level(), &same, &observed_claim(&same, "1024Mi"), at(1_000)).expect("decides"),
    )
    .into_iter()
    .map(|(n, _)| n)
    .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("PersistentVolumeClaim")),
        "1Gi equals 1024Mi: {names:?}"
    );
}

#[test]
fn a_paused_database_is_left_untouched() {
    let decision = decide(
        &level(),
        &DbBuilder::named("orders").paused().build(),
        &Observed::default(),
        at(1_000),
    )
    .expect("decides");
    assert!(matches!(decision, Decision::Paused));
}

#[test]
fn a_missing_credentials_secret_with_existing_data_is_warned_about() {
    let db = db();
    let observed = observed_claim(&db, "1Gi");
    let mut desired = Desired::default();
    Install
        .desire(&db, &observed, at(1_000), &mut desired)
        .expect("desires");
    assert!(
        desired
            .notes
            .iter()
            .any(|n| n.type_ == EventType::Warning && n.reason == "CredentialsRecreated")
    );
}

fn ready_statefulset(db: &PostgresDB) -> StatefulSet {
    let mut sts = objects::statefulset(db, PgVersion::parse("16.4").expect("valid"), None);
    sts.metadata.generation = Some(1);
    sts.status = Some(StatefulSetStatus {
        replicas: 1,
        ready_replicas: Some(1),
        updated_replicas: Some(1),
        observed_generation: Some(1),
        current_revision: Some("r1".into()),
        update_revision: Some("r1".into()),
        ..Default::default()
    });
    sts
}

fn now() -> Time {
    Time(at(1_000))
}

#[test]
fn status_reaches_ready_with_the_version_endpoint_and_secret_when_the_pod_is_ready() {
    let db = db();
    let mut observed = Observed::default();
    observed.insert(
        &ApiResource::erase::<StatefulSet>(&()),
        raw(&ready_statefulset(&db)),
    );
    let decision = Decision::Apply {
        changes: vec![],
        deletions: vec![],
        sql: vec![],
        notes: vec![],
    };
    let draft = assess(
        &level(),
        &db,
        &observed,
        &decision,
        &ApplyReport::default(),
        now().0,
    );
    assert!(draft.conditions.is_true(READY));
    let status = next_status(&db, draft, now());
    assert_eq!(status.phase, Some(shared::api::Phase::Ready));
    assert_eq!(status.current_version.as_deref(), Some("16.4"));
    assert_eq!(status.ready_replicas, 1);
    assert_eq!(
        status.credentials_secret.as_deref(),
        Some("orders-credentials")
    );
    assert_eq!(
        status.endpoint.map(|e| e.host).as_deref(),
        Some("orders.shop.svc")
    );
    assert_eq!(status.observed_generation, Some(1));
}

#[test]
fn status_is_unchanged_when_nothing_changed_so_it_is_not_written() {
    let mut db = db();
    let mut observed = Observed::default();
    observed.insert(
        &ApiResource::erase::<StatefulSet>(&()),
        raw(&ready_statefulset(&db)),
    );
    let decision = Decision::Apply {
        changes: vec![],
        deletions: vec![],
        sql: vec![],
        notes: vec![],
    };
    let first = next_status(
        &db,
        assess(
            &level(),
            &db,
            &observed,
            &decision,
            &ApplyReport::default(),
            now().0,
        ),
        now(),
    );
    db.status = Some(first.clone());
    let later = Time(jiff::Timestamp::from_second(9_000).expect("valid"));
    let second = next_status(
        &db,
        assess(
            &level(),
            &db,
            &observed,
            &decision,
            &ApplyReport::default(),
            now().0,
        ),
        later,
    );
    assert_eq!(second, first);
}

#[test]
fn a_crash_looping_pod_degrades_the_database_with_a_warning() {
    let db = db();
    let pod = PodBuilder::named("orders-0")
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
    let observed = ObservedBuilder::new().with(&pod).build();
    let draft = assess(
        &level(),
        &db,
        &observed,
        &Decision::Apply {
            changes: vec![],
            deletions: vec![],
            sql: vec![],
            notes: vec![],
        },
        &ApplyReport::default(),
        now().0,
    );
    let degraded = draft.conditions.get(DEGRADED).expect("Degraded is set");
    assert!(
        degraded.status == ConditionStatus::True
            && degraded.is_warning()
            && degraded.message.contains("CrashLoopBackOff"),
        "{degraded:?}"
    );
}

#[test]
fn an_invalid_spec_sets_ready_false_with_the_field_and_a_warning() {
    let db = DbBuilder::named("orders").version("12").build();
    let decision = decide(&level(), &db, &Observed::default(), at(1_000)).expect("decides");
    let draft = assess(
        &level(),
        &db,
        &Observed::default(),
        &decision,
        &ApplyReport::default(),
        now().0,
    );
    let ready = draft.conditions.get(READY).expect("Ready is set");
    assert!(
        ready.status == ConditionStatus::False
            && ready.is_warning()
            && ready.reason == "InvalidVersion"
            && ready.message.starts_with("spec.version:"),
        "{ready:?}"
    );
    let status = next_status(&db, draft, now());
    assert_eq!(status.phase, Some(shared::api::Phase::Invalid));
}

#[test]
fn every_object_level1_applies_is_one_it_reads_first() {
    let db = db();
    assert_reads_what_it_applies(&crate::capabilities(), &db, &Observed::default(), at(1_000));
    let bigger = DbBuilder::named("orders").storage("2Gi").build();
    assert_reads_what_it_applies(
        &crate::capabilities(),
        &bigger,
        &observed_claim(&db, "1Gi"),
        at(1_000),
    );
}

#[test]
fn the_examples_are_valid_databases_level1_can_serve() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("examples/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable example");
        // Level 3's examples include a PostgresDBBackup.
        if !text.lines().any(|l| l.trim() == "kind: PostgresDB") {
            continue;
        }
        let mut db: PostgresDB =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        db.metadata.namespace = Some("default".into());
        db.metadata.uid = Some("uid".into());
        let decision = decide(&level(), &db, &Observed::default(), at(1_000)).expect("decides");
        assert!(
            matches!(decision, Decision::Apply { .. }),
            "{}: {decision:?}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen > 0, "no example found in {dir}");
}
