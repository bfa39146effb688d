//! The guard's decision: a pure function of what status recorded, the
//! parameters the spec asks for, the parameters the servers are to run,
//! what was seen of them, and the clock.
//!
//! The states, all in `status.autopilot.configuration`:
//! - nothing recorded yet: the first time every instance is ready with a
//!   configuration, it becomes `lastGood` (there is nothing to roll back
//!   to before);
//! - a trial: the parameters to run differ from `lastGood`. Evidence that
//!   they do not run holds them back (`heldBack`, Degraded True
//!   `ConfigurationRejected`); every instance ready with them makes them
//!   `lastGood`;
//! - held back: the servers are to run `lastGood` again (Degraded True
//!   `ConfigurationRolledBack` until every instance does, then Degraded
//!   False `Recovered`), until the spec asks for other parameters, which
//!   releases the hold and starts a new trial.
//!
//! Every message is built from what status records, not from what changes
//! at each reconcile, so a state is announced once.

use std::collections::BTreeMap;

use shared::api::status_time;
use shared::autopilot::guard::{ConfigurationGuardStatus, HeldBack};
use shared::conditions::Assessment;

use super::evidence::{Evidence, rejected_parameter};

/// Degraded's reason when a configuration is seen not to run.
pub const CONFIGURATION_REJECTED: &str = "ConfigurationRejected";
/// Degraded's reason while the servers go back to the last configuration
/// that ran.
pub const CONFIGURATION_ROLLED_BACK: &str = "ConfigurationRolledBack";
/// Degraded's reason once they run it again.
pub const RECOVERED: &str = "Recovered";

/// What the guard decides from.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// What status recorded.
    pub previous: Option<&'a ConfigurationGuardStatus>,
    /// The parameters the spec asks for (with the derived ones).
    pub wanted: &'a BTreeMap<String, String>,
    /// The parameters the servers are to run (the effective ones).
    pub running: &'a BTreeMap<String, String>,
    /// What the pods and servers say about `running`.
    pub evidence: &'a Evidence,
    /// Whether every instance is ready with `running`, applied.
    pub settled: bool,
    /// The reconcile's clock.
    pub now: jiff::Timestamp,
}

/// What the guard decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// `status.autopilot.configuration`.
    pub status: Option<ConfigurationGuardStatus>,
    /// Degraded, when the guard has something to say about it.
    pub degraded: Option<Assessment>,
    /// When to look again, if no other reason brings a reconcile sooner.
    pub wake_at: Option<jiff::Timestamp>,
}

/// `name = 'value', …` of `parameters`.
pub fn describe(parameters: &BTreeMap<String, String>) -> String {
    if parameters.is_empty() {
        return "no parameters".into();
    }
    parameters
        .iter()
        .map(|(name, value)| format!("{name} = '{value}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What changed from `before` to `after`, in words: `name = 'value'` for
/// a value set, `name (removed)` for one taken away.
fn describe_change(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    level2_upgrade::reload::changed_parameters(before, after)
        .into_iter()
        .map(|name| match after.get(&name) {
            Some(value) => format!("{name} = '{value}'"),
            None => format!("{name} (removed)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What was rejected, in words: the parameter the server named, else
/// every change.
fn rejected(held: &HeldBack, last_good: &BTreeMap<String, String>) -> String {
    match held
        .rejected_parameter
        .as_ref()
        .and_then(|name| Some((name, held.parameters.get(name)?)))
    {
        Some((name, value)) => format!("{name} = '{value}'"),
        None => describe_change(last_good, &held.parameters),
    }
}

const HELD_UNTIL: &str = "spec.parameters is held back until it changes";

/// The guard's decision.
pub fn decide(inputs: &Inputs) -> Outcome {
    let Inputs {
        previous,
        wanted,
        running,
        evidence,
        settled,
        now,
    } = inputs;
    let Some(previous) = previous else {
        // Nothing to roll back to yet: the first configuration every
        // instance runs is the first good one.
        let status = settled.then(|| ConfigurationGuardStatus {
            last_good: (*running).clone(),
            since: Some(status_time(*now)),
            held_back: None,
        });
        return Outcome {
            status,
            degraded: None,
            wake_at: None,
        };
    };
    let mut status = (*previous).clone();
    // The spec asks for other parameters: the hold is released.
    if status
        .held_back
        .as_ref()
        .is_some_and(|held| held.parameters != **wanted)
    {
        status.held_back = None;
    }
    if let Some(held) = status.held_back.as_mut() {
        if held.recovered_at.is_none() && *settled && **running == status.last_good {
            held.recovered_at = Some(status_time(*now));
        }
        let what = rejected(held, &status.last_good);
        let degraded = match &held.recovered_at {
            None => Assessment::yes(
                CONFIGURATION_ROLLED_BACK,
                format!(
                    "{what} did not run ({}): rolled back to the last configuration that ran ({}), waiting for every instance to run it; {HELD_UNTIL}",
                    held.message,
                    describe(&status.last_good)
                ),
            )
            .warn(),
            Some(since) => Assessment::no(
                RECOVERED,
                format!(
                    "every instance runs the last configuration that ran ({}) again since {}; {HELD_UNTIL} ({what} did not run: {})",
                    describe(&status.last_good),
                    since.0,
                    held.message
                ),
            )
            .announce(),
        };
        return Outcome {
            status: Some(status),
            degraded: Some(degraded),
            wake_at: None,
        };
    }
    if **running == status.last_good {
        return Outcome {
            status: Some(status),
            degraded: None,
            wake_at: None,
        };
    }
    // A trial: the servers are to run parameters that never ran.
    match evidence {
        Evidence::Rejected(rejection) => {
            let changed = level2_upgrade::reload::changed_parameters(&status.last_good, wanted);
            let message = format!(
                "pod {}: {}{}",
                rejection.pod,
                rejection.seen,
                rejection
                    .said
                    .as_ref()
                    .map(|said| format!("; the server said: {said}"))
                    .unwrap_or_default()
            );
            let held = HeldBack {
                parameters: (*wanted).clone(),
                rejected_parameter: rejected_parameter(rejection, &changed),
                message,
                since: status_time(*now),
                recovered_at: None,
            };
            let degraded = Assessment::yes(
                CONFIGURATION_REJECTED,
                format!(
                    "{} did not run ({}): rolling back to the last configuration that ran ({}); {HELD_UNTIL}",
                    rejected(&held, &status.last_good),
                    held.message,
                    describe(&status.last_good)
                ),
            )
            .warn();
            status.held_back = Some(held);
            Outcome {
                status: Some(status),
                degraded: Some(degraded),
                wake_at: None,
            }
        }
        Evidence::Pending(at) => Outcome {
            status: Some(status),
            degraded: None,
            wake_at: Some(*at),
        },
        Evidence::Clear => {
            if *settled {
                status.last_good = (*running).clone();
                status.since = Some(status_time(*now));
            }
            Outcome {
                status: Some(status),
                degraded: None,
                wake_at: None,
            }
        }
    }
}
