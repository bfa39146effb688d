//! What the runtime keeps while it runs: the runtime itself, its shared
//! state (`Inner`), each pod it runs (`PodCtx`) and each container's
//! reported state (`Cell`). Plain data and the small helpers every part
//! of the runtime uses (locking, "is the pod stopping", the grace period,
//! name lookup); what is done with it lives in the sibling modules.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use super::config::PostgresConfig;
use super::net::{self, AddressPlan, Proxies};
use super::process::RunAs;
use super::projection;
use super::rewrite::Mounts;
use crate::cluster::Cluster;
use crate::runtime::ContainerState;

/// What a container is doing, as reported.
#[derive(Debug)]
pub(super) struct CellState {
    pub(super) state: ContainerState,
    pub(super) message: Option<String>,
    pub(super) last_state: Option<ContainerState>,
    pub(super) ready: bool,
    pub(super) restart_count: i32,
    /// The process group (= leader pid) while a process runs.
    pub(super) pgid: Option<i32>,
    /// Set by a fault or a failed probe: the reason the exit is reported with.
    pub(super) kill_reason: Option<&'static str>,
    /// While a process runs: what an exec into the container needs.
    pub(super) exec: Option<std::sync::Arc<ExecContext>>,
}

#[derive(Debug)]
pub(super) struct Cell {
    pub(super) name: String,
    pub(super) image: String,
    pub(super) log: PathBuf,
    pub(super) st: Mutex<CellState>,
}

impl Cell {
    pub(super) fn lock(&self) -> MutexGuard<'_, CellState> {
        // Plain data, updated in single steps.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pod the runtime runs.
pub(super) struct PodCtx {
    pub(super) uid: String,
    pub(super) ns: String,
    pub(super) name: String,
    pub(super) ip: Ipv4Addr,
    pub(super) dir: PathBuf,
    pub(super) sock: PathBuf,
    pub(super) pod: Pod,
    pub(super) stop: watch::Sender<bool>,
    pub(super) cells: Vec<Arc<Cell>>,
    /// The init containers', run one after the other before `cells`.
    pub(super) init_cells: Vec<Arc<Cell>>,
    /// Host directories of the pod's claims, once known.
    pub(super) claims: Mutex<Vec<PathBuf>>,
    /// The pod's ConfigMap, Secret and projected volumes, once written,
    /// kept current.
    pub(super) projected: Mutex<Projected>,
    /// Whether its processes are all gone (guarded by `Inner::releasing`'s
    /// lock, with `holds_claims`): a pod deleted after it finished (a
    /// completed Job's) holds no volume, so nothing waits for it.
    pub(super) finished: std::sync::atomic::AtomicBool,
    /// The claims its deletion counted as being released, to uncount.
    pub(super) counted: Mutex<Vec<PathBuf>>,
}

/// What keeping a pod's ConfigMap and Secret volumes current needs.
#[derive(Default)]
pub(super) struct Projected {
    /// Every container's mounts, to translate paths in the files' text.
    pub(super) mounts: Mounts,
    pub(super) volumes: Vec<projection::Projection>,
}

impl PodCtx {
    /// Every container's cell: the init containers', then the others'.
    pub(super) fn all_cells(&self) -> impl Iterator<Item = &Arc<Cell>> {
        self.init_cells.iter().chain(self.cells.iter())
    }
    pub(super) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
    pub(super) fn claims(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(super) fn projected(&self) -> MutexGuard<'_, Projected> {
        // Replaced in single steps.
        self.projected.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Whether a volume of the pod has files that follow objects: a
    /// ConfigMap, Secret, projected or downward API volume.
    pub(super) fn is_projected(&self, volume: &str) -> bool {
        self.pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(|v| {
                v.name == volume
                    && (v.config_map.is_some()
                        || v.secret.is_some()
                        || v.projected.is_some()
                        || v.downward_api.is_some())
            })
    }
    /// The host path container `container`'s mount number `index` shows:
    /// the volume's directory, or the `subPath` inside it; for a
    /// ConfigMap or Secret volume with a `subPath`, the container's own
    /// copy under `volume-subpaths/` (see [`projection`]).
    pub(super) fn mount_host(
        &self,
        volumes: &HashMap<String, PathBuf>,
        container: &str,
        index: usize,
        m: &VolumeMount,
    ) -> Option<PathBuf> {
        let base = volumes.get(&m.name)?;
        match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(_) if self.is_projected(&m.name) => Some(
                self.dir
                    .join("volume-subpaths")
                    .join(&m.name)
                    .join(container)
                    .join(index.to_string()),
            ),
            Some(sub) => Some(base.join(projection::safe_rel(sub)?)),
            None => Some(base.clone()),
        }
    }
    /// A container's mounts: container path → host path.
    pub(super) fn mounts_of(
        &self,
        volumes: &HashMap<String, PathBuf>,
        spec: &Container,
    ) -> Vec<(String, PathBuf)> {
        spec.volume_mounts
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, m)| {
                Some((
                    m.mount_path.clone(),
                    self.mount_host(volumes, &spec.name, i, m)?,
                ))
            })
            .collect()
    }
}

pub(super) struct Inner {
    pub(super) config: PostgresConfig,
    pub(super) work: PathBuf,
    pub(super) stage: PathBuf,
    pub(super) plan: AddressPlan,
    pub(super) run_as: std::result::Result<RunAs, String>,
    pub(super) client_bin: Option<PathBuf>,
    pub(super) entrypoint: PathBuf,
    pub(super) pods: Mutex<HashMap<String, Arc<PodCtx>>>,
    /// Log directories of pods already stopped, so their logs stay readable.
    pub(super) gone: Mutex<HashMap<String, (Vec<String>, PathBuf)>>,
    pub(super) cluster: OnceLock<Weak<Cluster>>,
    pub(super) notify: Arc<Notify>,
    pub(super) proxies: Arc<Proxies>,
    pub(super) tasks: Mutex<Vec<AbortHandle>>,
    /// Every live process group, with its record file for the watchdog.
    pub(super) groups: Mutex<HashMap<i32, PathBuf>>,
    /// Pods being stopped whose processes have not all exited yet.
    pub(super) stopping: Mutex<std::collections::HashSet<String>>,
    /// Claim directories still used by pods being stopped.
    pub(super) releasing: Mutex<HashMap<PathBuf, usize>>,
    pub(super) released: Notify,
    /// Readiness forced per pod name (see [`ForcedReady`]).
    pub(super) forced_ready: Mutex<HashMap<(String, String), ForcedReady>>,
    /// Server binaries found (and staged) per (major, minor) of a tag.
    pub(super) staged: Mutex<HashMap<(u32, Option<u32>), PathBuf>>,
    pub(super) watchdog: Mutex<Option<std::process::Child>>,
    /// Sizes of plain-directory volumes, measured by a walk, and when
    /// (see [`super::volume::WALK_PERIOD`]).
    pub(super) walked: Mutex<HashMap<PathBuf, (std::time::Instant, crate::cluster::VolumeUsage)>>,
    pub(super) counter: AtomicU32,
    pub(super) closed: AtomicBool,
    /// The `unshare` that gives containers mount namespaces, or why there
    /// is none, found once (see [`super::mount_ns`]).
    pub(super) mount_ns: OnceLock<std::result::Result<PathBuf, String>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every map here is updated in single steps; a panic elsewhere cannot
    // leave one half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The real runtime: see the [`pgruntime`](super) module docs.
pub struct PostgresRuntime {
    pub(super) inner: Arc<Inner>,
}

impl PostgresRuntime {
    pub(super) fn find(&self, ns: &str, pod: &str) -> Option<Arc<PodCtx>> {
        lock(&self.inner.pods)
            .values()
            .find(|p| p.ns == ns && p.name == pod)
            .cloned()
    }

    pub(super) fn cell(&self, ns: &str, pod: &str, container: Option<&str>) -> Option<Arc<Cell>> {
        let p = self.find(ns, pod)?;
        match container {
            Some(c) => p.all_cells().find(|x| x.name == c).cloned(),
            None => p.cells.first().cloned(),
        }
    }
}

impl Inner {
    pub(super) fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.get()?.upgrade()
    }

    pub(super) fn changed(&self) {
        self.notify.notify_one();
    }

    /// The address a name has for processes of pod `ctx`.
    pub(super) fn lookup(&self, c: &Cluster, ctx: &PodCtx, name: &str) -> Option<String> {
        if name == "localhost" || name == "127.0.0.1" {
            return Some(ctx.ip.to_string());
        }
        net::resolve(c, name, &ctx.ns).map(|ip| ip.to_string())
    }
}

/// Why a container cannot start yet: the waiting reason and message.
pub(super) struct Wait {
    pub(super) reason: &'static str,
    pub(super) message: String,
}

pub(super) fn wait(reason: &'static str, message: impl Into<String>) -> Wait {
    Wait {
        reason,
        message: message.into(),
    }
}

pub(super) fn grace(inner: &Inner, ctx: &PodCtx) -> Duration {
    let spec = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0) as u64;
    Duration::from_secs(spec).min(inner.config.max_grace)
}

/// Resolves once the pod is being stopped (the watch's guard is not held
/// across an await, so the futures stay `Send`).
pub(super) async fn until_stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// What an exec into a running container needs, captured when its
/// process starts (the exec module runs commands with it).
#[derive(Debug, Clone)]
pub(super) struct ExecContext {
    /// The environment, translated (`PATH`, `HOME`, the pod's variables).
    pub(super) env: Vec<(String, String)>,
    /// The container's mounts, for translating paths.
    pub(super) mounts: Mounts,
    /// The working directory, in host terms.
    pub(super) cwd: PathBuf,
}

/// A pod's readiness forced by a test: the value, and the image a
/// container must run for it to apply (`None`: any).
#[derive(Clone, Debug)]
pub(super) struct ForcedReady {
    pub(super) ready: bool,
    pub(super) image: Option<String>,
}
