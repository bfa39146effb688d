//! Launching a container: working out what it runs (a real program, with
//! the image's entrypoint, arguments, environment, working directory and
//! paths translated into host terms, or a simulation for images the
//! sandbox cannot run), then running that process until it exits or its
//! pod stops, with its log, termination message and probes. Restarts are
//! `lifecycle`'s; the environment is `env`'s. The operator's image runs its
//! workspace binary ([`super::operator_image`]) in a mount namespace of its
//! own ([`super::mount_ns`]); the security context is checked first
//! ([`super::security`]).

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Container;
use nix::sys::signal::Signal;

use super::binaries;
use super::env::{expand, kubernetes_service_env, resolve_env};
use super::mount_ns;
use super::operator_image;
use super::probes::run_probes;
use super::process::{self, RunAs};
use super::projection;
use super::rewrite::{self, Mounts};
use super::security;
use super::state::{Cell, Inner, PodCtx, Wait, grace, lock, until_stopped, wait};
use super::termination;
use crate::runtime::ContainerState;

/// Commands run for real when a container's command names them.
const REAL_COMMANDS: [&str; 14] = [
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "psql",
    "pg_basebackup",
    "pg_rewind",
    "pg_upgrade",
    "pg_isready",
    "initdb",
    "pg_ctl",
    "postgres",
    "sh",
    "bash",
    "docker-entrypoint.sh",
];
/// What a container runs.
pub(super) enum Launch {
    /// A real process.
    Real(Process),
    /// Nothing to run: the container is simulated.
    Simulated { why: String },
}

/// A container's process: program and arguments, already translated.
pub(super) struct Process {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    /// The signal that stops it gracefully (SIGINT for the server, as
    /// the image's STOPSIGNAL says).
    stop_signal: Signal,
    /// Whether the image is PostgreSQL's: a script that `exec`s the server
    /// (`exec docker-entrypoint.sh "$@"`) is stopped with the image's
    /// STOPSIGNAL once the server has replaced it.
    postgres_image: bool,
    /// The data directory, to find a postmaster that left the group.
    pgdata: Option<PathBuf>,
    mounts: Mounts,
    /// The host file behind the termination message path.
    termination: PathBuf,
    /// Whether it runs in a mount namespace of its own, started as root
    /// (when the sandbox is) and dropping to the run-as user inside.
    own_namespace: bool,
    /// The environment `program` is spawned with, when it is not the
    /// container's `env`: the namespace's prefix runs with a fixed one and
    /// hands the container's on only after dropping the privileges.
    spawn_env: Option<Vec<(String, String)>>,
}
impl Inner {
    /// The server binaries of a version (exactly the minor when the tag
    /// names one, any of the major's otherwise), staged where the run-as
    /// user can reach them and shown to run as that user and to report the
    /// version: binaries that cannot are an image that cannot be pulled,
    /// never replaced by others on the `PATH`.
    pub(super) fn server_bin(
        &self,
        major: u32,
        minor: Option<u32>,
    ) -> std::result::Result<PathBuf, String> {
        if let Some(bin) = lock(&self.staged).get(&(major, minor)) {
            return Ok(bin.clone());
        }
        let found = self.config.binaries.server_for(major, minor)?;
        let bin = match &self.run_as {
            Ok(RunAs {
                ids: Some(ids),
                name,
            }) => {
                let staged = binaries::stage(&found, &self.stage)?;
                let postgres = staged.join("postgres");
                match binaries::reported_version(&postgres, Some(*ids)) {
                    Ok((ma, mi)) if ma == major && minor.is_none_or(|m| m == mi) => staged,
                    Ok((ma, mi)) => {
                        return Err(format!(
                            "{} reports PostgreSQL {ma}.{mi}, not the tag's version",
                            postgres.display()
                        ));
                    }
                    Err(e) => return Err(format!("user {name} cannot run the server: {e}")),
                }
            }
            _ => found,
        };
        // Only what was found is remembered: binaries installed while the
        // sandbox runs are picked up at the next pull attempt.
        lock(&self.staged).insert((major, minor), bin.clone());
        Ok(bin)
    }

    /// The binary of an operator image (`pgdb-operator:<crate>`), staged
    /// where the run-as user can run it, or the message of an image that
    /// cannot be pulled.
    pub(super) fn operator_bin(
        &self,
        image: &str,
        krate: &str,
    ) -> std::result::Result<PathBuf, String> {
        let dirs = operator_image::bin_dirs(self.config.operator_bin_dir.as_deref());
        let found = operator_image::find(image, krate, &dirs)?;
        match &self.run_as {
            Ok(RunAs { ids: Some(_), .. }) => operator_image::stage(&found, &self.stage),
            _ => Ok(found),
        }
    }

    /// The `unshare` that gives a container a mount namespace of its own,
    /// shown to work the first time one is needed, or why there is none.
    fn mount_namespaces(&self, run_as: &RunAs) -> std::result::Result<PathBuf, String> {
        self.mount_ns
            .get_or_init(|| mount_ns::probe(run_as))
            .clone()
    }

    /// Works out what a container runs, with everything translated.
    pub(super) fn plan(
        &self,
        ctx: &PodCtx,
        spec: &Container,
        volumes: &HashMap<String, PathBuf>,
    ) -> std::result::Result<Launch, Wait> {
        let c = self
            .cluster()
            .ok_or_else(|| wait("ContainerCreating", "the control plane is gone"))?;
        let image = spec.image.clone().unwrap_or_default();
        if let Some(message) = crate::runtime::invalid_image_name(&image) {
            return Err(wait("InvalidImageName", message));
        }
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
        let operator_bin = match operator_image::crate_of(&image) {
            Some(krate) => Some(
                self.operator_bin(&image, krate)
                    .map_err(|m| wait("ErrImagePull", m))?,
            ),
            None => None,
        };
        // The kubelet checks the user once the image is there, before it
        // creates the container.
        let image_uid = if operator_bin.is_some() {
            Some(operator_image::IMAGE_UID)
        } else if postgres_image {
            Some(0)
        } else {
            None
        };
        security::verify_run_as_non_root(&ctx.pod, spec, image_uid)
            .map_err(|m| wait("CreateContainerConfigError", m))?;
        let env = resolve_env(&c, ctx, spec)?;
        let mut argv: Vec<String> = match (&spec.command, &spec.args) {
            (Some(cmd), args) if !cmd.is_empty() => {
                cmd.iter().chain(args.iter().flatten()).cloned().collect()
            }
            (_, args) if operator_bin.is_some() => {
                std::iter::once(operator_image::ENTRYPOINT.to_string())
                    .chain(args.iter().flatten().cloned())
                    .collect()
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
        // The operator's image holds its binary and nothing else (distroless).
        if operator_bin.is_some() && argv[0] != operator_image::ENTRYPOINT {
            return Err(wait(
                "CreateContainerError",
                format!(
                    "exec: {:?}: executable file not found in $PATH (image {image:?} holds only {})",
                    argv[0],
                    operator_image::ENTRYPOINT
                ),
            ));
        }
        if operator_bin.is_none() && !REAL_COMMANDS.contains(&program_name.as_str()) {
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
        let pod_ip = ctx.ip.to_string();
        let translate = |s: &str, whole_is_host: bool| {
            let hosts = rewrite::rewrite_hosts(s, whole_is_host, &lookup);
            rewrite::rewrite_paths(&rewrite::rewrite_wildcards(&hosts, &pod_ip), &mounts)
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
        // The image's entrypoint is on its PATH, so a script run instead of
        // it can still `exec docker-entrypoint.sh "$@"`.
        if postgres_image && let Some(dir) = self.entrypoint.parent() {
            path_dirs.push(dir.to_path_buf());
        }
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
        // The API server's Service, after the translation (its address is
        // the host's, not the pod's `localhost`); the container's own
        // variables win, as on a node.
        if let Some(addr) = c.auth.in_cluster_endpoint() {
            for (k, v) in kubernetes_service_env(addr) {
                if !full_env.iter().any(|(name, _)| *name == k) {
                    full_env.push((k, v));
                }
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
        let (program, args) = if let Some(bin) = &operator_bin {
            (bin.clone(), args)
        } else if program_name == "docker-entrypoint.sh" {
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
        // A program that reads its mount paths literally gets them at those
        // paths, in a mount namespace of its own.
        let own_namespace = operator_bin.is_some();
        let (program, args, spawn_env) = if own_namespace {
            // Checked before anything runs: the script must not follow a
            // path out of the place it names.
            for m in spec.volume_mounts.iter().flatten() {
                mount_ns::check_mount_path(&m.mount_path).map_err(|e| {
                    wait(
                        "CreateContainerConfigError",
                        format!("volume mount {:?}: {e}", m.name),
                    )
                })?;
            }
            let unshare = self
                .mount_namespaces(run_as)
                .map_err(|m| wait("CreateContainerError", m))?;
            let literal: Vec<(String, PathBuf, bool)> = spec
                .volume_mounts
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, m)| {
                    let host = ctx.mount_host(volumes, &spec.name, i, m)?;
                    Some((m.mount_path.clone(), host, m.read_only == Some(true)))
                })
                .collect();
            let layout = mount_ns::layout(&literal, &mount_ns::resolve_on_host, &|p| {
                Path::new(p).exists()
            })
            .map_err(|m| wait("CreateContainerError", m))?;
            let prefixed = mount_ns::command(
                &unshare,
                run_as,
                security::no_new_privileges(spec),
                &ctx.dir.join("mountns").join(&spec.name),
                &layout,
                &program,
                &args,
                &full_env,
            );
            (prefixed.program, prefixed.args, Some(prefixed.env))
        } else {
            (program, args, None)
        };
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
            postgres_image,
            pgdata,
            mounts,
            termination,
            own_namespace,
            spawn_env,
        }))
    }
}

/// Runs one process of a container until it exits or the pod stops;
/// returns (exit code, reason, startedAt, termination message).
pub(super) async fn run_process(
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
        postgres_image,
        pgdata,
        mounts,
        termination,
        own_namespace,
        spawn_env,
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
        .envs(
            spawn_env
                .as_ref()
                .unwrap_or(&env)
                .iter()
                .map(|(k, v)| (k, v)),
        )
        .current_dir(&cwd)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    if own_namespace {
        // The namespace's script drops to the run-as user itself.
        cmd.process_group(0);
    } else {
        run_as.apply(&mut cmd);
    }
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
        st.exec = Some(Arc::new(super::state::ExecContext {
            env: env.clone(),
            mounts: mounts.clone(),
            cwd: cwd.clone(),
        }));
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
            // A script that exec'd the server is the server now: the image's
            // STOPSIGNAL (SIGINT, a fast shutdown) reaches it, as on a node.
            let signal = if postgres_image && process::runs_postgres(pid) {
                Signal::SIGINT
            } else {
                stop_signal
            };
            process::signal_pid(pid, signal);
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
    st.exec = None;
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
