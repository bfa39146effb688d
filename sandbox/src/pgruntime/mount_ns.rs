//! Mounts at their literal paths, for a program whose paths the runtime
//! cannot rewrite.
//!
//! Containers run on the host's filesystem, and the runtime translates the
//! mount paths it can see (arguments, environment, files of ConfigMaps; see
//! [`super::rewrite`]). A compiled program that opens a constant path
//! (the operator reads `/var/run/secrets/kubernetes.io/serviceaccount/token`
//! as every Kubernetes client library does) is out of its reach, so such a
//! container runs, as a container runtime runs every container, in a mount
//! namespace of its own: `unshare --mount --propagation private` (as root;
//! otherwise `unshare --user --map-root-user --mount`) runs
//! `container-mounts.sh`, which
//!
//! * replaces `/run` (so `/var/run`) by a tmpfs of the namespace that still
//!   shows the host's entries as links (DNS configuration, sockets), so
//!   that paths can be created there without writing to the host's `/run`;
//! * bind-mounts each volume's host directory at its mount path (read-only
//!   when the mount says so); a mount elsewhere goes over a path the host
//!   has, as a container's mount hides what the image has there;
//! * drops to the run-as user (`setpriv --reuid --regid --init-groups`,
//!   with `--no-new-privs` for `allowPrivilegeEscalation: false`) and
//!   `exec`s the program, which keeps the process id, so signals, process
//!   groups and logs work as for every other container. Without root the
//!   script is uid 0 of the user namespace with every capability in it;
//!   the program stays that uid (the only one mapped) but `setpriv
//!   --bounding-set=-all --inh-caps=-all --ambient-caps=-all` clears its
//!   capability sets, so after the `exec` it has none.
//!
//! Everything before the drop (`unshare`, `/bin/sh`, `mount`, `setpriv`)
//! runs with a fixed environment (`PATH=/usr/sbin:/usr/bin:/sbin:/bin`,
//! nothing else), so the pod's `PATH`, `LD_PRELOAD` or `LD_LIBRARY_PATH`
//! never reach a privileged process; the container's environment is set by
//! `/usr/bin/env -i`, which the dropped `setpriv` `exec`s and which `exec`s
//! the program. Its names and values are on that command line until then
//! (as a runtime's OCI spec holds them), so they show in the process list
//! for that moment.
//!
//! A mount path that is not absolute or has a `.`, `..` or empty component
//! (which the script would follow out of its place, to the host's `/etc` or
//! the host's `/run`) is refused before anything runs
//! (`CreateContainerConfigError`, naming the mount and the path).
//!
//! Where it stops: a mount path outside `/run` that the host lacks cannot be
//! created without writing to the host, so such a container does not start
//! (`CreateContainerError`, naming the path). Without namespaces (no
//! `unshare`, or a kernel or sandbox that refuses them) the container does
//! not start either, with the reason. The termination message file is
//! translated as for other containers, not mounted. PostgreSQL images and
//! shells keep running without a namespace: their paths are rewritten.

use std::path::{Path, PathBuf};

use super::process::RunAs;

/// The script run inside the new namespace.
const SCRIPT: &str = include_str!("container-mounts.sh");

/// Directories replaced by a tmpfs of the namespace when a mount is under
/// them (`/var/run` is a link to `/run` on most systems).
const NAMESPACE_ROOTS: [&str; 2] = ["/run", "/var/run"];

/// One mount at its literal path.
#[derive(Debug, Clone, PartialEq)]
pub struct Literal {
    /// The host directory (or file) behind the volume.
    pub host: PathBuf,
    /// Where the process sees it, with `/var/run` resolved as the host
    /// resolves it.
    pub target: String,
    pub read_only: bool,
}

/// What the namespace needs: the roots to replace and the mounts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    pub roots: Vec<String>,
    pub mounts: Vec<Literal>,
}

/// Refuses a mount path the namespace's script could follow out of its
/// place (`/run/../etc/x`, `/run//systemd/x`, `/run/./systemd/x` reach the
/// host's `/etc` or, through the links to the host's `/run`, its
/// entries): it must be absolute, with no `.`, `..` or empty component (a
/// trailing `/` aside), as a runtime's secure join demands.
pub fn check_mount_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid volume mount path {path:?}: {why}"));
    let Some(rest) = path.strip_prefix('/') else {
        return bad("it is not absolute");
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Ok(());
    }
    match rest.split('/').find(|c| matches!(*c, "" | "." | "..")) {
        Some("") => bad("it has an empty component"),
        Some(c) => bad(&format!("it has a {c:?} component")),
        None => Ok(()),
    }
}

/// Resolves a path's leading `/var/run` (or `/run`) as the host's links do.
fn resolve_root(path: &str, resolve: &dyn Fn(&str) -> String) -> Option<(String, String)> {
    NAMESPACE_ROOTS.iter().find_map(|root| {
        let rest = path.strip_prefix(root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let real = resolve(root);
        Some((real.clone(), format!("{real}{rest}")))
    })
}

/// The layout for a container's mounts (container path, host path,
/// read-only): mounts under `/run` or `/var/run` go on the namespace's
/// tmpfs, others over a path `exists` says the host has; any other is an
/// error naming it. `resolve` canonicalises a root (`/var/run` → `/run`).
pub fn layout(
    mounts: &[(String, PathBuf, bool)],
    resolve: &dyn Fn(&str) -> String,
    exists: &dyn Fn(&str) -> bool,
) -> Result<Layout, String> {
    let mut out = Layout::default();
    for (path, host, read_only) in mounts {
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        let target = match resolve_root(path, resolve) {
            Some((root, target)) => {
                if target == root {
                    return Err(format!(
                        "cannot mount a volume at {path}: the sandbox keeps the host's {root} under it"
                    ));
                }
                if !out.roots.contains(&root) {
                    out.roots.push(root);
                }
                target
            }
            None if path != "/" && exists(path) => path.to_string(),
            None => {
                return Err(format!(
                    "cannot mount a volume at {path}: the sandbox runs containers on the host's filesystem, where it can mount only under /run or /var/run, or over a path the host has"
                ));
            }
        };
        out.mounts.push(Literal {
            host: host.clone(),
            target,
            read_only: *read_only,
        });
    }
    Ok(out)
}

/// The host's canonical form of a root (`/var/run` → `/run`).
pub fn resolve_on_host(root: &str) -> String {
    std::fs::canonicalize(root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| root.to_string())
}

/// The `unshare` that creates the namespace, or why there is none: found
/// on the usual paths and shown to work once (`unshare ... true`).
pub fn probe(run_as: &RunAs) -> Result<PathBuf, String> {
    let unshare = ["/usr/bin/unshare", "/bin/unshare", "/usr/sbin/unshare"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "the container needs a mount namespace of its own, and util-linux's unshare is not installed (apt-get install util-linux)".to_string()
        })?;
    let out = std::process::Command::new(&unshare)
        .args(unshare_flags(run_as))
        .arg("true")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", unshare.display()))?;
    if out.status.success() {
        Ok(unshare)
    } else {
        Err(format!(
            "the container needs a mount namespace of its own, and this machine refuses one ({} {}: {}): run the sandbox where namespaces are allowed (as root, or with unprivileged user namespaces enabled)",
            unshare.display(),
            unshare_flags(run_as).join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn unshare_flags(run_as: &RunAs) -> Vec<&'static str> {
    match run_as.ids {
        Some(_) => vec!["--mount", "--propagation", "private"],
        None => vec![
            "--user",
            "--map-root-user",
            "--mount",
            "--propagation",
            "private",
        ],
    }
}

/// The environment of everything that runs before the privileges are
/// dropped (`unshare`, the shell, `mount`, `setpriv`): fixed, so nothing of
/// the pod's (its `PATH`, `LD_PRELOAD`, `LD_LIBRARY_PATH`) reaches them.
pub const PREFIX_ENV: [(&str, &str); 1] = [("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")];
/// The shell that runs the script, by its absolute path.
const SHELL: &str = "/bin/sh";
/// What sets the container's environment once the privileges are dropped.
const ENV: &str = "/usr/bin/env";

/// What to spawn: the program, its arguments and its whole environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Prefixed {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The command line that runs `program args` with the container's `env`
/// in the namespace. It is spawned with [`PREFIX_ENV`] only (as root when
/// dropping to the run-as user, which the script does); the container's
/// environment is set by `env -i` after the drop. `keep` is a directory of
/// the pod's where the namespace keeps its view of the host's roots.
#[allow(clippy::too_many_arguments)]
pub fn command(
    unshare: &Path,
    run_as: &RunAs,
    no_new_privs: bool,
    keep: &Path,
    layout: &Layout,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
) -> Prefixed {
    let mut argv: Vec<String> = unshare_flags(run_as)
        .into_iter()
        .map(str::to_string)
        .collect();
    argv.extend(["--", SHELL, "-c", SCRIPT, "pgdb-container-mounts"].map(str::to_string));
    let (uid, gid) = match run_as.ids {
        Some((uid, gid)) => (uid.to_string(), gid.to_string()),
        None => ("-".to_string(), "-".to_string()),
    };
    argv.extend([
        uid,
        gid,
        if no_new_privs { "yes" } else { "no" }.to_string(),
        keep.to_string_lossy().into_owned(),
        layout.roots.len().to_string(),
    ]);
    argv.extend(layout.roots.iter().cloned());
    argv.push(layout.mounts.len().to_string());
    for m in &layout.mounts {
        argv.extend([
            m.host.to_string_lossy().into_owned(),
            m.target.clone(),
            if m.read_only { "ro" } else { "rw" }.to_string(),
        ]);
    }
    argv.push("--".to_string());
    argv.extend([ENV, "-i", "--"].map(str::to_string));
    argv.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    argv.push(program.to_string_lossy().into_owned());
    argv.extend(args.iter().cloned());
    Prefixed {
        program: unshare.to_path_buf(),
        args: argv,
        env: PREFIX_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var_run_is_run(root: &str) -> String {
        if root == "/var/run" {
            "/run".into()
        } else {
            root.into()
        }
    }

    #[test]
    fn the_service_account_path_goes_on_the_namespace_s_own_run() {
        let got = layout(
            &[(
                "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                PathBuf::from("/w/pods/0/volumes/kube-api-access-abcde"),
                true,
            )],
            &var_run_is_run,
            &|_| false,
        )
        .expect("a path under /var/run");
        assert_eq!(
            got,
            Layout {
                roots: vec!["/run".into()],
                mounts: vec![Literal {
                    host: PathBuf::from("/w/pods/0/volumes/kube-api-access-abcde"),
                    target: "/run/secrets/kubernetes.io/serviceaccount".into(),
                    read_only: true,
                }],
            }
        );
    }

    #[test]
    fn a_mount_path_with_dot_dot_dot_or_empty_components_or_not_absolute_is_refused() {
        for bad in [
            "/run/../etc/x",
            "/run//systemd/x",
            "/run/./systemd/x",
            "/var/run/secrets/..",
            "run/secrets",
            "",
            "/run/x/../../etc",
        ] {
            let message = check_mount_path(bad).expect_err(bad);
            assert!(message.contains(&format!("{bad:?}")), "{message}");
        }
        for good in [
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "/run/x/",
            "/etc/operator",
            "/run/..x/.y",
            "/",
        ] {
            assert_eq!(check_mount_path(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn a_mount_path_the_host_lacks_outside_run_is_refused_naming_it() {
        let mounts = [("/etc/operator".to_string(), PathBuf::from("/w/x"), false)];
        let message = layout(&mounts, &var_run_is_run, &|_| false).expect_err("no /etc/operator");
        assert!(message.contains("/etc/operator"), "{message}");
        let over = layout(&mounts, &var_run_is_run, &|p| p == "/etc/operator")
            .expect("a path the host has");
        assert!(over.roots.is_empty());
        assert_eq!(over.mounts[0].target, "/etc/operator");
        let message = layout(
            &[("/var/run".to_string(), PathBuf::from("/w/x"), false)],
            &var_run_is_run,
            &|_| true,
        )
        .expect_err("not over all of /run");
        assert!(message.contains("/var/run"), "{message}");
    }

    #[test]
    fn the_command_runs_the_script_then_the_program_as_the_run_as_user() {
        let run_as = RunAs {
            ids: Some((999, 998)),
            name: "postgres".into(),
        };
        let layout = Layout {
            roots: vec!["/run".into()],
            mounts: vec![Literal {
                host: PathBuf::from("/w/v"),
                target: "/run/secrets/x".into(),
                read_only: true,
            }],
        };
        let prefixed = command(
            Path::new("/usr/bin/unshare"),
            &run_as,
            true,
            Path::new("/w/keep"),
            &layout,
            Path::new("/t/level1-install"),
            &["--leader-elect".to_string()],
            &[("RUST_LOG".to_string(), "info".to_string())],
        );
        assert_eq!(prefixed.program, PathBuf::from("/usr/bin/unshare"));
        let args = prefixed.args;
        let after_script: Vec<&str> = args
            .iter()
            .skip_while(|a| *a != "pgdb-container-mounts")
            .skip(1)
            .map(String::as_str)
            .collect();
        assert_eq!(
            after_script,
            [
                "999",
                "998",
                "yes",
                "/w/keep",
                "1",
                "/run",
                "1",
                "/w/v",
                "/run/secrets/x",
                "ro",
                "--",
                "/usr/bin/env",
                "-i",
                "--",
                "RUST_LOG=info",
                "/t/level1-install",
                "--leader-elect"
            ]
        );
        assert_eq!(
            &args[..5],
            ["--mount", "--propagation", "private", "--", "/bin/sh"]
        );
    }

    /// Runs `prefixed` as the runtime spawns it (its arguments, only its
    /// environment, no stdin) through `cmd`: its program, or a wrapper
    /// whose last argument is its program.
    fn run(mut cmd: std::process::Command, prefixed: &Prefixed) -> std::process::Output {
        cmd.args(&prefixed.args)
            .env_clear()
            .envs(prefixed.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the command runs")
    }

    /// Runs `command`'s command line as the runtime spawns it, for a
    /// program whose environment points at a directory holding an `sh`
    /// (and asks for a library preloaded): the prefix runs with the fixed
    /// environment, never that `sh`, and the program, once the privileges
    /// are dropped, gets the container's environment.
    #[test]
    fn the_pod_s_environment_reaches_only_the_program_never_the_privileged_prefix() {
        use std::os::unix::fs::PermissionsExt;
        let root_ids = nix::unistd::geteuid().is_root().then_some((65534, 65534));
        let run_as = RunAs {
            ids: root_ids,
            name: "nobody".into(),
        };
        let unshare = probe(&run_as).expect("mount namespaces work here");
        let dir = std::env::temp_dir().join(format!("pgdb-mount-ns-env-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .expect("a temporary directory");
        let marker = dir.join("marker");
        let fake_sh = dir.join("sh");
        std::fs::write(
            &fake_sh,
            format!(
                "#!/bin/sh\n/usr/bin/touch {}\nexec /bin/sh \"$@\"\n",
                marker.display()
            ),
        )
        .expect("a temporary file");
        std::fs::set_permissions(&fake_sh, std::fs::Permissions::from_mode(0o755))
            .expect("a temporary file");
        let env = [
            ("PATH".to_string(), dir.to_string_lossy().into_owned()),
            (
                "LD_PRELOAD".to_string(),
                "/nonexistent/libpgdb.so".to_string(),
            ),
            ("GREETING".to_string(), "hello world".to_string()),
        ];
        let prefixed = command(
            &unshare,
            &run_as,
            true,
            &dir.join("keep"),
            &Layout::default(),
            Path::new("/bin/sh"),
            &[
                "-c".to_string(),
                "echo \"$GREETING|$PATH|$LD_PRELOAD|$(/usr/bin/id -u)\"".to_string(),
            ],
            &env,
        );
        let out = run(std::process::Command::new(&prefixed.program), &prefixed);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let marked = marker.exists();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(!marked, "the pod's `sh` ran before the drop:\n{stderr}");
        let uid = root_ids.map_or("0".to_string(), |(u, _)| u.to_string());
        assert_eq!(
            stdout.trim_end(),
            format!(
                "hello world|{}|/nonexistent/libpgdb.so|{uid}",
                dir.display()
            )
        );
        assert_eq!(
            prefixed.env,
            [(
                "PATH".to_string(),
                "/usr/sbin:/usr/bin:/sbin:/bin".to_string()
            )]
        );
    }

    /// The non-root mode (`unshare --user --map-root-user`), run by an
    /// unprivileged user (`nobody` when the tests run as root): the program
    /// is uid 0 of its user namespace, with no capability in any set.
    #[test]
    fn without_root_the_program_runs_with_every_capability_set_cleared() {
        let run_as = RunAs {
            ids: None,
            name: "nobody".into(),
        };
        let unshare = probe(&run_as).expect("user namespaces work here");
        let prefixed = command(
            &unshare,
            &run_as,
            false,
            Path::new("/nonexistent/keep"),
            &Layout::default(),
            Path::new("/bin/sh"),
            &[
                "-c".to_string(),
                "/usr/bin/id -u; /bin/grep ^Cap /proc/self/status".to_string(),
            ],
            &[],
        );
        let cmd = if nix::unistd::geteuid().is_root() {
            let mut cmd = std::process::Command::new("/usr/bin/setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(&prefixed.program);
            cmd
        } else {
            std::process::Command::new(&prefixed.program)
        };
        let out = run(cmd, &prefixed);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.first(), Some(&"0"), "{stdout}");
        let caps: Vec<(&str, &str)> = lines[1..]
            .iter()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k, v.trim()))
            .collect();
        assert_eq!(caps.len(), 5, "{stdout}");
        for (set, value) in caps {
            assert_eq!(value, "0000000000000000", "{set} is not empty:\n{stdout}");
        }
    }
}
