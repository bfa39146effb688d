//! The baseline as a model: exponentially weighted means and variances of
//! each metric, overall and by hour of the week, and the verdict on a
//! sample. Pure functions of the baseline, the sample and the spec: the
//! tests feed them synthetic series with synthetic clocks.
//!
//! For each metric the baseline keeps:
//! - an *overall* model, learning every sample: during the warm-up the
//!   plain mean and variance of the samples so far (weight `1/n`), then an
//!   exponentially weighted mean and variance of weight
//!   `α = 2 / (warmUpSamples + 1)` (the weight whose centre of mass is the
//!   warm-up's length: the baseline remembers about as many samples as it
//!   warmed up with);
//! - one model per hour of the week (UTC, Monday 00:00 is hour 0), learning
//!   only the samples of its hour, the same way. Once a week of history
//!   exists, a sample is judged against its hour's model when that model
//!   has learned at least half a warm-up, so a load that is normal on
//!   Monday at 09:00 (and not at 03:00) stops counting as a deviation.
//!
//! A sample *deviates* when it lies outside `mean ± max(k·σ, floor)`, `k`
//! being `thresholdSigmas`; the floor ([`floor`]) keeps a flat baseline
//! (an idle database, σ near 0) from calling noise a deviation. Only a
//! deviation sustained for `sustainSamples` consecutive samples is an
//! anomaly. A model does not learn a sample outside its own range, so a
//! spike does not widen the range it is judged by; a model whose samples
//! stay outside for [`RELEARN_WARM_UPS`] warm-ups is relearned from the new
//! level (a lasting change, a new release's load, becomes the new normal
//! rather than an anomaly forever).
//!
//! Where it stops: it knows nothing of why a metric moved, and judges each
//! metric alone (no correlation between metrics); the hour of the week is
//! UTC's, so a cycle in local time moves by an hour at daylight saving
//! changes until the hour's model learns it again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared::autopilot::anomaly::{AnomalyDetectionSpec, Metric};

/// Milliseconds in a week: the history needed before samples are judged
/// by the hour of the week.
pub const WEEK_MILLISECONDS: i64 = 7 * 24 * 3600 * 1000;

/// How many warm-ups a model's samples must stay outside its range before
/// it is relearned from the new level.
pub const RELEARN_WARM_UPS: u32 = 2;

/// The hour of the week (0 to 167, Monday 00:00 UTC is 0) of an instant in
/// milliseconds since the Unix epoch (a Thursday).
pub fn hour_of_week(at_ms: i64) -> u16 {
    let hours = at_ms.div_euclid(3_600_000);
    // The epoch is a Thursday at 00:00: 72 hours after a Monday's.
    u16::try_from((hours + 72).rem_euclid(168)).unwrap_or(0)
}

/// The smallest half-width of a metric's expected range around `mean`: a
/// deviation smaller than this is never one, however flat the baseline.
/// An absolute part (a few transactions per second, connections or
/// milliseconds) and a relative part (a quarter of the mean for rates and
/// counts, half for the query time, which varies more).
pub fn floor(metric: Metric, mean: f64) -> f64 {
    let (absolute, relative): (f64, f64) = match metric {
        Metric::TransactionsPerSecond => (2.0, 0.25),
        Metric::ActiveConnections => (2.0, 0.25),
        Metric::MeanQueryMilliseconds => (5.0, 0.5),
        Metric::DeadlocksPerMinute => (1.0, 0.5),
        Metric::RollbackRatio => (0.05, 0.0),
    };
    absolute.max(relative * mean.abs())
}

/// What the spec says about learning and judging, as numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Samples learned before a model judges.
    pub warm_up: u32,
    /// The threshold, in standard deviations.
    pub sigmas: f64,
    /// Consecutive deviating samples that make an anomaly.
    pub sustain: u32,
    /// The weight of a new sample once warm.
    pub alpha: f64,
}

impl Settings {
    /// The settings of `spec`.
    pub fn of(spec: &AnomalyDetectionSpec) -> Self {
        let warm_up = spec.warm_up_samples.max(1);
        Self {
            warm_up,
            sigmas: f64::from(spec.threshold_sigmas),
            sustain: spec.sustain_samples.max(1),
            alpha: 2.0 / (f64::from(warm_up) + 1.0),
        }
    }

    /// Consecutive samples outside a model's range after which it is
    /// relearned.
    pub fn relearn_after(&self) -> u32 {
        self.warm_up.saturating_mul(RELEARN_WARM_UPS)
    }
}

/// The range a metric is expected in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// The lowest value in range.
    pub low: f64,
    /// The highest value in range.
    pub high: f64,
}

impl Range {
    /// Whether `value` lies in the range.
    pub fn contains(&self, value: f64) -> bool {
        value >= self.low && value <= self.high
    }
}

/// The exponentially weighted mean and variance of one metric (one model).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Default)]
pub struct Ewma {
    /// The mean.
    #[serde(rename = "m")]
    pub mean: f64,
    /// The variance.
    #[serde(rename = "v")]
    pub variance: f64,
    /// Samples learned (since the last relearning).
    #[serde(rename = "n")]
    pub samples: u32,
    /// Consecutive samples outside the range, not learned.
    #[serde(rename = "o", default, skip_serializing_if = "is_zero")]
    pub outside: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Ewma {
    /// Whether the model has learned enough to judge.
    pub fn is_warm(&self, needed: u32) -> bool {
        self.samples >= needed.max(1)
    }

    /// The range this model expects `metric` in.
    pub fn range(&self, metric: Metric, settings: &Settings) -> Range {
        let spread = settings.sigmas * self.variance.max(0.0).sqrt();
        let half = spread.max(floor(metric, self.mean));
        Range {
            // Every metric is a count, a rate or a ratio: never negative.
            low: (self.mean - half).max(0.0),
            high: self.mean + half,
        }
    }

    /// The model after learning `value` (the weight `1/n` while fewer
    /// than `1/α` samples were learned, so the start is a plain mean).
    pub fn learned(&self, value: f64, alpha: f64) -> Self {
        let samples = self.samples.saturating_add(1);
        let weight = (1.0 / f64::from(samples)).max(alpha);
        let delta = value - self.mean;
        Self {
            mean: self.mean + weight * delta,
            variance: (1.0 - weight) * (self.variance + weight * delta * delta),
            samples,
            outside: 0,
        }
    }

    /// The model after seeing `value`, which it judges once warm (`needed`
    /// samples): learned when in range; when outside, not learned, and
    /// relearned from `value` once outside for `relearn_after` samples in
    /// a row. The second value says whether it was relearned.
    pub fn seen(
        &self,
        metric: Metric,
        value: f64,
        needed: u32,
        settings: &Settings,
    ) -> (Self, bool) {
        if !self.is_warm(needed) || self.range(metric, settings).contains(value) {
            return (self.learned(value, settings.alpha), false);
        }
        let outside = self.outside.saturating_add(1);
        if outside >= settings.relearn_after() {
            return (Ewma::default().learned(value, settings.alpha), true);
        }
        (Self { outside, ..*self }, false)
    }
}

/// What the baseline knows of one metric.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricModel {
    /// The model of every sample.
    pub overall: Ewma,
    /// The models by hour of the week (0 to 167), of the hours sampled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hours: BTreeMap<u16, Ewma>,
    /// Consecutive samples judged outside the expected range.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub streak: u32,
    /// When the current streak's first sample was taken (ms since the
    /// epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

/// The baseline of one database: what the operator learned of it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    /// When the first sample was learned (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<i64>,
    /// Samples learned in all.
    #[serde(default)]
    pub samples: u64,
    /// The counters of the latest reading learned from, for the next
    /// sample's rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<super::sample::Counters>,
    /// The models, by metric.
    #[serde(default)]
    pub metrics: BTreeMap<Metric, MetricModel>,
}

/// One sample: each metric's value at an instant. A metric without a value
/// (no statement ran, pg_stat_statements is absent) is neither judged nor
/// learned.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Sample {
    /// When it was taken (ms since the epoch).
    pub at: i64,
    /// The values, by metric.
    pub values: BTreeMap<Metric, f64>,
}

/// Which model judged a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judge {
    /// The overall model (less than a week of history, or the hour's model
    /// is not warm yet).
    Overall,
    /// The model of the sample's hour of the week.
    HourOfWeek(u16),
}

/// The verdict on one metric of a sample.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricVerdict {
    /// The metric.
    pub metric: Metric,
    /// The value observed.
    pub value: f64,
    /// The range expected and the model that gave it; `None` while the
    /// metric is warming up.
    pub expected: Option<(Range, Judge)>,
    /// Consecutive samples outside the range, this one included.
    pub streak: u32,
    /// When the streak began (ms since the epoch).
    pub since: Option<i64>,
    /// Whether the deviation lasted `sustainSamples`: an anomaly.
    pub anomalous: bool,
}

impl MetricVerdict {
    /// Whether this sample lies outside the expected range.
    pub fn outside(&self) -> bool {
        self.expected
            .is_some_and(|(range, _)| !range.contains(self.value))
    }
}

/// The verdict on a sample, metric by metric.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Verdict {
    /// When the sample was taken (ms since the epoch).
    pub at: i64,
    /// One per metric the sample has a value of.
    pub metrics: Vec<MetricVerdict>,
}

impl Verdict {
    /// The metrics judged anomalous.
    pub fn anomalies(&self) -> impl Iterator<Item = &MetricVerdict> {
        self.metrics.iter().filter(|m| m.anomalous)
    }
}

impl Baseline {
    /// Whether a week of history exists at `at`.
    pub fn has_a_week(&self, at: i64) -> bool {
        self.started
            .is_some_and(|started| at - started >= WEEK_MILLISECONDS)
    }

    /// Whether the warm-up is over.
    pub fn is_warm(&self, settings: &Settings) -> bool {
        self.samples >= u64::from(settings.warm_up)
    }

    /// The model that judges `metric` at `at`, and its range, if any is
    /// warm: the hour's once a week of history exists and it learned half a
    /// warm-up, else the overall one after the warm-up.
    pub fn expected(&self, metric: Metric, at: i64, settings: &Settings) -> Option<(Range, Judge)> {
        let model = self.metrics.get(&metric)?;
        let hour = hour_of_week(at);
        if self.has_a_week(at)
            && let Some(by_hour) = model.hours.get(&hour)
            && by_hour.is_warm(hour_warm_up(settings))
        {
            return Some((by_hour.range(metric, settings), Judge::HourOfWeek(hour)));
        }
        model
            .overall
            .is_warm(settings.warm_up)
            .then(|| (model.overall.range(metric, settings), Judge::Overall))
    }
}

/// Samples an hour's model learns before it judges: half a warm-up (at
/// least 3), since an hour of the week comes round once a week.
pub fn hour_warm_up(settings: &Settings) -> u32 {
    (settings.warm_up / 2).max(3)
}

/// The verdict on `sample` against `baseline` (before it learns the
/// sample).
pub fn verdict(baseline: &Baseline, sample: &Sample, settings: &Settings) -> Verdict {
    let metrics = sample
        .values
        .iter()
        .map(|(&metric, &value)| {
            let expected = baseline.expected(metric, sample.at, settings);
            let outside = expected.is_some_and(|(range, _)| !range.contains(value));
            let model = baseline.metrics.get(&metric);
            let (streak, since) = if outside {
                let previous = model.map(|m| m.streak).unwrap_or(0);
                let since = model
                    .and_then(|m| m.since)
                    .filter(|_| previous > 0)
                    .unwrap_or(sample.at);
                (previous.saturating_add(1), Some(since))
            } else {
                (0, None)
            };
            MetricVerdict {
                metric,
                value,
                expected,
                streak,
                since,
                anomalous: streak >= settings.sustain,
            }
        })
        .collect();
    Verdict {
        at: sample.at,
        metrics,
    }
}

/// What learning a sample gave: the new baseline, the verdict on the
/// sample, and the metrics relearned from a new level.
#[derive(Clone, Debug, PartialEq)]
pub struct Learned {
    /// The baseline after the sample.
    pub baseline: Baseline,
    /// The verdict on the sample, against the baseline before it.
    pub verdict: Verdict,
    /// Metrics whose judging model stayed outside its range long enough to
    /// be relearned from the new level with this sample.
    pub relearned: Vec<Metric>,
}

/// Judges `sample` against `baseline`, then learns it: each model learns
/// it unless it lies outside that model's own range (see [`Ewma::seen`]).
pub fn learn(baseline: &Baseline, sample: &Sample, settings: &Settings) -> Learned {
    let mut verdict = verdict(baseline, sample, settings);
    let mut next = baseline.clone();
    next.started = next.started.or(Some(sample.at));
    next.samples = next.samples.saturating_add(1);
    let hour = hour_of_week(sample.at);
    let mut relearned = Vec::new();
    for judged in &verdict.metrics {
        let model = next.metrics.entry(judged.metric).or_default();
        let (overall, overall_relearned) =
            model
                .overall
                .seen(judged.metric, judged.value, settings.warm_up, settings);
        model.overall = overall;
        let by_hour = model.hours.entry(hour).or_default();
        let (hourly, hour_relearned) = by_hour.seen(
            judged.metric,
            judged.value,
            hour_warm_up(settings),
            settings,
        );
        *by_hour = hourly;
        let judge_relearned = match judged.expected {
            Some((_, Judge::HourOfWeek(_))) => hour_relearned,
            Some((_, Judge::Overall)) => overall_relearned,
            None => false,
        };
        if judge_relearned {
            // The new level is the new normal: no streak to carry on.
            relearned.push(judged.metric);
            model.streak = 0;
            model.since = None;
        } else {
            model.streak = judged.streak;
            model.since = judged.since;
        }
    }
    for judged in &mut verdict.metrics {
        if relearned.contains(&judged.metric) {
            judged.streak = 0;
            judged.since = None;
            judged.anomalous = false;
        }
    }
    Learned {
        baseline: next,
        verdict,
        relearned,
    }
}
