//! Unit tests of auto-tuning: the formulas at several sizes, the user's
//! parameters winning, the refusal without a memory limit, and Level 1's
//! parameter checks accepting every derived value.

use std::collections::BTreeMap;

use shared::api::{ComputeResources, PostgresDB, ResourcesSpec};
use shared::autopilot::AutopilotStatus;
use shared::capability::{ApplyReport, Capability, Desired, Observed, StatusDraft};
use shared::testing::{DbBuilder, ObservedBuilder, at};

use super::formulas::{Resources, derive, max_connections};
use super::*;

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

fn derived(memory_bytes: u64, cpu_millis: Option<u64>) -> BTreeMap<String, String> {
    derive(Resources {
        memory_bytes,
        cpu_millis,
    })
}

fn pairs(parameters: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn half_a_gibibyte_gets_postgresqls_defaults_for_memory_and_100_connections() {
    assert_eq!(
        pairs(&derived(512 * MI, None)),
        [
            ("effective_cache_size", "384MB"),
            ("maintenance_work_mem", "32MB"),
            ("max_connections", "100"),
            ("shared_buffers", "128MB"),
            ("wal_buffers", "3928kB"),
            ("work_mem", "4MB"),
        ]
    );
}

#[test]
fn eight_gibibytes_and_four_cpus_follow_pgtunes_mixed_profile() {
    // PGTune (mixed, 8 GB, 4 CPUs, 100 connections): shared_buffers 2GB,
    // effective_cache_size 6GB, maintenance_work_mem 512MB, wal_buffers
    // 16MB, work_mem 9709kB... with max_worker_processes 8 here, as
    // PGTune's default without its parallel settings.
    assert_eq!(
        pairs(&derived(8 * GI, Some(4000))),
        [
            ("effective_cache_size", "6144MB"),
            ("maintenance_work_mem", "512MB"),
            ("max_connections", "100"),
            ("max_parallel_maintenance_workers", "2"),
            ("max_parallel_workers", "4"),
            ("max_parallel_workers_per_gather", "2"),
            ("max_worker_processes", "8"),
            ("shared_buffers", "2048MB"),
            ("wal_buffers", "16MB"),
            ("work_mem", "9709kB"),
        ]
    );
}

#[test]
fn sixty_four_gibibytes_cap_maintenance_work_mem_and_wal_buffers() {
    let p = derived(64 * GI, Some(32_000));
    assert_eq!(p["shared_buffers"], "16384MB");
    assert_eq!(p["maintenance_work_mem"], "4096MB");
    assert_eq!(p["wal_buffers"], "16MB");
    assert_eq!(p["max_worker_processes"], "32");
    assert_eq!(p["max_parallel_workers"], "32");
    assert_eq!(p["max_parallel_workers_per_gather"], "4", "at most 4");
    // (64Gi - 16Gi) / ((100 + 32) * 3) / 2 in kB.
    assert_eq!(p["work_mem"], "63550kB");
    assert_eq!(derived(256 * GI, None)["maintenance_work_mem"], "8192MB");
}

#[test]
fn small_containers_get_fewer_connections_and_one_cpu_no_parallel_workers() {
    assert_eq!(max_connections(256 * 1024), 51);
    assert_eq!(max_connections(64 * 1024), 20);
    assert_eq!(max_connections(64 * 1024 * 1024), 100);
    let p = derived(256 * MI, Some(500));
    assert_eq!(p["max_connections"], "51");
    assert_eq!(p["shared_buffers"], "64MB");
    assert_eq!(p["max_parallel_workers"], "1");
    assert_eq!(p["max_parallel_workers_per_gather"], "0");
    assert_eq!(p["max_worker_processes"], "8");
}

#[test]
fn decimal_memory_limits_give_whole_blocks() {
    let p = derived(1_000_000_000, None);
    // 976562kB / 4 = 244140kB, rounded down to 8 kB blocks.
    assert_eq!(p["shared_buffers"], "244136kB");
    assert_eq!(p["effective_cache_size"], "732416kB");
}

#[test]
fn every_derived_value_passes_level_1s_parameter_checks() {
    for memory in [64 * MI, 256 * MI, 512 * MI, 1_000_000_000, 3 * GI, 64 * GI] {
        for cpu in [None, Some(500), Some(2000), Some(48_000)] {
            for (name, value) in derived(memory, cpu) {
                for major in [15, 16, 17] {
                    shared::parameters::check(
                        major,
                        &level1_install::api::RESERVED_PARAMETERS,
                        &name,
                        &value,
                    )
                    .unwrap_or_else(|why| panic!("{name}={value} on {major}: {why}"));
                }
            }
        }
    }
}

fn tuned(memory: Option<&str>, cpu: Option<&str>) -> PostgresDB {
    let mut db = DbBuilder::named("orders")
        .tuning(Tuning::Auto)
        .parameter("work_mem", "64MB")
        .build();
    db.spec.resources = ResourcesSpec {
        requests: None,
        limits: Some(ComputeResources {
            cpu: cpu.map(String::from),
            memory: memory.map(String::from),
        }),
    };
    db
}

#[test]
fn the_users_parameters_win_and_are_left_out_of_status() {
    let db = tuned(Some("2Gi"), Some("2"));
    let effective = effective_parameters(&db);
    assert_eq!(effective["work_mem"], "64MB", "the user's");
    assert_eq!(effective["shared_buffers"], "512MB", "derived");
    let status = tuning_status(&db, &Observed::default()).expect("tuned");
    assert_eq!(status.memory, "2Gi");
    assert_eq!(status.cpu.as_deref(), Some("2"));
    assert!(!status.parameters.contains_key("work_mem"));
    assert_eq!(status.parameters["shared_buffers"], "512MB");
    assert_eq!(status.parameters["max_parallel_workers"], "2");

    // On the effective spec (whose parameters hold the derived ones), the
    // user's are read from the spec as written.
    let mut effective_db = db.clone();
    effective_db.spec.parameters = effective;
    let observed = ObservedBuilder::new().written_spec(db.spec.clone()).build();
    assert_eq!(tuning_status(&effective_db, &observed), Some(status));
}

#[test]
fn tuning_off_or_absent_derives_nothing() {
    let mut db = tuned(Some("2Gi"), None);
    db.spec.tuning = Some(Tuning::Off);
    assert!(derived_parameters(&db).is_empty());
    assert_eq!(effective_parameters(&db), db.spec.parameters);
    db.spec.tuning = None;
    assert!(derived_parameters(&db).is_empty());
}

#[test]
fn tuning_auto_without_a_memory_limit_is_refused_naming_the_field() {
    let problems = AutoTuning.validate(&tuned(None, Some("2")), &Observed::default());
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "spec.resources.limits.memory");
    assert_eq!(problems[0].reason, INVALID);
    assert!(
        AutoTuning
            .validate(&tuned(Some("1Gi"), None), &Observed::default())
            .is_empty()
    );
    let mut no_limits = tuned(None, None);
    no_limits.spec.resources.limits = None;
    assert_eq!(
        AutoTuning.validate(&no_limits, &Observed::default())[0].field,
        "spec.resources.limits.memory"
    );
}

#[test]
fn new_derived_values_are_shown_in_status_and_announced_once() {
    let db = tuned(Some("1Gi"), None);
    let mut status = StatusDraft {
        now: at(1_000),
        ..Default::default()
    };
    AutoTuning.assess(
        &db,
        &Observed::default(),
        &ApplyReport::default(),
        &mut status,
    );
    let shown = status
        .fields
        .autopilot
        .as_ref()
        .and_then(|a| a.tuning.clone())
        .expect("shown");
    assert_eq!(shown.parameters["shared_buffers"], "256MB");

    let mut desired = Desired::default();
    AutoTuning
        .desire(&db, &Observed::default(), at(1_000), &mut desired)
        .expect("decides");
    assert_eq!(desired.notes.len(), 1);
    assert_eq!(desired.notes[0].reason, TUNED);
    assert!(
        desired.notes[0].message.contains("shared_buffers=256MB")
            && desired.notes[0].message.contains("memory limit 1Gi"),
        "{}",
        desired.notes[0].message
    );

    // Once in status, the same values are not announced again.
    let mut recorded = db.clone();
    recorded.status.get_or_insert_default().autopilot = Some(AutopilotStatus {
        tuning: Some(shown),
        ..Default::default()
    });
    let mut desired = Desired::default();
    AutoTuning
        .desire(&recorded, &Observed::default(), at(2_000), &mut desired)
        .expect("decides");
    assert!(desired.notes.is_empty());
}

#[test]
fn level_1_renders_the_derived_parameters_into_postgresql_conf() {
    let db = tuned(Some("1Gi"), None);
    let effective = crate::autopilot::effective::effective_spec(&db);
    let conf = level1_install::api::postgresql_conf(&effective);
    assert!(conf.contains("shared_buffers = '256MB'"), "{conf}");
    assert!(conf.contains("work_mem = '64MB'"), "{conf}");
    assert_ne!(
        level1_install::api::config_hash(&effective),
        level1_install::api::config_hash(&db),
        "a change of the derived values reaches Level 2 as a configuration change"
    );
}
