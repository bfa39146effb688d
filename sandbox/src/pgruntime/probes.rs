//! Startup, readiness and liveness probes of a running container, as the
//! kubelet runs them: exec (the command translated like the container's),
//! tcpSocket and httpGet, with thresholds and periods (capped by
//! [`super::PostgresConfig::max_probe_period`]). Readiness sets the
//! container's `ready`; a failed startup or liveness probe kills it, and
//! `lifecycle` restarts it.
//!
//! The cap makes probes follow a container promptly, but it must not kill
//! a slow starter a node would have let start: until a container first
//! passes its liveness probe, that probe kills it no sooner after liveness
//! probing began than the kubelet could, `initialDelaySeconds +
//! (failureThreshold - 1) * periodSeconds` as written (20 s for a 10 s
//! period and three failures, where the capped period alone would allow
//! 2 s). Once it has passed, failures are counted at the capped pace.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::time::Instant;

use super::process;
use super::rewrite::{self, Mounts};
use super::state::{Cell, Inner, PodCtx};

/// One probe's settings, with the sandbox's cap on the period.
pub(super) struct ProbeRun {
    probe: Probe,
    period: Duration,
    failures: i32,
    successes: i32,
    /// Whether the probe has succeeded once.
    passed: bool,
}

impl ProbeRun {
    pub(super) fn new(probe: Probe, cap: Option<Duration>) -> ProbeRun {
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        ProbeRun {
            period: cap.map_or(period, |c| period.min(c)),
            probe,
            failures: 0,
            successes: 0,
            passed: false,
        }
    }
    /// The soonest after probing began that the kubelet, probing at the
    /// written period, could see the failure threshold reached.
    pub(super) fn soonest_failure(&self) -> Duration {
        let period = self.probe.period_seconds.unwrap_or(10).max(1) as u64;
        let delay = self.probe.initial_delay_seconds.unwrap_or(0).max(0) as u64;
        Duration::from_secs(delay + (self.failure_threshold() as u64 - 1) * period)
    }
    pub(super) fn failure_threshold(&self) -> i32 {
        self.probe.failure_threshold.unwrap_or(3).max(1)
    }
    pub(super) fn success_threshold(&self) -> i32 {
        self.probe.success_threshold.unwrap_or(1).max(1)
    }
}

/// Runs the startup, readiness and liveness probes of a running container:
/// readiness sets `ready`; a startup or liveness probe failing its threshold
/// kills the container (it is then restarted per the restartPolicy).
pub(super) async fn run_probes(
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
    // When liveness probing began (with the container, or once started).
    let mut live_since = begin;
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
                live_since = Instant::now();
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
                    p.passed = true;
                } else {
                    p.failures += 1;
                    let too_soon = !p.passed && live_since.elapsed() < p.soonest_failure();
                    if p.failures >= p.failure_threshold() && !too_soon {
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
pub(super) fn probe_port(
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
pub(super) async fn probe_once(
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
pub(super) async fn http_get(host: &str, port: u16, path: &str) -> bool {
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
