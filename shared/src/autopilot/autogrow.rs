//! `spec.storage.autoGrow` and `status.autopilot.storage`: data volumes
//! grown before they fill, never beyond a maximum, never shrunk.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::QUANTITY_PATTERN;

/// When and how far the data volumes grow (Level 5).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoGrowSpec {
    /// Used space, in percent of the volume's capacity, at which every
    /// instance's volume is grown.
    #[serde(default = "AutoGrowSpec::default_threshold")]
    #[schemars(range(min = 50, max = 99))]
    pub threshold_percent: u32,
    /// How much a volume grows each time, in percent of its size.
    #[serde(default = "AutoGrowSpec::default_increase")]
    #[schemars(range(min = 10, max = 100))]
    pub increase_percent: u32,
    /// The largest size a volume is grown to, as a quantity ("10Gi").
    /// Reaching it raises a Warning Event and a condition.
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub max_size: String,
}

impl AutoGrowSpec {
    fn default_threshold() -> u32 {
        80
    }
    fn default_increase() -> u32 {
        50
    }
}

/// What auto-grow decided.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageGrowthStatus {
    /// The size the volumes were grown to: the effective
    /// `spec.storage.size` while it is larger than the spec's.
    pub size: String,
    /// The last growth, with what was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_growth: Option<StorageGrowth>,
}

/// One growth of the volumes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageGrowth {
    /// When it was decided.
    pub at: Time,
    /// Size before.
    pub from: String,
    /// Size after.
    pub to: String,
    /// The volume's use that triggered it, in percent.
    pub used_percent: i64,
}
