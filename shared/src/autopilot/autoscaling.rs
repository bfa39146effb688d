//! `spec.autoscaling` and `status.autopilot.autoscaling`: how many
//! instances serve reads, decided from the load the operator measures.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Replicas scaled on read load (Level 5). While it is set, the instance
/// count is the operator's decision between `minInstances` and
/// `maxInstances`; `spec.instances` is ignored (the first count is
/// `spec.instances`, or 1, brought within the bounds).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest instances (the primary counts as one). Never scaled in below.
    #[schemars(range(min = 1, max = 9))]
    pub min_instances: i32,
    /// Most instances. At least `minInstances`.
    #[schemars(range(min = 1, max = 9))]
    pub max_instances: i32,
    /// The load each instance that serves reads should carry: client
    /// connections as a percentage of those clients may open
    /// (`max_connections` minus the reserved), averaged over the replicas
    /// (or the primary while there is none). Above it (by more than a 10%
    /// tolerance) the operator adds replicas, below it removes them.
    #[serde(default = "AutoscalingSpec::default_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_connections_percent: u32,
    /// How long the load must call for more instances before they are
    /// added, in seconds (0: at once).
    #[serde(default)]
    #[schemars(range(max = 3600))]
    pub scale_out_stabilization_seconds: u32,
    /// How long the load must call for fewer instances before they are
    /// removed, in seconds.
    #[serde(default = "AutoscalingSpec::default_scale_in")]
    #[schemars(range(max = 86400))]
    pub scale_in_stabilization_seconds: u32,
}

impl AutoscalingSpec {
    fn default_target() -> u32 {
        70
    }
    fn default_scale_in() -> u32 {
        300
    }

    /// Bounds `[minInstances, maxInstances]` with the given windows and
    /// target (for fixtures and examples).
    pub fn between(min_instances: i32, max_instances: i32) -> Self {
        Self {
            min_instances,
            max_instances,
            target_connections_percent: Self::default_target(),
            scale_out_stabilization_seconds: 0,
            scale_in_stabilization_seconds: Self::default_scale_in(),
        }
    }
}

/// What the autoscaler decided.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The instance count decided: the effective `spec.instances`.
    pub instances: i32,
    /// The last change of `instances`, with what was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<ScalingDecision>,
    /// A change the load calls for, waiting for its stabilisation window:
    /// recorded when the recommendation turns to a direction, not at each
    /// measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingScaling>,
    /// Why a scale-out the load calls for is not made (a replica lags),
    /// since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<ScalingHold>,
}

/// One scaling decision.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingDecision {
    /// When it was decided.
    pub at: Time,
    /// Instances before.
    pub from: i32,
    /// Instances after.
    pub to: i32,
    /// The measured load, in percent of the usable connections.
    pub connections_percent: i64,
    /// Why, in a sentence.
    pub reason: String,
}

/// Which way the load calls for the instance count to move.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ScalingDirection {
    /// More instances.
    Out,
    /// Fewer instances.
    In,
}

/// A recommendation waiting for its stabilisation window.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingScaling {
    /// Which way.
    pub direction: ScalingDirection,
    /// Since when the load has called for it.
    pub since: Time,
    /// The most cautious count recommended since then (the fewest added,
    /// or the fewest removed): what the scaling goes to once the window has
    /// passed.
    pub instances: i32,
    /// The load measured when the recommendation turned this way, in
    /// percent of the usable connections.
    pub connections_percent: i64,
}

/// A scale-out held back.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingHold {
    /// CamelCase reason (`ScaleOutHeldForLag`).
    pub reason: String,
    /// Since when.
    pub since: Time,
    /// What was seen when the hold began, in a sentence.
    pub message: String,
}
