//! The RBAC the operators are deployed with (`deploy/base/rbac.yaml`), and
//! whether it grants what a level did.
//!
//! The sandbox does not enforce RBAC, but it notes every kind of request
//! each client makes, by its User-Agent (`<level>/<version>`, see
//! `shared::cli::user_agent`). A request no rule grants is one the deployed
//! operator would be refused on a real cluster.

use std::collections::BTreeSet;

use sandbox::RequestKind;
use serde::Deserialize;

use crate::harness::TestCluster;
use crate::levels::LevelId;

/// A rule of a Role or ClusterRole.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
}

impl Rule {
    /// Whether the rule grants `request` (`*` matches anything).
    pub fn allows(&self, request: &RequestKind) -> bool {
        let has = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        has(&self.api_groups, &request.group)
            && has(&self.resources, &request.resource)
            && has(&self.verbs, &request.verb)
    }
}

/// The rules of every Role and ClusterRole in `deploy/base/rbac.yaml`.
pub fn deployed_rules() -> Vec<Rule> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/base/rbac.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/base/rbac.yaml is readable");
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde_yaml::Value::deserialize(document).expect("valid YAML"))
        .filter(|doc| {
            matches!(
                doc.get("kind").and_then(|k| k.as_str()),
                Some("Role" | "ClusterRole")
            )
        })
        .flat_map(|doc| {
            let rules = doc.get("rules").cloned().unwrap_or_default();
            serde_yaml::from_value::<Vec<Rule>>(rules).expect("rules of a role")
        })
        .collect()
}

/// How a request reads in a report: `patch batch/jobs`.
pub fn describe(request: &RequestKind) -> String {
    format!("{} {}/{}", request.verb, request.group, request.resource)
}

/// The kinds of request `level` made on this sandbox; `None` on a cluster
/// the tests do not embed.
pub fn requests_of(cluster: &TestCluster, level: LevelId) -> Option<BTreeSet<RequestKind>> {
    let sandbox = cluster.sandbox_handle()?;
    Some(
        sandbox
            .counters()
            .requests_from(&format!("{}/", level.name())),
    )
}

/// Out of a cluster, as in most tests and on a learner's machine, an
/// operator reaches its databases through port-forwards, with the user's
/// own credentials; deployed in the cluster it connects to the pods
/// directly, so its RBAC needs no `pods/portforward`.
const ONLY_OUT_OF_CLUSTER: &str = "pods/portforward";

/// The requests `level` made on this sandbox that `deploy/base/rbac.yaml` does
/// not grant (a port-forward aside); empty on a cluster the tests do not
/// embed.
pub fn ungranted(cluster: &TestCluster, level: LevelId) -> BTreeSet<String> {
    let rules = deployed_rules();
    requests_of(cluster, level)
        .unwrap_or_default()
        .iter()
        .filter(|request| request.resource != ONLY_OUT_OF_CLUSTER)
        .filter(|request| !rules.iter().any(|rule| rule.allows(request)))
        .map(describe)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_grants_a_request_only_when_group_resource_and_verb_all_match() {
        let rule = Rule {
            api_groups: vec!["apps".into()],
            resources: vec!["statefulsets".into()],
            verbs: vec!["get".into(), "patch".into()],
        };
        let request = |verb: &str, group: &str, resource: &str| RequestKind {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
        };
        assert!(rule.allows(&request("patch", "apps", "statefulsets")));
        assert!(!rule.allows(&request("delete", "apps", "statefulsets")));
        assert!(!rule.allows(&request("patch", "", "statefulsets")));
        assert!(!rule.allows(&request("patch", "apps", "statefulsets/status")));
        let wildcard = Rule {
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            verbs: vec!["*".into()],
        };
        assert!(wildcard.allows(&request("delete", "batch", "jobs")));
    }

    #[test]
    fn the_deployed_rbac_has_the_operator_s_rules() {
        let rules = deployed_rules();
        let lease = RequestKind {
            verb: "patch".into(),
            group: "coordination.k8s.io".into(),
            resource: "leases".into(),
        };
        assert!(rules.iter().any(|r| r.allows(&lease)));
    }

    #[test]
    fn the_deployed_rbac_lets_level5_label_and_delete_pods() {
        let rules = deployed_rules();
        for verb in ["patch", "delete"] {
            let request = RequestKind {
                verb: verb.into(),
                group: String::new(),
                resource: "pods".into(),
            };
            assert!(
                rules.iter().any(|r| r.allows(&request)),
                "deploy/base/rbac.yaml does not grant {}",
                describe(&request)
            );
        }
    }
}
