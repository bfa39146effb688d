//! Impersonation (`Impersonate-User`, `Impersonate-Group`,
//! `Impersonate-Uid`), as kube-apiserver's impersonation filter does it:
//! what `kubectl --as` and `--as-group` send.
//!
//! The requester must be allowed to `impersonate` each thing it asks for:
//! `users` (or, for a `system:serviceaccount:<ns>:<name>` user,
//! `serviceaccounts` `<name>` in `<ns>`), `groups` and `uids`, all in the
//! core group; `system:masters` may impersonate anyone. The impersonated
//! identity gets the groups asked for (a ServiceAccount with none asked
//! gets its ServiceAccount groups) plus `system:authenticated`, as
//! upstream adds it. Extra fields (`Impersonate-Extra-*`) are not modelled.

use axum::http::HeaderMap;

use super::rbac::{self, Action};
use super::{ANONYMOUS_USER, AUTHENTICATED_GROUP, Identity, UNAUTHENTICATED_GROUP};
use crate::cluster::Cluster;
use crate::error::{Error, Result};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";

/// The identity a request acts as: the requester's own, or the one its
/// impersonation headers ask for, when the requester may impersonate it.
pub fn apply(cluster: &Cluster, requester: Identity, headers: &HeaderMap) -> Result<Identity> {
    let text = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(String::from)
            .collect()
    };
    let users = text(USER);
    let groups = text(GROUP);
    let uids = text(UID);
    let Some(user) = users.first().cloned() else {
        if groups.is_empty() && uids.is_empty() {
            return Ok(requester);
        }
        return Err(Error::internal(
            "requested impersonation of groups or a uid without impersonating a user",
        ));
    };
    let mut checks: Vec<Action> = vec![];
    let check = |resource: &str, namespace: &str, name: &str| Action::Resource {
        verb: "impersonate".into(),
        namespace: namespace.into(),
        api_group: String::new(),
        resource: resource.into(),
        subresource: String::new(),
        name: name.into(),
    };
    let service_account = super::parse_service_account_user(&user);
    match service_account {
        Some((ns, name)) => checks.push(check("serviceaccounts", ns, name)),
        None => checks.push(check("users", "", &user)),
    }
    checks.extend(groups.iter().map(|g| check("groups", "", g)));
    checks.extend(uids.iter().map(|u| check("uids", "", u)));
    for action in &checks {
        let decision = rbac::authorize(cluster, &requester, action);
        if !decision.allowed() {
            return Err(rbac::forbidden(&requester, action, decision.reason()));
        }
    }
    let mut impersonated_groups = match (service_account, groups.is_empty()) {
        (Some((ns, name)), true) => Identity::service_account(ns, name, "").groups,
        _ => groups,
    };
    let implied = if user == ANONYMOUS_USER {
        UNAUTHENTICATED_GROUP
    } else {
        AUTHENTICATED_GROUP
    };
    if !impersonated_groups.iter().any(|g| g == implied) {
        impersonated_groups.push(implied.into());
    }
    Ok(Identity {
        name: user,
        uid: uids.first().cloned().unwrap_or_default(),
        groups: impersonated_groups,
    })
}
