//! The high-availability part of the `PostgresDB` API (Level 5): how many
//! instances run, which one is the primary, when a lost primary is replaced
//! and how durable a commit is; and what status reports about each instance
//! and the last failover or switchover.
//!
//! Levels below 5 run one instance and report these sections as not
//! implemented (see [`crate::api::PostgresDBSpec::sections_in_use`]).
//! The decisions are Level 5's (`level5-autopilot`); this module only holds
//! the types every level serves in the one CRD, and the one rule lower
//! levels need too: which pod is the primary ([`primary_ordinal`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::PostgresDB;

/// Most instances a database may run.
pub const MAX_INSTANCES: i32 = 9;

/// When a lost primary is replaced by a replica (Level 5).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Seconds the primary must stay lost (its pod gone or not ready, its
    /// server not answering) before a replica is promoted. 0 acts at once,
    /// except that a ready pod whose server does not answer counts as lost
    /// after 10 seconds at the least; a longer delay rides out a short
    /// outage at the cost of a longer one when the primary is really gone.
    #[serde(default)]
    #[schemars(range(max = 3600))]
    pub delay_seconds: u32,
}

/// How commits reach the replicas (Level 5).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// Whether a commit waits until `synchronousReplicas` replicas have
    /// written it (`synchronous_standby_names = 'ANY n (*)'`). With it, no
    /// acknowledged commit is lost when a replica is promoted; without it a
    /// failover may lose the commits the replicas had not received (status
    /// reports that lag). While fewer replicas than required stream,
    /// commits wait.
    #[serde(default)]
    pub synchronous: bool,

    /// How many replicas must confirm a synchronous commit (a quorum of
    /// any of them). At most `instances - 1`.
    #[serde(default = "ReplicationSpec::default_synchronous_replicas")]
    #[schemars(range(min = 1, max = 8))]
    pub synchronous_replicas: u32,
}

impl ReplicationSpec {
    fn default_synchronous_replicas() -> u32 {
        1
    }
}

/// What an instance is doing, as the operator last saw it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InstanceRole {
    /// Accepts writes.
    Primary,
    /// Replays the primary's WAL as a hot standby.
    Replica,
    /// Its server did not answer, or the pod does not run.
    Unavailable,
}

/// One instance (pod) of a database, as the operator last saw it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The pod's name.
    pub name: String,
    /// Primary, Replica or Unavailable.
    pub role: InstanceRole,
    /// Whether the pod passes its readiness probe.
    pub ready: bool,
    /// The timeline its server is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// A replica's last WAL position received (written to disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_lsn: Option<String>,
    /// A replica's last WAL position replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_lsn: Option<String>,
    /// A replica's distance behind the primary's current WAL position, in
    /// bytes received, when both answered in the same reconcile; while the
    /// primary does not answer, the distance when it last did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
}

/// Why the primary moved.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PromotionKind {
    /// The primary was lost and a replica replaced it.
    Failover,
    /// A planned move to `spec.primary`: no data is lost.
    Switchover,
}

/// Where a promotion stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PromotionPhase {
    /// Making sure the old primary cannot accept writes: the read-write
    /// Service selects no pod and the old primary's pod is replaced.
    Fencing,
    /// Switchover: waiting for the target to receive all of the old
    /// primary's WAL.
    CatchingUp,
    /// The target is being promoted.
    Promoting,
    /// The new primary accepts writes behind the read-write Service.
    Completed,
}

/// The failover or switchover in progress, or the last one.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionStatus {
    /// Failover or Switchover.
    pub kind: PromotionKind,
    /// The primary being replaced.
    pub from: String,
    /// The uid of the old primary's pod when the promotion started: a pod
    /// by that name with another uid was recreated after the fence, so its
    /// server obeys the new roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_pod_uid: Option<String>,
    /// The instance promoted.
    pub to: String,
    /// Fencing, CatchingUp, Promoting or Completed.
    pub phase: PromotionPhase,
    /// Why (which loss, or which request).
    pub reason: String,
    /// When it started.
    pub started_at: Time,
    /// When the new primary took writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Failover without synchronous replication: how far behind the old
    /// primary the promoted replica was when last seen before the loss, in
    /// bytes (from the positions in status, read at most 30 seconds before
    /// the loss): the window of commits that may be lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes_at_failover: Option<i64>,
}

/// The high-availability part of status (Level 5).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HighAvailabilityStatus {
    /// How many instances run (pods of the StatefulSet).
    #[serde(default)]
    pub instances: i32,
    /// Each instance, in ordinal order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<InstanceStatus>,
    /// The primary's timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// Since when the primary has been seen lost, while a failover waits
    /// for `spec.failover.delaySeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_lost_since: Option<Time>,
    /// The failover or switchover in progress, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionStatus>,
    /// When the members' WAL positions and lag were read. While roles,
    /// readiness and timelines stay as they are, the positions are
    /// refreshed at most every 30 seconds, so a database taking writes is
    /// not rewritten at every reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions_at: Option<Time>,
}

/// The ordinal of the pod that is the primary: the one
/// `status.currentPrimary` names (Level 5 moves it), else 0, the only
/// instance below Level 5. Every level that speaks to "the primary" asks
/// here, so a lower level run after a failover still finds it.
pub fn primary_ordinal(db: &PostgresDB) -> u32 {
    let name = kube::ResourceExt::name_any(db);
    db.status
        .as_ref()
        .and_then(|s| s.current_primary.as_deref())
        .and_then(|pod| pod.strip_prefix(name.as_str())?.strip_prefix('-'))
        .and_then(|ordinal| ordinal.parse().ok())
        .unwrap_or(0)
}
