//! Tests of the baseline on synthetic series whose outcome is known
//! (steady, a spike, a slow drift, daily and weekly cycles), with a
//! synthetic clock, and of the capability on synthetic readings.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use shared::autopilot::AutopilotStatus;
use shared::autopilot::anomaly::{AnomalyDetectionSpec, AnomalyStatus, Metric};
use shared::capability::{ApplyReport, Capability, Desired, EventType, StatusDraft};
use shared::conditions::ConditionStatus;
use shared::readings::{DatabaseReading, DatabaseStats};
use shared::testing::{DbBuilder, ObservedBuilder};

use super::model::{self, Baseline, Judge, Sample, Settings, Verdict};
use super::sample::{self, Counters};
use super::*;

/// The defaults: a sample a minute, an hour's warm-up, 4 σ, 3 samples.
fn spec() -> AnomalyDetectionSpec {
    serde_json::from_str("{}").expect("the defaults")
}

/// Monday 30 November 2026, 00:00 UTC, in ms.
fn monday() -> i64 {
    "2026-11-30T00:00:00Z"
        .parse::<Timestamp>()
        .expect("an instant")
        .as_millisecond()
}

const MINUTE: i64 = 60_000;

/// A deterministic source of noise (xorshift64*, Box–Muller), so a series
/// is the same on every run.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn gaussian(&mut self, mean: f64, sd: f64) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        mean + sd * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// A database's metrics under a load of `tps` transactions per second on
/// average: connections, query time and rollbacks with it, and noise.
fn load(tps: f64, noise: &mut Noise) -> BTreeMap<Metric, f64> {
    BTreeMap::from([
        (
            Metric::TransactionsPerSecond,
            noise.gaussian(tps, 0.05 * tps).max(0.0),
        ),
        (
            Metric::ActiveConnections,
            noise.gaussian(tps / 25.0, 1.0).max(0.0).round(),
        ),
        (
            Metric::MeanQueryMilliseconds,
            noise.gaussian(2.0, 0.3).max(0.1),
        ),
        (Metric::DeadlocksPerMinute, 0.0),
        (
            Metric::RollbackRatio,
            noise.gaussian(0.02, 0.005).clamp(0.0, 1.0),
        ),
    ])
}

/// The verdicts on a sample a minute from Monday 00:00 for `minutes`, the
/// load at each minute given by `tps`.
fn run(minutes: i64, tps: impl Fn(i64) -> f64) -> (Vec<Verdict>, Baseline) {
    let settings = Settings::of(&spec());
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut baseline = Baseline::default();
    let mut verdicts = Vec::new();
    for minute in 0..minutes {
        let sample = Sample {
            at: monday() + minute * MINUTE,
            values: load(tps(minute), &mut noise),
        };
        let learned = model::learn(&baseline, &sample, &settings);
        baseline = learned.baseline;
        verdicts.push(learned.verdict);
    }
    (verdicts, baseline)
}

/// The minutes whose sample has an anomalous metric.
fn anomalous_minutes(verdicts: &[Verdict]) -> Vec<i64> {
    verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.anomalies().next().is_some())
        .map(|(minute, _)| minute as i64)
        .collect()
}

/// Anomalies that start (a sample anomalous after one that was not).
fn episodes(verdicts: &[Verdict]) -> usize {
    let anomalous: Vec<bool> = verdicts
        .iter()
        .map(|v| v.anomalies().next().is_some())
        .collect();
    anomalous
        .iter()
        .enumerate()
        .filter(|&(i, &now)| now && (i == 0 || !anomalous[i - 1]))
        .count()
}

const DAY: i64 = 24 * 60;
const WEEK: i64 = 7 * DAY;

#[test]
fn no_verdict_is_given_during_the_warm_up() {
    let (verdicts, _) = run(60, |minute| if minute < 30 { 100.0 } else { 1000.0 });
    assert!(
        verdicts
            .iter()
            .flat_map(|v| &v.metrics)
            .all(|m| m.expected.is_none()),
        "a verdict was given before 60 samples"
    );
}

#[test]
fn a_steady_load_raises_no_anomaly_in_a_week() {
    let (verdicts, _) = run(WEEK, |_| 100.0);
    let judged: Vec<_> = verdicts
        .iter()
        .flat_map(|v| &v.metrics)
        .filter(|m| m.expected.is_some())
        .collect();
    let outside = judged.iter().filter(|m| m.outside()).count();
    let anomalous = judged.iter().filter(|m| m.anomalous).count();
    eprintln!(
        "steady load, a week at one sample a minute: {} metric samples judged, {outside} outside \
         the range ({:.4}%), {anomalous} anomalous (false-positive rate {:.4}%)",
        judged.len(),
        100.0 * outside as f64 / judged.len() as f64,
        100.0 * anomalous as f64 / judged.len() as f64
    );
    assert_eq!(anomalous_minutes(&verdicts), Vec::<i64>::new());
}

#[test]
fn a_spike_is_an_anomaly_after_the_sustained_samples_and_clears_when_it_ends() {
    let start = DAY;
    let end = start + 30;
    let (verdicts, _) = run(DAY + 120, |minute| {
        if (start..end).contains(&minute) {
            500.0
        } else {
            100.0
        }
    });
    let anomalous = anomalous_minutes(&verdicts);
    let first = anomalous.first().copied().expect("the spike was detected");
    let detected_after = first - start + 1;
    eprintln!(
        "spike ×5 at minute {start}: anomalous from sample {detected_after} of the spike \
         ({detected_after} min at one sample a minute), cleared at minute {}",
        anomalous.last().copied().unwrap_or_default() + 1 - start
    );
    assert_eq!(detected_after, i64::from(spec().sustain_samples));
    assert_eq!(anomalous, (first..end).collect::<Vec<_>>());
    let at_detection = &verdicts[first as usize];
    let tps = at_detection
        .anomalies()
        .find(|m| m.metric == Metric::TransactionsPerSecond)
        .expect("transactions per second deviate");
    assert_eq!(tps.streak, 3);
    assert_eq!(tps.since, Some(monday() + start * MINUTE));
    assert!(
        at_detection
            .anomalies()
            .any(|m| m.metric == Metric::ActiveConnections),
        "the connections that came with the load were not noticed"
    );
}

#[test]
fn a_spike_is_not_learned_so_the_range_after_it_is_the_range_before() {
    let settings = Settings::of(&spec());
    let (_, before) = run(DAY, |_| 100.0);
    let (_, after) = run(DAY + 30, |minute| if minute >= DAY { 500.0 } else { 100.0 });
    let range = |b: &Baseline| {
        b.metrics[&Metric::TransactionsPerSecond]
            .overall
            .range(Metric::TransactionsPerSecond, &settings)
    };
    assert_eq!(range(&before), range(&after));
}

#[test]
fn a_lasting_change_becomes_the_new_normal_after_two_warm_ups() {
    let start = DAY;
    let (verdicts, _) = run(
        DAY + 300,
        |minute| if minute >= start { 500.0 } else { 100.0 },
    );
    let anomalous = anomalous_minutes(&verdicts);
    let last = anomalous.last().copied().expect("the change was detected");
    // Relearned at the 120th sample outside: the last anomalous sample is
    // the one before it.
    assert_eq!(last - start + 1, 119);
    assert_eq!(episodes(&verdicts), 1, "anomalous again after relearning");
}

#[test]
fn a_slow_drift_is_learned_not_reported() {
    // From 100 to 300 transactions per second over three days.
    let (verdicts, _) = run(3 * DAY, |minute| {
        100.0 + 200.0 * minute as f64 / (3 * DAY) as f64
    });
    assert_eq!(anomalous_minutes(&verdicts), Vec::<i64>::new());
}

#[test]
fn a_smooth_daily_cycle_is_followed_not_reported() {
    let (verdicts, _) = run(WEEK, |minute| {
        let phase = 2.0 * std::f64::consts::PI * (minute % DAY) as f64 / DAY as f64;
        200.0 + 100.0 * phase.sin()
    });
    assert_eq!(anomalous_minutes(&verdicts), Vec::<i64>::new());
}

/// Office hours: 400 transactions per second on weekdays from 08:00 to
/// 18:00 UTC, 100 otherwise: a step no recent past foretells.
fn office_hours(minute: i64) -> f64 {
    let day = (minute / DAY) % 7;
    let hour = (minute % DAY) / 60;
    if day < 5 && (8..18).contains(&hour) {
        400.0
    } else {
        100.0
    }
}

#[test]
fn office_hours_are_anomalies_the_first_week_and_normal_once_each_hour_of_the_week_is_learned() {
    let (verdicts, baseline) = run(3 * WEEK, office_hours);
    let weeks: Vec<usize> = (0..3)
        .map(|week| {
            let range = (week * WEEK) as usize..((week + 1) * WEEK) as usize;
            episodes(&verdicts[range])
        })
        .collect();
    eprintln!("office hours: anomalies started per week: {weeks:?}");
    assert!(weeks[0] >= 5, "the first week's steps went unnoticed");
    assert_eq!(weeks[1..], [0, 0]);
    let at_ten_on_a_tuesday = (2 * WEEK + DAY + 10 * 60) as usize;
    assert!(matches!(
        verdicts[at_ten_on_a_tuesday].metrics[0].expected,
        Some((_, Judge::HourOfWeek(34)))
    ));
    assert!(baseline.has_a_week(monday() + 3 * WEEK * MINUTE));
}

#[test]
fn a_busy_hour_s_load_at_night_is_an_anomaly_once_the_hours_are_learned() {
    // Week 3, Tuesday 03:00: an office hour's load at night.
    let night = 2 * WEEK + DAY + 3 * 60;
    let (verdicts, _) = run(night + 60, |minute| {
        if minute >= night {
            400.0
        } else {
            office_hours(minute)
        }
    });
    let anomalous = anomalous_minutes(&verdicts[night as usize..]);
    assert_eq!(anomalous.first(), Some(&2), "{anomalous:?}");
}

#[test]
fn an_idle_database_s_flat_baseline_does_not_call_noise_a_deviation() {
    let settings = Settings::of(&spec());
    let mut baseline = Baseline::default();
    for minute in 0..120 {
        let sample = Sample {
            at: monday() + minute * MINUTE,
            values: BTreeMap::from([(Metric::TransactionsPerSecond, 0.05)]),
        };
        baseline = model::learn(&baseline, &sample, &settings).baseline;
    }
    let twice = |tps: f64| {
        let sample = Sample {
            at: monday() + 121 * MINUTE,
            values: BTreeMap::from([(Metric::TransactionsPerSecond, tps)]),
        };
        model::verdict(&baseline, &sample, &settings).metrics[0].outside()
    };
    assert!(
        !twice(1.5),
        "1.5 transactions a second is noise for an idle database"
    );
    assert!(twice(50.0));
}

#[test]
fn the_hour_of_the_week_starts_on_monday_at_midnight_utc() {
    assert_eq!(model::hour_of_week(monday()), 0);
    assert_eq!(model::hour_of_week(monday() + 25 * 60 * MINUTE), 25);
    assert_eq!(model::hour_of_week(monday() - 60 * MINUTE), 167);
    assert_eq!(model::hour_of_week(0), 72, "the epoch was a Thursday");
}

// Samples from readings.

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
