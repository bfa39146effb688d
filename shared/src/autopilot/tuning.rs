//! `spec.tuning` and `status.autopilot.tuning`: postgresql.conf sized to
//! the memory and CPU the database has.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether the operator derives the memory and parallelism parameters from
/// `spec.resources` (Level 5).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Tuning {
    /// Derive them; parameters set in `spec.parameters` always win.
    #[serde(rename = "auto")]
    Auto,
    /// PostgreSQL's defaults and `spec.parameters` only.
    #[serde(rename = "off")]
    Off,
}

/// What auto-tuning derived.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TuningStatus {
    /// The memory the values were derived from (the container's limit).
    pub memory: String,
    /// The CPUs the values were derived from, when a CPU limit is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// The parameters derived and in effect (those the user set are left
    /// out: theirs win).
    pub parameters: BTreeMap<String, String>,
}
