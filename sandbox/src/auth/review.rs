//! The access-review APIs: `authorization.k8s.io/v1`
//! SubjectAccessReview ("may this user do this?"),
//! LocalSubjectAccessReview (the same, in a namespace) and
//! SelfSubjectAccessReview ("may I?", what `kubectl auth can-i` asks), and
//! `authentication.k8s.io/v1` SelfSubjectReview ("who am I?", `kubectl
//! auth whoami`).
//!
//! As upstream they only support `create`, store nothing, and answer with
//! the object sent plus its status: `allowed`, and RBAC's `reason`.

use serde_json::{Value, json};

use super::Identity;
use super::rbac::{self, Action};
use crate::cluster::Cluster;
use crate::error::{Cause, Error, Result};
use crate::registry::ResourceType;

pub const AUTHORIZATION_GROUP: &str = "authorization.k8s.io";
pub const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";

/// Which review a resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    Subject,
    LocalSubject,
    SelfSubject,
    SelfRules,
    WhoAmI,
}

/// The review `rt` serves, if it is one.
pub fn review_of(rt: &ResourceType) -> Option<Review> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        (AUTHORIZATION_GROUP, "subjectaccessreviews") => Some(Review::Subject),
        (AUTHORIZATION_GROUP, "localsubjectaccessreviews") => Some(Review::LocalSubject),
        (AUTHORIZATION_GROUP, "selfsubjectaccessreviews") => Some(Review::SelfSubject),
        (AUTHORIZATION_GROUP, "selfsubjectrulesreviews") => Some(Review::SelfRules),
        (AUTHENTICATION_GROUP, "selfsubjectreviews") => Some(Review::WhoAmI),
        _ => None,
    }
}

/// Answers a review `requester` created (in `ns` for a local one).
pub fn create(
    cluster: &Cluster,
    rt: &ResourceType,
    review: Review,
    requester: &Identity,
    ns: &str,
    mut obj: Value,
) -> Result<Value> {
    if !obj.is_object() {
        return Err(Error::bad_request(
            "the object provided is not a JSON object",
        ));
    }
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    obj["metadata"] = metadata;
    if review == Review::WhoAmI {
        obj["status"] = json!({"userInfo": {"username": requester.name, "uid": requester.uid, "groups": requester.groups}});
        return Ok(obj);
    }
    if review == Review::SelfRules {
        let namespace = obj
            .pointer("/spec/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        obj["status"] = rules_status(cluster, requester, &namespace);
        return Ok(obj);
    }
    let invalid = |cause: Cause| Error::invalid(&rt.group, &rt.kind, "", vec![cause]);
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let subject = match review {
        Review::SelfSubject => requester.clone(),
        _ => {
            let user = spec.get("user").and_then(Value::as_str).unwrap_or_default();
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
            if user.is_empty() && groups.is_empty() {
                return Err(invalid(Cause::invalid(
                    "spec.user",
                    &json!(""),
                    "at least one of user or group must be specified",
                )));
            }
            Identity {
                name: user.into(),
                uid: spec
                    .get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                groups,
            }
        }
    };
    let action = match (
        spec.get("resourceAttributes"),
        spec.get("nonResourceAttributes"),
    ) {
        (Some(r), None) => {
            let text = |k: &str| {
                r.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let namespace = text("namespace");
            if review == Review::LocalSubject && namespace != ns {
                return Err(invalid(Cause::invalid(
                    "spec.resourceAttributes.namespace",
                    &json!(namespace),
                    "must match metadata.namespace",
                )));
            }
            Action::Resource {
                verb: text("verb"),
                namespace,
                api_group: text("group"),
                resource: text("resource"),
                subresource: text("subresource"),
                name: text("name"),
            }
        }
        (None, Some(n)) => {
            let text = |k: &str| {
                n.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Action::NonResource {
                verb: text("verb"),
                path: text("path"),
            }
        }
        (Some(_), Some(_)) => {
            return Err(invalid(Cause::invalid(
                "spec.nonResourceAttributes",
                &json!("object"),
                "cannot be specified in combination with resourceAttributes",
            )));
        }
        (None, None) => {
            return Err(invalid(Cause::required(
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )));
        }
    };
    let decision = rbac::authorize(cluster, &subject, &action);
    let mut status = json!({"allowed": decision.allowed()});
    if !decision.reason().is_empty() {
        status["reason"] = json!(decision.reason());
    }
    obj["status"] = status;
    Ok(obj)
}

/// A SelfSubjectRulesReview's status: the rules bound to `user` in
/// `namespace`, split as upstream splits them (resource rules, then
/// non-resource rules); `incomplete` when a binding's role is missing.
fn rules_status(cluster: &Cluster, user: &Identity, namespace: &str) -> Value {
    let (rules, errors) = rbac::rules_for(cluster, user, namespace);
    let list = |rule: &Value, key: &str| rule.get(key).cloned().unwrap_or_else(|| json!([]));
    let mut resource_rules = vec![];
    let mut non_resource_rules = vec![];
    for rule in &rules {
        if rule
            .get("resources")
            .and_then(Value::as_array)
            .is_some_and(|r| !r.is_empty())
        {
            let mut r = json!({"verbs": list(rule, "verbs"), "apiGroups": list(rule, "apiGroups"), "resources": list(rule, "resources")});
            if let Some(names) = rule
                .get("resourceNames")
                .filter(|n| n.as_array().is_some_and(|a| !a.is_empty()))
            {
                r["resourceNames"] = names.clone();
            }
            resource_rules.push(r);
        }
        if rule
            .get("nonResourceURLs")
            .and_then(Value::as_array)
            .is_some_and(|r| !r.is_empty())
        {
            non_resource_rules.push(json!({"verbs": list(rule, "verbs"), "nonResourceURLs": list(rule, "nonResourceURLs")}));
        }
    }
    let mut status = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": !errors.is_empty()});
    if !errors.is_empty() {
        status["evaluationError"] = json!(match errors.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        });
    }
    status
}
