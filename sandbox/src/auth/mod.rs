//! Authentication and authorization, as kube-apiserver does them: who a
//! request comes from (the admin user's bearer token, a ServiceAccount's
//! token), and whether RBAC lets that identity do what it asks.
//!
//! (Contract for the deploy-path work: the bodies below are placeholders
//! that the authentication work replaces.)

use std::net::SocketAddr;
use std::sync::OnceLock;

use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// The sandbox's credentials: the admin user's token and the certificate
/// authority that signs the API server's serving certificate.
#[derive(Debug, Default)]
pub struct Authority {
    in_cluster: OnceLock<SocketAddr>,
}

impl Authority {
    pub fn new() -> Authority {
        Authority::default()
    }

    /// The admin user's bearer token (written into the kubeconfig).
    pub fn admin_token(&self) -> &str {
        ""
    }

    /// The CA certificate (PEM) that signed the HTTPS listener's certificate:
    /// a pod's `ca.crt`, the `kube-root-ca.crt` ConfigMap's.
    pub fn ca_pem(&self) -> &str {
        ""
    }

    /// Where pods reach the API server, in host terms: the HTTPS listener
    /// (`KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`).
    pub fn in_cluster_endpoint(&self) -> Option<SocketAddr> {
        self.in_cluster.get().copied()
    }

    pub fn set_in_cluster_endpoint(&self, addr: SocketAddr) {
        let _ = self.in_cluster.set(addr);
    }
}

/// A token that identifies `system:serviceaccount:<namespace>:<name>`, as
/// the kubelet requests one (TokenRequest) for a pod's projected
/// `serviceAccountToken` source; bound to the pod when one is named.
pub fn service_account_token(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    bound_pod: Option<(&str, &str)>,
    expiration_seconds: i64,
) -> Result<String> {
    let _ = (cluster, bound_pod, expiration_seconds);
    Err(Error::internal(format!(
        "tokens for serviceaccount {namespace}/{name} are not issued yet"
    )))
}
