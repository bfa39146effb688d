//! The decisions part of the `PostgresDB` API (Level 5, auto pilot part
//! two): what the operator may decide on its own and what status says it
//! decided, measured and why.
//!
//! - [`autoscaling`]: `spec.autoscaling`, replicas scaled on read load;
//! - [`autogrow`]: `spec.storage.autoGrow`, volumes grown before they fill;
//! - [`tuning`]: `spec.tuning`, postgresql.conf sized to the resources;
//! - [`guard`]: configuration self-healing (no spec section: Level 5 always
//!   rolls a configuration that does not start back to the last one that
//!   ran);
//! - [`anomaly`]: `spec.anomalyDetection`, a learned baseline per database.
//!
//! Each decision is recorded in `status.autopilot` ([`AutopilotStatus`]).
//! Decisions never edit the spec: Level 5 derives the *effective spec*
//! from the spec as written and these status records (more instances, a
//! larger volume, derived parameters, the last configuration that ran), and
//! the capabilities of every level act on the effective spec (see
//! [`crate::capability::Level::effective_spec`]). The decisions are Level
//! 5's (`level5-autopilot`); this module only holds the types every level
//! serves in the one CRD. Levels below 5 report the sections as not
//! implemented ([`crate::api::PostgresDBSpec::sections_in_use`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod anomaly;
pub mod autogrow;
pub mod autoscaling;
pub mod guard;
pub mod tuning;

/// What Level 5 decided on its own, each with what it measured and why.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutopilotStatus {
    /// Replica autoscaling: the instance count decided and the last
    /// decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<autoscaling::AutoscalingStatus>,
    /// Storage auto-grow: the size the volumes were grown to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<autogrow::StorageGrowthStatus>,
    /// Auto-tuning: the parameters derived from the resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<tuning::TuningStatus>,
    /// Configuration self-healing: the last configuration that ran, and a
    /// configuration held back because it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<guard::ConfigurationGuardStatus>,
    /// Anomaly detection: the baseline's state and the deviations seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<anomaly::AnomalyStatus>,
}
