//! Status conditions in the Kubernetes convention, and the phase they sum up.
//!
//! A condition says one thing about the object (Ready, Progressing,
//! Degraded, SpecImplemented) with a status, a machine-readable reason and a
//! human message. Its `lastTransitionTime` changes only when its status
//! does, so recomputing the same conditions yields the same status and the
//! operator has nothing to write: that is what keeps a controller quiet at
//! rest.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use kube::runtime::events::EventType;

use crate::api::Phase;

/// The database accepts connections.
pub const READY: &str = "Ready";
/// The operator is changing something (creating, rolling out).
pub const PROGRESSING: &str = "Progressing";
/// Something that worked has stopped working, or a pod is failing.
pub const DEGRADED: &str = "Degraded";
/// Every spec section in use is implemented by the running level.
pub const SPEC_IMPLEMENTED: &str = "SpecImplemented";

/// Reasons of Ready=False when the spec cannot be served start with one of
/// these: "Invalid" for a spec that is wrong in itself, "Refused" for a
/// change that would be unsafe given what exists (a storage shrink).
pub const UNSERVABLE_REASON_PREFIXES: [&str; 2] = ["Invalid", "Refused"];

/// The conditions in the order they are written.
const ORDER: [&str; 4] = [READY, PROGRESSING, DEGRADED, SPEC_IMPLEMENTED];

/// A condition's status, as the Kubernetes API convention spells it:
/// `True`, `False`, or `Unknown` when the operator cannot tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The operator could not determine whether it holds.
    Unknown,
}

impl ConditionStatus {
    /// The text of `status` in a condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    /// The status a condition's text names; anything but `True` or `False`
    /// reads as `Unknown`, as clients of the convention treat it.
    pub fn parse(text: &str) -> Self {
        match text {
            "True" => Self::True,
            "False" => Self::False,
            _ => Self::Unknown,
        }
    }

    /// Whether the condition's text on an object says it holds.
    pub fn is_true_in(condition: &Condition) -> bool {
        Self::parse(&condition.status) == Self::True
    }
}

impl std::fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reconcile concluded about one condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// CamelCase reason, stable enough for alerts and tests to match.
    pub reason: String,
    /// Human explanation; names the spec field when the spec is at fault.
    pub message: String,
    /// The type of Event reaching this state deserves: a Warning is
    /// published on every new Warning state, a Normal one only when Ready
    /// becomes true.
    pub event_type: EventType,
    /// Whether reaching this (Normal) state from another known status is
    /// news too, as a symptom clearing is (see [`Assessment::announce`]).
    pub announced: bool,
}

impl Assessment {
    /// A condition with `status`.
    pub fn new(status: ConditionStatus, reason: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            message: message.into(),
            event_type: EventType::Normal,
            announced: false,
        }
    }

    /// A condition that is true.
    pub fn yes(reason: &str, message: impl Into<String>) -> Self {
        Self::new(ConditionStatus::True, reason, message)
    }

    /// A condition that is false.
    pub fn no(reason: &str, message: impl Into<String>) -> Self {
        Self::new(ConditionStatus::False, reason, message)
    }

    /// A condition the operator cannot determine.
    pub fn unknown(reason: &str, message: impl Into<String>) -> Self {
        Self::new(ConditionStatus::Unknown, reason, message)
    }

    /// Marks the state as one a user should hear about as a Warning.
    pub fn warn(mut self) -> Self {
        self.event_type = EventType::Warning;
        self
    }

    /// Marks the state as news when the condition reaches it from another
    /// known status: an Event is published when it changes from True to
    /// False or back, never when it is first assessed, nor from or to
    /// Unknown. A negative-polarity condition (a symptom, True when
    /// present) uses it so that its clearing is announced as its
    /// appearing is (as a Warning).
    pub fn announce(mut self) -> Self {
        self.announced = true;
        self
    }

    /// Whether the condition holds.
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }

    /// Whether reaching this state deserves a Warning Event.
    pub fn is_warning(&self) -> bool {
        self.event_type == EventType::Warning
    }
}

/// The conditions a reconcile settled on, by type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assessments(BTreeMap<String, Assessment>);

impl Assessments {
    /// Sets a condition, replacing what an earlier step said about it.
    pub fn set(&mut self, type_: &str, assessment: Assessment) {
        self.0.insert(type_.to_string(), assessment);
    }

    /// Sets a condition unless an earlier step already did.
    pub fn set_default(&mut self, type_: &str, assessment: Assessment) {
        self.0.entry(type_.to_string()).or_insert(assessment);
    }

    /// What was concluded about a condition.
    pub fn get(&self, type_: &str) -> Option<&Assessment> {
        self.0.get(type_)
    }

    /// Whether a condition was concluded to be true.
    pub fn is_true(&self, type_: &str) -> bool {
        self.get(type_).is_some_and(Assessment::is_true)
    }

    /// Turns the assessments into conditions, keeping `lastTransitionTime`
    /// from `previous` wherever the status did not change.
    pub fn to_conditions(
        &self,
        previous: &[Condition],
        generation: Option<i64>,
        now: Time,
    ) -> Vec<Condition> {
        let mut types: Vec<&str> = ORDER.to_vec();
        types.extend(
            self.0
                .keys()
                .map(String::as_str)
                .filter(|t| !ORDER.contains(t)),
        );
        types
            .into_iter()
            .filter_map(|type_| {
                let assessment = self.0.get(type_)?;
                let status = assessment.status.as_str();
                let since = previous
                    .iter()
                    .find(|c| c.type_ == type_ && c.status == status)
                    .map(|c| c.last_transition_time.clone())
                    .unwrap_or_else(|| now.clone());
                Some(Condition {
                    type_: type_.to_string(),
                    status: status.to_string(),
                    reason: assessment.reason.clone(),
                    message: assessment.message.clone(),
                    observed_generation: generation,
                    last_transition_time: since,
                })
            })
            .collect()
    }

    /// The assessments that are news compared with `previous` conditions and
    /// deserve an Event: every new Warning state, and Ready becoming true.
    pub fn transitions<'a>(
        &'a self,
        previous: &'a [Condition],
    ) -> impl Iterator<Item = (&'a str, &'a Assessment)> + 'a {
        self.0.iter().filter_map(move |(type_, a)| {
            let status = a.status.as_str();
            let before = previous.iter().find(|c| &c.type_ == type_);
            let news = if a.is_warning() {
                before.is_none_or(|c| {
                    c.status != status || c.reason != a.reason || c.message != a.message
                })
            } else if type_ == READY && a.is_true() {
                before.is_none_or(|c| c.status != status)
            } else if a.announced && a.status != ConditionStatus::Unknown {
                before.is_some_and(|c| {
                    c.status != status
                        && ConditionStatus::parse(&c.status) != ConditionStatus::Unknown
                })
            } else {
                false
            };
            news.then_some((type_.as_str(), a))
        })
    }

    /// The one-word phase the conditions add up to.
    pub fn phase(&self, paused: bool, ever_ready: bool) -> Phase {
        let ready = self.get(READY);
        if paused {
            Phase::Paused
        } else if ready.is_some_and(|r| {
            r.status == ConditionStatus::False
                && UNSERVABLE_REASON_PREFIXES
                    .iter()
                    .any(|p| r.reason.starts_with(p))
        }) {
            Phase::Invalid
        } else if self.is_true(DEGRADED) {
            Phase::Degraded
        } else if self.is_true(READY) {
            if self.is_true(PROGRESSING) {
                Phase::Updating
            } else {
                Phase::Ready
            }
        } else if ever_ready {
            // Not ready, yet no failure seen: a pod starting again (after a
            // restart, a rollout, a recreated StatefulSet). The headline says
            // Degraded only when the Degraded condition does.
            Phase::Updating
        } else {
            Phase::Creating
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    fn ready_and_settled() -> Assessments {
        let mut a = Assessments::default();
        a.set(READY, Assessment::yes("DatabaseReady", "1/1 pods ready"));
        a.set(
            PROGRESSING,
            Assessment::no("ReconcileComplete", "nothing to do"),
        );
        a
    }

    #[test]
    fn recomputing_the_same_conditions_keeps_their_transition_times() {
        let first = ready_and_settled().to_conditions(&[], Some(1), time(100));
        let second = ready_and_settled().to_conditions(&first, Some(1), time(200));
        assert_eq!(first, second);
    }

    #[test]
    fn a_status_change_moves_the_transition_time() {
        let first = ready_and_settled().to_conditions(&[], Some(1), time(100));
        let mut changed = ready_and_settled();
        changed.set(READY, Assessment::no("PodsNotReady", "0/1 pods ready"));
        let second = changed.to_conditions(&first, Some(1), time(200));
        let ready = second
            .iter()
            .find(|c| c.type_ == READY)
            .expect("Ready is set");
        assert_eq!(ready.last_transition_time, time(200));
        let progressing = second
            .iter()
            .find(|c| c.type_ == PROGRESSING)
            .expect("Progressing is set");
        assert_eq!(progressing.last_transition_time, time(100));
    }

    #[test]
    fn an_unknown_condition_is_written_as_unknown_and_is_neither_true_nor_false() {
        let mut assessments = ready_and_settled();
        assessments.set(
            READY,
            Assessment::unknown("NoAnswer", "the server did not answer"),
        );
        assert!(!assessments.is_true(READY));
        let written = assessments.to_conditions(&[], Some(1), time(100));
        let ready = written
            .iter()
            .find(|c| c.type_ == READY)
            .expect("Ready is set");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(
            ConditionStatus::parse(&ready.status),
            ConditionStatus::Unknown
        );
        // Unknown to False is a transition like any other.
        let mut known = ready_and_settled();
        known.set(READY, Assessment::no("PodsNotReady", "0/1 pods ready"));
        let after = known.to_conditions(&written, Some(1), time(200));
        let ready = after
            .iter()
            .find(|c| c.type_ == READY)
            .expect("Ready is set");
        assert_eq!(ready.last_transition_time, time(200));
    }

    #[test]
    fn a_condition_status_reads_back_from_its_text() {
        for status in [
            ConditionStatus::True,
            ConditionStatus::False,
            ConditionStatus::Unknown,
        ] {
            assert_eq!(ConditionStatus::parse(status.as_str()), status);
        }
        assert_eq!(ConditionStatus::parse("true"), ConditionStatus::Unknown);
    }

    #[test]
    fn conditions_are_written_in_a_fixed_order() {
        let mut a = Assessments::default();
        a.set(
            SPEC_IMPLEMENTED,
            Assessment::yes("AllSectionsImplemented", ""),
        );
        a.set(DEGRADED, Assessment::no("Healthy", ""));
        a.set(READY, Assessment::yes("DatabaseReady", ""));
        let types: Vec<_> = a
            .to_conditions(&[], None, time(1))
            .into_iter()
            .map(|c| c.type_)
            .collect();
        assert_eq!(types, [READY, DEGRADED, SPEC_IMPLEMENTED]);
    }

    #[test]
    fn a_new_warning_is_news_once_and_not_when_repeated() {
        let mut a = ready_and_settled();
        a.set(
            DEGRADED,
            Assessment::yes("PodFailing", "CrashLoopBackOff").warn(),
        );
        let news: Vec<_> = a.transitions(&[]).map(|(t, _)| t).collect();
        assert!(news.contains(&DEGRADED));
        let written = a.to_conditions(&[], Some(1), time(1));
        assert_eq!(a.transitions(&written).count(), 0);
    }

    #[test]
    fn an_announced_state_is_news_when_reached_from_another_known_status_only() {
        let symptom = |status: ConditionStatus| {
            let mut a = ready_and_settled();
            a.set(
                "Symptom",
                match status {
                    ConditionStatus::True => Assessment::yes("Present", "seen").warn(),
                    ConditionStatus::False => Assessment::no("Absent", "not seen").announce(),
                    ConditionStatus::Unknown => Assessment::unknown("NotMeasured", "").announce(),
                },
            );
            a
        };
        let news = |a: &Assessments, previous: &[Condition]| -> Vec<String> {
            a.transitions(previous)
                .filter(|(type_, _)| *type_ == "Symptom")
                .map(|(_, a)| a.reason.clone())
                .collect()
        };
        // First assessed as absent: nothing to say.
        let absent = symptom(ConditionStatus::False);
        assert!(news(&absent, &[]).is_empty());
        let written = absent.to_conditions(&[], Some(1), time(1));
        assert!(news(&absent, &written).is_empty());
        // Appearing is a Warning; clearing is news once.
        let present = symptom(ConditionStatus::True);
        assert_eq!(news(&present, &written), ["Present"]);
        let written = present.to_conditions(&written, Some(1), time(2));
        assert!(news(&present, &written).is_empty());
        assert_eq!(news(&absent, &written), ["Absent"]);
        let written = absent.to_conditions(&written, Some(1), time(3));
        assert!(news(&absent, &written).is_empty());
        // To and from Unknown is not news.
        let unknown = symptom(ConditionStatus::Unknown);
        assert!(news(&unknown, &written).is_empty());
        let written = unknown.to_conditions(&written, Some(1), time(4));
        assert!(news(&absent, &written).is_empty());
    }

    #[test]
    fn the_phase_sums_up_the_conditions() {
        assert_eq!(ready_and_settled().phase(false, true), Phase::Ready);
        assert_eq!(ready_and_settled().phase(true, true), Phase::Paused);
        let mut invalid = Assessments::default();
        invalid.set(READY, Assessment::no("InvalidVersion", "spec.version"));
        assert_eq!(invalid.phase(false, true), Phase::Invalid);
        let mut creating = Assessments::default();
        creating.set(READY, Assessment::no("PodsNotReady", ""));
        assert_eq!(creating.phase(false, false), Phase::Creating);
        creating.set(PROGRESSING, Assessment::yes("RollingUpdate", ""));
        assert_eq!(creating.phase(false, true), Phase::Updating);
    }

    #[test]
    fn the_phase_says_degraded_exactly_when_the_degraded_condition_is_true() {
        // A rollout's steps, as the conditions stand at each: the headline
        // never says Degraded while the condition says False.
        let steps = [
            ("DatabaseReady", "ReconcileComplete", false, Phase::Ready),
            ("DatabaseReady", "RollingOut", true, Phase::Updating),
            ("PodsNotReady", "RollingOut", true, Phase::Updating),
            ("PodsNotReady", "ReconcileComplete", false, Phase::Updating),
            ("DatabaseReady", "ReconcileComplete", false, Phase::Ready),
        ];
        for (ready, progressing, is_progressing, phase) in steps {
            let mut a = Assessments::default();
            a.set(
                READY,
                if ready == "DatabaseReady" {
                    Assessment::yes(ready, "")
                } else {
                    Assessment::no(ready, "")
                },
            );
            a.set(
                PROGRESSING,
                if is_progressing {
                    Assessment::yes(progressing, "")
                } else {
                    Assessment::no(progressing, "")
                },
            );
            a.set(DEGRADED, Assessment::no("NoFailures", ""));
            assert_eq!(a.phase(false, true), phase, "{ready}, {progressing}");
            assert_ne!(a.phase(false, true), Phase::Degraded);
            a.set(DEGRADED, Assessment::yes("PodFailing", "").warn());
            assert_eq!(a.phase(false, true), Phase::Degraded, "{ready}, failing");
        }
    }
}
