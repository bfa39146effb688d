//! Running a command in a running container's context, as `kubectl exec`
//! asks a kubelet to: the container's user, its environment (with the
//! values translated as at its start), its working directory and its
//! mount paths.
//!
//! What it models: a container's view as the real runtime builds it. The
//! command and its arguments are translated like the container's own
//! (`localhost`, Service names after `-h`/`--host`, mount paths such as
//! `/etc/postgresql/...` become their host paths), the program is found on
//! the container's `PATH` (or at its translated path), and it runs as the
//! user every process of the pod runs as (`postgres` when the sandbox runs
//! as root), in a process group of its own. `PGHOST`, when the container
//! sets none, is the pod's socket directory: the image's server listens
//! on `/var/run/postgresql`, which the sandbox keeps per pod under
//! `<work>/run/<n>`, so `psql -U postgres` reaches the pod's own server
//! over its Unix socket, as in the container.
//!
//! Where it stops: there are no namespaces, so an exec'd process, like the
//! container's own, sees the host's filesystem with that user's
//! permissions; only the paths above are translated (a path built at run
//! time, or read from a file, is the host's). It never runs as root, nor
//! as any user the container does not run as. Only a container whose
//! process is running has a context: a simulated container, one waiting
//! to (re)start, or a finished one cannot be exec'd into.

use std::path::PathBuf;

use super::rewrite;
use super::state::{PostgresRuntime, lock};

impl PostgresRuntime {
    /// A command running `argv` in container `container` of pod `uid` (see
    /// the module docs), or why there is none, in the kubelet's words.
    pub(crate) fn exec_command(
        &self,
        uid: &str,
        container: &str,
        argv: &[String],
    ) -> std::result::Result<tokio::process::Command, String> {
        let inner = &self.inner;
        let ctx = lock(&inner.pods)
            .get(uid)
            .cloned()
            .ok_or_else(|| format!("failed to find sandboxID for pod with uid {uid}"))?;
        let cell = ctx
            .all_cells()
            .find(|c| c.name == container)
            .cloned()
            .ok_or_else(|| format!("container {container} is not valid for pod {}", ctx.name))?;
        let exec = cell.lock().exec.clone().ok_or_else(|| {
            format!(
                "container {container} of pod {} runs no process the sandbox can exec into (it is simulated, waiting to start or finished)",
                ctx.name
            )
        })?;
        let first = argv
            .first()
            .ok_or_else(|| "you must specify at least one command for the container".to_string())?;
        let cluster = inner
            .cluster()
            .ok_or_else(|| "the control plane is gone".to_string())?;
        let lookup = |name: &str| inner.lookup(&cluster, &ctx, name);
        let mut args = vec![];
        for (i, a) in argv.iter().enumerate().skip(1) {
            let after_host_flag = matches!(argv[i - 1].as_str(), "-h" | "--host");
            args.push(rewrite::rewrite_paths(
                &rewrite::rewrite_hosts(a, after_host_flag, &lookup),
                &exec.mounts,
            ));
        }
        let mut env = exec.env.clone();
        if !env.iter().any(|(k, _)| k == "PGHOST") {
            env.push(("PGHOST".into(), ctx.sock.to_string_lossy().into_owned()));
        }
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let program = if first.contains('/') {
            PathBuf::from(rewrite::rewrite_paths(first, &exec.mounts))
        } else {
            std::env::split_paths(&path)
                .map(|d| d.join(first))
                .find(|p| p.is_file())
                .ok_or_else(|| format!("exec: \"{first}\": executable file not found in $PATH"))?
        };
        let run_as = inner.run_as.as_ref().map_err(Clone::clone)?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg0(first)
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(&exec.cwd)
            .kill_on_drop(true);
        run_as.apply(&mut cmd);
        Ok(cmd)
    }
}
