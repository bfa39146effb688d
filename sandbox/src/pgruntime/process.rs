//! Processes: who they run as, their process groups, signals and cleanup.
//!
//! Every container process is the leader of its own process group, so one
//! signal to the group reaches the server and every backend it forked. As
//! root, processes run as the unprivileged `postgres` user (initdb refuses
//! root); otherwise as the current user. A watchdog process per sandbox kills
//! the groups it finds recorded under the work directory when the sandbox's
//! process dies without cleaning up (a test killed by a signal), and a new
//! sandbox sweeps directories left behind by dead ones (unmounting their
//! volumes' tmpfs, see [`super::volume`]). All of this uses
//! safe APIs (`nix`, std's `CommandExt`); there is no `unsafe` here.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, User, geteuid};

/// The user processes run as.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// `Some` when the sandbox runs as root and drops to this uid/gid.
    pub ids: Option<(u32, u32)>,
    pub name: String,
}

impl RunAs {
    /// `postgres` when running as root, else the current user; an error
    /// message when root has no `postgres` user to drop to.
    pub fn detect() -> Result<RunAs, String> {
        let euid = geteuid();
        if euid.is_root() {
            match User::from_name("postgres") {
                Ok(Some(u)) => Ok(RunAs {
                    ids: Some((u.uid.as_raw(), u.gid.as_raw())),
                    name: u.name,
                }),
                _ => Err("running as root needs an unprivileged `postgres` user to run PostgreSQL as (initdb refuses root): create one with `useradd --system postgres`".into()),
            }
        } else {
            let name = User::from_uid(euid)
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| euid.to_string());
            Ok(RunAs { ids: None, name })
        }
    }

    /// Gives `path` to the run-as user (a no-op when not dropping privileges).
    pub fn own(&self, path: &Path) -> std::io::Result<()> {
        match self.ids {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }

    /// Sets the user and a new process group on a command.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
        cmd.process_group(0);
    }
}

/// Sends `sig` to a whole process group; a group already gone is fine.
pub fn signal_group(pgid: i32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid), sig);
}

/// Sends `sig` to one process.
pub fn signal_pid(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Whether the process `pid` runs the PostgreSQL server (its program is
/// `postgres`, as after a script's `exec postgres ...`).
pub fn runs_postgres(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "postgres")
}

/// Whether a live (non-zombie) process with this pid exists.
pub fn alive(pid: i32) -> bool {
    pid > 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
}

/// (pid, state, ppid, pgrp) of every process, from /proc.
fn processes() -> Vec<(i32, String, i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
            let (_, rest) = stat.rsplit_once(')')?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((
                pid,
                f.first()?.to_string(),
                f.get(1)?.parse().ok()?,
                f.get(2)?.parse().ok()?,
            ))
        })
        .collect()
}

/// The live processes of a container: its group, and every descendant of
/// the leader (PostgreSQL's children start sessions of their own, so they
/// are not in the group).
pub fn tree(pgid: i32) -> Vec<i32> {
    let all = processes();
    let mut out: Vec<i32> = all
        .iter()
        .filter(|(_, state, _, pgrp)| *pgrp == pgid && state != "Z")
        .map(|p| p.0)
        .collect();
    let mut i = 0;
    let mut frontier = vec![pgid];
    while i < frontier.len() {
        let parent = frontier[i];
        for (pid, state, ppid, _) in &all {
            if *ppid == parent && !frontier.contains(pid) {
                frontier.push(*pid);
                if state != "Z" && !out.contains(pid) {
                    out.push(*pid);
                }
            }
        }
        i += 1;
    }
    out
}

/// SIGKILLs a container's whole tree (see [`tree`]).
pub fn kill_tree(pgid: i32) {
    let pids = tree(pgid);
    signal_group(pgid, Signal::SIGKILL);
    for pid in pids {
        signal_pid(pid, Signal::SIGKILL);
    }
}

/// Kills the trees and waits up to `wait` for every process in them to go.
pub fn kill_groups_and_wait(pgids: &[i32], wait: Duration) {
    let mut pids: Vec<i32> = vec![];
    for &g in pgids {
        pids.extend(tree(g));
        kill_tree(g);
    }
    let deadline = std::time::Instant::now() + wait;
    while pids.iter().any(|&p| alive(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills the postmaster recorded in a data directory's `postmaster.pid`
/// (first line), if it is still a PostgreSQL process: a server started in
/// another session (pg_ctl) is not in the container's group.
pub fn kill_postmaster_of(pgdata: &Path) {
    let Ok(text) = std::fs::read_to_string(pgdata.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    let is_postgres = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("postgres"))
        .unwrap_or(false);
    if is_postgres {
        signal_pid(pid, Signal::SIGKILL);
    }
}

/// The shell script of the watchdog (POSIX `kill -s`: dash, a common
/// `sh`, rejects `kill -KILL -- -PGID`): waits for the sandbox's process to go,
/// then kills every group recorded under `pgids/`, unmounts the volumes'
/// tmpfs (lazily: killed processes may not have exited yet; a volume that
/// is no mount point just fails), gives back write permission a fill took
/// and removes the work dir.
const WATCHDOG: &str = include_str!("watchdog.sh");

/// Starts the watchdog for the work dir (its own process group, so a
/// Ctrl-C to the terminal's group does not take it down with the sandbox).
pub fn spawn_watchdog(work: &Path) -> std::io::Result<std::process::Child> {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("pgdb-sandbox-watchdog")
        .arg(std::process::id().to_string())
        .arg(work)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
}

/// Removes work directories of sandboxes whose process is gone, killing
/// what they left running (recorded groups and postmasters).
pub fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.join("owner").exists() {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join("owner"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        // A live owner, this process included (several sandboxes per test
        // binary), keeps its directory.
        if owner.is_some_and(alive) {
            continue;
        }
        if let Ok(groups) = std::fs::read_dir(dir.join("pgids")) {
            for g in groups.flatten() {
                if let Some(pgid) = std::fs::read_to_string(g.path())
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    signal_group(pgid, Signal::SIGKILL);
                }
            }
        }
        for pgdata in find_data_dirs(&dir.join("volumes")) {
            kill_postmaster_of(&pgdata);
        }
        tracing::info!(dir = %dir.display(), "removing the work directory of a sandbox that is gone");
        super::volume::release_all(&dir.join("volumes"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Directories holding a `postmaster.pid`, up to three levels down.
pub fn find_data_dirs(root: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, depth: u32, out: &mut Vec<std::path::PathBuf>) {
        if dir.join("postmaster.pid").exists() {
            out.push(dir.to_path_buf());
        }
        if depth == 0 {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), depth - 1, out);
                }
            }
        }
    }
    let mut out = vec![];
    walk(root, 3, &mut out);
    out
}
