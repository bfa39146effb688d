//! Unit tests of storage auto-grow: the decision on numbers, then the
//! capability on a database, its reading and its claims.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use kube::api::ApiResource;
use shared::api::PostgresDB;
use shared::autopilot::AutopilotStatus;
use shared::capability::{ApplyReport, Capability, Observed, StatusDraft};
use shared::conditions::ConditionStatus;
use shared::readings::DatabaseReading;
use shared::reconcile::Decision as Reconciled;
use shared::testing::{DbBuilder, ObservedBuilder, at, raw};

use super::decision::{Decision, MI, Usage, decide, grown, quantity};
use super::*;

const GI: u64 = 1 << 30;

fn spec(max: &str) -> AutoGrowSpec {
    AutoGrowSpec {
        threshold_percent: 80,
        increase_percent: 50,
        max_size: max.into(),
    }
}

fn used(percent: u64, capacity: u64) -> Option<Usage> {
    Some(Usage {
        used_bytes: (capacity * percent).div_ceil(100),
        capacity_bytes: capacity,
    })
}

#[test]
fn below_the_threshold_nothing_grows() {
    assert_eq!(
        decide(&spec("4Gi"), GI, 4 * GI, used(79, GI)),
        Decision::Enough { used_percent: 79 }
    );
}

#[test]
fn at_the_threshold_the_volumes_grow_by_the_increase() {
    assert_eq!(
        decide(&spec("4Gi"), GI, 4 * GI, used(80, GI)),
        Decision::Grow {
            from_bytes: GI,
            to_bytes: 1536 * MI,
            used_percent: 80,
            capped: false,
        }
    );
}

#[test]
fn a_growth_is_rounded_up_to_whole_mebibytes() {
    // 1001Mi and 10% is 1101.1Mi: 1102Mi.
    assert_eq!(grown(1001 * MI, 10, u64::MAX), 1102 * MI);
    assert_eq!(grown(1000 * MI, 10, u64::MAX), 1100 * MI);
    assert_eq!(quantity(1536 * MI), "1536Mi");
    assert_eq!(quantity(2 * GI), "2Gi");
}

#[test]
fn a_growth_stops_at_the_maximum_and_says_so() {
    assert_eq!(
        decide(&spec("1200Mi"), GI, 1200 * MI, used(90, GI)),
        Decision::Grow {
            from_bytes: GI,
            to_bytes: 1200 * MI,
            used_percent: 90,
            capped: true,
        }
    );
}

#[test]
fn volumes_at_the_maximum_do_not_grow() {
    assert_eq!(
        decide(&spec("1Gi"), GI, GI, used(95, GI)),
        Decision::AtMaximum { used_percent: 95 }
    );
}

#[test]
fn a_measurement_of_the_volume_before_its_growth_landed_decides_nothing() {
    assert_eq!(
        decide(&spec("4Gi"), 1536 * MI, 4 * GI, used(99, GI)),
        Decision::Resizing { capacity_bytes: GI }
    );
    assert_eq!(decide(&spec("4Gi"), GI, 4 * GI, None), Decision::Unmeasured);
}

fn database(max: &str) -> PostgresDB {
    DbBuilder::named("orders")
        .storage("1Gi")
        .auto_grow(spec(max))
        .build()
}

fn reading(percent: u64, capacity: u64) -> DatabaseReading {
    DatabaseReading {
        at: at(1_000),
        pod: "orders-0".into(),
        volume_used_bytes: Some((capacity * percent).div_ceil(100)),
        volume_capacity_bytes: Some(capacity),
        ..Default::default()
    }
}

fn assessed(db: &PostgresDB, observed: &Observed) -> StatusDraft {
    let mut status = StatusDraft {
        now: at(2_000),
        ..Default::default()
    };
    AutoGrow.assess(db, observed, &ApplyReport::default(), &mut status);
    status
}

/// `db` with the status `status` wrote (as the next reconcile reads it).
fn after(db: &PostgresDB, status: &StatusDraft) -> PostgresDB {
    let mut next = db.clone();
    next.status.get_or_insert_default().autopilot = status.fields.autopilot.clone();
    next
}

#[test]
fn a_volume_past_the_threshold_is_recorded_grown_with_what_was_measured_and_announced() {
    let db = database("4Gi");
    let observed = ObservedBuilder::new().reading(reading(85, GI)).build();
    let status = assessed(&db, &observed);
    let storage = status
        .fields
        .autopilot
        .as_ref()
        .and_then(|a| a.storage.clone())
        .expect("a growth is recorded");
    assert_eq!(storage.size, "1536Mi");
    let growth = storage.last_growth.expect("the growth");
    assert_eq!(
        (growth.from.as_str(), growth.to.as_str()),
        ("1Gi", "1536Mi")
    );
    assert_eq!(growth.used_percent, 85);
    assert_eq!(growth.at, Time(at(2_000)));

    let mut desired = Desired::default();
    AutoGrow
        .desire(&db, &observed, at(2_000), &mut desired)
        .expect("decides");
    let note = &desired.notes[0];
    assert_eq!(note.reason, GROWN);
    assert!(
        note.message.contains("85% used") && note.message.contains("to 1536Mi"),
        "{}",
        note.message
    );

    // The next reconcile's effective size is the grown one.
    assert_eq!(
        effective_size(&after(&db, &status)).as_deref(),
        Some("1536Mi")
    );
}

#[test]
fn while_the_resize_has_not_landed_the_growth_is_not_repeated() {
    let db = database("4Gi");
    let observed = ObservedBuilder::new().reading(reading(85, GI)).build();
    let grown = after(&db, &assessed(&db, &observed));
    let effective = crate::autopilot::effective::effective_spec(&grown);
    let again = assessed(&effective, &observed);
    assert_eq!(
        again.fields.autopilot,
        grown.status.as_ref().and_then(|s| s.autopilot.clone()),
        "the same reading of the old volume grew it again"
    );
    let mut desired = Desired::default();
    AutoGrow
        .desire(&effective, &observed, at(2_000), &mut desired)
        .expect("decides");
    assert!(desired.notes.is_empty(), "{:?}", desired.notes);
}

#[test]
fn at_rest_below_the_threshold_status_is_what_it_was() {
    let db = database("4Gi");
    let grown = after(
        &db,
        &assessed(
            &db,
            &ObservedBuilder::new().reading(reading(85, GI)).build(),
        ),
    );
    let effective = crate::autopilot::effective::effective_spec(&grown);
    let landed = ObservedBuilder::new()
        .reading(reading(56, 1536 * MI))
        .build();
    let status = assessed(&effective, &landed);
    assert_eq!(
        status.fields.autopilot,
        grown.status.as_ref().and_then(|s| s.autopilot.clone())
    );
    let mut desired = Desired::default();
    AutoGrow
        .desire(&effective, &landed, at(3_000), &mut desired)
        .expect("decides");
    assert!(desired.notes.is_empty(), "{:?}", desired.notes);
}

#[test]
fn a_grown_size_is_never_shrunk_and_a_larger_spec_wins() {
    let grown = AutopilotStatus {
        storage: Some(StorageGrowthStatus {
            size: "1536Mi".into(),
            last_growth: None,
        }),
        ..Default::default()
    };
    let smaller = DbBuilder::named("orders")
        .storage("1Gi")
        .autopilot_status(grown.clone())
        .build();
    assert_eq!(effective_size(&smaller).as_deref(), Some("1536Mi"));
    let larger = DbBuilder::named("orders")
        .storage("2Gi")
        .autopilot_status(grown.clone())
        .build();
    assert_eq!(effective_size(&larger), None);
    // Without autoGrow any more, the record is kept (and stays effective).
    let status = assessed(&smaller, &Observed::default());
    assert_eq!(
        status
            .fields
            .autopilot
            .and_then(|a| a.storage)
            .map(|s| s.size),
        Some("1536Mi".into())
    );
}

fn claim(name: &str, size: &str) -> PersistentVolumeClaim {
    let mut claim = PersistentVolumeClaim::default();
    claim.metadata.name = Some(name.into());
    claim
        .spec
        .get_or_insert_default()
        .resources
        .get_or_insert_default()
        .requests
        .get_or_insert_default()
        .insert("storage".into(), K8sQuantity(size.into()));
    claim
}

#[test]
fn the_effective_size_grows_every_instances_claim_through_level_1() {
    let db = DbBuilder::named("orders")
        .storage("1Gi")
        .instances(2)
        .auto_grow(spec("4Gi"))
        .autopilot_status(AutopilotStatus {
            storage: Some(StorageGrowthStatus {
                size: "1536Mi".into(),
                last_growth: None,
            }),
            ..Default::default()
        })
        .build();
    let mut observed = Observed::default();
    for k in 0..2 {
        observed.insert(
            &ApiResource::erase::<PersistentVolumeClaim>(&()),
            raw(&claim(&format!("data-orders-{k}"), "1Gi")),
        );
    }
    let effective = crate::autopilot::effective::effective_spec(&db);
    let decision = shared::reconcile::decide(&crate::level(), &effective, &observed, at(2_000))
        .expect("decides");
    let Reconciled::Apply { changes, .. } = decision else {
        panic!("expected changes, got {decision:?}");
    };
    let grown: Vec<(String, String)> = changes
        .iter()
        .filter(|(o, _)| o.resource.kind == "PersistentVolumeClaim")
        .map(|(o, _)| {
            (
                o.name.clone(),
                o.value["spec"]["resources"]["requests"]["storage"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        grown,
        [
            ("data-orders-0".to_string(), "1536Mi".to_string()),
            ("data-orders-1".to_string(), "1536Mi".to_string())
        ]
    );
    // Level 1's shrink check compares the claims with the grown size even
    // when the spec says less.
    let grown_claims = {
        let mut observed = Observed::default();
        observed.insert(
            &ApiResource::erase::<PersistentVolumeClaim>(&()),
            raw(&claim("data-orders-0", "1536Mi")),
        );
        observed
    };
    let decision = shared::reconcile::decide(&crate::level(), &effective, &grown_claims, at(2_000))
        .expect("decides");
    assert!(!matches!(decision, Reconciled::Invalid(_)), "{decision:?}");
}

#[test]
fn reaching_the_maximum_is_a_warning_condition() {
    let db = DbBuilder::named("orders")
        .storage("1Gi")
        .auto_grow(spec("1Gi"))
        .build();
    let status = assessed(
        &db,
        &ObservedBuilder::new().reading(reading(95, GI)).build(),
    );
    let limited = status.conditions.get(LIMITED).expect("assessed");
    assert_eq!(limited.status, ConditionStatus::True);
    assert_eq!(limited.reason, AT_MAXIMUM);
    assert!(limited.is_warning());
    assert!(status.fields.autopilot.is_none(), "nothing grew");

    let below = assessed(&database("4Gi"), &Observed::default());
    assert_eq!(
        below.conditions.get(LIMITED).map(|c| c.status),
        Some(ConditionStatus::False)
    );
}

#[test]
fn a_maximum_below_the_current_size_is_refused_naming_the_field() {
    let db = database("1Gi");
    let mut observed = Observed::default();
    observed.insert(
        &ApiResource::erase::<PersistentVolumeClaim>(&()),
        raw(&claim("data-orders-0", "2Gi")),
    );
    let problems = AutoGrow.validate(&db, &observed);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "spec.storage.autoGrow.maxSize");
    assert_eq!(problems[0].reason, INVALID);
    assert!(
        problems[0].message.contains("2Gi"),
        "{}",
        problems[0].message
    );

    let below_spec = DbBuilder::named("orders")
        .storage("2Gi")
        .auto_grow(spec("1Gi"))
        .build();
    assert_eq!(
        AutoGrow.validate(&below_spec, &Observed::default())[0].field,
        "spec.storage.autoGrow.maxSize"
    );
    assert!(AutoGrow.validate(&database("4Gi"), &observed).is_empty());
}

#[test]
fn thresholds_out_of_range_are_refused_naming_the_field() {
    let db = DbBuilder::named("orders")
        .auto_grow(AutoGrowSpec {
            threshold_percent: 100,
            increase_percent: 5,
            max_size: "4Gi".into(),
        })
        .build();
    let fields: Vec<String> = AutoGrow
        .validate(&db, &Observed::default())
        .into_iter()
        .map(|p| p.field)
        .collect();
    assert_eq!(
        fields,
        [
            "spec.storage.autoGrow.thresholdPercent",
            "spec.storage.autoGrow.increasePercent"
        ]
    );
}
