//! Fault controls of the real runtime, for tests: killing a container as a
//! crash or an OOM kill, pausing its processes, forcing readiness, and
//! wiping or filling a claim's volume. Each acts on processes or files
//! the way the fault would; what follows (restarts, failed probes, failed
//! writes) is the runtime's ordinary behaviour.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use super::process;
use super::state::{ForcedReady, PostgresRuntime, lock};
use super::volume::{self, VolumeFull};
use super::workdir::io_err;
use crate::error::{Error, Result};

/// How [`PostgresRuntime::kill_container`] kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillKind {
    /// SIGKILL, reported as `Error` with exit code 137.
    Crash,
    /// SIGKILL, reported as `OOMKilled` with exit code 137.
    OomKill,
}
impl PostgresRuntime {
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
        self.force_ready(
            ns,
            pod,
            ready.map(|ready| ForcedReady { ready, image: None }),
        );
    }

    /// Forces the readiness of the containers of pod `pod` that run
    /// `image` (`None`: the pod back to its probes, whatever hold it had,
    /// this image's or [`Self::set_ready`]'s). Held by name and image, it
    /// applies to a pod created later under that name, and not to the
    /// pod running the previous image: a test can hold the replacement a
    /// rollout creates unready before the rollout begins.
    pub fn set_ready_on_image(&self, ns: &str, pod: &str, image: &str, ready: Option<bool>) {
        self.force_ready(
            ns,
            pod,
            ready.map(|ready| ForcedReady {
                ready,
                image: Some(image.to_string()),
            }),
        );
    }

    fn force_ready(&self, ns: &str, pod: &str, forced: Option<ForcedReady>) {
        let key = (ns.to_string(), pod.to_string());
        match forced {
            Some(f) => lock(&self.inner.forced_ready).insert(key, f),
            None => lock(&self.inner.forced_ready).remove(&key),
        };
        self.inner.notify.notify_one();
    }

    /// The pids of the container processes of a pod (group leaders).
    pub fn pids(&self, ns: &str, pod: &str) -> Vec<i32> {
        self.find(ns, pod)
            .map(|p| p.all_cells().filter_map(|c| c.lock().pgid).collect())
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
        lock(&self.inner.walked).remove(&dir);
        empty_directory(&dir)
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
        lock(&self.inner.walked).remove(&dir);
        volume::fill(&dir, full).map_err(io_err(&dir))
    }

    /// A persistent volume (by the PersistentVolume's name) was expanded
    /// to `capacity_bytes`: its quota grows with it ([`volume::grow`]), so
    /// a volume [`Self::fill_volume`] made full has room again, as a full
    /// disk does once its claim is grown. False when there was no quota to
    /// raise (no such volume, or one already larger).
    pub fn volume_resized(&self, volume: &str, capacity_bytes: u64) -> bool {
        let dir = self.inner.work.join("volumes").join(volume);
        lock(&self.inner.walked).remove(&dir);
        let grown = volume::grow(&dir, capacity_bytes);
        if grown {
            tracing::debug!(
                volume,
                capacity_bytes,
                "the volume's quota grew with its claim"
            );
        }
        grown
    }

    /// What a persistent volume (by the PersistentVolume's name) uses, for
    /// the kubelet's volume stats: `statvfs` of its tmpfs, or the walk of
    /// a plain directory, reused for [`volume::WALK_PERIOD`]; `full` when
    /// [`Self::fill_volume`] made it so. `None` when it has no directory.
    pub fn volume_usage(&self, volume: &str) -> Option<crate::cluster::VolumeUsage> {
        let dir = self.inner.work.join("volumes").join(volume);
        if let Some(u) = volume::usage_of_mount(&dir) {
            return Some(u);
        }
        let full = volume::filled_by_permissions(&dir);
        let now = std::time::Instant::now();
        let cached = lock(&self.inner.walked)
            .get(&dir)
            .filter(|(at, _)| now.duration_since(*at) < volume::WALK_PERIOD)
            .map(|(_, u)| *u);
        let usage = match cached {
            Some(u) => u,
            None => {
                let u = volume::walk(&dir)?;
                lock(&self.inner.walked).insert(dir, (now, u));
                u
            }
        };
        Some(crate::cluster::VolumeUsage { full, ..usage })
    }
}

/// How many times [`empty_directory`] lists the directory again when a
/// process running on the volume wrote a file after it was listed.
const WIPE_ATTEMPTS: u32 = 20;

/// Removes everything in `dir`, keeping `dir`. A server still running on
/// the volume may create a file (a WAL segment, a temporary file) in a
/// directory between its listing and its removal, which then fails with
/// "directory not empty"; a wiped disk has no such window, so the listing
/// is taken again, a bounded number of times. A file that vanished in the
/// meantime (removed by its writer) is already gone.
fn empty_directory(dir: &Path) -> Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut raced = None;
        for e in std::fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::DirectoryNotEmpty
                        && attempt < WIPE_ATTEMPTS =>
                {
                    raced = Some(p);
                }
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        if raced.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod wipe_tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn wiping_a_volume_succeeds_while_a_process_keeps_writing_files_into_it() {
        let volume = std::env::temp_dir().join(format!("pgdb-wipe-{}", std::process::id()));
        let data = volume.join("pgdata").join("pg_wal");
        std::fs::create_dir_all(&data).expect("creates the data directory");
        for k in 0..200 {
            std::fs::write(data.join(format!("old-{k}")), b"x").expect("writes");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Fails once the directory itself is gone, as a
                    // server's writes fail on a wiped disk.
                    let _ = std::fs::write(data.join(format!("new-{k}")), b"x");
                    k += 1;
                    // Ten thousand files a second: far more than a WAL
                    // receiver writes, still slower than unlinking them
                    // (a writer faster than deletion would never let any
                    // disk be emptied).
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            })
        };
        for _ in 0..100 {
            std::fs::create_dir_all(&data).expect("recreates the data directory");
            empty_directory(&volume).expect("wipes the volume");
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("the writer stops");
        let _ = std::fs::remove_dir_all(&volume);
    }
}
