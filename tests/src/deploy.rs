//! `deploy/` as users apply it: a kustomize base (`deploy/base`: the CRDs,
//! the RBAC with the `pgdb-system` namespace, the Deployment) and one
//! overlay per level crate that sets the image `pgdb-operator:<crate>`.
//! kubectl renders them (`kubectl kustomize`, built into kubectl), so what
//! the tests read is what `kubectl apply -k` applies.

use std::path::PathBuf;

use serde::Deserialize;

use crate::levels::LevelId;

/// The namespace the operator is deployed in.
pub const NAMESPACE: &str = "pgdb-system";
/// The Deployment (and the ServiceAccount) of the operator.
pub const DEPLOYMENT: &str = "pgdb-operator";
/// The ServiceAccount the operator's pods run as.
pub const SERVICE_ACCOUNT: &str = "pgdb-operator";
/// The image name every overlay tags with its level crate.
pub const IMAGE_NAME: &str = "pgdb-operator";

/// The image that runs `level`: on kind, built from deploy/Dockerfile;
/// on the sandbox, the level's workspace binary.
pub fn image(level: LevelId) -> String {
    format!("{IMAGE_NAME}:{}", level.name())
}

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).join("deploy")
}

/// `deploy/overlays/<level crate>`, what `kubectl apply -k` takes.
pub fn overlay(level: LevelId) -> PathBuf {
    deploy_dir().join("overlays").join(level.name())
}

/// The objects `kubectl apply -k` of `level`'s overlay applies, as
/// `kubectl kustomize` renders them.
pub fn render(level: LevelId) -> Result<Vec<serde_json::Value>, String> {
    let output = std::process::Command::new(crate::tools::kubectl())
        .arg("kustomize")
        .arg(overlay(level))
        .output()
        .map_err(|e| format!("cannot run kubectl kustomize: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "kubectl kustomize {} failed: {}",
            overlay(level).display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            serde_json::Value::deserialize(document)
                .map_err(|e| format!("kubectl kustomize printed invalid YAML: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of_kind<'a>(objects: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
        objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    #[test]
    fn every_level_crate_has_an_overlay_that_runs_its_own_image() {
        for level in LevelId::ALL {
            let objects = render(level).unwrap_or_else(|e| panic!("{e}"));
            let deployments = of_kind(&objects, "Deployment");
            assert_eq!(deployments.len(), 1, "{}: {deployments:?}", level.name());
            let images: Vec<&str> = deployments[0]["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["image"].as_str())
                .collect();
            assert_eq!(images, [image(level).as_str()], "{}", level.name());
        }
    }

    #[test]
    fn every_overlay_applies_the_crds_the_rbac_and_the_deployment_in_pgdb_system() {
        let expected_crds = [
            "postgresdbbackups.pgdb.example.com",
            "postgresdbs.pgdb.example.com",
        ];
        for level in LevelId::ALL {
            let objects = render(level).unwrap_or_else(|e| panic!("{e}"));
            let mut crds: Vec<&str> = of_kind(&objects, "CustomResourceDefinition")
                .iter()
                .filter_map(|c| c["metadata"]["name"].as_str())
                .collect();
            crds.sort();
            assert_eq!(crds, expected_crds, "{}", level.name());
            for kind in [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
            ] {
                assert!(
                    !of_kind(&objects, kind).is_empty(),
                    "{}: no {kind}",
                    level.name()
                );
            }
            let deployment = of_kind(&objects, "Deployment")[0];
            assert_eq!(deployment["metadata"]["namespace"], NAMESPACE);
            assert_eq!(
                deployment["spec"]["template"]["spec"]["serviceAccountName"],
                SERVICE_ACCOUNT
            );
        }
    }

    #[test]
    fn the_overlays_are_exactly_the_level_crates() {
        let mut found: Vec<String> = std::fs::read_dir(deploy_dir().join("overlays"))
            .expect("deploy/overlays is readable")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        let expected: Vec<&str> = LevelId::ALL.iter().map(|l| l.name()).collect();
        assert_eq!(found, expected);
    }
}
