//! The scaling decision, as a pure function of the spec, what status
//! recorded, what was measured and the reconcile's clock.
//!
//! It follows the HorizontalPodAutoscaler's algorithm (Kubernetes,
//! "Horizontal Pod Autoscaling", algorithm details):
//! - the recommendation is `ceil(readers × measured / target)` instances
//!   serving reads, kept as it is while `measured / target` is within the
//!   10% tolerance of 1 (the HPA's default `--horizontal-pod-autoscaler-tolerance`);
//!   the instances serving reads are the replicas, so the instance count is
//!   that plus the primary; while the primary alone serves reads, each
//!   reader wanted beyond it is a replica to add;
//! - clamped to `[minInstances, maxInstances]`;
//! - stabilisation: a scale-out (scale-in) is made only once the load has
//!   called for one for the whole window, and then goes to the most
//!   cautious count recommended over that time (the fewest added, the
//!   fewest removed), as the HPA takes the lowest (highest) recommendation
//!   over its window. Status records the pending recommendation when it
//!   turns to a direction, and again only when the cautious count moves
//!   (it only moves towards the current count), not at each measurement.
//!
//! Where it departs from the HPA, for a database: a scale-out waits while a
//! replica lags ([`super::load::LAG_HOLD_BYTES`]), and nothing is decided
//! while the instances are in motion (one not ready yet, one being
//! removed), where the HPA, scaling out, counts pods not ready yet as idle.

use jiff::{SignedDuration, Timestamp};
use shared::api::status_time;
use shared::autopilot::autoscaling::{
    AutoscalingSpec, AutoscalingStatus, PendingScaling, ScalingDecision, ScalingDirection,
    ScalingHold,
};
use shared::capability::EventType;

use super::load::{Lag, Load, Measured};

/// How often the load is measured while `spec.autoscaling` is set (the
/// HPA's default sync period).
pub const PROBE_INTERVAL: SignedDuration = SignedDuration::from_secs(15);

/// Event reason: instances were added.
pub const SCALED_OUT: &str = "ScaledOut";
/// Event reason: instances were removed.
pub const SCALED_IN: &str = "ScaledIn";
/// Event and hold reason: a scale-out waits while a replica lags.
pub const SCALE_OUT_HELD_FOR_LAG: &str = "ScaleOutHeldForLag";

/// The tolerance, as a fraction of the target: 1/10.
const TOLERANCE_DIVISOR: i64 = 10;

/// The count `spec` gives `n`: within `[minInstances, maxInstances]`.
pub fn bounded(spec: &AutoscalingSpec, n: i32) -> i32 {
    // Not `clamp`, which panics when min > max (a spec validation refuses).
    n.min(spec.max_instances).max(spec.min_instances)
}

/// The count the load calls for, from `decided` instances: the HPA's
/// `ceil(current × measured / target)` over the instances serving reads,
/// within the tolerance the same count, clamped to the bounds.
pub fn recommend(spec: &AutoscalingSpec, decided: i32, load: &Load) -> i32 {
    let target = i64::from(spec.target_connections_percent.max(1));
    // measured / target = (clients / usable) / (target / 100)
    //                   = 100 × clients / (usable × target)
    let numerator = 100 * load.clients;
    let denominator = load.usable.max(1) * target;
    if (numerator - denominator).abs() * TOLERANCE_DIVISOR <= denominator {
        return bounded(spec, decided);
    }
    let readers = i64::try_from(load.readers.len()).unwrap_or(i64::MAX);
    let wanted_readers = (readers * numerator + denominator - 1) / denominator;
    let instances = wanted_readers + if load.primary_reads { 0 } else { 1 };
    bounded(spec, i32::try_from(instances).unwrap_or(i32::MAX))
}

/// What the autoscaler decided in one reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `status.autopilot.autoscaling`.
    pub status: AutoscalingStatus,
    /// Events: (type, reason, message).
    pub events: Vec<(EventType, &'static str, String)>,
    /// When to measure again.
    pub wake_at: Timestamp,
}

/// What [`decide`] decides from.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// `spec.autoscaling`.
    pub spec: &'a AutoscalingSpec,
    /// `status.autopilot.autoscaling` as last written.
    pub previous: Option<&'a AutoscalingStatus>,
    /// The instance count in effect (the last decision within the bounds).
    pub decided: i32,
    /// The load, or why there is none.
    pub measured: &'a Measured,
    /// A replica lagging beyond the hold threshold.
    pub lagging: Option<Lag>,
    /// The reconcile's clock.
    pub now: Timestamp,
}

fn window(spec: &AutoscalingSpec, direction: ScalingDirection) -> SignedDuration {
    let seconds = match direction {
        ScalingDirection::Out => spec.scale_out_stabilization_seconds,
        ScalingDirection::In => spec.scale_in_stabilization_seconds,
    };
    SignedDuration::from_secs(i64::from(seconds))
}

fn due(spec: &AutoscalingSpec, pending: &PendingScaling) -> Timestamp {
    let since = pending.since.0;
    since
        .checked_add(window(spec, pending.direction))
        .unwrap_or(since)
}

/// The decision: the status to record, the Events, the next measurement.
pub fn decide(inputs: Inputs<'_>) -> Outcome {
    let Inputs {
        spec,
        previous,
        decided,
        measured,
        lagging,
        now,
    } = inputs;
    let mut events = Vec::new();
    let mut status = previous.cloned().unwrap_or_default();
    status.instances = decided;
    let next_probe = now.checked_add(PROBE_INTERVAL).unwrap_or(now);
    // The bounds moved past the count recorded: the count follows them at
    // once (the effective spec already did).
    if let Some(previous) = previous.filter(|p| p.instances != decided) {
        let (reason, direction, bound) = if decided > previous.instances {
            (SCALED_OUT, "raised", "minInstances")
        } else {
            (SCALED_IN, "lowered", "maxInstances")
        };
        let sentence = format!(
            "{} from {} to {} instances: spec.autoscaling.{bound} was {direction} to {decided}",
            if reason == SCALED_OUT {
                "scaled out"
            } else {
                "scaled in"
            },
            previous.instances,
            decided
        );
        status.last_decision = Some(ScalingDecision {
            at: status_time(now),
            from: previous.instances,
            to: decided,
            connections_percent: previous
                .last_decision
                .as_ref()
                .map_or(0, |d| d.connections_percent),
            reason: sentence.clone(),
        });
        status.pending = None;
        status.held = None;
        events.push((EventType::Normal, reason, sentence));
        return Outcome {
            status,
            events,
            wake_at: next_probe,
        };
    }
    let Measured::Load(load) = measured else {
        // Nothing to decide on: what was recorded stands.
        return Outcome {
            status,
            events,
            wake_at: next_probe,
        };
    };
    let percent = load.percent();
    let recommended = recommend(spec, decided, load);
    let direction = match recommended.cmp(&decided) {
        std::cmp::Ordering::Greater => Some(ScalingDirection::Out),
        std::cmp::Ordering::Less => Some(ScalingDirection::In),
        std::cmp::Ordering::Equal => None,
    };
    status.pending = direction.map(|direction| match status.pending.take() {
        Some(mut pending) if pending.direction == direction => {
            pending.instances = match direction {
                ScalingDirection::Out => pending.instances.min(recommended),
                ScalingDirection::In => pending.instances.max(recommended),
            };
            pending
        }
        _ => PendingScaling {
            direction,
            since: status_time(now),
            instances: recommended,
            connections_percent: percent,
        },
    });
    let held = match (&lagging, direction) {
        (Some(lag), Some(ScalingDirection::Out)) => Some(lag),
        _ => None,
    };
    status.held = held.map(|lag| match status.held.take() {
        Some(hold) if hold.reason == SCALE_OUT_HELD_FOR_LAG => hold,
        _ => {
            let message = format!(
                "scale-out held: the load calls for {recommended} instances ({percent}% of the usable connections, target {}%), \
                 but replica {} is {} bytes behind the primary (more than {})",
                spec.target_connections_percent,
                lag.replica,
                lag.bytes,
                super::load::LAG_HOLD_BYTES
            );
            events.push((EventType::Warning, SCALE_OUT_HELD_FOR_LAG, message.clone()));
            ScalingHold {
                reason: SCALE_OUT_HELD_FOR_LAG.into(),
                since: status_time(now),
                message,
            }
        }
    });
    let Some(pending) = status.pending.clone() else {
        return Outcome {
            status,
            events,
            wake_at: next_probe,
        };
    };
    let due = due(spec, &pending);
    if now < due || status.held.is_some() {
        return Outcome {
            status,
            events,
            wake_at: if now < due {
                next_probe.min(due)
            } else {
                next_probe
            },
        };
    }
    let to = pending.instances;
    let (reason, verb, side) = match pending.direction {
        ScalingDirection::Out => (SCALED_OUT, "scaled out", "above"),
        ScalingDirection::In => (SCALED_IN, "scaled in", "below"),
    };
    let sentence = format!(
        "{verb} from {decided} to {to} instances: on {}, {} of {} usable client connections in use ({percent}%), \
         {side} the target of {}% since {} ({} s stabilisation window)",
        load.describe_readers(),
        load.clients,
        load.usable,
        spec.target_connections_percent,
        pending.since.0,
        window(spec, pending.direction).as_secs()
    );
    status.instances = to;
    status.pending = None;
    status.held = None;
    status.last_decision = Some(ScalingDecision {
        at: status_time(now),
        from: decided,
        to,
        connections_percent: percent,
        reason: sentence.clone(),
    });
    events.push((EventType::Normal, reason, sentence));
    Outcome {
        status,
        events,
        wake_at: next_probe,
    }
}
