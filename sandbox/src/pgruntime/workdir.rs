//! The runtime's work directory and its lifetime: creating the runtime
//! (claiming a `127.X` loopback range and its directory, writing the
//! image's entrypoint, starting the watchdog), recording process groups for
//! the watchdog, and shutting everything down. What runs inside the
//! directory is `lifecycle`'s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use super::config::PostgresConfig;
use super::net::{AddressPlan, Proxies};
use super::process::{self, RunAs};
use super::state::{Inner, PostgresRuntime, lock};
use super::volume;
use crate::error::{Error, Result};

/// The entrypoint of the official image, reproduced for the host.
const ENTRYPOINT: &str = include_str!("docker-entrypoint.sh");
pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Runtime {
        what: format!("cannot prepare {}", path.display()),
        source,
    }
}

pub(super) fn mkdir(path: &Path, mode: u32) -> Result<()> {
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
        for sub in ["pods", "run", "volumes", "pgids", "bin"] {
            mkdir(&work.join(sub), 0o755)?;
        }
        // Alone in its directory, which is on the PATH of PostgreSQL images'
        // containers (see `launch`), as the image has it in /usr/local/bin.
        let entrypoint = work.join("bin").join("docker-entrypoint.sh");
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
                stopping: Default::default(),
                releasing: Default::default(),
                released: Notify::new(),
                forced_ready: Default::default(),
                staged: Default::default(),
                watchdog: Mutex::new(Some(watchdog)),
                walked: Default::default(),
                counter: AtomicU32::new(0),
                closed: AtomicBool::new(false),
                mount_ns: OnceLock::new(),
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
    pub(super) fn register_group(&self, pgid: i32) {
        let file = self.work.join("pgids").join(pgid.to_string());
        let _ = std::fs::write(&file, pgid.to_string());
        lock(&self.groups).insert(pgid, file);
    }

    pub(super) fn unregister_group(&self, pgid: i32) {
        if let Some(file) = lock(&self.groups).remove(&pgid) {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Kills everything, synchronously; safe to call more than once.
    pub(super) fn shutdown(&self) {
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
