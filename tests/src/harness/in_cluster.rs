//! A level running inside the cluster, as users deploy it: `kubectl apply
//! -k deploy/overlays/<crate>` creates the `pgdb-system` namespace, the
//! operator's ServiceAccount and RBAC, and a Deployment of two replicas of
//! the image `pgdb-operator:<crate>`, which the sandbox's pod runtime runs
//! as the level's workspace binary (on kind, the image built from
//! deploy/Dockerfile). The operator then configures itself in-cluster (the
//! ServiceAccount token and CA the kubelet mounts, `KUBERNETES_SERVICE_*`),
//! one replica holds the Lease, and the API server enforces
//! deploy/base/rbac.yaml: a request it does not grant is answered 403,
//! which the operator logs; a failing wait shows those log lines
//! ([`TestCluster::operator_log_diagnosis`]).
//!
//! Everything here goes through kubectl or the API, as a learner's
//! commands would; nothing reaches into the sandbox.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::{Failed, OrFail, TestCluster};
use crate::deploy::{self, DEPLOYMENT, NAMESPACE};
use crate::levels::LevelId;

/// The label the operator's pods carry (deploy/base/operator.yaml).
const POD_SELECTOR: &str = "app.kubernetes.io/name=pgdb-operator";
/// Log lines shown per operator pod when a wait fails.
const LOG_LINES: usize = 40;

/// Runs kubectl with `kubeconfig`; its standard output, or a failure with
/// the command and what it printed on standard error.
pub async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String, Failed> {
    let output = tokio::process::Command::new(crate::tools::kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .or_fail(format!("run kubectl {}", args.join(" ")))?;
    if !output.status.success() {
        return Err(Failed::new(format!(
            "kubectl {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `kubectl apply -k deploy/overlays/<crate>`: what a learner types.
pub async fn apply_overlay(kubeconfig: &Path, level: LevelId) -> Result<(), Failed> {
    let overlay: PathBuf = deploy::overlay(level);
    kubectl(kubeconfig, &["apply", "-k", &overlay.to_string_lossy()]).await?;
    Ok(())
}

impl TestCluster {
    /// Runs kubectl against this cluster ([`kubectl`]).
    pub async fn kubectl(&self, args: &[&str]) -> Result<String, Failed> {
        kubectl(self.kubeconfig(), args).await
    }

    /// Applies `level`'s overlay ([`apply_overlay`]).
    pub async fn apply_overlay(&self, level: LevelId) -> Result<(), Failed> {
        apply_overlay(self.kubeconfig(), level).await
    }

    fn operator_deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client(), NAMESPACE)
    }

    fn operator_pods(&self) -> Api<Pod> {
        Api::namespaced(self.client(), NAMESPACE)
    }

    /// Waits until the operator's Deployment has rolled out its current
    /// generation: every replica updated, available, and no old one left,
    /// as `kubectl rollout status` decides.
    pub async fn wait_operator_rolled_out(&self) -> Result<Deployment, Failed> {
        let deployments = self.operator_deployments();
        self.eventually(
            self.budget(),
            &format!("Deployment {NAMESPACE}/{DEPLOYMENT} is rolled out"),
            || async {
                let deployment = deployments
                    .get_opt(DEPLOYMENT)
                    .await
                    .or_fail(format!("read Deployment {NAMESPACE}/{DEPLOYMENT}"))?;
                Ok(deployment.filter(rolled_out))
            },
        )
        .await
    }

    /// Waits until the operator's Lease names a holder that is one of its
    /// running pods (other than `not`, the leader that was deleted), within
    /// `budget`, and returns that pod's name.
    pub async fn wait_operator_leader(
        &self,
        not: Option<&str>,
        budget: std::time::Duration,
    ) -> Result<String, Failed> {
        let leases: Api<Lease> = Api::namespaced(self.client(), NAMESPACE);
        let pods = self.operator_pods();
        self.eventually(
            budget,
            &format!(
                "Lease {NAMESPACE}/{} names a running operator pod{}",
                shared::runner::LEASE_NAME,
                not.map(|n| format!(" other than {n}")).unwrap_or_default()
            ),
            || async {
                let holder = leases
                    .get_opt(shared::runner::LEASE_NAME)
                    .await
                    .or_fail("read the operator's Lease")?
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .filter(|h| Some(h.as_str()) != not);
                let Some(holder) = holder else {
                    return Ok(None);
                };
                let running = pods
                    .get_opt(&holder)
                    .await
                    .or_fail(format!("read pod {holder}"))?
                    .and_then(|p| p.status)
                    .and_then(|s| s.phase)
                    .is_some_and(|phase| phase == "Running");
                Ok(running.then_some(holder))
            },
        )
        .await
    }

    /// The operator's pods, by name.
    pub async fn operator_pod_names(&self) -> Result<Vec<String>, Failed> {
        let list = self
            .operator_pods()
            .list(&ListParams::default().labels(POD_SELECTOR))
            .await
            .or_fail("list the operator's pods")?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect())
    }

    /// What the operator's pods logged, the last lines of each: the 403
    /// of a request deploy/base/rbac.yaml does not grant shows here.
    pub async fn operator_log_diagnosis(&self) -> String {
        let Ok(names) = self.operator_pod_names().await else {
            return String::new();
        };
        let mut text = String::new();
        for name in names {
            let tail = LOG_LINES.to_string();
            let log = self
                .kubectl(&["logs", "-n", NAMESPACE, &name, "--tail", &tail])
                .await
                .unwrap_or_else(|failed| failed.to_string());
            text += &format!("the last lines operator pod {NAMESPACE}/{name} logged:\n{log}\n");
        }
        text
    }

    /// Sets the operator Deployment's image to `level`'s, as
    /// `kubectl set image` would: the operator upgrade.
    pub async fn set_operator_image(&self, level: LevelId) -> Result<(), Failed> {
        let image = deploy::image(level);
        self.kubectl(&[
            "set",
            "image",
            "-n",
            NAMESPACE,
            &format!("deployment/{DEPLOYMENT}"),
            &format!("operator={image}"),
        ])
        .await?;
        Ok(())
    }

    /// Scales the operator's Deployment to `replicas`.
    pub async fn scale_operator(&self, replicas: i32) -> Result<(), Failed> {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        self.operator_deployments()
            .patch(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .or_fail(format!(
                "scale Deployment {NAMESPACE}/{DEPLOYMENT} to {replicas}"
            ))?;
        Ok(())
    }

    /// Waits until the operator has no pods left.
    pub async fn wait_operator_gone(&self) -> Result<(), Failed> {
        self.eventually(self.budget(), "the operator's pods are gone", || async {
            Ok(self.operator_pod_names().await?.is_empty().then_some(()))
        })
        .await
    }
}

/// Whether a Deployment has rolled out its spec, as `kubectl rollout
/// status` decides: the controller has seen this generation, and every
/// replica is updated and available with none of an older template left.
pub fn rolled_out(deployment: &Deployment) -> bool {
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let generation = deployment.metadata.generation.unwrap_or(0);
    deployment.status.as_ref().is_some_and(|s| {
        s.observed_generation.unwrap_or(0) >= generation
            && s.updated_replicas.unwrap_or(0) >= wanted
            && s.replicas.unwrap_or(0) <= s.updated_replicas.unwrap_or(0)
            && s.available_replicas.unwrap_or(0) >= s.updated_replicas.unwrap_or(0)
    })
}
