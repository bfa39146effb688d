//! Anomaly detection (`spec.anomalyDetection`): a baseline learned of each
//! database from the operator's own measurements, and the `Anomaly`
//! condition when a metric leaves its expected range for long enough.
//!
//! What it models: five metrics of the primary (transactions per second,
//! active connections, mean query time, deadlocks per minute, the rollback
//! ratio; [`sample`]) and, for each, exponentially weighted means and
//! variances overall and by hour of the week ([`model`]). Why: a fixed
//! threshold (Level 4's symptoms) cannot say that 400 transactions per
//! second is normal for one database and alarming for another; the
//! database's own history can.
//!
//! How it runs, every reconcile, as pure functions of the database, what
//! was observed and the clock ([`progress`]):
//! - the baseline is kept in the cluster, in the ConfigMap
//!   `<name>-baseline` (JSON, owned by the database), so a restarted
//!   operator carries on from what was learned; it is written as a *record*
//!   ([`shared::capability::Desired::add_record`]): once per sample, never
//!   reported as progress nor as an Event;
//! - a sample is taken from Level 4's latest reading ([`Observed::reading`])
//!   when it is at least nine tenths of `intervalSeconds` newer than the
//!   last one learned (the collector measures on its own interval,
//!   `--metrics-interval`, so samples come no faster than it measures), and
//!   the reconcile asks to be woken for the next one
//!   ([`StatusDraft::wake_at`]);
//! - status (`status.autopilot.anomaly`) and the `Anomaly` condition change
//!   only at decisions: the warm-up ending, a metric starting or ending a
//!   deviation; the figures a deviation reports are those of the sample
//!   that made it one. Events: `AnomalyDetected` (Warning) naming the
//!   metric, the value and the range expected, `AnomalyCleared` when it is
//!   back in range, `BaselineRelearned` when a lasting change becomes the
//!   new normal, `BaselineLearned` when the warm-up ends;
//! - `/metrics` exports the same signal as `pgdb_database_anomaly{metric}`:
//!   Level 4's collector passes the status on with each reading, so a
//!   scrape reads no API.
//!
//! Where it stops: the verdict says a metric is unusual for this database,
//! not why, nor whether it is bad (a busier day is an anomaly too); a
//! database whose server does not answer gives no sample (its last verdict
//! stays); turning `spec.anomalyDetection` off deletes the baseline (the
//! ConfigMap is pruned), so turning it on again starts a new warm-up.

pub mod model;
pub mod sample;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use shared::PostgresDB;
use shared::autopilot::anomaly::{AnomalyDetectionSpec, AnomalyStatus, Deviation, Metric};
use shared::capability::{
    ApplyReport, Capability, Desired, EventType, Observed, Query, SpecProblem, StatusDraft,
};
use shared::conditions::Assessment;
use shared::error::Error;

use self::model::{Baseline, Judge, Learned, Range, Settings};
use self::sample::Counters;

/// The condition: True while a metric deviates from its baseline.
pub const ANOMALY: &str = "Anomaly";

/// The key of the baseline's JSON in its ConfigMap.
pub const BASELINE_KEY: &str = "baseline.json";

/// The reason of a refused `spec.anomalyDetection`.
pub const INVALID: &str = "InvalidAnomalyDetection";

/// The longest wait for a reading newer than the last sample, once the
/// next sample is due (the collector measures on its own interval).
const POLL_MILLISECONDS: i64 = 5_000;

/// The ConfigMap keeping `db`'s baseline (`<name>-baseline`).
pub fn baseline_name(db: &PostgresDB) -> String {
    format!("{}-baseline", db.name_any())
}

/// What this reconcile does with the baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The baseline to keep (the stored one when no sample was taken).
    pub baseline: Baseline,
    /// The sample learned in this reconcile, with its verdict.
    pub learned: Option<Learned>,
    /// Why the stored baseline could not be read, when it could not (the
    /// baseline starts again).
    pub unreadable: Option<String>,
    /// When the next sample is due.
    pub next_sample: Timestamp,
    /// Whether the baseline differs from the stored one (a sample learned,
    /// new counters, or a baseline started again).
    pub changed: bool,
}

/// The baseline the ConfigMap keeps; an empty one when there is none yet,
/// an error saying why when it does not parse.
pub fn stored(db: &PostgresDB, observed: &Observed) -> Result<Baseline, String> {
    let Some(map) = observed.get::<ConfigMap>(&baseline_name(db)) else {
        return Ok(Baseline::default());
    };
    let Some(text) = map.data.as_ref().and_then(|d| d.get(BASELINE_KEY)) else {
        return Ok(Baseline::default());
    };
    serde_json::from_str(text).map_err(|error| {
        format!(
            "ConfigMap {} holds no baseline the operator can read ({error})",
            baseline_name(db)
        )
    })
}

/// Takes a sample from the latest reading when one is due, and learns it.
pub fn progress(
    db: &PostgresDB,
    spec: &AnomalyDetectionSpec,
    observed: &Observed,
    now: Timestamp,
) -> Progress {
    let settings = Settings::of(spec);
    let interval = i64::from(spec.interval_seconds) * 1000;
    let (mut baseline, unreadable) = match stored(db, observed) {
        Ok(baseline) => (baseline, None),
        Err(why) => (Baseline::default(), Some(why)),
    };
    let mut learned = None;
    let mut changed = unreadable.is_some();
    let current = observed
        .reading()
        .and_then(|reading| Counters::of(reading).map(|counters| (reading, counters)));
    let measured = current.is_some();
    if let Some((reading, counters)) = current {
        match &baseline.last {
            None => {
                baseline.last = Some(counters);
                changed = true;
            }
            Some(last) if (counters.at - last.at) * 10 >= interval * 9 => {
                if let Some(sample) = sample::between(last, &counters, reading) {
                    let step = model::learn(&baseline, &sample, &settings);
                    baseline = step.baseline.clone();
                    learned = Some(step);
                }
                baseline.last = Some(counters);
                changed = true;
            }
            Some(_) => {}
        }
    }
    let due = baseline
        .last
        .as_ref()
        .map_or(now.as_millisecond(), |last| last.at + interval);
    // A reading due but not in yet is polled for; a database without one
    // (not measured yet, or its server did not answer) is looked at again
    // an interval later, not every few seconds.
    let wait = if measured {
        POLL_MILLISECONDS.min(interval)
    } else {
        interval
    };
    let earliest = now.as_millisecond() + wait;
    let next_sample = Timestamp::from_millisecond(due.max(earliest)).unwrap_or(now);
    Progress {
        baseline,
        learned,
        unreadable,
        next_sample,
        changed,
    }
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A metric's value as status and Events write it.
pub fn value_text(metric: Metric, value: f64) -> String {
    match metric {
        Metric::TransactionsPerSecond => format!("{value:.1} transactions/s"),
        Metric::ActiveConnections => format!("{value:.0} active connections"),
        Metric::MeanQueryMilliseconds => format!("{value:.1} ms"),
        Metric::DeadlocksPerMinute => format!("{value:.1} deadlocks/min"),
        Metric::RollbackRatio => format!("{:.1}% rolled back", value * 100.0),
    }
}

/// A range as status and Events write it ("12.0 to 30.5").
pub fn range_text(metric: Metric, range: &Range) -> String {
    match metric {
        Metric::ActiveConnections => format!("{:.0} to {:.0}", range.low, range.high),
        Metric::RollbackRatio => {
            format!("{:.1}% to {:.1}%", range.low * 100.0, range.high * 100.0)
        }
        _ => format!("{:.1} to {:.1}", range.low, range.high),
    }
}

fn judge_text(judge: Judge) -> String {
    match judge {
        Judge::Overall => "learned over the recent samples".into(),
        Judge::HourOfWeek(hour) => {
            const DAYS: [&str; 7] = [
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
                "Sunday",
            ];
            let day = DAYS.get(usize::from(hour / 24)).copied().unwrap_or("?");
            format!("learned for {day}s at {:02}:00 UTC", hour % 24)
        }
    }
}

/// `status.autopilot.anomaly` after `progress`: the deviations of the
/// sample learned (those that were already deviating keep what they
/// reported then), or the previous ones when no sample was taken.
pub fn status(db: &PostgresDB, progress: &Progress, settings: &Settings) -> AnomalyStatus {
    let previous = previous_status(db);
    let deviations = match &progress.learned {
        None => previous.map(|p| p.deviations.clone()).unwrap_or_default(),
        Some(learned) => learned
            .verdict
            .anomalies()
            .map(|judged| {
                let kept = previous.and_then(|p| {
                    p.deviations
                        .iter()
                        .find(|d| d.metric == judged.metric.name())
                });
                kept.cloned().unwrap_or_else(|| Deviation {
                    metric: judged.metric.name().to_string(),
                    observed: value_text(judged.metric, judged.value),
                    expected: judged
                        .expected
                        .map(|(range, _)| range_text(judged.metric, &range))
                        .unwrap_or_default(),
                    since: Time(timestamp(judged.since.unwrap_or(learned.verdict.at))),
                })
            })
            .collect(),
    };
    let latest = progress.baseline.last.as_ref().map_or(0, |last| last.at);
    AnomalyStatus {
        warm: progress.baseline.is_warm(settings),
        by_hour_of_week: progress.baseline.has_a_week(latest),
        deviations,
    }
}

fn previous_status(db: &PostgresDB) -> Option<&AnomalyStatus> {
    db.status
        .as_ref()
        .and_then(|s| s.autopilot.as_ref())
        .and_then(|a| a.anomaly.as_ref())
}

/// The `Anomaly` condition of `status`.
pub fn condition(status: &AnomalyStatus, spec: &AnomalyDetectionSpec) -> Assessment {
    if !status.deviations.is_empty() {
        let what: Vec<String> = status
            .deviations
            .iter()
            .map(|d| {
                format!(
                    "{} was {}, expected {} (since {})",
                    d.metric, d.observed, d.expected, d.since.0
                )
            })
            .collect();
        return Assessment::yes(
            "MetricOutOfRange",
            format!(
                "{}; a deviation of {} samples in a row from the learned baseline",
                what.join("; "),
                spec.sustain_samples
            ),
        );
    }
    if !status.warm {
        return Assessment::unknown(
            "WarmingUp",
            format!(
                "learning the baseline: no verdict before {} samples, one every {} s",
                spec.warm_up_samples, spec.interval_seconds
            ),
        );
    }
    Assessment::no(
        "WithinBaseline",
        "every metric measured is within the range learned from this database's history",
    )
}

/// The Events of `progress`: deviations that start or end, a relearned
/// metric, the warm-up ending, an unreadable baseline.
pub fn notes(
    db: &PostgresDB,
    progress: &Progress,
    settings: &Settings,
) -> Vec<(EventType, &'static str, String)> {
    let mut notes = Vec::new();
    if let Some(why) = &progress.unreadable {
        notes.push((
            EventType::Warning,
            "BaselineUnreadable",
            format!("{why}; learning starts again"),
        ));
    }
    let Some(learned) = &progress.learned else {
        return notes;
    };
    let previous = previous_status(db);
    let was_deviating = |metric: Metric| {
        previous.is_some_and(|p| p.deviations.iter().any(|d| d.metric == metric.name()))
    };
    if !previous.is_some_and(|p| p.warm) && progress.baseline.is_warm(settings) {
        notes.push((
            EventType::Normal,
            "BaselineLearned",
            format!(
                "the baseline learned {} samples: each metric is judged against it from now on",
                progress.baseline.samples
            ),
        ));
    }
    let judged: BTreeMap<Metric, _> = learned
        .verdict
        .metrics
        .iter()
        .map(|m| (m.metric, m))
        .collect();
    for verdict in learned.verdict.anomalies() {
        if was_deviating(verdict.metric) {
            continue;
        }
        let Some((range, judge)) = verdict.expected else {
            continue;
        };
        notes.push((
            EventType::Warning,
            "AnomalyDetected",
            format!(
                "{} is {}, outside the expected {} ({}), for {} samples in a row",
                verdict.metric,
                value_text(verdict.metric, verdict.value),
                range_text(verdict.metric, &range),
                judge_text(judge),
                verdict.streak
            ),
        ));
    }
    for metric in Metric::ALL {
        if !was_deviating(metric) || judged.get(&metric).is_some_and(|v| v.anomalous) {
            continue;
        }
        if learned.relearned.contains(&metric) {
            notes.push((
                EventType::Normal,
                "BaselineRelearned",
                format!(
                    "{metric} stayed outside its range for {} samples: its baseline is learned \
                     again from the new level",
                    settings.relearn_after()
                ),
            ));
            continue;
        }
        let now = judged
            .get(&metric)
            .and_then(|v| {
                v.expected.map(|(range, _)| {
                    format!(
                        ": {}, expected {}",
                        value_text(metric, v.value),
                        range_text(metric, &range)
                    )
                })
            })
            .unwrap_or_default();
        notes.push((
            EventType::Normal,
            "AnomalyCleared",
            format!("{metric} is back within its learned range{now}"),
        ));
    }
    notes
}

/// The problems of `spec`, each naming its field.
pub fn problems(spec: &AnomalyDetectionSpec) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    let mut check = |field: &str, value: u32, low: u32, high: u32| {
        if !(low..=high).contains(&value) {
            problems.push(SpecProblem::new(
                format!("spec.anomalyDetection.{field}"),
                INVALID,
                format!("is {value}; it must be between {low} and {high}"),
            ));
        }
    };
    check("intervalSeconds", spec.interval_seconds, 5, 3600);
    check("warmUpSamples", spec.warm_up_samples, 5, 10080);
    check("thresholdSigmas", spec.threshold_sigmas, 2, 10);
    check("sustainSamples", spec.sustain_samples, 1, 100);
    if spec.sustain_samples > spec.warm_up_samples {
        problems.push(SpecProblem::new(
            "spec.anomalyDetection.sustainSamples",
            INVALID,
            format!(
                "is {}, more than warmUpSamples ({}): a deviation that long is learned as the \
                 new normal before it is ever reported",
                spec.sustain_samples, spec.warm_up_samples
            ),
        ));
    }
    problems
}

/// The baseline's ConfigMap holding `baseline`.
pub fn baseline_config_map(db: &PostgresDB, baseline: &Baseline) -> Result<ConfigMap, Error> {
    let text = serde_json::to_string(baseline).map_err(|source| Error::Serialize {
        what: baseline_name(db),
        source,
    })?;
    Ok(config_map_of(db, text))
}

/// The ConfigMap to keep after `progress`: the stored text as it is when
/// nothing was learned (JSON does not give every float back exactly, so
/// writing it again would change it at every reconcile), else the new
/// baseline.
fn kept_config_map(
    db: &PostgresDB,
    observed: &Observed,
    progress: &Progress,
) -> Result<ConfigMap, Error> {
    let stored = observed
        .get::<ConfigMap>(&baseline_name(db))
        .and_then(|map| map.data)
        .and_then(|mut data| data.remove(BASELINE_KEY));
    match stored {
        Some(text) if !progress.changed => Ok(config_map_of(db, text)),
        _ => baseline_config_map(db, &progress.baseline),
    }
}

fn config_map_of(db: &PostgresDB, text: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(baseline_name(db)),
            ..Default::default()
        },
        data: Some([(BASELINE_KEY.to_string(), text)].into()),
        ..Default::default()
    }
}

/// Anomaly detection.
pub struct AnomalyDetector;

impl Capability for AnomalyDetector {
    fn name(&self) -> &'static str {
        "anomaly-detection"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["anomalyDetection"]
    }

    fn observe(&self, db: &PostgresDB) -> Vec<Query> {
        if db.spec.anomaly_detection.is_none() {
            return Vec::new();
        }
        vec![Query::named::<ConfigMap>(baseline_name(db))]
    }

    fn validate(&self, db: &PostgresDB, _observed: &Observed) -> Vec<SpecProblem> {
        db.spec
            .anomaly_detection
            .as_ref()
            .map(problems)
            .unwrap_or_default()
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        now: Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        let Some(spec) = &db.spec.anomaly_detection else {
            return Ok(());
        };
        let progress = progress(db, spec, observed, now);
        desired.add_record(&kept_config_map(db, observed, &progress)?)?;
        for (type_, reason, message) in notes(db, &progress, &Settings::of(spec)) {
            desired.note(type_, reason, message);
        }
        Ok(())
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        let Some(spec) = &db.spec.anomaly_detection else {
            return;
        };
        let anomaly = if db.spec.paused {
            // Nothing is learned while paused: what was said stays.
            previous_status(db).cloned().unwrap_or_default()
        } else {
            let progress = progress(db, spec, observed, status.now);
            status.wake_at(progress.next_sample);
            self::status(db, &progress, &Settings::of(spec))
        };
        status.conditions.set(ANOMALY, condition(&anomaly, spec));
        status
            .fields
            .autopilot
            .get_or_insert_with(Default::default)
            .anomaly = Some(anomaly);
    }
}
