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
    /// When `lastGood` was recorded: the first reconcile that saw every
    /// instance ready with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// A configuration that did not run, held back: the servers run
    /// `lastGood` until the parameters in the spec change again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<HeldBack>,
}

/// A configuration rolled back: the servers did not start, or did not
/// become ready, with it, or refused its values on reload.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldBack {
    /// The parameters that did not run.
    pub parameters: BTreeMap<String, String>,
    /// The parameter the server rejected, when its message names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_parameter: Option<String>,
    /// What was seen, with the server's own message when it gave one (the
    /// FATAL line of its log, or `pg_file_settings`' error).
    pub message: String,
    /// When it was rolled back.
    pub since: Time,
    /// When every instance ran `lastGood` again after the rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<Time>,
}
