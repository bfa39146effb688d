//! Tests of samples from readings, and of the capability: what it reads,
//! writes, says and asks for, reconcile by reconcile.

use super::*;

fn reading(seconds: i64, commits: u64, rollbacks: u64, active: u64) -> DatabaseReading {
    DatabaseReading {
        at: Timestamp::from_second(seconds).expect("an instant"),
        pod: "orders-0".into(),
        connections: BTreeMap::from([("active".into(), active), ("idle".into(), 3)]),
        databases: BTreeMap::from([
            (
                "app".into(),
                DatabaseStats {
                    xact_commit: commits,
                    xact_rollback: rollbacks,
                    deadlocks: 0,
                    size_bytes: 1,
                },
            ),
            (
                "postgres".into(),
                DatabaseStats {
                    xact_commit: 1000,
                    ..Default::default()
                },
            ),
        ]),
        ..Default::default()
    }
}

fn counters(reading: &DatabaseReading) -> Counters {
    Counters::of(reading).expect("the server answered")
}

#[test]
fn rates_are_counter_differences_over_the_time_between_two_readings() {
    let earlier = reading(1_000, 100, 10, 1);
    let mut now = reading(1_060, 1_300, 310, 7);
    now.databases.get_mut("app").expect("app").deadlocks = 2;
    now.statements = Some(shared::readings::StatementStats {
        calls: 600,
        total_execution_milliseconds: 1_500.0,
    });
    let mut first = counters(&earlier);
    first.calls = Some(100);
    first.execution_milliseconds = Some(500.0);
    let sample = sample::between(&first, &counters(&now), &now).expect("a sample");
    assert_eq!(
        sample.values[&Metric::TransactionsPerSecond],
        1_500.0 / 60.0
    );
    assert_eq!(sample.values[&Metric::ActiveConnections], 7.0);
    assert_eq!(sample.values[&Metric::RollbackRatio], 300.0 / 1_500.0);
    assert_eq!(sample.values[&Metric::DeadlocksPerMinute], 2.0);
    assert_eq!(sample.values[&Metric::MeanQueryMilliseconds], 2.0);
}

#[test]
fn counters_that_went_backwards_or_another_pod_give_no_sample() {
    let earlier = counters(&reading(1_000, 100, 10, 1));
    let reset = reading(1_060, 5, 0, 1);
    assert_eq!(sample::between(&earlier, &counters(&reset), &reset), None);
    let mut moved = reading(1_060, 200, 10, 1);
    moved.pod = "orders-1".into();
    assert_eq!(sample::between(&earlier, &counters(&moved), &moved), None);
    let quiet = reading(1_060, 100, 10, 0);
    let sample = sample::between(&earlier, &counters(&quiet), &quiet).expect("a sample");
    assert!(
        !sample.values.contains_key(&Metric::RollbackRatio),
        "a ratio of no transactions"
    );
    assert!(!sample.values.contains_key(&Metric::MeanQueryMilliseconds));
    assert!(
        Counters::of(&DatabaseReading::down(
            Timestamp::UNIX_EPOCH,
            "orders-0",
            "down"
        ))
        .is_none()
    );
}

// The capability.

fn database(status: Option<AnomalyStatus>) -> PostgresDB {
    let mut db = DbBuilder::named("orders").anomaly_detection(spec());
    if let Some(anomaly) = status {
        db = db.autopilot_status(AutopilotStatus {
            anomaly: Some(anomaly),
            ..Default::default()
        });
    }
    db.build()
}

/// A baseline warm on a steady 100 transactions per second, from a
/// reading a minute at 60 commits a second... taken at `seconds` (the
/// last of them), with its counters.
fn warm_baseline(until: i64) -> (Baseline, u64) {
    let settings = Settings::of(&spec());
    let mut baseline = Baseline::default();
    let mut commits = 0;
    for i in (0..=70).rev() {
        commits += 6_000;
        let at = until - i * 60;
        let now = reading(at, commits, 0, 4);
        let current = counters(&now);
        if let Some(last) = &baseline.last
            && let Some(sample) = sample::between(last, &current, &now)
        {
            baseline = model::learn(&baseline, &sample, &settings).baseline;
        }
        baseline.last = Some(current);
    }
    (baseline, commits)
}

fn stored_map(db: &PostgresDB, baseline: &Baseline) -> ConfigMap {
    baseline_config_map(db, baseline).expect("serialises")
}

struct Outcome {
    desired: Desired,
    status: StatusDraft,
}

fn reconcile(db: &PostgresDB, observed: &shared::capability::Observed, now: i64) -> Outcome {
    let now = Timestamp::from_second(now).expect("an instant");
    let mut desired = Desired::default();
    AnomalyDetector
        .desire(db, observed, now, &mut desired)
        .expect("desires");
    let mut status = StatusDraft {
        now,
        ..Default::default()
    };
    AnomalyDetector.assess(db, observed, &ApplyReport::default(), &mut status);
    Outcome { desired, status }
}

fn stored_baseline(desired: &Desired) -> Baseline {
    let object = desired
        .objects()
        .iter()
        .find(|o| o.name == "orders-baseline")
        .expect("the baseline is desired");
    assert!(object.record, "the baseline is not written as a record");
    serde_json::from_str(
        object.value["data"][BASELINE_KEY]
            .as_str()
            .expect("the baseline's JSON"),
    )
    .expect("parses")
}

fn anomaly_status(status: &StatusDraft) -> AnomalyStatus {
    status
        .fields
        .autopilot
        .as_ref()
        .and_then(|a| a.anomaly.clone())
        .expect("status.autopilot.anomaly")
}

#[test]
fn the_first_reading_starts_the_baseline_and_the_next_sample_is_asked_for() {
    let db = database(None);
    let observed = ObservedBuilder::new()
        .reading(reading(1_000, 10, 0, 1))
        .build();
    let outcome = reconcile(&db, &observed, 1_001);
    let baseline = stored_baseline(&outcome.desired);
    assert_eq!(baseline.last.as_ref().map(|c| c.at), Some(1_000_000));
    assert_eq!(baseline.samples, 0);
    let condition = outcome.status.conditions.get(ANOMALY).expect("assessed");
    assert_eq!(condition.status, ConditionStatus::Unknown);
    assert_eq!(condition.reason, "WarmingUp");
    assert_eq!(
        outcome.status.wake_at,
        Some(Timestamp::from_second(1_060).expect("an instant"))
    );
    assert!(outcome.desired.notes.is_empty());
}

#[test]
fn a_reading_newer_by_less_than_the_interval_is_not_learned() {
    let db = database(None);
    let (baseline, commits) = warm_baseline(10_000);
    let observed = ObservedBuilder::new()
        .with(&stored_map(&db, &baseline))
        .reading(reading(10_030, commits + 3_000, 0, 4))
        .build();
    let outcome = reconcile(&db, &observed, 10_031);
    assert_eq!(stored_baseline(&outcome.desired), baseline);
    // Due at 10 060; woken then.
    assert_eq!(
        outcome.status.wake_at,
        Some(Timestamp::from_second(10_060).expect("an instant"))
    );
}

#[test]
fn a_due_sample_whose_reading_has_not_come_yet_is_polled_for_not_spun_on() {
    let db = database(None);
    let (baseline, commits) = warm_baseline(10_000);
    let observed = ObservedBuilder::new()
        .with(&stored_map(&db, &baseline))
        .reading(reading(10_000, commits, 0, 4))
        .build();
    let outcome = reconcile(&db, &observed, 10_070);
    assert_eq!(
        outcome.status.wake_at,
        Some(Timestamp::from_second(10_075).expect("an instant"))
    );
}

#[test]
fn a_database_whose_server_does_not_answer_is_looked_at_again_an_interval_later() {
    let db = database(None);
    let (baseline, _) = warm_baseline(10_000);
    let down = DatabaseReading::down(
        Timestamp::from_second(10_070).expect("an instant"),
        "orders-0",
        "connection refused",
    );
    let observed = ObservedBuilder::new()
        .with(&stored_map(&db, &baseline))
        .reading(down)
        .build();
    let outcome = reconcile(&db, &observed, 10_071);
    assert_eq!(
        outcome.status.wake_at,
        Some(Timestamp::from_second(10_131).expect("an instant"))
    );
    let unmeasured = reconcile(&db, &ObservedBuilder::new().build(), 10_071);
    assert_eq!(
        unmeasured.status.wake_at,
        Some(Timestamp::from_second(10_131).expect("an instant"))
    );
}

#[test]
fn a_sustained_spike_sets_the_anomaly_condition_naming_the_metric_the_value_and_the_range() {
    let db = database(Some(AnomalyStatus {
        warm: true,
        ..Default::default()
    }));
    let (mut baseline, mut commits) = warm_baseline(10_000);
    // Two samples of the spike already learned (outside, not learned).
    let settings = Settings::of(&spec());
    for at in [10_060, 10_120] {
        commits += 60_000;
        let now = reading(at, commits, 0, 40);
        let sample = sample::between(
            baseline.last.as_ref().expect("counters"),
            &counters(&now),
            &now,
        )
        .expect("a sample");
        baseline = model::learn(&baseline, &sample, &settings).baseline;
        baseline.last = Some(counters(&now));
    }
    let observed = ObservedBuilder::new()
        .with(&stored_map(&db, &baseline))
        .reading(reading(10_180, commits + 60_000, 0, 40))
        .build();
    let outcome = reconcile(&db, &observed, 10_181);
    let condition = outcome.status.conditions.get(ANOMALY).expect("assessed");
    assert_eq!(condition.status, ConditionStatus::True);
    assert_eq!(condition.reason, "MetricOutOfRange");
    assert!(
        condition
            .message
            .contains("transactionsPerSecond was 1000.0 transactions/s, expected"),
        "{}",
        condition.message
    );
    let status = anomaly_status(&outcome.status);
    let tps = status
        .deviations
        .iter()
        .find(|d| d.metric == "transactionsPerSecond")
        .expect("deviates");
    assert_eq!(tps.observed, "1000.0 transactions/s");
    assert_eq!(
        tps.since.0,
        Timestamp::from_second(10_060).expect("an instant")
    );
    let detected: Vec<_> = outcome
        .desired
        .notes
        .iter()
        .filter(|n| n.reason == "AnomalyDetected")
        .collect();
    assert_eq!(detected.len(), 2, "{:?}", outcome.desired.notes);
    assert!(detected.iter().all(|n| n.type_ == EventType::Warning));
    assert!(
        detected[0]
            .message
            .starts_with("transactionsPerSecond is 1000.0 transactions/s, outside the expected "),
        "{}",
        detected[0].message
    );

    // The spike goes on: status and condition stay as they are.
    let next = database(Some(status.clone()));
    let mut after = stored_baseline(&outcome.desired);
    after.last = after.last.map(|mut c| {
        c.at = 10_180_000;
        c
    });
    let observed = ObservedBuilder::new()
        .with(&stored_map(&next, &after))
        .reading(reading(10_240, commits + 120_000, 0, 40))
        .build();
    let more = reconcile(&next, &observed, 10_241);
    assert_eq!(anomaly_status(&more.status), status);
    assert!(more.desired.notes.is_empty(), "{:?}", more.desired.notes);
}

#[test]
fn a_metric_back_in_range_clears_the_condition_with_a_normal_event() {
    let (baseline, commits) = warm_baseline(10_000);
    let deviating = AnomalyStatus {
        warm: true,
        by_hour_of_week: false,
        deviations: vec![shared::autopilot::anomaly::Deviation {
            metric: "transactionsPerSecond".into(),
            observed: "1000.0 transactions/s".into(),
            expected: "98.0 to 102.0".into(),
            since: Time(Timestamp::from_second(9_000).expect("an instant")),
        }],
    };
    let db = database(Some(deviating));
    let observed = ObservedBuilder::new()
        .with(&stored_map(&db, &baseline))
        .reading(reading(10_060, commits + 6_000, 0, 4))
        .build();
    let outcome = reconcile(&db, &observed, 10_061);
    let condition = outcome.status.conditions.get(ANOMALY).expect("assessed");
    assert_eq!(condition.status, ConditionStatus::False);
    assert!(anomaly_status(&outcome.status).deviations.is_empty());
    let cleared: Vec<_> = outcome
        .desired
        .notes
        .iter()
        .filter(|n| n.reason == "AnomalyCleared")
        .collect();
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].type_, EventType::Normal);
    assert!(
        cleared[0]
            .message
            .starts_with("transactionsPerSecond is back within its learned range: 100.0"),
        "{}",
        cleared[0].message
    );
}

#[test]
fn at_rest_between_samples_nothing_changes() {
    // Learned from synthetic samples: floats JSON does not all give back
    // exactly.
    let (_, mut baseline) = run(120, |_| 100.0);
    let commits = 1_000;
    baseline.last = Some(counters(&reading(10_000, commits, 0, 4)));
    let previous = AnomalyStatus {
        warm: true,
        ..Default::default()
    };
    let db = database(Some(previous.clone()));
    let observed = ObservedBuilder::new()
        .with(&stored_map(&db, &baseline))
        .reading(reading(10_000, commits, 0, 4))
        .build();
    let outcome = reconcile(&db, &observed, 10_020);
    // Byte for byte: JSON does not give every float back exactly, and a
    // text that differs would be written at every reconcile.
    let stored = stored_map(&db, &baseline);
    let object = &outcome.desired.objects()[0];
    assert_eq!(
        object.value["data"][BASELINE_KEY].as_str(),
        stored.data.as_ref().map(|d| d[BASELINE_KEY].as_str())
    );
    assert_eq!(anomaly_status(&outcome.status), previous);
    assert!(outcome.desired.notes.is_empty());
    let condition = outcome.status.conditions.get(ANOMALY).expect("assessed");
    assert_eq!(condition.reason, "WithinBaseline");
}

#[test]
fn the_end_of_the_warm_up_is_announced_once() {
    let (mut baseline, commits) = warm_baseline(10_000);
    baseline.samples = u64::from(spec().warm_up_samples) - 1;
    let db = database(Some(AnomalyStatus::default()));
    let observed = ObservedBuilder::new()
        .with(&stored_map(&db, &baseline))
        .reading(reading(10_060, commits + 6_000, 0, 4))
        .build();
    let outcome = reconcile(&db, &observed, 10_061);
    let reasons: Vec<_> = outcome
        .desired
        .notes
        .iter()
        .map(|n| n.reason.as_str())
        .collect();
    assert_eq!(reasons, ["BaselineLearned"]);
    assert!(anomaly_status(&outcome.status).warm);
}

#[test]
fn an_unreadable_baseline_is_reported_and_learning_starts_again() {
    let db = database(None);
    let mut map = stored_map(&db, &Baseline::default());
    map.data = Some([(BASELINE_KEY.to_string(), "{not json".to_string())].into());
    let observed = ObservedBuilder::new()
        .with(&map)
        .reading(reading(1_000, 10, 0, 1))
        .build();
    let outcome = reconcile(&db, &observed, 1_001);
    assert_eq!(outcome.desired.notes[0].reason, "BaselineUnreadable");
    assert_eq!(outcome.desired.notes[0].type_, EventType::Warning);
    assert_eq!(stored_baseline(&outcome.desired).samples, 0);
}

#[test]
fn out_of_range_settings_are_refused_naming_the_field() {
    let bad = AnomalyDetectionSpec {
        threshold_sigmas: 1,
        sustain_samples: 200,
        ..spec()
    };
    let problems = problems(&bad);
    let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.anomalyDetection.thresholdSigmas",
            "spec.anomalyDetection.sustainSamples",
            "spec.anomalyDetection.sustainSamples"
        ]
    );
    assert!(problems.iter().all(|p| p.reason == INVALID));
    assert!(problems[0].message.contains("between 2 and 10"));
    assert!(super::problems(&spec()).is_empty());
    let db = DbBuilder::named("orders").anomaly_detection(bad).build();
    assert!(
        !AnomalyDetector
            .validate(&db, &ObservedBuilder::new().build())
            .is_empty()
    );
}

#[test]
fn without_the_section_nothing_is_read_written_or_said() {
    let db = DbBuilder::named("orders").build();
    assert!(AnomalyDetector.observe(&db).is_empty());
    let outcome = reconcile(
        &db,
        &ObservedBuilder::new().reading(reading(1, 1, 0, 0)).build(),
        2,
    );
    assert!(outcome.desired.objects().is_empty());
    assert!(outcome.status.conditions.get(ANOMALY).is_none());
    assert!(outcome.status.fields.autopilot.is_none());
}

#[test]
fn the_baseline_it_writes_is_the_one_it_reads() {
    let db = database(None);
    let observed = ObservedBuilder::new()
        .reading(reading(1_000, 10, 0, 1))
        .build();
    let capabilities: Vec<Box<dyn Capability>> = vec![Box::new(AnomalyDetector)];
    shared::testing::assert_reads_what_it_applies(
        &capabilities,
        &db,
        &observed,
        Timestamp::from_second(1_001).expect("an instant"),
    );
}

/// Readings every second and reconciles when woken, the ConfigMap and the
/// status fed back as the cluster would: the loop as the operator runs it.
#[test]
fn the_reconcile_loop_learns_at_rest_and_reports_a_load() {
    let spec = AnomalyDetectionSpec {
        interval_seconds: 5,
        warm_up_samples: 12,
        threshold_sigmas: 4,
        sustain_samples: 2,
    };
    let mut db = DbBuilder::named("orders").anomaly_detection(spec).build();
    let mut map: Option<ConfigMap> = None;
    let mut commits = 0;
    let mut wake = 1_000;
    let mut conditions = Vec::new();
    for second in 1_000..1_200 {
        let load = (1_120..1_160).contains(&second);
        commits += if load { 40_000 } else { 2 };
        let reading = reading(second, commits, 0, if load { 4 } else { 0 });
        if second < wake {
            continue;
        }
        let mut observed = ObservedBuilder::new().reading(reading);
        if let Some(map) = &map {
            observed = observed.with(map);
        }
        let outcome = reconcile(&db, &observed.build(), second);
        let desired: ConfigMap = serde_json::from_value(outcome.desired.objects()[0].value.clone())
            .expect("a ConfigMap");
        map = Some(desired);
        let anomaly = anomaly_status(&outcome.status);
        let condition = outcome
            .status
            .conditions
            .get(ANOMALY)
            .expect("assessed")
            .clone();
        conditions.push((second, condition.status, condition.reason.clone()));
        db = database_with(db, anomaly);
        wake = outcome
            .status
            .wake_at
            .map(|t| t.as_second())
            .unwrap_or(second + 1);
    }
    let reasons: Vec<_> = conditions
        .iter()
        .map(|(s, _, r)| format!("{s} {r}"))
        .collect();
    assert!(
        conditions
            .iter()
            .any(|(s, status, _)| *s > 1_120 && *s < 1_160 && *status == ConditionStatus::True),
        "{reasons:?}"
    );
    assert_eq!(
        conditions.last().map(|(_, s, _)| *s),
        Some(ConditionStatus::False),
        "{reasons:?}"
    );
}

fn database_with(mut db: PostgresDB, anomaly: AnomalyStatus) -> PostgresDB {
    db.status
        .get_or_insert_with(Default::default)
        .autopilot
        .get_or_insert_with(Default::default)
        .anomaly = Some(anomaly);
    db
}
