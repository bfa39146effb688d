//! Who should be the primary, and the steps to get there.
//!
//! A promotion (failover or switchover) is a plan recorded in the cluster,
//! not in memory: the roles ConfigMap names the instance starting pods
//! obey, `status.highAvailability.promotion` says where the plan stands,
//! and the servers say what they are. [`progress`] is a pure function of
//! the database, the [`Topology`] and the reconcile's clock; the
//! capability applies the [`Decision`] it returns, so an operator killed
//! in the middle of a failover carries on from what it reads.
//!
//! The order that prevents two primaries: first the roles ConfigMap names
//! the new primary (a restarting old primary comes back as a replica),
//! the read-write Service is fenced (selects no pod), and the old
//! primary's pod is deleted; only when no other server answers as a
//! primary is the target promoted; only then does the read-write Service
//! select it.
//!
//! - [`plan`]: a promotion's steps (fence, catch up, promote, serve);
//! - [`lost`]: when the primary counts as lost, and which replica replaces
//!   it;
//! - [`switchover`]: the planned move to `spec.primary` (or below a
//!   scale-down's new count);
//! - [`rejoin`]: replicas that cannot follow the primary any more are
//!   rebuilt;
//! - [`report`]: what status says about each instance.
//!
//! Where it stops: a switchover waits for its target without a bound once
//! started (the read-write Service stays fenced meanwhile; the target
//! streams when it starts, so the wait is short); an old primary's pod
//! recreated by someone else in the instant between this operator's
//! reading and its write of the roles ConfigMap could start with the old
//! roles: such a stray primary is fenced (its pod deleted) as soon as it
//! answers, and it is never selected by the read-write Service.

pub mod lost;
pub mod plan;
pub mod rejoin;
pub mod report;
pub mod switchover;

#[cfg(test)]
mod tests;

use jiff::Timestamp;
use level1_install::api::Names;
use shared::api::PostgresDB;
use shared::capability::EventType;
use shared::conditions::Assessment;
use shared::ha::{HighAvailabilityStatus, PromotionPhase, PromotionStatus};

use super::names::ordinal_of;
use super::topology::Topology;

/// The condition saying whether a primary accepts writes behind the
/// read-write Service.
pub const PRIMARY_AVAILABLE: &str = "PrimaryAvailable";

/// A pod to delete, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDeletion {
    /// The pod.
    pub pod: String,
    /// The uid it was seen with: the delete carries it as a precondition,
    /// so a pod recreated since is left alone.
    pub uid: Option<String>,
    /// Why (for the Event).
    pub reason: String,
    /// Delete with a grace period of 0: its server does not answer, so a
    /// graceful stop would wait for nothing.
    pub force: bool,
}

/// What a reconcile should do about roles.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The instance the roles ConfigMap names: what starting instances obey.
    pub recorded_primary: String,
    /// The instance labelled primary and selected by the read-write
    /// Service; `None` fences the Service (it selects no pod).
    pub serving_primary: Option<String>,
    /// Whether the roles ConfigMap may say the database was initialised.
    pub bootstrapped: bool,
    /// Instances whose data directory must be set aside and cloned anew
    /// when their pod next starts (roles ConfigMap key `rebuild`).
    pub rebuild: Vec<String>,
    /// How many pods the StatefulSet runs now: `spec.instances`, except
    /// while a scale-down waits for the primary to move below it.
    pub replicas: i32,
    /// Pods to delete (fencing an old primary, rebuilding a replica).
    pub delete_pods: Vec<PodDeletion>,
    /// Instance to promote now (`pg_promote()` on it).
    pub promote: Option<String>,
    /// `status.currentPrimary`.
    pub current_primary: Option<String>,
    /// `status.highAvailability`.
    pub status: HighAvailabilityStatus,
    /// The [`PRIMARY_AVAILABLE`] assessment.
    pub available: Assessment,
    /// Whether a promotion is in progress (Progressing is True while it is).
    pub progressing: Option<Assessment>,
    /// Events: (type, reason, message).
    pub events: Vec<(EventType, String, String)>,
    /// When to look again at the latest (the failover delay's end).
    pub wake_at: Option<Timestamp>,
}

impl Decision {
    fn event(&mut self, type_: EventType, reason: &str, message: String) {
        self.events.push((type_, reason.to_string(), message));
    }

    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |earlier| earlier.min(at)));
    }

    fn delete(&mut self, deletion: PodDeletion) {
        if !self.delete_pods.iter().any(|d| d.pod == deletion.pod) {
            self.delete_pods.push(deletion);
        }
    }
}

/// The instance that is the primary when no promotion says otherwise: the
/// roles ConfigMap's, else `status.currentPrimary`, else the one server
/// that answers as a primary when only one does, else pod 0.
pub fn current_primary(db: &PostgresDB, topology: &Topology) -> String {
    let status = db.status.as_ref().and_then(|s| s.current_primary.clone());
    let writable = topology.writable();
    let only_writable = (writable.len() == 1).then(|| writable[0].name.clone());
    topology
        .recorded_primary
        .clone()
        .or(status)
        .or(only_writable)
        .unwrap_or_else(|| Names::of(db).pod(shared::ha::primary_ordinal(db)))
}

/// `spec.instances`, at least 1.
pub fn instances(db: &PostgresDB) -> u32 {
    db.spec
        .instances
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(1)
        .max(1)
}

/// The promotion in progress, as status records it, or as the cluster
/// shows it when status missed it: the roles ConfigMap naming another
/// instance than `status.currentPrimary` means an operator stopped
/// between writing the one and the other, and the promotion goes on.
pub fn in_flight(db: &PostgresDB, topology: &Topology, now: Timestamp) -> Option<PromotionStatus> {
    let status = db.status.as_ref();
    let recorded = status
        .and_then(|s| s.high_availability.as_ref())
        .and_then(|ha| ha.promotion.clone());
    if let Some(record) = recorded.filter(|r| r.phase != PromotionPhase::Completed) {
        return Some(record);
    }
    let roles = topology.recorded_primary.as_deref()?;
    let status_primary = status.and_then(|s| s.current_primary.as_deref())?;
    if roles == status_primary {
        return None;
    }
    let kind = if db.spec.primary.as_deref() == Some(roles) {
        shared::ha::PromotionKind::Switchover
    } else {
        shared::ha::PromotionKind::Failover
    };
    Some(PromotionStatus {
        kind,
        from: status_primary.to_string(),
        // Not known to be deleted after the roles changed: the plan
        // deletes whatever pod it finds by that name (see `plan`).
        from_pod_uid: None,
        to: roles.to_string(),
        phase: PromotionPhase::Fencing,
        reason: format!(
            "resumed: the roles ConfigMap names {roles} while status names {status_primary}"
        ),
        started_at: shared::api::status_time(now),
        completed_at: None,
        lag_bytes_at_failover: None,
    })
}

/// The next step from what is observed.
pub fn progress(db: &PostgresDB, topology: &Topology, now: Timestamp) -> Decision {
    let previous = db
        .status
        .as_ref()
        .and_then(|s| s.high_availability.clone())
        .unwrap_or_default();
    let current = current_primary(db, topology);
    // Initialised once any server answered: a primary, or a replica
    // (cloned from one), now or in an earlier reconcile.
    let bootstrapped = topology.bootstrapped
        || topology
            .members
            .iter()
            .any(|m| m.is_writable() || m.is_replica())
        || previous.timeline.is_some();
    let mut decision = Decision {
        recorded_primary: current.clone(),
        serving_primary: Some(current.clone()),
        bootstrapped,
        rebuild: Vec::new(),
        replicas: 0,
        delete_pods: Vec::new(),
        promote: None,
        current_primary: None,
        status: HighAvailabilityStatus {
            promotion: previous.promotion.clone(),
            // Kept while the primary does not answer: it is what says the
            // database was initialised, and a timeline changes only when a
            // replica is promoted.
            timeline: previous.timeline,
            ..Default::default()
        },
        available: Assessment::unknown("NotObserved", "the instances were not observed"),
        progressing: None,
        events: Vec::new(),
        wake_at: None,
    };
    if let Some(record) = in_flight(db, topology, now) {
        plan::advance(db, topology, &previous, record, now, &mut decision);
    } else if !lost::watch(db, topology, &previous, &current, now, &mut decision) {
        switchover::consider(db, topology, &current, now, &mut decision);
    }
    plan::fence_strays(topology, &mut decision);
    if decision.progressing.is_none() {
        rejoin::rebuild(db, topology, &previous, now, &mut decision);
    }
    decision.replicas = replicas(db, &decision);
    decision.current_primary = Some(decision.recorded_primary.clone());
    report::fill(db, topology, &previous, now, &mut decision);
    decision
}

/// How many pods the StatefulSet runs: `spec.instances`, or more while
/// the primary (or a promotion's either end) has an ordinal beyond it.
fn replicas(db: &PostgresDB, decision: &Decision) -> i32 {
    let mut needed = instances(db);
    let mut keep = |pod: &str| {
        if let Some(ordinal) = ordinal_of(db, pod) {
            needed = needed.max(ordinal + 1);
        }
    };
    keep(&decision.recorded_primary);
    if let Some(serving) = &decision.serving_primary {
        keep(serving);
    }
    if let Some(record) = decision
        .status
        .promotion
        .as_ref()
        .filter(|r| r.phase != PromotionPhase::Completed)
    {
        keep(&record.from);
        keep(&record.to);
    }
    i32::try_from(needed).unwrap_or(i32::MAX)
}
