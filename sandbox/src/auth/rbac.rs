//! RBAC, as kube-apiserver's RBAC authorizer decides
//! (plugin/pkg/auth/authorizer/rbac): a request is allowed when a rule of a
//! role bound to its user allows it, and refused otherwise.
//!
//! The rules come from the store at each decision, as upstream reads them
//! from its informers' caches: the ClusterRoleBindings (all of them, as
//! upstream lists them, keeping only those whose subjects name the user or
//! one of its groups, without copying the rest), then, for a request in a
//! namespace, that namespace's RoleBindings only, each resolved to the Role
//! or ClusterRole it names. A binding whose role does not exist grants
//! nothing and is named in the refusal's reason (`RBAC: role... not
//! found`), as upstream reports it.
//!
//! A rule matches verbs (`*`), API groups (`*`), resources (`*`,
//! `res/sub`, `*/sub`), resourceNames (an empty list matches every name),
//! and for requests that are not for a resource, nonResourceURLs (`*`, a
//! trailing `*` matching a prefix). ClusterRole aggregation is not
//! evaluated: an aggregated role grants the rules it holds.

use std::ops::ControlFlow;

use serde_json::{Value, json};

use super::Identity;
use crate::cluster::Cluster;
use crate::error::{ApiStatus, Error};
use crate::meta::name_of;

const GROUP: &str = "rbac.authorization.k8s.io";

/// What a request asks to do: upstream's `authorizer.Attributes` less the
/// user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Resource {
        verb: String,
        namespace: String,
        api_group: String,
        resource: String,
        subresource: String,
        name: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

impl Action {
    fn verb(&self) -> &str {
        match self {
            Action::Resource { verb, .. } | Action::NonResource { verb, .. } => verb,
        }
    }
    fn namespace(&self) -> &str {
        match self {
            Action::Resource { namespace, .. } => namespace,
            Action::NonResource { .. } => "",
        }
    }
}

/// RBAC's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A rule allows it; the reason names the binding and role.
    Allow(String),
    /// Nothing allows it; the reason names bindings whose role is missing.
    Deny(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow(r) | Decision::Deny(r) => r,
        }
    }
}

/// Whether `user` may do `action`: members of `system:masters` always,
/// anyone else as RBAC decides.
pub fn authorize(cluster: &Cluster, user: &Identity, action: &Action) -> Decision {
    if user.is_master() {
        return Decision::Allow(String::new());
    }
    let mut allowed_by = None;
    let errors = visit_rules(cluster, user, action.namespace(), &mut |source, rules| {
        let allows = rules
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| rule_allows(action, rule));
        if allows {
            allowed_by = Some(source.to_string());
        }
        allows
    });
    match allowed_by {
        Some(source) => Decision::Allow(format!("RBAC: allowed by {source}")),
        None => Decision::Deny(match errors.as_slice() {
            [] => String::new(),
            [one] => format!("RBAC: {one}"),
            many => format!("RBAC: [{}]", many.join(", ")),
        }),
    }
}

/// Every rule bound to `user` in `namespace` (and cluster-wide), and the
/// bindings whose role is missing: what a SelfSubjectRulesReview lists.
pub fn rules_for(cluster: &Cluster, user: &Identity, namespace: &str) -> (Vec<Value>, Vec<String>) {
    let mut all = vec![];
    let errors = visit_rules(cluster, user, namespace, &mut |_, rules| {
        all.extend(rules.as_array().into_iter().flatten().cloned());
        false
    });
    (all, errors)
}

/// Upstream's `VisitRulesFor`: the rules of the roles bound to `user` by
/// ClusterRoleBindings, then by `namespace`'s RoleBindings, each with a
/// description of the binding, until `visit` returns true. Returns what
/// could not be resolved (bindings to missing roles).
fn visit_rules(
    cluster: &Cluster,
    user: &Identity,
    ns: &str,
    visit: &mut dyn FnMut(&str, &Value) -> bool,
) -> Vec<String> {
    let mut errors: Vec<String> = vec![];
    if visit_bindings(cluster, user, "", visit, &mut errors).is_continue() && !ns.is_empty() {
        let _ = visit_bindings(cluster, user, ns, visit, &mut errors);
    }
    errors
}

/// One kind of binding for [`visit_rules`]: the ClusterRoleBindings when
/// `ns` is empty, else `ns`'s RoleBindings. Each that applies to `user`
/// has its role's rules given to `visit`; `Break` once `visit` returns
/// true. A binding to a missing role is added to `errors`.
fn visit_bindings(
    cluster: &Cluster,
    user: &Identity,
    ns: &str,
    visit: &mut dyn FnMut(&str, &Value) -> bool,
    errors: &mut Vec<String>,
) -> ControlFlow<()> {
    let (plural, kind, scope) = if ns.is_empty() {
        ("clusterrolebindings", "ClusterRoleBinding", None)
    } else {
        ("rolebindings", "RoleBinding", Some(ns))
    };
    let Some(rt) = cluster.registry.by_key(GROUP, plural) else {
        return ControlFlow::Continue(());
    };
    let bindings = cluster.store.list(&rt.key(), scope, None, None, &|b| {
        applying_subject(b, user, ns).is_some()
    });
    for binding in &bindings.items {
        let Some(subject) = applying_subject(binding, user, ns) else {
            continue;
        };
        let role = role_ref(binding);
        let binding_name = match scope {
            None => name_of(binding).to_string(),
            Some(ns) => format!("{}/{ns}", name_of(binding)),
        };
        let source = format!(
            "{kind} {binding_name:?} of {} {:?} to {}",
            role.kind,
            role.name,
            describe_subject(&subject, ns)
        );
        // A ClusterRoleBinding always names a ClusterRole.
        let (plural, role_ns, role_kind) = if ns.is_empty() || role.kind == "ClusterRole" {
            ("clusterroles", "", "clusterrole")
        } else {
            ("roles", ns, "role")
        };
        match rules_of(cluster, plural, role_ns, &role.name) {
            Some(rules) => {
                if visit(&source, &rules) {
                    return ControlFlow::Break(());
                }
            }
            None => errors.push(format!("{role_kind}.{GROUP} {:?} not found", role.name)),
        }
    }
    ControlFlow::Continue(())
}

struct RoleRef {
    kind: String,
    name: String,
}

fn role_ref(binding: &Value) -> RoleRef {
    let text = |k: &str| {
        binding
            .pointer(&format!("/roleRef/{k}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    RoleRef {
        kind: text("kind"),
        name: text("name"),
    }
}

fn rules_of(cluster: &Cluster, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let rt = cluster.registry.by_key(GROUP, plural)?;
    let role = cluster.store.get(&rt.key(), ns, name)?;
    Some(role.get("rules").cloned().unwrap_or_else(|| json!([])))
}

/// The first subject of `binding` that names `user` (upstream's
/// `appliesTo`); a ServiceAccount subject without a namespace means the
/// binding's namespace.
fn applying_subject(binding: &Value, user: &Identity, binding_ns: &str) -> Option<Value> {
    binding
        .get("subjects")?
        .as_array()?
        .iter()
        .find(|s| subject_applies(s, user, binding_ns))
        .cloned()
}

fn subject_applies(subject: &Value, user: &Identity, binding_ns: &str) -> bool {
    let text = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or_default();
    match text("kind") {
        "User" => text("name") == user.name,
        "Group" => user.groups.iter().any(|g| g == text("name")),
        "ServiceAccount" => {
            let ns = match text("namespace") {
                "" => binding_ns,
                ns => ns,
            };
            !ns.is_empty() && user.name == super::service_account_user(ns, text("name"))
        }
        _ => false,
    }
}

fn describe_subject(subject: &Value, binding_ns: &str) -> String {
    let text = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or_default();
    match text("kind") {
        "ServiceAccount" => {
            let ns = match text("namespace") {
                "" => binding_ns,
                ns => ns,
            };
            format!("ServiceAccount {:?}", format!("{}/{ns}", text("name")))
        }
        kind => format!("{kind} {:?}", text("name")),
    }
}

/// A resource as rules and refusals name it: `pods`, or with a
/// subresource `pods/log`.
fn resource_path(resource: &str, subresource: &str) -> String {
    if subresource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{subresource}")
    }
}

fn strings<'a>(rule: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    rule.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Upstream's `RuleAllows`.
pub fn rule_allows(action: &Action, rule: &Value) -> bool {
    let verb_matches = strings(rule, "verbs").any(|v| v == "*" || v == action.verb());
    if !verb_matches {
        return false;
    }
    match action {
        Action::Resource {
            api_group,
            resource,
            subresource,
            name,
            ..
        } => {
            let combined = resource_path(resource, subresource);
            let group_matches = strings(rule, "apiGroups").any(|g| g == "*" || g == api_group);
            let resource_matches = strings(rule, "resources").any(|r| {
                r == "*"
                    || r == combined
                    || (!subresource.is_empty()
                        && r.strip_prefix("*/") == Some(subresource.as_str()))
            });
            let mut names = strings(rule, "resourceNames").peekable();
            let name_matches = names.peek().is_none() || names.any(|n| n == name);
            group_matches && resource_matches && name_matches
        }
        Action::NonResource { path, .. } => strings(rule, "nonResourceURLs").any(|u| {
            u == "*"
                || u == path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        }),
    }
}

/// Upstream's 403 for a refused request (`responsewriters.Forbidden`):
/// `<resource> "<name>" is forbidden: User "<user>" cannot <verb> resource
/// "<resource/sub>" in API group "<group>" in the namespace "<ns>"` (or
/// `at the cluster scope`, or `cannot <verb> path "<path>"`), then the
/// reason if there is one.
pub fn forbidden(user: &Identity, action: &Action, reason: &str) -> Error {
    let (what, group, resource, name) = match action {
        Action::Resource {
            verb,
            namespace,
            api_group,
            resource,
            subresource,
            name,
        } => {
            let combined = resource_path(resource, subresource);
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {namespace:?}")
            };
            (
                format!(
                    "User {:?} cannot {verb} resource {combined:?} in API group {api_group:?} {scope}",
                    user.name
                ),
                api_group.as_str(),
                resource.as_str(),
                name.as_str(),
            )
        }
        Action::NonResource { verb, path } => (
            format!("User {:?} cannot {verb} path {path:?}", user.name),
            "",
            "",
            "",
        ),
    };
    let what = if reason.is_empty() {
        what
    } else {
        format!("{what}: {reason}")
    };
    let qualified = crate::error::qualified(group, resource);
    let message = match (resource.is_empty(), name.is_empty()) {
        (true, _) => format!("forbidden: {what}"),
        (false, true) => format!("{qualified} is forbidden: {what}"),
        (false, false) => format!("{qualified} {name:?} is forbidden: {what}"),
    };
    let mut details = json!({});
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    if !resource.is_empty() {
        details["kind"] = json!(resource);
    }
    Error::Api(Box::new(ApiStatus {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(details),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(verb: &str, sub: &str, name: &str) -> Action {
        Action::Resource {
            verb: verb.into(),
            namespace: "ns".into(),
            api_group: String::new(),
            resource: "pods".into(),
            subresource: sub.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_rule_matches_verbs_groups_resources_subresources_and_names_as_upstream() {
        let rule = json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/log"], "resourceNames": ["a"]});
        assert!(rule_allows(&pods("get", "", "a"), &rule));
        assert!(rule_allows(&pods("get", "log", "a"), &rule));
        assert!(!rule_allows(&pods("get", "", "b"), &rule));
        assert!(!rule_allows(&pods("delete", "", "a"), &rule));
        assert!(!rule_allows(&pods("get", "exec", "a"), &rule));
        let all = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]});
        assert!(rule_allows(&pods("deletecollection", "status", ""), &all));
        let apps = json!({"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*"]});
        assert!(!rule_allows(&pods("get", "", ""), &apps));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_a_trailing_star() {
        let rule = json!({"verbs": ["get"], "nonResourceURLs": ["/api", "/apis/*"]});
        let path = |p: &str| Action::NonResource {
            verb: "get".into(),
            path: p.into(),
        };
        assert!(rule_allows(&path("/api"), &rule));
        assert!(rule_allows(&path("/apis/apps/v1"), &rule));
        assert!(!rule_allows(&path("/api/v1"), &rule));
        assert!(!rule_allows(&path("/metrics"), &rule));
    }

    #[test]
    fn a_refusal_says_who_cannot_do_what_where_as_upstream() {
        let user = Identity::service_account("ns", "sa", "");
        let e = forbidden(&user, &pods("list", "", ""), "").status();
        assert_eq!(
            e.message,
            r#"pods is forbidden: User "system:serviceaccount:ns:sa" cannot list resource "pods" in API group "" in the namespace "ns""#
        );
        let e = forbidden(&user, &pods("get", "log", "x"), "").status();
        assert_eq!(
            e.message,
            r#"pods "x" is forbidden: User "system:serviceaccount:ns:sa" cannot get resource "pods/log" in API group "" in the namespace "ns""#
        );
        let nodes = Action::Resource {
            verb: "list".into(),
            namespace: String::new(),
            api_group: String::new(),
            resource: "nodes".into(),
            subresource: String::new(),
            name: String::new(),
        };
        let e = forbidden(
            &user,
            &nodes,
            "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found",
        )
        .status();
        assert_eq!(
            e.message,
            r#"nodes is forbidden: User "system:serviceaccount:ns:sa" cannot list resource "nodes" in API group "" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#
        );
        let path = Action::NonResource {
            verb: "get".into(),
            path: "/metrics".into(),
        };
        assert_eq!(
            forbidden(&user, &path, "").status().message,
            r#"forbidden: User "system:serviceaccount:ns:sa" cannot get path "/metrics""#
        );
    }
}
