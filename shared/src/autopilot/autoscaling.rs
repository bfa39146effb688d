//! `spec.autoscaling` and `status.autopilot.autoscaling`: how many
//! instances serve reads, decided from the load the operator measures.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Replicas scaled on read load (Level 5). While it is set, the instance
/// count is the operator's decision between `minInstances` and
/// `maxInstances`; `spec.instances` is ignored.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest instances (the primary counts as one).
    #[schemars(range(min = 1, max = 9))]
    pub min_instances: i32,
    /// Most instances. At least `minInstances`.
    #[schemars(range(min = 1, max = 9))]
    pub max_instances: i32,
    /// The load each instance that serves reads should carry: client
    /// connections as a percentage of those clients may open
    /// (`max_connections` minus the reserved), averaged over the replicas
    /// (or the primary while there is none). Above it the operator adds
    /// replicas, below it removes them.
    #[serde(default = "AutoscalingSpec::default_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_connections_percent: u32,
    /// How long the load must call for more instances before they are
    /// added.
    #[serde(default)]
    #[schemars(range(max = 3600))]
    pub scale_out_stabilization_seconds: u32,
    /// How long the load must call for fewer instances before they are
    /// removed.
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
