//! A pod runtime that runs real PostgreSQL: a pod of the `postgres` image is
//! a real server, a Job running `pg_dump` is a real pg_dump.
//!
//! Containers are host processes, one process group each, run as the
//! `postgres` user when the sandbox runs as root. There are no namespaces:
//! instead each pod gets its own loopback address ([`net`]), each volume a
//! host directory, and what a container sees (mount paths, Service names,
//! `localhost`) is rewritten into host terms before it starts
//! ([`rewrite`]). Containers of the `postgres` image run the image's
//! entrypoint (`docker-entrypoint.sh`, reproduced) with the binaries of the
//! tag's major version ([`binaries`]); containers whose command is a
//! PostgreSQL client tool or a shell run that command; any other container
//! is simulated (runs, is ready, and a run-to-completion one exits 0).
//! Probes, restarts with back-off, logs, termination messages
//! ([`termination`]), ConfigMap and Secret volumes that follow their
//! objects ([`projection`]) and faults behave as the kubelet's.

pub mod binaries;
pub mod net;
pub mod process;
pub mod projection;
pub mod rewrite;
pub mod termination;
pub mod volume;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, Pod, Probe, VolumeMount};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::runtime::{ContainerReport, ContainerState, PodRuntime};
use binaries::Binaries;
use net::{AddressPlan, Proxies};
use process::RunAs;
use rewrite::Mounts;
pub use volume::VolumeFull;

/// The entrypoint of the official image, reproduced for the host.
const ENTRYPOINT: &str = include_str!("docker-entrypoint.sh");

/// Commands run for real when a container's command names them.
const REAL_COMMANDS: [&str; 13] = [
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "psql",
    "pg_basebackup",
    "pg_upgrade",
    "pg_isready",
    "initdb",
    "pg_ctl",
    "postgres",
    "sh",
    "bash",
    "docker-entrypoint.sh",
];

/// How the real runtime behaves.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Where sandboxes keep pods, volumes and logs (`<root>/127.X`);
    /// default `$TMPDIR/pgdb-sandbox`.
    pub work_root: Option<PathBuf>,
    /// Where binaries are looked for.
    pub binaries: Binaries,
    /// First crash-loop (and image-pull) back-off; doubled per restart.
    pub backoff: Duration,
    /// Longest back-off (the kubelet's is five minutes).
    pub max_backoff: Duration,
    /// Probes run at most this far apart whatever their `periodSeconds`,
    /// so readiness follows a server within a second (`None`: as written).
    pub max_probe_period: Option<Duration>,
    /// Longest wait between the stop signal and SIGKILL when a pod is
    /// deleted (the pod's `terminationGracePeriodSeconds` if shorter).
    pub max_grace: Duration,
    /// How long after a ConfigMap or Secret changes the files of running
    /// pods' volumes follow (one second; a kubelet takes up to its sync
    /// period plus its cache's TTL, about a minute).
    pub volume_sync_delay: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            work_root: None,
            binaries: Binaries::default(),
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            max_probe_period: Some(Duration::from_secs(1)),
            max_grace: Duration::from_secs(10),
            volume_sync_delay: Duration::from_secs(1),
        }
    }
}

/// How [`PostgresRuntime::kill_container`] kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillKind {
    /// SIGKILL, reported as `Error` with exit code 137.
    Crash,
    /// SIGKILL, reported as `OOMKilled` with exit code 137.
    OomKill,
}

/// What a container is doing, as reported.
#[derive(Debug)]
struct CellState {
    state: ContainerState,
    message: Option<String>,
    last_state: Option<ContainerState>,
    ready: bool,
    restart_count: i32,
    /// The process group (= leader pid) while a process runs.
    pgid: Option<i32>,
    /// Set by a fault or a failed probe: the reason the exit is reported with.
    kill_reason: Option<&'static str>,
}

#[derive(Debug)]
struct Cell {
    name: String,
    image: String,
    log: PathBuf,
    st: Mutex<CellState>,
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, CellState> {
        // Plain data, updated in single steps.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pod the runtime runs.
struct PodCtx {
    uid: String,
    ns: String,
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    sock: PathBuf,
    pod: Pod,
    stop: watch::Sender<bool>,
    cells: Vec<Arc<Cell>>,
    /// Host directories of the pod's claims, once known.
    claims: Mutex<Vec<PathBuf>>,
    /// The pod's ConfigMap and Secret volumes, once written, kept current.
    projected: Mutex<Projected>,
    /// Whether its processes are all gone (guarded by `Inner::releasing`'s
    /// lock, with `holds_claims`): a pod deleted after it finished (a
    /// completed Job's) holds no volume, so nothing waits for it.
    finished: std::sync::atomic::AtomicBool,
    /// The claims its deletion counted as being released, to uncount.
    counted: Mutex<Vec<PathBuf>>,
}

/// What keeping a pod's ConfigMap and Secret volumes current needs.
#[derive(Default)]
struct Projected {
    /// Every container's mounts, to translate paths in the files' text.
    mounts: Mounts,
    volumes: Vec<projection::Projection>,
}

impl PodCtx {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
    fn claims(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn projected(&self) -> MutexGuard<'_, Projected> {
        // Replaced in single steps.
        self.projected.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Whether a volume of the pod is a ConfigMap or Secret volume.
    fn is_projected(&self, volume: &str) -> bool {
        self.pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(|v| v.name == volume && (v.config_map.is_some() || v.secret.is_some()))
    }
    /// The host path container `container`'s mount number `index` shows:
    /// the volume's directory, or the `subPath` inside it; for a
    /// ConfigMap or Secret volume with a `subPath`, the container's own
    /// copy under `volume-subpaths/` (see [`projection`]).
    fn mount_host(
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
    fn mounts_of(
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

struct Inner {
    config: PostgresConfig,
    work: PathBuf,
    stage: PathBuf,
    plan: AddressPlan,
    run_as: std::result::Result<RunAs, String>,
    client_bin: Option<PathBuf>,
    entrypoint: PathBuf,
    pods: Mutex<HashMap<String, Arc<PodCtx>>>,
    /// Log directories of pods already stopped, so their logs stay readable.
    gone: Mutex<HashMap<String, (Vec<String>, PathBuf)>>,
    cluster: OnceLock<Weak<Cluster>>,
    notify: Arc<Notify>,
    proxies: Arc<Proxies>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Every live process group, with its record file for the watchdog.
    groups: Mutex<HashMap<i32, PathBuf>>,
    /// Claim directories still used by pods being stopped.
    releasing: Mutex<HashMap<PathBuf, usize>>,
    released: Notify,
    forced_ready: Mutex<HashMap<(String, String), bool>>,
    /// Server binaries found (and staged) per (major, minor) of a tag.
    staged: Mutex<HashMap<(u32, Option<u32>), PathBuf>>,
    watchdog: Mutex<Option<std::process::Child>>,
    counter: AtomicU32,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every map here is updated in single steps; a panic elsewhere cannot
    // leave one half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The real runtime: see the module docs.
pub struct PostgresRuntime {
    inner: Arc<Inner>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Runtime {
        what: format!("cannot prepare {}", path.display()),
        source,
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

impl PostgresRuntime {
    /// Whether PostgreSQL server binaries are installed (what `auto` checks).
    pub fn available(config: &PostgresConfig) -> bool {
        config.binaries.any_server()
    }

    /// Prepares a work directory and claims a loopback range.
    pub fn new(config: PostgresConfig) -> Result<PostgresRuntime> {
        let root = config
            .work_root
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("pgdb-sandbox"));
        if !root.exists() {
            // Shared by every user's sandboxes, like /tmp itself.
            mkdir(&root, 0o1777)?;
        }
        process::sweep_stale(&root);
        let (octet, work) = claim_octet(&root)?;
        for sub in ["pods", "run", "volumes", "pgids"] {
            mkdir(&work.join(sub), 0o755)?;
        }
        let entrypoint = work.join("docker-entrypoint.sh");
        std::fs::write(&entrypoint, ENTRYPOINT).map_err(io_err(&entrypoint))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&entrypoint, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err(&entrypoint))?;
        }
        let watchdog = process::spawn_watchdog(&work).map_err(io_err(&work))?;
        let client_bin = config.binaries.client();
        let stage = root.join("bin");
        Ok(PostgresRuntime {
            inner: Arc::new(Inner {
                config,
                work,
                stage,
                plan: AddressPlan::new(octet),
                run_as: RunAs::detect(),
                client_bin,
                entrypoint,
                pods: Default::default(),
                gone: Default::default(),
                cluster: OnceLock::new(),
                notify: Arc::new(Notify::new()),
                proxies: Arc::new(Proxies::default()),
                tasks: Default::default(),
                groups: Default::default(),
                releasing: Default::default(),
                released: Notify::new(),
                forced_ready: Default::default(),
                staged: Default::default(),
                watchdog: Mutex::new(Some(watchdog)),
                counter: AtomicU32::new(0),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The sandbox's work directory (pods, volumes, logs).
    pub fn work_dir(&self) -> &Path {
        &self.inner.work
    }

    /// The user processes run as.
    pub fn run_as(&self) -> Option<String> {
        self.inner.run_as.as_ref().ok().map(|r| r.name.clone())
    }

    fn find(&self, ns: &str, pod: &str) -> Option<Arc<PodCtx>> {
        lock(&self.inner.pods)
            .values()
            .find(|p| p.ns == ns && p.name == pod)
            .cloned()
    }

    fn cell(&self, ns: &str, pod: &str, container: Option<&str>) -> Option<Arc<Cell>> {
        let p = self.find(ns, pod)?;
        match container {
            Some(c) => p.cells.iter().find(|x| x.name == c).cloned(),
            None => p.cells.first().cloned(),
        }
    }

    /// Kills a running container (SIGKILL to its process group), reported
    /// as a crash or an OOM kill; it is restarted per the restartPolicy.
    /// False when no such container process runs.
    pub fn kill_container(
        &self,
        ns: &str,
        pod: &str,
        container: Option<&str>,
        kind: KillKind,
    ) -> bool {
        let Some(cell) = self.cell(ns, pod, container) else {
            return false;
        };
        let mut st = cell.lock();
        let Some(pgid) = st.pgid else { return false };
        st.kill_reason = Some(match kind {
            KillKind::Crash => "Error",
            KillKind::OomKill => "OOMKilled",
        });
        drop(st);
        process::kill_tree(pgid);
        true
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) every process of a container
    /// (its group and the leader's descendants, as freezing its cgroup
    /// would): a paused server accepts TCP connections (the kernel does)
    /// but answers nothing, so exec probes such as `pg_isready` time out.
    /// False when no such container process runs.
    pub fn pause(&self, ns: &str, pod: &str, container: Option<&str>, paused: bool) -> bool {
        let Some(pgid) = self.cell(ns, pod, container).and_then(|c| c.lock().pgid) else {
            return false;
        };
        let sig = if paused {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        // The group first: a stopped postmaster forks no new children
        // while the rest of the tree is listed.
        process::signal_group(pgid, sig);
        for pid in process::tree(pgid) {
            process::signal_pid(pid, sig);
        }
        true
    }

    /// Forces a pod's readiness (`None`: back to its probes).
    pub fn set_ready(&self, ns: &str, pod: &str, ready: Option<bool>) {
        let key = (ns.to_string(), pod.to_string());
        match ready {
            Some(r) => lock(&self.inner.forced_ready).insert(key, r),
            None => lock(&self.inner.forced_ready).remove(&key),
        };
        self.inner.notify.notify_one();
    }

    /// The pids of the container processes of a pod (group leaders).
    pub fn pids(&self, ns: &str, pod: &str) -> Vec<i32> {
        self.find(ns, pod)
            .map(|p| p.cells.iter().filter_map(|c| c.lock().pgid).collect())
            .unwrap_or_default()
    }

    /// The pids of every process group the runtime has running.
    pub fn all_pids(&self) -> Vec<i32> {
        lock(&self.inner.groups).keys().copied().collect()
    }

    /// The host directory of a bound claim.
    pub fn volume_path(&self, ns: &str, claim: &str) -> Option<PathBuf> {
        let c = self.inner.cluster.get()?.upgrade()?;
        let pvc = c.store.get("/persistentvolumeclaims", ns, claim)?;
        let pv = pvc.pointer("/spec/volumeName")?.as_str()?;
        Some(self.inner.work.join("volumes").join(pv))
    }

    /// Deletes everything in a claim's volume, as if the disk had been
    /// wiped; the (empty) directory stays. Nothing is signalled: a server
    /// running on the volume keeps its processes and the files it holds
    /// open, and fails when it next opens one (a new connection, a
    /// checkpoint). Whatever starts next on the volume finds it empty, so
    /// a `postgres` container, once restarted, runs initdb afresh.
    pub fn delete_volume_data(&self, ns: &str, claim: &str) -> Result<()> {
        let dir = self.volume_path(ns, claim).ok_or_else(|| Error::Runtime {
            what: format!("claim {ns}/{claim} is not bound"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Makes a claim's volume full, or no longer full (see [`volume`]).
    /// As root the volume is a tmpfs, shrunk to what it holds: every new
    /// block fails with ENOSPC, as on a full disk ([`VolumeFull::NoSpace`]).
    /// Otherwise write permission is removed from the whole volume:
    /// creating or opening a file for writing fails with EACCES, and files
    /// a server holds open stay writable until it reopens them
    /// ([`VolumeFull::NoWritePermission`]). Returns which it is.
    pub fn fill_volume(&self, ns: &str, claim: &str, full: bool) -> Result<VolumeFull> {
        let dir = self.volume_path(ns, claim).ok_or_else(|| Error::Runtime {
            what: format!("claim {ns}/{claim} is not bound"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        volume::fill(&dir, full).map_err(io_err(&dir))
    }
}

/// Claims the first free `127.X` work directory (X from 2 to 254, in random
/// order): the directory's existence is the claim.
fn claim_octet(root: &Path) -> Result<(u8, PathBuf)> {
    let mut octets: Vec<u8> = (2..=254).collect();
    let start = rand::random_range(0..octets.len());
    octets.rotate_left(start);
    for octet in octets {
        let work = root.join(format!("127.{octet}"));
        match std::fs::create_dir(&work) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err(&work))?;
                std::fs::write(work.join("owner"), std::process::id().to_string())
                    .map_err(io_err(&work))?;
                return Ok((octet, work));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&work)(e)),
        }
    }
    Err(Error::Runtime {
        what: format!("every loopback range under {} is taken", root.display()),
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    })
}

impl Inner {
    fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.get()?.upgrade()
    }

    fn changed(&self) {
        self.notify.notify_one();
    }

    /// The server binaries of a version (exactly the minor when it is
    /// installed, else the major's), reachable by the run-as user.
    fn server_bin(&self, major: u32, minor: Option<u32>) -> std::result::Result<PathBuf, String> {
        if let Some(bin) = lock(&self.staged).get(&(major, minor)) {
            return Ok(bin.clone());
        }
        let found = self.config.binaries.server_for(major, minor)?;
        let bin = match &self.run_as {
            Ok(RunAs { ids: Some(_), .. }) => binaries::stage(&found, &self.stage)?,
            _ => found,
        };
        // Only what was found is remembered: binaries installed while the
        // sandbox runs are picked up at the next pull attempt.
        lock(&self.staged).insert((major, minor), bin.clone());
        Ok(bin)
    }

    fn register_group(&self, pgid: i32) {
        let file = self.work.join("pgids").join(pgid.to_string());
        let _ = std::fs::write(&file, pgid.to_string());
        lock(&self.groups).insert(pgid, file);
    }

    fn unregister_group(&self, pgid: i32) {
        if let Some(file) = lock(&self.groups).remove(&pgid) {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Kills everything, synchronously; safe to call more than once.
    fn shutdown(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        self.proxies.close_all();
        for p in lock(&self.pods).values() {
            let _ = p.stop.send(true);
        }
        let groups: Vec<i32> = lock(&self.groups).keys().copied().collect();
        process::kill_groups_and_wait(&groups, Duration::from_secs(3));
        for pgdata in process::find_data_dirs(&self.work) {
            process::kill_postmaster_of(&pgdata);
        }
        if let Some(mut w) = lock(&self.watchdog).take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        volume::release_all(&self.work.join("volumes"));
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Drop for PostgresRuntime {
    fn drop(&mut self) {
        // Tasks hold clones of `inner` and would keep processes alive: the
        // runtime's owner going away is what ends them.
        self.inner.shutdown();
    }
}

/// Why a container cannot start yet: the waiting reason and message.
struct Wait {
    reason: &'static str,
    message: String,
}

fn wait(reason: &'static str, message: impl Into<String>) -> Wait {
    Wait {
        reason,
        message: message.into(),
    }
}

/// Reads one key of a Secret (base64 `data`) or ConfigMap (`data`).
fn object_key(c: &Cluster, kind: &str, ns: &str, name: &str, key: &str) -> Option<String> {
    let obj = c.store.get(&format!("/{kind}"), ns, name)?;
    if kind == "secrets" {
        let b64 = obj.pointer(&format!("/data/{key}"))?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        String::from_utf8(bytes).ok()
    } else {
        obj.get("data")?.get(key)?.as_str().map(str::to_string)
    }
}

/// Every key of a Secret or ConfigMap as bytes.
fn object_data(c: &Cluster, kind: &str, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let obj = c.store.get(&format!("/{kind}"), ns, name)?;
    let mut out = BTreeMap::new();
    for (k, v) in obj
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let s = v.as_str().unwrap_or_default();
        let bytes = if kind == "secrets" {
            base64::engine::general_purpose::STANDARD.decode(s).ok()?
        } else {
            s.as_bytes().to_vec()
        };
        out.insert(k.clone(), bytes);
    }
    if kind == "configmaps" {
        for (k, v) in obj
            .get("binaryData")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .ok()?;
            out.insert(k.clone(), bytes);
        }
    }
    Some(out)
}

/// Expands `$(VAR)` references as the kubelet does (`$$` escapes).
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| k == &body[..end])
        {
            out.push_str(v);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, with Secret and ConfigMap references read.
fn resolve_env(
    c: &Cluster,
    ctx: &PodCtx,
    spec: &Container,
) -> std::result::Result<Vec<(String, String)>, Wait> {
    let ns = &ctx.ns;
    let mut env: Vec<(String, String)> = vec![];
    for from in spec.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = if let Some(s) = &from.secret_ref {
            ("secrets", s.name.clone(), s.optional.unwrap_or(false))
        } else if let Some(m) = &from.config_map_ref {
            ("configmaps", m.name.clone(), m.optional.unwrap_or(false))
        } else {
            continue;
        };
        match object_data(c, kind, ns, &name) {
            Some(data) => {
                for (k, v) in data {
                    env.push((
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    ));
                }
            }
            None if optional => {}
            None => {
                let what = if kind == "secrets" {
                    "secret"
                } else {
                    "configmap"
                };
                return Err(wait(
                    "CreateContainerConfigError",
                    format!("{what} \"{name}\" not found"),
                ));
            }
        }
    }
    for e in spec.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(from) = &e.value_from {
            let found = if let Some(s) = &from.secret_key_ref {
                let v = object_key(c, "secrets", ns, &s.name, &s.key);
                if v.is_none() && !s.optional.unwrap_or(false) {
                    return Err(wait(
                        "CreateContainerConfigError",
                        format!("couldn't find key {} in Secret {ns}/{}", s.key, s.name),
                    ));
                }
                v
            } else if let Some(m) = &from.config_map_key_ref {
                let v = object_key(c, "configmaps", ns, &m.name, &m.key);
                if v.is_none() && !m.optional.unwrap_or(false) {
                    return Err(wait(
                        "CreateContainerConfigError",
                        format!("couldn't find key {} in ConfigMap {ns}/{}", m.key, m.name),
                    ));
                }
                v
            } else if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "metadata.name" => Some(ctx.name.clone()),
                    "metadata.namespace" => Some(ctx.ns.clone()),
                    "metadata.uid" => Some(ctx.uid.clone()),
                    "status.podIP" => Some(ctx.ip.to_string()),
                    "spec.nodeName" => Some(crate::controllers::NODE_NAME.to_string()),
                    "status.hostIP" => Some("127.0.0.1".to_string()),
                    _ => None,
                }
            } else {
                None
            };
            match found {
                Some(v) => v,
                None => continue,
            }
        } else {
            String::new()
        };
        env.push((e.name.clone(), value));
    }
    Ok(env)
}

/// What a container runs.
enum Launch {
    /// A real process.
    Real(Process),
    /// Nothing to run: the container is simulated.
    Simulated { why: String },
}

/// A container's process: program and arguments, already translated.
struct Process {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    /// The signal that stops it gracefully (SIGINT for the server, as
    /// the image's STOPSIGNAL says).
    stop_signal: Signal,
    /// The data directory, to find a postmaster that left the group.
    pgdata: Option<PathBuf>,
    mounts: Mounts,
    /// The host file behind the termination message path.
    termination: PathBuf,
}

impl Inner {
    /// The host directories behind the pod's volumes, creating them.
    fn prepare_volumes(&self, ctx: &PodCtx) -> std::result::Result<HashMap<String, PathBuf>, Wait> {
        let c = self
            .cluster()
            .ok_or_else(|| wait("ContainerCreating", "the control plane is gone"))?;
        let run_as = self
            .run_as
            .as_ref()
            .map_err(|m| wait("CreateContainerError", m.clone()))?;
        let spec = ctx.pod.spec.clone().unwrap_or_default();
        let fail = |e: std::io::Error| {
            wait(
                "CreateContainerConfigError",
                format!("cannot prepare a volume: {e}"),
            )
        };
        let mut out = HashMap::new();
        let mut claims = vec![];
        // Mount paths are needed to rewrite file contents, so they are
        // computed first from every container's mounts.
        let mut pending_files = vec![];
        for v in spec.volumes.iter().flatten() {
            let dir = ctx.dir.join("volumes").join(&v.name);
            if let Some(pvc) = &v.persistent_volume_claim {
                let claim = c
                    .store
                    .get("/persistentvolumeclaims", &ctx.ns, &pvc.claim_name)
                    .ok_or_else(|| {
                        wait(
                            "ContainerCreating",
                            format!("persistentvolumeclaim \"{}\" not found", pvc.claim_name),
                        )
                    })?;
                let pv = claim
                    .pointer("/spec/volumeName")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        wait(
                            "ContainerCreating",
                            format!("persistentvolumeclaim \"{}\" is not bound", pvc.claim_name),
                        )
                    })?;
                let host = self.work.join("volumes").join(pv);
                if !host.exists() {
                    mkdir(&host, 0o755)
                        .map_err(|e| wait("CreateContainerConfigError", e.to_string()))?;
                    volume::mount(&host);
                    run_as.own(&host).map_err(fail)?;
                }
                claims.push(host.clone());
                out.insert(v.name.clone(), host);
            } else if let Some(source) = projection::Source::of(v) {
                pending_files.push((v.name.clone(), source));
                out.insert(v.name.clone(), dir);
            } else {
                // emptyDir, and anything else, is an empty directory of the pod.
                if !dir.exists() {
                    std::fs::create_dir_all(&dir).map_err(fail)?;
                    run_as.own(&dir).map_err(fail)?;
                }
                out.insert(v.name.clone(), dir);
            }
        }
        *ctx.claims() = claims;
        let mounts = Mounts::new(
            spec.containers
                .iter()
                .flat_map(|ct| ctx.mounts_of(&out, ct))
                .collect(),
        );
        let rewrite_text = |t: &str| rewrite::rewrite_paths(t, &mounts);
        let mut projections = vec![];
        for (volume, source) in pending_files {
            // A ConfigMap or Secret volume: its keys become files.
            let dir = &out[&volume];
            let files = match object_data(&c, source.plural, &ctx.ns, &source.name) {
                Some(data) => projection::files(&source, &data, &rewrite_text)
                    .map_err(|m| wait("CreateContainerConfigError", m))?,
                None if source.optional => vec![],
                None => {
                    return Err(wait(
                        "ContainerCreating",
                        format!("{} \"{}\" not found", source.kind, source.name),
                    ));
                }
            };
            projection::write(dir, &files, run_as).map_err(|e| {
                wait(
                    "CreateContainerConfigError",
                    format!("cannot write volume {}: {e}", dir.display()),
                )
            })?;
            projections.push(projection::Projection {
                dir: dir.clone(),
                source,
                files: files.into_iter().map(|f| f.rel).collect(),
            });
        }
        *ctx.projected() = Projected {
            mounts: mounts.clone(),
            volumes: projections,
        };
        Ok(out)
    }

    /// Brings the files of a running pod's ConfigMap and Secret volumes
    /// up to date with their objects (see [`projection`]). An object that
    /// is gone, or lacks a key an item names, leaves the files as they
    /// are (the kubelet keeps the last good content); an optional one that
    /// is gone empties its volume.
    fn refresh_projections(&self, c: &Cluster, ctx: &PodCtx) {
        let Ok(run_as) = &self.run_as else { return };
        let mut projected = ctx.projected();
        let Projected { mounts, volumes } = &mut *projected;
        let rewrite_text = |t: &str| rewrite::rewrite_paths(t, mounts);
        for p in volumes.iter_mut() {
            if ctx.stopping() {
                return;
            }
            let files = match object_data(c, p.source.plural, &ctx.ns, &p.source.name) {
                Some(data) => match projection::files(&p.source, &data, &rewrite_text) {
                    Ok(files) => files,
                    Err(why) => {
                        tracing::warn!(pod = %ctx.name, "{why}; volume not updated");
                        continue;
                    }
                },
                None if p.source.optional => vec![],
                None => continue,
            };
            match projection::update(&p.dir, &p.files, &files, run_as) {
                Ok(changed) => {
                    if changed {
                        tracing::debug!(pod = %ctx.name, dir = %p.dir.display(), "volume updated");
                    }
                    p.files = files.into_iter().map(|f| f.rel).collect();
                }
                Err(e) => {
                    tracing::warn!(pod = %ctx.name, dir = %p.dir.display(), error = %e, "cannot update volume");
                }
            }
        }
    }

    /// The address a name has for processes of pod `ctx`.
    fn lookup(&self, c: &Cluster, ctx: &PodCtx, name: &str) -> Option<String> {
        if name == "localhost" || name == "127.0.0.1" {
            return Some(ctx.ip.to_string());
        }
        net::resolve(c, name, &ctx.ns).map(|ip| ip.to_string())
    }

    /// Works out what a container runs, with everything translated.
    fn plan(
        &self,
        ctx: &PodCtx,
        spec: &Container,
        volumes: &HashMap<String, PathBuf>,
    ) -> std::result::Result<Launch, Wait> {
        let c = self
            .cluster()
            .ok_or_else(|| wait("ContainerCreating", "the control plane is gone"))?;
        let image = spec.image.clone().unwrap_or_default();
        let postgres_image = binaries::is_postgres_image(&image);
        let server_bin = if postgres_image {
            let (major, minor) = binaries::version_of(&image).ok_or_else(|| {
                wait("ErrImagePull", format!("image {image:?}: the tag names no PostgreSQL major version (use postgres:<major>[.<minor>])"))
            })?;
            Some(
                self.server_bin(major, minor)
                    .map_err(|m| wait("ErrImagePull", format!("image {image:?}: {m}")))?,
            )
        } else {
            None
        };
        let env = resolve_env(&c, ctx, spec)?;
        let mut argv: Vec<String> = match (&spec.command, &spec.args) {
            (Some(cmd), args) if !cmd.is_empty() => {
                cmd.iter().chain(args.iter().flatten()).cloned().collect()
            }
            (_, args) if postgres_image => {
                let args = args
                    .clone()
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| vec!["postgres".into()]);
                std::iter::once("docker-entrypoint.sh".to_string())
                    .chain(args)
                    .collect()
            }
            _ => {
                return Ok(Launch::Simulated {
                    why: format!("image {image:?} has no command the sandbox can run; simulated"),
                });
            }
        };
        argv = argv.iter().map(|a| expand(a, &env)).collect();
        let program_name = Path::new(&argv[0])
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if !REAL_COMMANDS.contains(&program_name.as_str()) {
            return Ok(Launch::Simulated {
                why: format!(
                    "command {:?} has no real counterpart in the sandbox; simulated",
                    argv[0]
                ),
            });
        }
        let run_as = self
            .run_as
            .as_ref()
            .map_err(|m| wait("CreateContainerError", m.clone()))?;
        // A subPath of a ConfigMap or Secret volume is the volume's content
        // as this start of the container finds it (see `projection`).
        for (i, m) in spec.volume_mounts.iter().flatten().enumerate() {
            let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let (Some(base), Some(copy)) = (
                volumes.get(&m.name).filter(|_| ctx.is_projected(&m.name)),
                ctx.mount_host(volumes, &spec.name, i, m),
            ) else {
                continue;
            };
            let from = projection::safe_rel(sub).map(|rel| base.join(rel));
            let copied = match &from {
                Some(from) => projection::copy_tree(from, &copy, run_as),
                None => Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
            };
            copied.map_err(|e| {
                wait(
                    "CreateContainerConfigError",
                    format!(
                        "failed to prepare subPath {sub:?} of volume {:?}: {e}",
                        m.name
                    ),
                )
            })?;
        }
        // The termination message file: mounted, on a node, over whatever
        // the path holds (see `termination`).
        let termination = ctx
            .dir
            .join("containers")
            .join(&spec.name)
            .join("termination-log");
        let mut mount_list = ctx.mounts_of(volumes, spec);
        let termination_path = spec
            .termination_message_path
            .clone()
            .filter(|p| p.starts_with('/'))
            .unwrap_or_else(|| "/dev/termination-log".into());
        mount_list.push((termination_path, termination.clone()));
        let mounts = Mounts::new(mount_list);
        let lookup = |name: &str| self.lookup(&c, ctx, name);
        let translate = |s: &str, whole_is_host: bool| {
            rewrite::rewrite_paths(&rewrite::rewrite_hosts(s, whole_is_host, &lookup), &mounts)
        };
        let mut args = vec![];
        for (i, a) in argv.iter().enumerate().skip(1) {
            let after_host_flag = matches!(argv[i - 1].as_str(), "-h" | "--host");
            args.push(translate(a, after_host_flag));
        }
        let rootfs = ctx.dir.join("rootfs");
        let client = self.client_bin.clone();
        let mut path_dirs: Vec<PathBuf> =
            server_bin.iter().cloned().chain(client.clone()).collect();
        path_dirs.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(PathBuf::from));
        let path = std::env::join_paths(&path_dirs)
            .map_err(|e| wait("CreateContainerError", e.to_string()))?;
        let mut full_env: Vec<(String, String)> = vec![
            ("PATH".into(), path.to_string_lossy().into_owned()),
            ("HOME".into(), rootfs.to_string_lossy().into_owned()),
            ("LANG".into(), "C.UTF-8".into()),
            ("USER".into(), run_as.name.clone()),
            ("LOGNAME".into(), run_as.name.clone()),
            ("HOSTNAME".into(), ctx.name.clone()),
        ];
        if postgres_image {
            full_env.push(("PGDATA".into(), "/var/lib/postgresql/data".into()));
            if let Some(m) = binaries::major_of(&image) {
                full_env.push(("PG_MAJOR".into(), m.to_string()));
            }
        }
        full_env.extend(env);
        let mut pgdata = None;
        for (k, v) in full_env.iter_mut() {
            let whole_is_host = k.ends_with("HOST") || (k.ends_with("HOSTNAME") && k != "HOSTNAME");
            let container_path = v.clone();
            *v = translate(v, whole_is_host);
            if k == "PGDATA" {
                // A data directory on no volume lives in the container's
                // own filesystem: under the pod's directory, never the host's.
                if container_path.starts_with('/') && mounts.map(&container_path).is_none() {
                    *v = rootfs
                        .join(container_path.trim_start_matches('/'))
                        .to_string_lossy()
                        .into_owned();
                }
                pgdata = Some(PathBuf::from(v.clone()));
            }
        }
        let initdb_dir = mounts
            .map("/docker-entrypoint-initdb.d")
            .unwrap_or_else(|| rootfs.join("docker-entrypoint-initdb.d"));
        full_env.extend([
            ("SANDBOX_POD_IP".to_string(), ctx.ip.to_string()),
            (
                "SANDBOX_SOCKET_DIR".to_string(),
                ctx.sock.to_string_lossy().into_owned(),
            ),
            (
                "SANDBOX_INITDB_DIR".to_string(),
                initdb_dir.to_string_lossy().into_owned(),
            ),
        ]);
        let (program, args) = if program_name == "docker-entrypoint.sh" {
            let mut a = vec![self.entrypoint.to_string_lossy().into_owned()];
            a.extend(args);
            (PathBuf::from("bash"), a)
        } else {
            let found = if argv[0].contains('/') {
                Some(PathBuf::from(translate(&argv[0], false)))
            } else {
                path_dirs
                    .iter()
                    .map(|d| d.join(&argv[0]))
                    .find(|p| p.is_file())
            };
            let program = found.ok_or_else(|| {
                wait(
                    "CreateContainerError",
                    format!("exec: {:?}: executable file not found in $PATH", argv[0]),
                )
            })?;
            (program, args)
        };
        let cwd = spec
            .working_dir
            .as_deref()
            .map(|w| {
                mounts
                    .map(w)
                    .unwrap_or_else(|| rootfs.join(w.trim_start_matches('/')))
            })
            .unwrap_or_else(|| rootfs.clone());
        let stop_signal = if postgres_image && program_name == "docker-entrypoint.sh" {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        Ok(Launch::Real(Process {
            program,
            args,
            env: full_env,
            cwd,
            stop_signal,
            pgdata,
            mounts,
            termination,
        }))
    }
}

impl PodRuntime for PostgresRuntime {
    fn start(&self, pod: &Pod) {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut pods = lock(&inner.pods);
        if pods.contains_key(&uid) {
            return;
        }
        let n = inner.counter.fetch_add(1, Ordering::Relaxed);
        let dir = inner.work.join("pods").join(n.to_string());
        let cells = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| {
                Arc::new(Cell {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    log: dir.join("logs").join(format!("{}.log", c.name)),
                    st: Mutex::new(CellState {
                        state: ContainerState::Waiting {
                            reason: "ContainerCreating".into(),
                        },
                        message: None,
                        last_state: None,
                        ready: false,
                        restart_count: 0,
                        pgid: None,
                        kill_reason: None,
                    }),
                })
            })
            .collect();
        let (stop, _) = watch::channel(false);
        let ctx = Arc::new(PodCtx {
            uid: uid.clone(),
            ns: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            ip: inner.plan.pod(),
            sock: inner.work.join("run").join(n.to_string()),
            dir,
            pod: pod.clone(),
            stop,
            cells,
            claims: Mutex::new(vec![]),
            projected: Default::default(),
            finished: Default::default(),
            counted: Default::default(),
        });
        pods.insert(uid, ctx.clone());
        drop(pods);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let task = h.spawn(run_pod(inner.clone(), ctx));
            lock(&inner.tasks).push(task.abort_handle());
        }
        inner.changed();
    }

    fn status(&self, uid: &str) -> Option<Vec<ContainerReport>> {
        let ctx = lock(&self.inner.pods).get(uid).cloned()?;
        let forced = lock(&self.inner.forced_ready)
            .get(&(ctx.ns.clone(), ctx.name.clone()))
            .copied();
        Some(
            ctx.cells
                .iter()
                .map(|cell| {
                    let st = cell.lock();
                    let running = matches!(st.state, ContainerState::Running { .. });
                    ContainerReport {
                        name: cell.name.clone(),
                        image: cell.image.clone(),
                        state: st.state.clone(),
                        ready: running && forced.unwrap_or(st.ready),
                        restart_count: st.restart_count,
                        message: st.message.clone(),
                        last_state: st.last_state.clone(),
                    }
                })
                .collect(),
        )
    }

    fn stop(&self, uid: &str) {
        let Some(ctx) = lock(&self.inner.pods).remove(uid) else {
            return;
        };
        {
            let mut releasing = lock(&self.inner.releasing);
            if !ctx.finished.load(Ordering::SeqCst) {
                let claims = ctx.claims().clone();
                for claim in &claims {
                    *releasing.entry(claim.clone()).or_default() += 1;
                }
                *lock(&ctx.counted) = claims;
            }
        }
        let _ = ctx.stop.send(true);
        let mut gone = lock(&self.inner.gone);
        if gone.len() > 256 {
            gone.clear();
        }
        gone.insert(
            uid.to_string(),
            (
                ctx.cells.iter().map(|c| c.name.clone()).collect(),
                ctx.dir.join("logs"),
            ),
        );
    }

    fn logs(&self, uid: &str, container: Option<&str>) -> Option<String> {
        let (names, dir) = match lock(&self.inner.pods).get(uid) {
            Some(ctx) => (
                ctx.cells.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                ctx.dir.join("logs"),
            ),
            None => lock(&self.inner.gone).get(uid).cloned()?,
        };
        let name = match container {
            Some(c) => names.iter().find(|n| *n == c)?.clone(),
            None => names.first()?.clone(),
        };
        std::fs::read_to_string(dir.join(format!("{name}.log"))).ok()
    }

    fn changed(&self) -> Arc<Notify> {
        self.inner.notify.clone()
    }

    fn pod_ip(&self, uid: &str) -> Option<String> {
        lock(&self.inner.pods).get(uid).map(|p| p.ip.to_string())
    }

    fn allocate_service_ip(&self) -> Option<String> {
        Some(self.inner.plan.service().to_string())
    }

    fn attach(&self, cluster: &Arc<Cluster>) {
        let _ = self.inner.cluster.set(Arc::downgrade(cluster));
        let Ok(h) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = Arc::downgrade(&self.inner);
        let weak = Arc::downgrade(cluster);
        let mut rx = cluster.store.subscribe();
        let task = h.spawn(async move {
            loop {
                {
                    let (Some(inner), Some(c)) = (inner.upgrade(), weak.upgrade()) else {
                        return;
                    };
                    inner.proxies.sync(&c, &inner.plan);
                    reclaim_volumes(&inner, &c);
                }
                // Wake on Service and volume changes, or every two seconds.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        match rx.recv().await {
                            Ok(e)
                                if matches!(e.key.as_str(), "/services" | "/persistentvolumes") =>
                            {
                                return;
                            }
                            Ok(_) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await
                            }
                        }
                    }
                })
                .await;
            }
        });
        lock(&self.inner.tasks).push(task.abort_handle());
        let task = h.spawn(sync_projected_volumes(
            Arc::downgrade(&self.inner),
            Arc::downgrade(cluster),
            cluster.store.subscribe(),
        ));
        lock(&self.inner.tasks).push(task.abort_handle());
    }

    fn shutdown(&self) {
        self.inner.shutdown();
    }
}

/// Keeps the ConfigMap and Secret volumes of running pods current (see
/// [`projection`]): `volume_sync_delay` after a ConfigMap or Secret
/// changes, and every half minute in case a change was missed (a pod that
/// was writing its volumes at the time, a lagging subscription).
async fn sync_projected_volumes(
    inner: Weak<Inner>,
    cluster: Weak<Cluster>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<crate::store::Event>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    const RESYNC: Duration = Duration::from_secs(30);
    loop {
        let _ = tokio::time::timeout(RESYNC, async {
            loop {
                match rx.recv().await {
                    Ok(e) if matches!(e.key.as_str(), "/configmaps" | "/secrets") => return,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
        let Some(delay) = inner.upgrade().map(|i| i.config.volume_sync_delay) else {
            return;
        };
        tokio::time::sleep(delay).await;
        // Changes during the wait are covered by this pass.
        while !matches!(
            rx.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty
                | tokio::sync::broadcast::error::TryRecvError::Closed)
        ) {}
        let (Some(inner), Some(c)) = (inner.upgrade(), cluster.upgrade()) else {
            return;
        };
        let pods: Vec<Arc<PodCtx>> = lock(&inner.pods).values().cloned().collect();
        for ctx in pods {
            inner.refresh_projections(&c, &ctx);
        }
    }
}

/// Removes the directories of volumes whose PersistentVolume is gone (the
/// claim was deleted and the reclaim policy was Delete; a Retained volume
/// keeps its PersistentVolume and so its data).
fn reclaim_volumes(inner: &Inner, c: &Cluster) {
    let Ok(entries) = std::fs::read_dir(inner.work.join("volumes")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if c.store.get("/persistentvolumes", "", &name).is_none()
            && !lock(&inner.releasing).contains_key(&e.path())
        {
            tracing::debug!(volume = %name, "removing the data of a deleted volume");
            volume::release(&e.path());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn set_state(inner: &Inner, cell: &Cell, state: ContainerState, message: Option<String>) {
    let mut st = cell.lock();
    if st.state != state || st.message != message {
        st.state = state;
        st.message = message;
        drop(st);
        inner.changed();
    }
}

async fn run_pod(inner: Arc<Inner>, ctx: Arc<PodCtx>) {
    run_pod_processes(&inner, &ctx).await;
    // Whichever way the pod ended (its containers exited, or it was deleted
    // while it waited for its volumes), its volumes are free now.
    {
        let mut releasing = lock(&inner.releasing);
        ctx.finished.store(true, Ordering::SeqCst);
        for claim in std::mem::take(&mut *lock(&ctx.counted)) {
            if let Some(n) = releasing.get_mut(&claim) {
                *n -= 1;
                if *n == 0 {
                    releasing.remove(&claim);
                }
            }
        }
    }
    inner.released.notify_waiters();
    if ctx.stopping() {
        // The container filesystem goes with the pod; logs stay readable.
        let _ = std::fs::remove_dir_all(ctx.dir.join("rootfs"));
        let _ = std::fs::remove_dir_all(ctx.dir.join("volumes"));
        let _ = std::fs::remove_dir_all(&ctx.sock);
    }
}

async fn run_pod_processes(inner: &Arc<Inner>, ctx: &Arc<PodCtx>) {
    let inner = inner.clone();
    let ctx = ctx.clone();
    let mut stop = ctx.stop.subscribe();
    let prepared = async {
        let run_as = inner
            .run_as
            .as_ref()
            .map_err(|m| wait("CreateContainerError", m.clone()))?;
        for (d, owned) in [
            (ctx.dir.join("logs"), false),
            (ctx.dir.join("volumes"), false),
            (ctx.dir.join("rootfs"), true),
            (ctx.sock.clone(), true),
        ] {
            mkdir(&d, if owned { 0o700 } else { 0o755 })
                .map_err(|e| wait("CreateContainerError", e.to_string()))?;
            if owned {
                run_as
                    .own(&d)
                    .map_err(|e| wait("CreateContainerError", e.to_string()))?;
            }
        }
        Ok::<(), Wait>(())
    };
    if let Err(w) = prepared.await {
        for cell in &ctx.cells {
            set_state(
                &inner,
                cell,
                ContainerState::Waiting {
                    reason: w.reason.into(),
                },
                Some(w.message.clone()),
            );
        }
        return;
    }
    // Volumes: retried until the claim is bound and the objects exist.
    let volumes = loop {
        if ctx.stopping() {
            return;
        }
        match inner.prepare_volumes(&ctx) {
            Ok(v) => break v,
            Err(w) => {
                for cell in &ctx.cells {
                    set_state(
                        &inner,
                        cell,
                        ContainerState::Waiting {
                            reason: w.reason.into(),
                        },
                        Some(w.message.clone()),
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = until_stopped(&mut stop) => return,
        }
    };
    // A pod replacing a deleted one waits for the old one's processes to let go of the volume.
    loop {
        let busy = ctx
            .claims()
            .iter()
            .any(|c| lock(&inner.releasing).contains_key(c));
        if !busy || ctx.stopping() {
            break;
        }
        tokio::select! {
            _ = inner.released.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    let specs = ctx.pod.spec.clone().unwrap_or_default().containers;
    let volumes = Arc::new(volumes);
    let mut handles = vec![];
    for (spec, cell) in specs.into_iter().zip(ctx.cells.clone()) {
        handles.push(tokio::spawn(run_container(
            inner.clone(),
            ctx.clone(),
            cell,
            spec,
            volumes.clone(),
        )));
    }
    for h in handles {
        let _ = h.await;
    }
}

fn restart_policy(ctx: &PodCtx) -> String {
    ctx.pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into())
}

fn grace(inner: &Inner, ctx: &PodCtx) -> Duration {
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
async fn until_stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Sleeps, or returns true early when the pod is being stopped.
async fn sleep_or_stop(ctx: &PodCtx, d: Duration) -> bool {
    let mut rx = ctx.stop.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(d) => ctx.stopping(),
        _ = until_stopped(&mut rx) => true,
    }
}

async fn run_container(
    inner: Arc<Inner>,
    ctx: Arc<PodCtx>,
    cell: Arc<Cell>,
    spec: Container,
    volumes: Arc<HashMap<String, PathBuf>>,
) {
    let policy = restart_policy(&ctx);
    let mut backoff = inner.config.backoff;
    let mut pull_backoff = inner.config.backoff;
    let mut first = true;
    loop {
        if ctx.stopping() {
            return;
        }
        let launch = match inner.plan(&ctx, &spec, &volumes) {
            Ok(l) => l,
            Err(w) => {
                let image_pull = w.reason == "ErrImagePull";
                set_state(
                    &inner,
                    &cell,
                    ContainerState::Waiting {
                        reason: w.reason.into(),
                    },
                    Some(w.message.clone()),
                );
                if image_pull {
                    // As the kubelet: ErrImagePull, then ImagePullBackOff
                    // until the next attempt, each wait twice the last.
                    if sleep_or_stop(&ctx, Duration::from_millis(500).min(pull_backoff)).await {
                        return;
                    }
                    set_state(
                        &inner,
                        &cell,
                        ContainerState::Waiting {
                            reason: "ImagePullBackOff".into(),
                        },
                        Some(format!(
                            "Back-off pulling image {:?}: {}",
                            cell.image, w.message
                        )),
                    );
                    if sleep_or_stop(&ctx, pull_backoff).await {
                        return;
                    }
                    pull_backoff = (pull_backoff * 2).min(inner.config.max_backoff);
                } else if sleep_or_stop(&ctx, Duration::from_millis(500)).await {
                    return;
                }
                continue;
            }
        };
        if !first {
            cell.lock().restart_count += 1;
        }
        first = false;
        let started = Instant::now();
        let (code, reason, started_at, message) = match launch {
            Launch::Simulated { why } => {
                let _ = std::fs::write(&cell.log, format!("{why}\n"));
                let started_at = crate::meta::now();
                {
                    let mut st = cell.lock();
                    st.state = ContainerState::Running {
                        started_at: started_at.clone(),
                    };
                    st.message = None;
                    st.ready = true;
                }
                inner.changed();
                if policy == "Always" {
                    let mut rx = ctx.stop.subscribe();
                    until_stopped(&mut rx).await;
                    return;
                }
                if sleep_or_stop(&ctx, Duration::from_millis(10)).await {
                    return;
                }
                (0, "Completed".to_string(), started_at, None)
            }
            Launch::Real(process) => match run_process(&inner, &ctx, &cell, &spec, process).await {
                Ok(r) => r,
                Err(w) => {
                    set_state(
                        &inner,
                        &cell,
                        ContainerState::Waiting {
                            reason: w.reason.into(),
                        },
                        Some(w.message),
                    );
                    if sleep_or_stop(&ctx, backoff).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let terminated = ContainerState::Terminated {
            exit_code: code,
            reason,
            started_at,
            finished_at: crate::meta::now(),
            message,
        };
        let restart = !ctx.stopping()
            && match policy.as_str() {
                "Always" => true,
                "OnFailure" => code != 0,
                _ => false,
            };
        if !restart {
            let mut st = cell.lock();
            st.state = terminated;
            st.ready = false;
            st.message = None;
            drop(st);
            inner.changed();
            return;
        }
        // A container that ran a good while starts its back-off afresh.
        if started.elapsed() > inner.config.max_backoff * 2 {
            backoff = inner.config.backoff;
        }
        let delay = if cell.lock().restart_count == 0 {
            Duration::ZERO
        } else {
            backoff
        };
        {
            let mut st = cell.lock();
            st.last_state = Some(terminated.clone());
            st.ready = false;
            if delay.is_zero() {
                st.state = terminated;
                st.message = None;
            } else {
                st.state = ContainerState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                };
                st.message = Some(format!(
                    "back-off {}s restarting failed container={} pod={}_{}",
                    delay.as_secs(),
                    cell.name,
                    ctx.name,
                    ctx.ns
                ));
            }
        }
        inner.changed();
        if !delay.is_zero() {
            backoff = (backoff * 2).min(inner.config.max_backoff);
        }
        if sleep_or_stop(&ctx, delay).await {
            return;
        }
    }
}

/// Runs one process of a container until it exits or the pod stops;
/// returns (exit code, reason, startedAt, termination message).
async fn run_process(
    inner: &Arc<Inner>,
    ctx: &Arc<PodCtx>,
    cell: &Arc<Cell>,
    spec: &Container,
    process: Process,
) -> std::result::Result<(i32, String, String, Option<String>), Wait> {
    let Process {
        program,
        args,
        env,
        cwd,
        stop_signal,
        pgdata,
        mounts,
        termination,
    } = process;
    let run_as = inner
        .run_as
        .as_ref()
        .map_err(|m| wait("CreateContainerError", m.clone()))?;
    let fail = |what: &str, e: std::io::Error| wait("CreateContainerError", format!("{what}: {e}"));
    if !cwd.exists() {
        std::fs::create_dir_all(&cwd).map_err(|e| fail("working directory", e))?;
        run_as.own(&cwd).map_err(|e| fail("working directory", e))?;
    }
    // The previous run's log is kept as `<name>.previous.log`, as
    // `kubectl logs --previous` would show it.
    if cell.log.exists() {
        let _ = std::fs::rename(&cell.log, cell.log.with_extension("previous.log"));
    }
    let log = std::fs::File::create(&cell.log).map_err(|e| fail("log file", e))?;
    termination::prepare(&termination, run_as).map_err(|e| fail("termination message file", e))?;
    let log2 = log.try_clone().map_err(|e| fail("log file", e))?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cwd)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    run_as.apply(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        wait(
            "CreateContainerError",
            format!("cannot start {}: {e}", program.display()),
        )
    })?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    inner.register_group(pid);
    let started_at = crate::meta::now();
    {
        let mut st = cell.lock();
        st.state = ContainerState::Running {
            started_at: started_at.clone(),
        };
        st.message = None;
        st.pgid = Some(pid);
        st.ready = false;
        st.kill_reason = None;
    }
    inner.changed();
    let probes = tokio::spawn(run_probes(
        inner.clone(),
        ctx.clone(),
        cell.clone(),
        spec.clone(),
        env,
        mounts,
    ));
    let mut stop_rx = ctx.stop.subscribe();
    let status = tokio::select! {
        s = child.wait() => s,
        _ = until_stopped(&mut stop_rx) => {
            process::signal_pid(pid, stop_signal);
            match tokio::time::timeout(grace(inner, ctx), child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    process::kill_tree(pid);
                    child.wait().await
                }
            }
        }
    };
    probes.abort();
    // Whatever the leader left behind goes with it: backends of a crashed
    // server, a temporary server started by the entrypoint.
    process::kill_tree(pid);
    if let Some(pgdata) = &pgdata {
        process::kill_postmaster_of(pgdata);
    }
    inner.unregister_group(pid);
    let code = match &status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)),
        Err(_) => 128 + 9,
    };
    let mut st = cell.lock();
    st.pgid = None;
    st.ready = false;
    let reason = st
        .kill_reason
        .take()
        .map(str::to_string)
        .unwrap_or_else(|| {
            if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            }
        });
    drop(st);
    let fallback = spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    let message = termination::message(&termination, &cell.log, fallback, code);
    Ok((code, reason, started_at, message))
}

/// One probe's settings, with the sandbox's cap on the period.
struct ProbeRun {
    probe: Probe,
    period: Duration,
    failures: i32,
    successes: i32,
}

impl ProbeRun {
    fn new(probe: Probe, cap: Option<Duration>) -> ProbeRun {
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        ProbeRun {
            period: cap.map_or(period, |c| period.min(c)),
            probe,
            failures: 0,
            successes: 0,
        }
    }
    fn failure_threshold(&self) -> i32 {
        self.probe.failure_threshold.unwrap_or(3).max(1)
    }
    fn success_threshold(&self) -> i32 {
        self.probe.success_threshold.unwrap_or(1).max(1)
    }
}

/// Runs the startup, readiness and liveness probes of a running container:
/// readiness sets `ready`; a startup or liveness probe failing its threshold
/// kills the container (it is then restarted per the restartPolicy).
async fn run_probes(
    inner: Arc<Inner>,
    ctx: Arc<PodCtx>,
    cell: Arc<Cell>,
    spec: Container,
    env: Vec<(String, String)>,
    mounts: Mounts,
) {
    let cap = inner.config.max_probe_period;
    let mut startup = spec.startup_probe.clone().map(|p| ProbeRun::new(p, cap));
    let mut readiness = spec.readiness_probe.clone().map(|p| ProbeRun::new(p, cap));
    let mut liveness = spec.liveness_probe.clone().map(|p| ProbeRun::new(p, cap));
    let initial = |p: &Option<ProbeRun>| {
        Duration::from_secs(
            p.as_ref()
                .and_then(|p| p.probe.initial_delay_seconds)
                .unwrap_or(0)
                .max(0) as u64,
        )
    };
    let begin = Instant::now();
    let mut started = startup.is_none();
    let mut next = [
        Instant::now() + initial(&startup),
        Instant::now() + initial(&readiness),
        Instant::now() + initial(&liveness),
    ];
    if readiness.is_none() && started {
        cell.lock().ready = true;
        inner.changed();
    }
    let kill = |why: String| {
        let mut st = cell.lock();
        if let Some(pgid) = st.pgid {
            st.kill_reason = Some("Error");
            tracing::info!(pod = %ctx.name, container = %cell.name, "{why}; killing the container");
            process::kill_tree(pgid);
        }
    };
    loop {
        let now = Instant::now();
        if !started
            && let Some(p) = startup.as_mut()
            && now >= next[0]
        {
            next[0] = now + p.period;
            if probe_once(&inner, &ctx, &p.probe, &env, &mounts).await {
                started = true;
                if readiness.is_none() {
                    cell.lock().ready = true;
                    inner.changed();
                }
            } else {
                p.failures += 1;
                if p.failures >= p.failure_threshold() {
                    kill(format!("startup probe failed {} times", p.failures));
                    return;
                }
            }
            if started {
                // Readiness and liveness begin as soon as startup succeeds.
                next[1] = Instant::now();
                next[2] = Instant::now() + initial(&liveness).saturating_sub(begin.elapsed());
            }
            continue;
        }
        if started {
            if let Some(p) = readiness.as_mut()
                && now >= next[1]
            {
                next[1] = now + p.period;
                let ok = probe_once(&inner, &ctx, &p.probe, &env, &mounts).await;
                let mut changed = false;
                if ok {
                    p.failures = 0;
                    p.successes += 1;
                    if p.successes >= p.success_threshold() {
                        let mut st = cell.lock();
                        changed = !st.ready;
                        st.ready = true;
                    }
                } else {
                    p.successes = 0;
                    p.failures += 1;
                    if p.failures >= p.failure_threshold() {
                        let mut st = cell.lock();
                        changed = st.ready;
                        st.ready = false;
                    }
                }
                if changed {
                    inner.changed();
                }
            }
            if let Some(p) = liveness.as_mut()
                && now >= next[2]
            {
                next[2] = now + p.period;
                if probe_once(&inner, &ctx, &p.probe, &env, &mounts).await {
                    p.failures = 0;
                } else {
                    p.failures += 1;
                    if p.failures >= p.failure_threshold() {
                        kill(format!("liveness probe failed {} times", p.failures));
                        return;
                    }
                }
            }
        }
        let soonest = next
            .iter()
            .copied()
            .min()
            .unwrap_or(now + Duration::from_secs(1));
        tokio::time::sleep_until(soonest.max(Instant::now() + Duration::from_millis(20))).await;
    }
}

/// Resolves a probe's port (a number or a container port's name).
fn probe_port(
    port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    ctx: &PodCtx,
) -> Option<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => ctx
            .pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Runs a probe once: exec (the command, translated, with the container's
/// environment and user), tcpSocket (a connect) or httpGet (a 2xx/3xx).
async fn probe_once(
    inner: &Inner,
    ctx: &PodCtx,
    probe: &Probe,
    env: &[(String, String)],
    mounts: &Mounts,
) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let Some(c) = inner.cluster() else {
            return false;
        };
        let argv = exec.command.clone().unwrap_or_default();
        let Some(first) = argv.first() else {
            return false;
        };
        let lookup = |name: &str| inner.lookup(&c, ctx, name);
        let mut args = vec![];
        for (i, a) in argv.iter().enumerate().skip(1) {
            let after_host_flag = matches!(argv[i - 1].as_str(), "-h" | "--host");
            args.push(rewrite::rewrite_paths(
                &rewrite::rewrite_hosts(a, after_host_flag, &lookup),
                mounts,
            ));
        }
        drop(c);
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let program = if first.contains('/') {
            PathBuf::from(rewrite::rewrite_paths(first, mounts))
        } else {
            match std::env::split_paths(&path)
                .map(|d| d.join(first))
                .find(|p| p.is_file())
            {
                Some(p) => p,
                None => return false,
            }
        };
        let Ok(run_as) = &inner.run_as else {
            return false;
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(ctx.dir.join("rootfs"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        run_as.apply(&mut cmd);
        let Ok(mut child) = cmd.spawn() else {
            return false;
        };
        return match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(s)) => s.success(),
            _ => {
                let _ = child.start_kill();
                false
            }
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = probe_port(&tcp.port, ctx) else {
            return false;
        };
        let host = tcp.host.clone().unwrap_or_else(|| ctx.ip.to_string());
        return matches!(
            tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((host.as_str(), port))
            )
            .await,
            Ok(Ok(_))
        );
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = probe_port(&http.port, ctx) else {
            return false;
        };
        let host = http.host.clone().unwrap_or_else(|| ctx.ip.to_string());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        return tokio::time::timeout(timeout, http_get(&host, port, &path))
            .await
            .unwrap_or(false);
    }
    // A probe with no handler always succeeds.
    true
}

/// A minimal HTTP/1.1 GET: true on a 2xx or 3xx status line.
async fn http_get(host: &str, port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect((host, port)).await else {
        return false;
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let Ok(n) = s.read(&mut buf).await else {
        return false;
    };
    let line = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (200..400).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_style_references_are_expanded() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)/y", &env), "x/y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(B) $A", &env), "$(B) $A");
    }
}
