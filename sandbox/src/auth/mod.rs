//! Authentication and authorization, as kube-apiserver does them: who a
//! request comes from (the admin user's bearer token, a ServiceAccount's
//! token), and whether RBAC lets that identity do what it asks.
//!
//! - [`Authority`] holds one sandbox's credentials: the admin user's random
//!   bearer token (in the kubeconfig the sandbox writes), the CA and the
//!   serving certificate of the HTTPS listener pods use ([`certs`],
//!   [`https`]), and the key ServiceAccount tokens are signed with
//!   ([`tokens`]).
//! - [`authenticate`] turns a request's `Authorization` header into an
//!   [`Identity`]; a missing or invalid token is upstream's 401.
//! - [`rbac`] decides, from the Role, ClusterRole, RoleBinding and
//!   ClusterRoleBinding objects in the store, whether an identity may do a
//!   request; `system:masters` (the admin user) is never checked, as
//!   upstream's privileged-group authorizer allows it first.
//! - [`policy`] creates upstream's default ClusterRoles and bindings
//!   (discovery and self-reviews for every authenticated identity).
//! - [`token_request`] (`kubectl create token`), [`impersonation`],
//!   [`review`] (SubjectAccessReview, SelfSubjectAccessReview and
//!   SelfSubjectRulesReview, what `kubectl auth can-i` asks, and
//!   SelfSubjectReview) and [`admission`] (the ServiceAccount admission
//!   plugin and each namespace's `default` ServiceAccount and
//!   `kube-root-ca.crt`) complete what the deploy path needs.
//!
//! Where it stops: no client certificates, no OIDC or webhook
//! authenticators, no ABAC or Node authorizer; the only users are the
//! admin user, ServiceAccounts and whoever the admin impersonates.

pub mod admission;
pub mod certs;
pub mod https;
pub mod impersonation;
pub mod policy;
pub mod rbac;
pub mod review;
pub mod token_request;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::OnceLock;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::error::{ApiStatus, Error, Result};
use crate::meta::uid_of;

/// The admin user the kubeconfig authenticates as.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// The group whose members every request is allowed to (no RBAC check).
pub const MASTERS_GROUP: &str = "system:masters";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// How a ServiceAccount's user name starts.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// Where the kubelet mounts a pod's ServiceAccount volume.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap every namespace has, holding the CA (`ca.crt`).
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The token lifetime the ServiceAccount admission plugin asks for.
pub const POD_TOKEN_EXPIRATION_SECONDS: i64 = tokens::WARN_ONLY_EXPIRATION_SECONDS;

/// Who a request comes from: upstream's `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl Identity {
    /// The kubeconfig's user: in `system:masters`.
    pub fn admin() -> Identity {
        Identity {
            name: ADMIN_USER.into(),
            uid: String::new(),
            groups: vec![MASTERS_GROUP.into(), AUTHENTICATED_GROUP.into()],
        }
    }

    /// A request without credentials, where one is allowed.
    pub fn anonymous() -> Identity {
        Identity {
            name: ANONYMOUS_USER.into(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
        }
    }

    /// `system:serviceaccount:<namespace>:<name>` in the ServiceAccount
    /// groups and `system:authenticated`.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Identity {
        Identity {
            name: service_account_user(namespace, name),
            uid: uid.into(),
            groups: vec![
                SERVICE_ACCOUNTS_GROUP.into(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
                AUTHENTICATED_GROUP.into(),
            ],
        }
    }

    /// Members of `system:masters` are allowed everything.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS_GROUP)
    }

    /// The (namespace, name) of the ServiceAccount this user name is.
    pub fn as_service_account(&self) -> Option<(&str, &str)> {
        parse_service_account_user(&self.name)
    }
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// The (namespace, name) in `system:serviceaccount:<namespace>:<name>`.
pub fn parse_service_account_user(user: &str) -> Option<(&str, &str)> {
    let (ns, name) = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// The sandbox's credentials: the admin user's token, the certificate
/// authority that signs the API server's serving certificate, and the key
/// ServiceAccount tokens are signed with.
pub struct Authority {
    admin_token: String,
    certs: certs::Certificates,
    signer: tokens::Signer,
    in_cluster: OnceLock<SocketAddr>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("in_cluster", &self.in_cluster)
            .finish_non_exhaustive()
    }
}

impl Default for Authority {
    fn default() -> Self {
        Self::new()
    }
}

impl Authority {
    /// New credentials: a random admin token and signing key, a new CA and
    /// serving certificate.
    pub fn new() -> Authority {
        let token: [u8; 32] = rand::random();
        let key: [u8; 32] = rand::random();
        Authority {
            admin_token: hex::encode(token),
            // Generating a P-256 key and signing two certificates only fails
            // when the operating system's random source does, and then no
            // credential of any kind can be made.
            certs: certs::generate().expect("the OS random source to make the sandbox's keys"),
            signer: tokens::Signer::new(&key),
            in_cluster: OnceLock::new(),
        }
    }

    /// The admin user's bearer token (written into the kubeconfig).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The CA certificate (PEM) that signed the HTTPS listener's certificate:
    /// a pod's `ca.crt`, the `kube-root-ca.crt` ConfigMap's.
    pub fn ca_pem(&self) -> &str {
        &self.certs.ca_pem
    }

    /// The serving certificate and key the HTTPS listener presents.
    pub fn serving(&self) -> &certs::Certificates {
        &self.certs
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

/// Upstream's answer to a request without valid credentials.
pub fn unauthorized() -> Error {
    Error::Api(Box::new(ApiStatus {
        code: 401,
        reason: "Unauthorized",
        message: "Unauthorized".into(),
        details: None,
    }))
}

/// The identity an `Authorization` header proves: `None` when there is no
/// bearer token; 401 when the token is not the admin's nor a valid
/// ServiceAccount token.
pub fn authenticate(cluster: &Cluster, authorization: Option<&str>) -> Result<Option<Identity>> {
    let Some(header) = authorization else {
        return Ok(None);
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorized)?;
    if constant_time_eq(token.as_bytes(), cluster.auth.admin_token.as_bytes()) {
        return Ok(Some(Identity::admin()));
    }
    let claims = cluster
        .auth
        .signer
        .verify(token)
        .map_err(|_| unauthorized())?;
    let sa = live_object(
        cluster,
        "serviceaccounts",
        &claims.namespace,
        &claims.service_account,
    )
    .filter(|sa| uid_of(sa) == claims.service_account_uid)
    .ok_or_else(unauthorized)?;
    if let Some((pod, pod_uid)) = &claims.pod
        && get(cluster, "pods", &claims.namespace, pod).is_none_or(|p| uid_of(&p) != pod_uid)
    {
        return Err(unauthorized());
    }
    Ok(Some(Identity::service_account(
        &claims.namespace,
        &claims.service_account,
        uid_of(&sa),
    )))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn get(cluster: &Cluster, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let rt = cluster.registry.by_key("", plural)?;
    cluster.store.get(&rt.key(), ns, name)
}

/// An object that exists and is not being deleted.
fn live_object(cluster: &Cluster, plural: &str, ns: &str, name: &str) -> Option<Value> {
    get(cluster, plural, ns, name).filter(|o| !crate::meta::is_deleting(o))
}

/// A token that identifies `system:serviceaccount:<namespace>:<name>`, as
/// the kubelet requests one (TokenRequest) for a pod's projected
/// `serviceAccountToken` source; bound to the pod when one is named.
/// Valid for `expiration_seconds`, or a year for a pod's 3607 (see
/// [`tokens::lifetime`]), for `audiences` (the API server's when empty).
/// Fails as upstream's TokenRequest does when the ServiceAccount or the pod
/// does not exist (404) or the pod's uid is not the one named (409).
pub fn service_account_token(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    bound_pod: Option<(&str, &str)>,
    expiration_seconds: i64,
    audiences: &[String],
) -> Result<String> {
    let sa = live_object(cluster, "serviceaccounts", namespace, name)
        .ok_or_else(|| Error::not_found("", "serviceaccounts", name))?;
    let pod = match bound_pod {
        Some((pod, uid)) => {
            let found = get(cluster, "pods", namespace, pod)
                .ok_or_else(|| Error::not_found("", "pods", pod))?;
            if uid_of(&found) != uid {
                return Err(Error::conflict_with(
                    "",
                    "pods",
                    pod,
                    &format!(
                        "the UID in the bound object reference ({uid}) does not match the UID in record"
                    ),
                ));
            }
            Some((pod.to_string(), uid.to_string()))
        }
        None => None,
    };
    let audiences = match audiences {
        [] => vec![tokens::API_AUDIENCE.to_string()],
        some => some.to_vec(),
    };
    let lifetime = tokens::lifetime(expiration_seconds, pod.is_some(), &audiences);
    let now = jiff::Timestamp::now().as_second();
    let claims = tokens::Claims {
        namespace: namespace.into(),
        service_account: name.into(),
        service_account_uid: uid_of(&sa).into(),
        pod,
        audiences,
        expires: now + lifetime.valid_seconds,
        warn_after: lifetime.warn_after_seconds.map(|w| now + w),
    };
    Ok(cluster.auth.signer.issue(&claims))
}
