//! A pod held by a finalizer of the tests' own. Deleted while held, the
//! pod stays, being deleted (its containers stopped, not ready), until the
//! run releases it; only then can its StatefulSet create its successor.
//! The scenarios use it to give every run the window a busy machine may
//! not: the time in which the operator sees the pod gone. It works on any
//! cluster (the sandbox, kind), since it is plain Kubernetes: the API
//! server keeps an object with finalizers until they are removed.
//! A hold is released when the run ends even if the run fails first: a pod
//! held for ever would hold the namespace's deletion too.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use shared::finalizer::{self, FinalizerChange};

use crate::harness::{Failed, OrFail, TestCluster};

/// The tests' finalizer.
const HOLD: &str = "tests.pgdb.example.com/hold";

/// A pod carrying [`HOLD`]. Released by [`Held::release`], or when dropped
/// unreleased (a failed run).
pub struct Held {
    pods: Api<Pod>,
    name: String,
    released: bool,
}

impl Held {
    /// Puts [`HOLD`] on pod `name`, keeping its other finalizers.
    pub async fn hold(cluster: &TestCluster, name: &str) -> Result<Self, Failed> {
        let pods = cluster.api::<Pod>();
        change_finalizer(&pods, name, FinalizerChange::Add).await?;
        Ok(Self {
            pods,
            name: name.to_string(),
            released: false,
        })
    }

    /// Removes the hold; a deleted pod then goes.
    pub async fn release(&mut self) -> Result<(), Failed> {
        self.released = true;
        change_finalizer(&self.pods, &self.name, FinalizerChange::Remove).await
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.released
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (pods, name) = (self.pods.clone(), self.name.clone());
            runtime.spawn(async move {
                let _ = change_finalizer(&pods, &name, FinalizerChange::Remove).await;
            });
        }
    }
}

/// Adds or removes [`HOLD`], keeping the pod's other finalizers, by a JSON
/// patch guarded by the resourceVersion read (retried when another writer,
/// the kubelet, got in between).
async fn change_finalizer(
    pods: &Api<Pod>,
    name: &str,
    change: FinalizerChange,
) -> Result<(), Failed> {
    let mut attempts = 0;
    loop {
        let pod = pods.get(name).await.or_fail(format!("read pod {name}"))?;
        let patch = serde_json::from_value(finalizer::patch_of(&pod, HOLD, change))
            .or_fail("build the finalizer patch")?;
        match pods
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => return Ok(()),
            // The resourceVersion test failed: read again.
            Err(kube::Error::Api(status)) if status.code == 422 && attempts < 10 => {
                attempts += 1;
            }
            Err(error) => {
                return Err(error).or_fail(format!("{change:?} finalizer {HOLD} on pod {name}"));
            }
        }
    }
}
