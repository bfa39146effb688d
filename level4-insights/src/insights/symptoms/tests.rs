use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use shared::api::{InsightsStatus, Phase};
use shared::backup::{BackupSpec, BackupSummary};
use shared::capability::{ApplyReport, EventType, Level, Note, Observed, StatusDraft};
use shared::conditions::{Assessment, Assessments, ConditionStatus, READY};
use shared::readings::DatabaseReading;
use shared::reconcile::{Decision, assess, events_for, next_status};
use shared::testing::{DbBuilder, ObservedBuilder, at};

use super::*;

/// A reading of `orders-0`: `connections` idle of 100 (3 reserved), the
/// volume `used` of 1000 bytes, no long transaction, a young XID age.
fn reading(connections: u64, used: u64) -> DatabaseReading {
    DatabaseReading {
        at: at(1_000),
        pod: "orders-0".into(),
        server_version: Some("16.4".into()),
        connections: [("idle".to_string(), connections)].into(),
        max_connections: Some(100),
        reserved_connections: Some(3),
        oldest_transaction_seconds: Some(0.0),
        xid_age: Some(1_000),
        volume_used_bytes: Some(used),
        volume_capacity_bytes: Some(1000),
        ..Default::default()
    }
}

fn status_of(verdict: &Verdict) -> ConditionStatus {
    match verdict {
        Verdict::Present { .. } => ConditionStatus::True,
        Verdict::Absent { .. } => ConditionStatus::False,
        Verdict::Unknown { .. } => ConditionStatus::Unknown,
    }
}

#[test]
fn connections_are_saturated_from_80_percent_of_those_clients_may_open() {
    // 97 usable: 77 is 79%, 78 is 80%.
    assert_eq!(
        status_of(&connections(&reading(77, 0))),
        ConditionStatus::False
    );
    assert_eq!(
        status_of(&connections(&reading(78, 0))),
        ConditionStatus::True
    );
    assert_eq!(
        status_of(&connections(&reading(97, 0))),
        ConditionStatus::True
    );
    let unmeasured = DatabaseReading {
        max_connections: None,
        ..reading(1, 0)
    };
    assert_eq!(
        status_of(&connections(&unmeasured)),
        ConditionStatus::Unknown
    );
}

#[test]
fn storage_is_nearly_full_from_85_percent_of_the_volume() {
    assert_eq!(
        status_of(&storage(&reading(1, 849))),
        ConditionStatus::False
    );
    assert_eq!(status_of(&storage(&reading(1, 850))), ConditionStatus::True);
    let no_stats = DatabaseReading {
        volume_used_bytes: None,
        ..reading(1, 0)
    };
    assert_eq!(status_of(&storage(&no_stats)), ConditionStatus::Unknown);
    let no_capacity = DatabaseReading {
        volume_capacity_bytes: Some(0),
        ..reading(1, 0)
    };
    assert_eq!(status_of(&storage(&no_capacity)), ConditionStatus::Unknown);
}

#[test]
fn a_transaction_is_long_running_from_300_seconds() {
    let open_for = |seconds: f64| DatabaseReading {
        oldest_transaction_seconds: Some(seconds),
        ..reading(1, 0)
    };
    assert_eq!(
        status_of(&long_transaction(&open_for(299.9))),
        ConditionStatus::False
    );
    assert_eq!(
        status_of(&long_transaction(&open_for(300.0))),
        ConditionStatus::True
    );
}

#[test]
fn xid_wraparound_is_a_risk_from_an_age_of_2_to_the_30() {
    let aged = |age: u64| DatabaseReading {
        xid_age: Some(age),
        ..reading(1, 0)
    };
    assert_eq!(
        status_of(&xid_wraparound(&aged((1 << 30) - 1))),
        ConditionStatus::False
    );
    assert_eq!(
        status_of(&xid_wraparound(&aged(1 << 30))),
        ConditionStatus::True
    );
}

#[test]
fn a_server_that_did_not_answer_leaves_the_sql_symptoms_unknown_and_the_volume_measured() {
    let down = DatabaseReading {
        volume_used_bytes: Some(900),
        volume_capacity_bytes: Some(1000),
        ..DatabaseReading::down(at(1_000), "orders-0", "connection refused")
    };
    for verdict in [
        connections(&down),
        long_transaction(&down),
        xid_wraparound(&down),
    ] {
        assert_eq!(
            verdict,
            Verdict::Unknown {
                reason: DATABASE_DOWN,
                message: "the server did not answer the operator's last measurement".into()
            }
        );
    }
    assert_eq!(status_of(&storage(&down)), ConditionStatus::True);
}

#[test]
fn a_symptom_s_message_stays_the_same_while_it_lasts() {
    // A different figure above the threshold must not rewrite the
    // condition (a status write) nor publish a Warning again.
    assert_eq!(connections(&reading(80, 0)), connections(&reading(95, 0)));
    assert_eq!(storage(&reading(1, 860)), storage(&reading(1, 990)));
    assert_eq!(connections(&reading(3, 0)), connections(&reading(30, 0)));
}

/// A level of the symptoms alone, to run them through the core's assess,
/// status and Events.
fn symptoms_level() -> Level {
    Level {
        number: 4,
        name: "symptoms-test",
        capabilities: vec![Box::new(Symptoms)],
        companions: Vec::new(),
        insights: None,
        effective_spec: shared::capability::as_written,
    }
}

fn no_changes() -> Decision {
    Decision::Apply {
        changes: Vec::new(),
        deletions: Vec::new(),
        sql: Vec::new(),
        notes: Vec::new(),
    }
}

/// One reconcile of `db` with `observed` at `now`, as the core runs it:
/// its Events, and whether it wrote the status (then kept in `db`).
fn reconcile(db: &mut PostgresDB, observed: &Observed, now: Timestamp) -> (Vec<Note>, bool) {
    let level = symptoms_level();
    let decision = no_changes();
    let report = ApplyReport::default();
    let draft = assess(&level, db, observed, &decision, &report, now);
    let notes = events_for(db, &decision, &report, &draft);
    let status = next_status(db, draft, Time(now));
    // What the API server would give back.
    let status: shared::api::PostgresDBStatus =
        serde_json::from_value(serde_json::to_value(&status).expect("serialises"))
            .expect("deserialises");
    let written = db.status.as_ref() != Some(&status);
    db.status = Some(status);
    (notes, written)
}

fn reasons(notes: &[Note]) -> Vec<(EventType, String)> {
    notes.iter().map(|n| (n.type_, n.reason.clone())).collect()
}

fn condition(db: &PostgresDB, type_: &str) -> (String, String) {
    let c = db
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.clone(), c.reason.clone())
}

fn with(reading: DatabaseReading) -> Observed {
    ObservedBuilder::new().reading(reading).build()
}

#[test]
fn each_symptom_appears_and_clears_with_one_event_each_way_and_none_at_rest() {
    type Change = fn(&mut DatabaseReading);
    let symptoms: [(&str, Change, &str, &str); 4] = [
        (
            CONNECTIONS_SATURATED,
            |r| {
                r.connections.insert("active".into(), 80);
            },
            "ConnectionsNearLimit",
            "ConnectionsAvailable",
        ),
        (
            STORAGE_NEARLY_FULL,
            |r| r.volume_used_bytes = Some(900),
            "VolumeNearlyFull",
            "VolumeHasSpace",
        ),
        (
            LONG_RUNNING_TRANSACTION,
            |r| r.oldest_transaction_seconds = Some(400.0),
            "TransactionOpenTooLong",
            "NoLongTransaction",
        ),
        (
            XID_WRAPAROUND_RISK,
            |r| r.xid_age = Some(1 << 30),
            "XidAgeHigh",
            "XidAgeNormal",
        ),
    ];
    for (type_, worsen, present, absent) in symptoms {
        let mut db = DbBuilder::named("orders").build();
        let healthy = reading(2, 100);
        let mut sick = healthy.clone();
        worsen(&mut sick);
        // First measured healthy: the condition is False, without an Event.
        let (notes, written) = reconcile(&mut db, &with(healthy.clone()), at(1_000));
        assert!(written);
        assert_eq!(condition(&db, type_), ("False".into(), absent.into()));
        assert!(
            reasons(&notes).iter().all(|(_, r)| r != absent),
            "{type_}: {notes:?}"
        );
        // At rest: nothing written, nothing published.
        let (notes, written) = reconcile(&mut db, &with(healthy.clone()), at(1_030));
        assert!(!written, "{type_}: the status was written at rest");
        assert!(notes.is_empty(), "{type_}: {notes:?}");
        // The symptom appears: one Warning.
        let (notes, _) = reconcile(&mut db, &with(sick.clone()), at(1_060));
        assert_eq!(condition(&db, type_), ("True".into(), present.into()));
        assert_eq!(
            reasons(&notes),
            [(EventType::Warning, present.to_string())],
            "{type_}"
        );
        // It lasts: no Event again.
        let (notes, written) = reconcile(&mut db, &with(sick.clone()), at(1_090));
        assert!(notes.is_empty(), "{type_}: {notes:?}");
        assert!(
            !written,
            "{type_}: the status was written while the symptom lasted"
        );
        // It clears: one Normal Event.
        let (notes, _) = reconcile(&mut db, &with(healthy.clone()), at(1_120));
        assert_eq!(condition(&db, type_), ("False".into(), absent.into()));
        assert_eq!(
            reasons(&notes),
            [(EventType::Normal, absent.to_string())],
            "{type_}"
        );
        let (notes, written) = reconcile(&mut db, &with(healthy), at(1_150));
        assert!(notes.is_empty() && !written, "{type_}: {notes:?}");
    }
}

#[test]
fn a_database_never_measured_has_unknown_symptoms() {
    let mut db = DbBuilder::named("orders").build();
    let (notes, _) = reconcile(&mut db, &Observed::default(), at(1_000));
    assert!(
        notes
            .iter()
            .all(|n| n.type_ == EventType::Normal || n.reason == "SectionNotImplemented")
    );
    for type_ in [
        CONNECTIONS_SATURATED,
        STORAGE_NEARLY_FULL,
        LONG_RUNNING_TRANSACTION,
        XID_WRAPAROUND_RISK,
    ] {
        assert_eq!(
            condition(&db, type_),
            ("Unknown".into(), NOT_MEASURED.into())
        );
    }
    assert_eq!(db.status.as_ref().and_then(|s| s.insights.clone()), None);
}

#[test]
fn a_restarted_operator_without_a_reading_keeps_what_the_last_one_concluded() {
    let mut db = DbBuilder::named("orders").build();
    let mut sick = reading(2, 100);
    sick.connections.insert("active".into(), 90);
    reconcile(&mut db, &with(sick.clone()), at(1_000));
    let before = db.status.clone();
    // Restarted: no reading yet. Nothing is written, no Event repeated.
    let (notes, written) = reconcile(&mut db, &Observed::default(), at(1_030));
    assert!(!written, "a restart rewrote the status: {:?}", db.status);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(db.status, before);
    // Measured again, unchanged: still nothing.
    let (notes, written) = reconcile(&mut db, &with(sick), at(1_060));
    assert!(!written && notes.is_empty(), "{notes:?}");
}

#[test]
fn a_symptom_leaves_the_phase_and_ready_alone() {
    let mut a = Assessments::default();
    a.set(READY, Assessment::yes("DatabaseReady", "1/1 pods ready"));
    for type_ in CONDITIONS {
        a.set(type_, Verdict::present("Symptom", "present").assessment());
    }
    assert_eq!(a.phase(false, true), Phase::Ready);
    assert!(a.is_true(READY));
}

#[test]
fn insights_are_quiet_at_rest_and_follow_what_a_reconcile_acts_on() {
    let mut db = DbBuilder::named("orders").build();
    reconcile(&mut db, &with(reading(5, 400)), at(1_000));
    assert_eq!(
        db.status.as_ref().and_then(|s| s.insights.clone()),
        Some(InsightsStatus {
            connections: Some(5),
            max_connections: Some(97),
            storage_used_percent: Some(40),
            storage_capacity: Some("1000".into()),
            last_backup_time: None,
        })
    );
    // A few bytes more, another measurement: the same whole percent.
    let mut later = reading(5, 404);
    later.at = at(1_030);
    let (_, written) = reconcile(&mut db, &with(later), at(1_030));
    assert!(!written, "a measurement at rest rewrote status.insights");
    let (_, written) = reconcile(&mut db, &with(reading(6, 404)), at(1_060));
    assert!(written, "a new connection did not reach status.insights");
}

#[test]
fn insights_of_a_server_that_did_not_answer_keep_only_the_volume() {
    let down = DatabaseReading {
        volume_used_bytes: Some(3 << 29),
        volume_capacity_bytes: Some(1 << 31),
        ..DatabaseReading::down(at(1), "orders-0", "refused")
    };
    assert_eq!(
        insights(Some(&down), None, None),
        Some(InsightsStatus {
            storage_used_percent: Some(75),
            storage_capacity: Some("2Gi".into()),
            ..Default::default()
        })
    );
}

#[test]
fn a_capacity_reads_in_the_largest_binary_unit_it_reaches() {
    assert_eq!(capacity_quantity(1 << 30), "1Gi");
    assert_eq!(capacity_quantity(500 << 20), "500Mi");
    assert_eq!(capacity_quantity((1 << 30) + (1 << 29)), "1.5Gi");
    assert_eq!(capacity_quantity(270_582_939_648), "252Gi");
    assert_eq!(capacity_quantity(1000), "1000");
}

fn every_minute(created: Timestamp) -> PostgresDB {
    DbBuilder::named("orders")
        .created(created)
        .backup(BackupSpec {
            schedule: Some("* * * * *".into()),
            ..Default::default()
        })
        .build()
}

/// Symptoms' assessment at `now`, with `status.backup` as Level 3 put it.
fn assessed(db: &PostgresDB, last_success: Option<Timestamp>, now: Timestamp) -> StatusDraft {
    let mut draft = StatusDraft {
        now,
        ..Default::default()
    };
    draft.fields.backup = last_success.map(|t| BackupSummary {
        last_successful_at: Some(Time(t)),
        ..Default::default()
    });
    Symptoms.assess(
        db,
        &Observed::default(),
        &ApplyReport::default(),
        &mut draft,
    );
    draft
}

#[test]
fn backups_are_overdue_once_a_slot_passes_without_one_and_the_reconcile_wakes_then() {
    let db = every_minute(at(30));
    // Created at 0:30: the 1:00 backup is expected, overdue at 2:00.
    let early = assessed(&db, None, at(90));
    let overdue = early.conditions.get(BACKUP_OVERDUE).expect("assessed");
    assert_eq!(overdue.status, ConditionStatus::False);
    assert_eq!(overdue.reason, "BackupRecent");
    assert_eq!(early.wake_at, Some(at(120)));
    let late = assessed(&db, None, at(120));
    let overdue = late.conditions.get(BACKUP_OVERDUE).expect("assessed");
    assert!(overdue.is_true() && overdue.is_warning());
    assert_eq!(overdue.reason, "NoRecentBackup");
    // A backup completes at 2:05: the 3:00 one is expected, by 4:00.
    let caught_up = assessed(&db, Some(at(125)), at(126));
    assert_eq!(
        caught_up.conditions.get(BACKUP_OVERDUE).map(|a| a.status),
        Some(ConditionStatus::False)
    );
    assert_eq!(caught_up.wake_at, Some(at(240)));
    assert_eq!(
        caught_up.fields.insights.and_then(|i| i.last_backup_time),
        Some(Time(at(125)))
    );
}

#[test]
fn a_database_without_a_schedule_is_never_overdue() {
    let db = DbBuilder::named("orders").created(at(0)).build();
    let draft = assessed(&db, None, at(1_000_000));
    let overdue = draft.conditions.get(BACKUP_OVERDUE).expect("assessed");
    assert_eq!(overdue.status, ConditionStatus::False);
    assert_eq!(overdue.reason, "NotScheduled");
    assert_eq!(draft.wake_at, None);
}

#[test]
fn overdue_backups_publish_one_warning_and_one_event_when_a_backup_catches_up() {
    let mut db = every_minute(at(30));
    let summary = |t: i64| BackupSummary {
        last_successful_at: Some(Time(at(t))),
        ..Default::default()
    };
    let (notes, _) = reconcile(&mut db, &Observed::default(), at(90));
    assert!(!reasons(&notes).iter().any(|(_, r)| r == "BackupRecent"));
    let (notes, _) = reconcile(&mut db, &Observed::default(), at(120));
    assert_eq!(
        reasons(&notes)
            .into_iter()
            .filter(|(_, r)| r == "NoRecentBackup")
            .collect::<Vec<_>>(),
        [(EventType::Warning, "NoRecentBackup".to_string())]
    );
    let (notes, written) = reconcile(&mut db, &Observed::default(), at(150));
    assert!(notes.is_empty() && !written, "{notes:?}");
    // Level 3 writes status.backup once a backup completes.
    db.status.get_or_insert_default().backup = Some(summary(155));
    let level = symptoms_level();
    let mut draft = assess(
        &level,
        &db,
        &Observed::default(),
        &no_changes(),
        &ApplyReport::default(),
        at(156),
    );
    draft.fields.backup = Some(summary(155));
    Symptoms.assess(
        &db,
        &Observed::default(),
        &ApplyReport::default(),
        &mut draft,
    );
    let notes = events_for(&db, &no_changes(), &ApplyReport::default(), &draft);
    assert_eq!(
        reasons(&notes)
            .into_iter()
            .filter(|(_, r)| r == "BackupRecent")
            .collect::<Vec<_>>(),
        [(EventType::Normal, "BackupRecent".to_string())]
    );
}
