//! A pod's life in the runtime: the [`PodRuntime`] the kubelet calls
//! (start, status, stop, logs), then per pod: its directories, its
//! volumes (retried until claims are bound), waiting for a deleted pod's
//! processes to let go of a claim, and per container the restart loop
//! with the kubelet's back-offs (image pulls, crash loops) and restart
//! policies. What one run of a container does is `launch`'s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::launch::{Launch, run_process};
use super::pod_volumes::{reclaim_volumes, sync_projected_volumes};
use super::state::{
    Cell, CellState, Inner, PodCtx, PostgresRuntime, Wait, lock, until_stopped, wait,
};
use super::workdir::mkdir;
use crate::backoff::{CrashLoop, crash_loop_message};
use crate::cluster::Cluster;
use crate::runtime::{ContainerReport, ContainerState, PodRuntime};

impl PodRuntime for PostgresRuntime {
    fn exec(
        &self,
        uid: &str,
        container: &str,
        argv: &[String],
    ) -> std::result::Result<tokio::process::Command, String> {
        self.exec_command(uid, container, argv)
    }

    fn exec_running(&self, pgid: i32, running: bool) {
        if running {
            self.inner.register_group(pgid);
        } else {
            self.inner.unregister_group(pgid);
        }
    }

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
        let cell = |c: &Container, reason: &str| {
            Arc::new(Cell {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                log: dir.join("logs").join(format!("{}.log", c.name)),
                st: Mutex::new(CellState {
                    state: ContainerState::Waiting {
                        reason: reason.into(),
                    },
                    message: None,
                    last_state: None,
                    ready: false,
                    restart_count: 0,
                    pgid: None,
                    kill_reason: None,
                    exec: None,
                }),
            })
        };
        let init_cells: Vec<Arc<Cell>> = pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .map(|c| cell(c, "PodInitializing"))
            .collect();
        // As the kubelet reports them: main containers wait for the init
        // containers ("PodInitializing"), init containers start at once.
        let main_reason = if init_cells.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        if let Some(first) = init_cells.first() {
            first.lock().state = ContainerState::Waiting {
                reason: "ContainerCreating".into(),
            };
        }
        let cells = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| cell(c, main_reason))
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
            init_cells,
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
            .cloned();
        Some(
            ctx.all_cells()
                .map(|cell| {
                    let st = cell.lock();
                    let running = matches!(st.state, ContainerState::Running { .. });
                    let forced = forced
                        .as_ref()
                        .filter(|f| f.image.as_ref().is_none_or(|i| *i == cell.image))
                        .map(|f| f.ready);
                    ContainerReport {
                        name: cell.name.clone(),
                        image: cell.image.clone(),
                        state: st.state.clone(),
                        ready: running && forced.unwrap_or(st.ready),
                        restart_count: st.restart_count,
                        message: st.message.clone(),
                        last_state: st.last_state.clone(),
                        init: ctx.init_cells.iter().any(|c| Arc::ptr_eq(c, cell)),
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
                lock(&self.inner.stopping).insert(uid.to_string());
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
                // The first is the default container of `logs`.
                ctx.cells
                    .iter()
                    .chain(ctx.init_cells.iter())
                    .map(|c| c.name.clone())
                    .collect(),
                ctx.dir.join("logs"),
            ),
        );
    }

    fn logs(&self, uid: &str, container: Option<&str>) -> Option<String> {
        let (names, dir) = match lock(&self.inner.pods).get(uid) {
            Some(ctx) => (
                ctx.cells
                    .iter()
                    .chain(ctx.init_cells.iter())
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>(),
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

    fn volume_usage(&self, volume: &str) -> Option<crate::cluster::VolumeUsage> {
        PostgresRuntime::volume_usage(self, volume)
    }

    fn volume_resized(&self, volume: &str, capacity_bytes: u64) {
        PostgresRuntime::volume_resized(self, volume, capacity_bytes);
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

    fn stopped(&self, uid: &str) -> bool {
        !lock(&self.inner.stopping).contains(uid)
    }

    fn shutdown(&self) {
        self.inner.shutdown();
    }
}

pub(super) fn set_state(
    inner: &Inner,
    cell: &Cell,
    state: ContainerState,
    message: Option<String>,
) {
    let mut st = cell.lock();
    if st.state != state || st.message != message {
        st.state = state;
        st.message = message;
        drop(st);
        inner.changed();
    }
}

pub(super) async fn run_pod(inner: Arc<Inner>, ctx: Arc<PodCtx>) {
    run_pod_processes(&inner, &ctx).await;
    // Whichever way the pod ended (its containers exited, or it was deleted
    // while it waited for its volumes), its volumes are free now.
    {
        let mut releasing = lock(&inner.releasing);
        ctx.finished.store(true, Ordering::SeqCst);
        lock(&inner.stopping).remove(&ctx.uid);
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
    // The kubelet may now remove a deleted pod's object.
    inner.changed();
    if ctx.stopping() {
        // The container filesystem goes with the pod; logs stay readable.
        let _ = std::fs::remove_dir_all(ctx.dir.join("rootfs"));
        let _ = std::fs::remove_dir_all(ctx.dir.join("volumes"));
        let _ = std::fs::remove_dir_all(&ctx.sock);
    }
}

pub(super) async fn run_pod_processes(inner: &Arc<Inner>, ctx: &Arc<PodCtx>) {
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
        for cell in ctx.all_cells() {
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
                for cell in ctx.init_cells.first().into_iter().chain(ctx.cells.iter()) {
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
    let pod_spec = ctx.pod.spec.clone().unwrap_or_default();
    let volumes = Arc::new(volumes);
    // Init containers run one after the other, each to success, before any
    // other container starts: a failed one is restarted (with the crash-loop
    // back-off) unless the pod's restartPolicy is Never, which fails the pod.
    let init_policy = match restart_policy(&ctx).as_str() {
        "Never" => "Never",
        _ => "OnFailure",
    };
    let init_specs = pod_spec.init_containers.unwrap_or_default();
    for (spec, cell) in init_specs.into_iter().zip(ctx.init_cells.clone()) {
        run_container(
            inner.clone(),
            ctx.clone(),
            cell.clone(),
            spec,
            volumes.clone(),
            init_policy,
        )
        .await;
        let succeeded = matches!(
            cell.lock().state,
            ContainerState::Terminated { exit_code: 0, .. }
        );
        if !succeeded || ctx.stopping() {
            return;
        }
    }
    let policy = restart_policy(&ctx);
    let mut handles = vec![];
    for (spec, cell) in pod_spec.containers.into_iter().zip(ctx.cells.clone()) {
        let policy = policy.clone();
        let (inner, ctx, volumes) = (inner.clone(), ctx.clone(), volumes.clone());
        handles.push(tokio::spawn(async move {
            run_container(inner, ctx, cell, spec, volumes, &policy).await
        }));
    }
    for h in handles {
        let _ = h.await;
    }
}

pub(super) fn restart_policy(ctx: &PodCtx) -> String {
    ctx.pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into())
}

/// Sleeps, or returns true early when the pod is being stopped.
pub(super) async fn sleep_or_stop(ctx: &PodCtx, d: Duration) -> bool {
    let mut rx = ctx.stop.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(d) => ctx.stopping(),
        _ = until_stopped(&mut rx) => true,
    }
}

pub(super) async fn run_container(
    inner: Arc<Inner>,
    ctx: Arc<PodCtx>,
    cell: Arc<Cell>,
    spec: Container,
    volumes: Arc<HashMap<String, PathBuf>>,
    policy: &str,
) {
    let mut crash_loop = CrashLoop::new(inner.config.backoff);
    let mut pulls = CrashLoop::new(inner.config.backoff);
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
                    let pull_backoff = pulls.next_attempt();
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
                super::events::record(
                    &inner,
                    &ctx,
                    "Simulated",
                    &format!("container {} is simulated, nothing runs: {why}", spec.name),
                );
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
                    if sleep_or_stop(&ctx, inner.config.backoff.initial).await {
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
            && match policy {
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
        // The first exit (or the first after a long run) restarts at once,
        // later ones wait a doubling back-off.
        let delay = crash_loop.after_exit(started.elapsed());
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
                st.message = Some(crash_loop_message(delay, &cell.name, &ctx.name, &ctx.ns));
            }
        }
        inner.changed();
        if sleep_or_stop(&ctx, delay).await {
            return;
        }
    }
}
