//! An operator the harness started: in-process, as its binary, or in the
//! cluster as a Deployment ([`super::in_cluster`]); stopped gracefully
//! (checking that it exited cleanly) or killed. A binary's output is kept
//! for [`super::logs`] when capture is on.

use std::path::PathBuf;

use tokio::sync::oneshot;

use super::{Failed, OrFail, WAIT, logs};

/// An operator the harness started.
pub enum Operator {
    /// Running in this process.
    InProcess {
        /// Stops it.
        stop: Option<oneshot::Sender<()>>,
        /// Its task.
        task: tokio::task::JoinHandle<Result<(), shared::Error>>,
        /// The instance name its Events carry (`reportingInstance`).
        instance: String,
    },
    /// Running as a child process.
    Process {
        /// The process.
        child: tokio::process::Child,
        /// Where its output goes.
        log: PathBuf,
    },
    /// Deployed in the cluster with `kubectl apply -k` of its overlay.
    InCluster {
        /// The `kubectl apply -k` under way.
        applied: tokio::task::JoinHandle<Result<(), Failed>>,
        /// A client for the cluster.
        client: kube::Client,
    },
}

impl Operator {
    /// The instance name an in-process operator's Events carry.
    pub fn instance(&self) -> Option<&str> {
        match self {
            Operator::InProcess { instance, .. } => Some(instance),
            Operator::Process { .. } | Operator::InCluster { .. } => None,
        }
    }

    /// What a binary wrote to stdout and stderr so far (`None` in-process).
    pub fn output(&self) -> Option<std::io::Result<String>> {
        match self {
            Operator::InProcess { .. } => None,
            Operator::Process { log, .. } => Some(std::fs::read_to_string(log)),
            Operator::InCluster { .. } => None,
        }
    }

    /// Stops the operator gracefully (SIGTERM for a process) and checks
    /// that it exited cleanly.
    pub async fn stop(self) {
        match self {
            Operator::InProcess { mut stop, task, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                match tokio::time::timeout(WAIT, task).await {
                    Ok(Ok(Ok(()))) => {}
                    other => panic!("the operator did not stop cleanly: {other:?}"),
                }
            }
            Operator::Process { mut child, log } => {
                if let Some(pid) = child.id() {
                    let _ = tokio::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                        .await;
                }
                let status = tokio::time::timeout(WAIT, child.wait()).await;
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                logs::keep_output(format!("the output of {}", log.display()), output.clone());
                assert!(
                    matches!(status, Ok(Ok(s)) if s.success()),
                    "the operator binary did not exit cleanly on SIGTERM: {status:?}\nits output ({}):\n{output}",
                    log.display()
                );
                let _ = std::fs::remove_file(&log);
            }
            Operator::InCluster { applied, client } => {
                deployed(applied).await;
                if let Err(failed) = remove_in_cluster(&client, None).await {
                    panic!("the in-cluster operator did not stop: {failed}");
                }
            }
        }
    }

    /// Stops the operator abruptly, as a crash or a killed pod would.
    pub async fn kill(self) {
        match self {
            Operator::InProcess { task, .. } => {
                task.abort();
                let _ = task.await;
            }
            Operator::Process { mut child, log } => {
                let _ = child.kill().await;
                if logs::capturing() {
                    let output = std::fs::read_to_string(&log).unwrap_or_default();
                    logs::keep_output(format!("the output of {}", log.display()), output);
                }
                let _ = std::fs::remove_file(&log);
            }
            Operator::InCluster { applied, client } => {
                deployed(applied).await;
                if let Err(failed) = remove_in_cluster(&client, Some(0)).await {
                    panic!("the in-cluster operator was not killed: {failed}");
                }
            }
        }
    }
}

/// Waits for an in-cluster operator's `kubectl apply -k`, panicking with
/// its failure.
async fn deployed(applied: tokio::task::JoinHandle<Result<(), Failed>>) {
    match applied.await {
        Ok(Ok(())) => {}
        Ok(Err(failed)) => panic!("the operator was not deployed: {failed}"),
        Err(join) => panic!("deploying the operator panicked: {join}"),
    }
}

/// Scales the operator's Deployment to zero (its pods deleted with
/// `grace_period`, or their own) and waits until its pods are gone.
async fn remove_in_cluster(client: &kube::Client, grace_period: Option<u32>) -> Result<(), Failed> {
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

    use crate::deploy::{DEPLOYMENT, NAMESPACE};

    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let patch = serde_json::json!({"spec": {"replicas": 0}});
    deployments
        .patch(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .or_fail(format!("scale Deployment {NAMESPACE}/{DEPLOYMENT} to 0"))?;
    let selector = ListParams::default().labels("app.kubernetes.io/name=pgdb-operator");
    if let Some(seconds) = grace_period {
        let params = DeleteParams {
            grace_period_seconds: Some(seconds),
            ..Default::default()
        };
        pods.delete_collection(&params, &selector)
            .await
            .or_fail("delete the operator's pods")?;
    }
    super::eventually(WAIT, "the operator's pods are gone", || async {
        let left = pods
            .list(&selector)
            .await
            .or_fail("list the operator's pods")?;
        Ok(left.items.is_empty().then_some(()))
    })
    .await
}
