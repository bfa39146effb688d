//! The pod runtime as the control plane sees it: the interface of what
//! runs a pod's containers (the kubelet's container runtime interface,
//! reduced to what the control plane needs) and the reports it gives.
//! It is declared here, beside the [`Cluster`](super::Cluster) that holds
//! one, so that runtimes depend on the control plane and not the other way
//! round: the simulated runtime (`runtime`) and the real-PostgreSQL one
//! (`pgruntime`) implement it, and the kubelet controller drives it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;

/// A container's state as a runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    Waiting {
        reason: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: String,
        finished_at: String,
        /// The termination message (what the container wrote to its
        /// `terminationMessagePath`, or its log's end on a fallback).
        message: Option<String>,
    },
}

/// One container's report.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerReport {
    pub name: String,
    pub image: String,
    pub state: ContainerState,
    pub ready: bool,
    pub restart_count: i32,
    /// Why the container is in its state, in words (e.g. which binaries an
    /// image pull is missing); shown as the state's `message`.
    pub message: Option<String>,
    /// How the previous run of a restarted container ended.
    pub last_state: Option<ContainerState>,
    /// Whether it is an init container (reported in
    /// `initContainerStatuses`; the pod is not Initialized until each
    /// has exited 0, in order).
    pub init: bool,
}

/// How much of a volume is used, as a runtime measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VolumeUsage {
    /// Bytes the volume's files take.
    pub used_bytes: u64,
    /// Files and directories on it.
    pub inodes_used: u64,
    /// Whether nothing more can be written (the volume-fill fault): the
    /// kubelet's stats then report it used to its capacity.
    pub full: bool,
}

/// Runs pods. Implementations must not block: `start` and `stop` begin the
/// work and return; progress is read back with `status`.
pub trait PodRuntime: Send + Sync + 'static {
    /// Begins running the pod's containers. Called once per pod uid.
    fn start(&self, pod: &Pod);
    /// The current state of each container, or `None` for an unknown pod.
    fn status(&self, uid: &str) -> Option<Vec<ContainerReport>>;
    /// Stops the pod's containers and forgets the pod.
    fn stop(&self, uid: &str);
    /// A container's log (the first container when `container` is `None`).
    fn logs(&self, uid: &str, container: Option<&str>) -> Option<String>;
    /// Notified whenever a report may have changed.
    fn changed(&self) -> Arc<Notify>;
    /// The uids of pods whose reports may have changed since the last
    /// call, so the kubelet looks at those alone; `None` (the default)
    /// means it cannot tell, and the kubelet looks at every pod it runs.
    fn changed_pods(&self) -> Option<Vec<String>> {
        None
    }
    /// The pod's IP when the runtime gives pods real addresses; `None` lets
    /// the kubelet make one up.
    fn pod_ip(&self, _uid: &str) -> Option<String> {
        None
    }
    /// A ClusterIP for a new Service when the runtime serves them; `None`
    /// lets the API server pick a made-up one from 10.96.0.0/16.
    fn allocate_service_ip(&self) -> Option<String> {
        None
    }
    /// How much of persistent volume `volume` (a PersistentVolume's name)
    /// is used, for the kubelet's volume stats (`stats/summary`); `None`
    /// when the runtime keeps no data on volumes (the default: the
    /// simulated runtime writes nothing, so its volumes are empty).
    fn volume_usage(&self, _volume: &str) -> Option<VolumeUsage> {
        None
    }
    /// Persistent volume `volume` (a PersistentVolume's name) was expanded
    /// to `capacity_bytes` (its claim's request grew): a runtime that
    /// enforces a quota on the volume raises it to at least that, so a
    /// volume that was full has room again. The default does nothing.
    fn volume_resized(&self, _volume: &str, _capacity_bytes: u64) {}
    /// Called once the control plane exists, for runtimes that read
    /// objects (Secrets, claims, Services) or follow changes.
    fn attach(&self, _cluster: &Arc<super::Cluster>) {}
    /// Whether the containers of a pod `stop` was called for have all
    /// exited: the kubelet removes a deleted pod's object only then, as a
    /// kubelet does once it has killed the containers. A runtime that stops
    /// at once (the default) answers true.
    fn stopped(&self, _uid: &str) -> bool {
        true
    }
    /// A command that runs `argv` in container `container` of pod `uid`,
    /// in the container's context (its user, environment, working
    /// directory and paths), for `kubectl exec`; or why there is none, in
    /// words for the user. The default runs nothing.
    fn exec(
        &self,
        _uid: &str,
        container: &str,
        _argv: &[String],
    ) -> Result<tokio::process::Command, String> {
        Err(format!(
            "container {container} runs in the simulated runtime, which runs no processes, so there is nothing to exec into; start the sandbox with real PostgreSQL (pgdb-sandbox --runtime postgres, after scripts/install-postgres.sh) to run commands in pods"
        ))
    }
    /// Called with the process group of a command `exec` gave once it
    /// runs (`true`) and once it is gone (`false`), so the runtime's
    /// cleanup (shutdown, its watchdog) kills it with the pods'.
    fn exec_running(&self, _pgid: i32, _running: bool) {}
    /// Stops everything the runtime started, at once; called when the
    /// sandbox stops (also from `Drop`, so it must not block for long).
    fn shutdown(&self) {}
}
