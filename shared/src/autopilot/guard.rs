//! `status.autopilot.configuration`: the last configuration a server ran
//! with, and a configuration held back because the server did not start or
//! become ready with it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What configuration self-healing knows.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationGuardStatus {
    /// The parameters (the effective `spec.parameters`) every instance last
    /// ran and was ready with.
    #[serde(default)]
    pub last_good: BTreeMap<String, String>,
    /// A configuration that did not run, held back: the servers run
    /// `lastGood` until the parameters in the spec change again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<HeldBack>,
}

/// A configuration rolled back.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldBack {
    /// The parameters that did not run.
    pub parameters: BTreeMap<String, String>,
    /// The parameter the server rejected, when its message names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_parameter: Option<String>,
    /// The server's own message.
    pub message: String,
    /// When it was rolled back.
    pub since: Time,
}
