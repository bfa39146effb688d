//! The default RBAC policy every cluster starts with
//! (`bootstrap-policy.yaml`): upstream's `cluster-admin`,
//! `system:discovery`, `system:basic-user` and `system:public-info-viewer`
//! ClusterRoles and the bindings that give them to `system:masters` and to
//! every authenticated identity, labelled as upstream labels them.
//!
//! Upstream's aggregated `admin`, `edit` and `view` roles and the
//! controllers' own roles are not created: the sandbox's controllers run
//! inside the API server and are never authorized.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::cluster::{Cluster, WriteOptions};
use crate::error::{Error, Result};

const POLICY: &str = include_str!("bootstrap-policy.yaml");

/// Creates the default ClusterRoles and ClusterRoleBindings.
pub fn bootstrap(cluster: &Cluster) -> Result<()> {
    let w = WriteOptions::manager("kube-apiserver");
    for doc in serde_yaml::Deserializer::from_str(POLICY) {
        let mut obj = Value::deserialize(doc).map_err(|e| Error::Credentials {
            action: "read the bootstrap RBAC policy",
            source: Box::new(e),
        })?;
        let plural = match obj.get("kind").and_then(Value::as_str) {
            Some("ClusterRole") => "clusterroles",
            _ => "clusterrolebindings",
        };
        obj["metadata"]["labels"] = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        obj["metadata"]["annotations"] =
            json!({"rbac.authorization.kubernetes.io/autoupdate": "true"});
        let rt = cluster.rt("rbac.authorization.k8s.io", plural)?;
        cluster.create(&rt, "", obj, &w)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_holds_four_roles_each_bound() {
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(POLICY)
            .map(|d| Value::deserialize(d).expect("a YAML document"))
            .collect();
        let names = |kind: &str| -> Vec<String> {
            docs.iter()
                .filter(|d| d["kind"] == kind)
                .map(|d| {
                    d["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(names("ClusterRole").len(), 4);
        assert_eq!(names("ClusterRole"), names("ClusterRoleBinding"));
    }
}
