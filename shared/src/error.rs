//! The core's error type, and how a failed reconcile is retried.
//!
//! Errors carry what the operator was doing (`apply StatefulSet db1`) and
//! the cause as their `#[source]`, so a log line reads as a sentence with a
//! chain behind it. A failed reconcile is retried with an exponential
//! backoff per object, so a persistent failure (RBAC missing, API server
//! down) costs one attempt every few minutes rather than a hot loop.

use std::time::Duration;

/// Everything that can fail in the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("failed to {action}")]
    Kube {
        /// What the operator was doing.
        action: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },

    /// An object could not be (de)serialised.
    #[error("failed to serialise {what}")]
    Serialize {
        /// Which object.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A capability built a desired object the core cannot apply.
    #[error("cannot build the desired state: {what}")]
    Desired {
        /// What was wrong.
        what: String,
    },

    /// The kubeconfig or in-cluster configuration could not be loaded.
    #[error("cannot load a Kubernetes configuration: {detail}")]
    Config {
        /// What was tried.
        detail: String,
        /// The kube error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// No Kubernetes API server answered.
    #[error(
        "no Kubernetes cluster is reachable at {server}\n\nStart one with `kind create cluster` (https://kind.sigs.k8s.io), or point --kubeconfig at a cluster you can reach"
    )]
    Unreachable {
        /// The API server URL that was tried.
        server: String,
        /// Why it failed.
        #[source]
        source: Box<kube::Error>,
    },

    /// The cluster does not serve the PostgresDB resource.
    #[error(
        "the cluster does not serve postgresdbs.pgdb.example.com: install the CRD first, with\n\n    {binary} crd | kubectl apply -f -"
    )]
    CrdMissing {
        /// The binary to run.
        binary: String,
    },

    /// Talking SQL to a database failed.
    #[error("failed to {what}")]
    Sql {
        /// What the operator was doing.
        what: String,
        /// The cause (sqlx, the port-forward, a timeout).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Leadership of the operator's Lease could not be handled.
    #[error("leader election failed: {what}")]
    LeaderElection {
        /// What was being done.
        what: String,
        /// The lease error.
        #[source]
        source: Box<kube_leader_election::Error>,
    },

    /// A reconcile ran past [`crate::reconcile::RECONCILE_TIMEOUT`] (a call
    /// that never answered); it was dropped and is retried.
    #[error("failed to finish the reconcile within {} s", .limit.as_secs())]
    ReconcileTimeout {
        /// The bound it ran past.
        limit: std::time::Duration,
    },

    /// Leadership was lost to another replica; this one must stop acting.
    #[error("lost the leader lease to another replica")]
    LostLeadership,

    /// The health endpoint could not listen (another operator may hold
    /// the port): the message names the flag that moves it.
    #[error(
        "cannot serve health checks on {address} (is another operator running? start this one with --health-addr 127.0.0.1:0, or another free port)"
    )]
    Health {
        /// The address.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The CRD could not be rendered.
    #[error("cannot render the CRD as YAML")]
    Yaml(#[source] serde_yaml::Error),
}

impl Error {
    /// What failed, in one CamelCase word: the `reason` label of
    /// `pgdb_operator_reconcile_failures_total`. The values are few and
    /// fixed, so the series stay few whatever the errors say: an API
    /// server's answer gives its own reason (`Forbidden` for missing
    /// RBAC, `Conflict`, `NotFound`, ...), any other kind of failure the
    /// variant's name.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => kube_reason(source),
            Error::Serialize { .. } => "Serialization",
            Error::Desired { .. } => "InvalidDesiredState",
            Error::Config { .. } => "Configuration",
            Error::Unreachable { .. } => "ApiUnreachable",
            Error::CrdMissing { .. } => "CrdMissing",
            Error::Sql { .. } => "Sql",
            Error::LeaderElection { .. } => "LeaderElection",
            Error::LostLeadership => "LostLeadership",
            Error::ReconcileTimeout { .. } => "ReconcileTimeout",
            Error::Health { .. } => "HealthServer",
            Error::Yaml(_) => "Yaml",
        }
    }
}

/// The reasons an API server gives in a `Status` (`metav1.StatusReason`).
const API_REASONS: &[&str] = &[
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "Gone",
    "Invalid",
    "ServerTimeout",
    "StoreReadError",
    "Timeout",
    "TooManyRequests",
    "BadRequest",
    "MethodNotAllowed",
    "NotAcceptable",
    "RequestEntityTooLarge",
    "UnsupportedMediaType",
    "InternalError",
    "Expired",
    "ServiceUnavailable",
];

/// The reason of a failed API call: the server's own when it is one of
/// Kubernetes', else the one its HTTP code stands for (`ApiError` for
/// another code), and
/// `ApiUnreachable` when no answer came (connection, TLS, timeout).
fn kube_reason(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) => API_REASONS
            .iter()
            .find(|known| **known == status.reason)
            .copied()
            .unwrap_or(match status.code {
                400 => "BadRequest",
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                410 => "Gone",
                422 => "Invalid",
                429 => "TooManyRequests",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                _ => "ApiError",
            }),
        kube::Error::SerdeError(_) => "Serialization",
        _ => "ApiUnreachable",
    }
}

/// The delay before retry number `failures` (1-based): 2s doubling to 5 min.
pub fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(8);
    Duration::from_secs((2u64 << exponent).min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(2), Duration::from_secs(4));
        assert_eq!(retry_delay(5), Duration::from_secs(32));
        assert_eq!(retry_delay(9), Duration::from_secs(300));
        assert_eq!(retry_delay(1000), Duration::from_secs(300));
    }

    fn api_error(code: u16, reason: &str) -> Error {
        let status = kube::core::Status::failure("no", reason).with_code(code);
        Error::Kube {
            action: "patch StatefulSet orders".into(),
            source: Box::new(kube::Error::Api(Box::new(status))),
        }
    }

    #[test]
    fn a_failure_s_reason_is_the_api_server_s_own_or_the_kind_of_failure() {
        assert_eq!(api_error(403, "Forbidden").reason(), "Forbidden");
        assert_eq!(api_error(409, "Conflict").reason(), "Conflict");
        // A reason that is not Kubernetes' never becomes a label value.
        assert_eq!(
            api_error(403, "forbidden: user cannot patch").reason(),
            "Forbidden"
        );
        assert_eq!(api_error(418, "").reason(), "ApiError");
        let unreachable = Error::Kube {
            action: "list pods".into(),
            source: Box::new(kube::Error::Service("connection refused".into())),
        };
        assert_eq!(unreachable.reason(), "ApiUnreachable");
        let sql = Error::Sql {
            what: "connect to orders-0".into(),
            source: "timed out".into(),
        };
        assert_eq!(sql.reason(), "Sql");
        assert_eq!(
            Error::Desired {
                what: "no name".into()
            }
            .reason(),
            "InvalidDesiredState"
        );
    }

    #[test]
    fn an_unreachable_cluster_says_how_to_get_one() {
        let source = kube::Error::Service("connection refused".into());
        let message = Error::Unreachable {
            server: "https://127.0.0.1:6443".into(),
            source: Box::new(source),
        }
        .to_string();
        assert!(message.contains("kind create cluster"), "{message}");
        assert!(message.contains("127.0.0.1:6443"), "{message}");
    }
}
