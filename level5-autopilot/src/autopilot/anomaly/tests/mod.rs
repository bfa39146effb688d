//! Tests of the baseline on synthetic series whose outcome is known
//! (steady, a spike, a slow drift, daily and weekly cycles), with a
//! synthetic clock; the capability's on synthetic readings are in
//! [`capability`].

mod capability;

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
