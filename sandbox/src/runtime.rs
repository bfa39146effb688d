//! The pod runtime: what runs a pod's containers (the kubelet's container
//! runtime interface, reduced to what the control plane needs).
//!
//! The kubelet controller hands each pod bound to the sandbox node to a
//! [`PodRuntime`] and turns what the runtime reports (started, ready,
//! exited with a code, restarted) into the pod's status. The trait is
//! non-blocking so that a runtime which runs real processes can do its work
//! on its own tasks and call [`PodRuntime::changed`]'s `Notify` when there
//! is news. [`SimulatedRuntime`] runs nothing: containers start at once or
//! after a configured delay, become ready, and exit only when a test rule
//! says so; an exited container is restarted per the pod's restartPolicy
//! with the kubelet's crash-loop back-off ([`crate::backoff`]), as the
//! real runtime does.
//!
//! The trait and its reports are declared with the control plane that
//! holds a runtime ([`crate::cluster::pod_runtime`]) and re-exported here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backoff::{BackOffConfig, CrashLoop, crash_loop_message};
pub use crate::cluster::pod_runtime::{ContainerReport, ContainerState, PodRuntime, VolumeUsage};

/// Which simulated containers exit, and how.
#[derive(Debug, Clone)]
pub struct ExitRule {
    /// Matches containers whose image contains this text (any if `None`).
    pub image_contains: Option<String>,
    /// Matches pods with this label (any if `None`).
    pub pod_label: Option<(String, String)>,
    pub exit_code: i32,
    /// How long the container runs before exiting.
    pub after: Duration,
}

/// Timing of the simulated runtime.
#[derive(Debug, Clone)]
pub struct SimulatedConfig {
    /// Time from `start` to containers running.
    pub start_delay: Duration,
    /// Time from running to ready.
    pub ready_delay: Duration,
    /// How long containers of run-to-completion pods (restartPolicy Never or
    /// OnFailure) run before exiting 0 when no rule matches.
    pub job_duration: Duration,
    /// The crash-loop back-off between restarts (the kubelet's: 10 s
    /// doubling to five minutes).
    pub backoff: BackOffConfig,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        SimulatedConfig {
            start_delay: Duration::ZERO,
            ready_delay: Duration::ZERO,
            job_duration: Duration::from_millis(10),
            backoff: BackOffConfig::default(),
        }
    }
}

#[derive(Debug)]
struct SimContainer {
    name: String,
    image: String,
    /// When the current run starts (or started).
    started: Instant,
    started_wall: String,
    restart_count: i32,
    exit: Option<(i32, Duration)>,
    finished: Option<(i32, String)>,
    crash_loop: CrashLoop,
    /// The wait of the back-off the container is in until `started`.
    backing_off: Option<Duration>,
    /// The previous run's termination, once there was one.
    last_state: Option<ContainerState>,
}

#[derive(Debug)]
struct SimPod {
    namespace: String,
    name: String,
    restart_policy: String,
    containers: Vec<SimContainer>,
}

#[derive(Default)]
struct SimState {
    pods: HashMap<String, SimPod>,
    rules: Vec<ExitRule>,
    /// Readiness forced by a test: (namespace, name) → ready.
    ready_override: HashMap<(String, String), bool>,
}

/// Pods whose reports may have changed since the kubelet last asked.
#[derive(Default)]
struct Dirty {
    uids: HashSet<String>,
    /// Something changed that is not tied to one uid (a forced readiness).
    all: bool,
}

/// A runtime that pretends: see the module docs.
pub struct SimulatedRuntime {
    config: SimulatedConfig,
    state: Mutex<SimState>,
    notify: Arc<Notify>,
    dirty: Arc<Mutex<Dirty>>,
}

fn mark(dirty: &Mutex<Dirty>, uid: Option<&str>) {
    // Plain set updates; a poisoned lock still holds valid uids.
    let mut d = dirty.lock().unwrap_or_else(|e| e.into_inner());
    match uid {
        Some(u) => {
            d.uids.insert(u.to_string());
        }
        None => d.all = true,
    }
}

impl SimulatedRuntime {
    pub fn new(config: SimulatedConfig) -> SimulatedRuntime {
        SimulatedRuntime {
            config,
            state: Mutex::new(SimState::default()),
            notify: Arc::new(Notify::new()),
            dirty: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // The state is plain data updated in single steps; a panic elsewhere
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Containers matching the rule exit with its code (applies to pods
    /// started after the call).
    pub fn add_exit_rule(&self, rule: ExitRule) {
        self.lock().rules.push(rule);
    }

    pub fn clear_exit_rules(&self) {
        self.lock().rules.clear();
    }

    /// Forces a pod's readiness (`None` returns it to the simulated default).
    pub fn set_ready(&self, namespace: &str, name: &str, ready: Option<bool>) {
        let key = (namespace.to_string(), name.to_string());
        let mut s = self.lock();
        match ready {
            Some(r) => s.ready_override.insert(key, r),
            None => s.ready_override.remove(&key),
        };
        drop(s);
        mark(&self.dirty, None);
        self.notify.notify_one();
    }

    /// Wakes the kubelet after `d`, when a timed transition of pod `uid`
    /// is due.
    fn wake_after(&self, uid: &str, d: Duration) {
        if d.is_zero() {
            return;
        }
        let n = self.notify.clone();
        let dirty = self.dirty.clone();
        let uid = uid.to_string();
        // Outside a runtime (unit tests) transitions are simply polled.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                tokio::time::sleep(d).await;
                mark(&dirty, Some(&uid));
                n.notify_one();
            });
        }
    }
}

fn exit_for(
    rules: &[ExitRule],
    image: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<(i32, Duration)> {
    rules
        .iter()
        .find(|r| {
            r.image_contains
                .as_ref()
                .is_none_or(|i| image.contains(i.as_str()))
                && r.pod_label
                    .as_ref()
                    .is_none_or(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|r| (r.exit_code, r.after))
}

/// The kubelet's verdict on a container's image reference: `None` when it
/// parses (`[registry[:port]/]repository[:tag][@digest]`, the repository in
/// lowercase), else the message of the `InvalidImageName` waiting state. A
/// container with such an image is never created, so never ready.
pub fn invalid_image_name(image: &str) -> Option<String> {
    static REFERENCE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        // A constant pattern, exercised by the tests.
        regex::Regex::new(concat!(
            r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?",
            r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*",
            r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?",
            r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$",
        ))
        .expect("the image reference pattern is a valid regex")
    });
    (image.len() > 255 || !REFERENCE.is_match(image)).then(|| {
        format!(
            "Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: invalid reference format"
        )
    })
}

impl PodRuntime for SimulatedRuntime {
    fn start(&self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let restart_policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut s = self.lock();
        if s.pods.contains_key(&uid) {
            return;
        }
        let now = Instant::now();
        let containers = spec
            .containers
            .iter()
            .map(|c| {
                let image = c.image.clone().unwrap_or_default();
                let exit = exit_for(&s.rules, &image, &labels).or_else(|| {
                    (restart_policy != "Always").then_some((0, self.config.job_duration))
                });
                SimContainer {
                    name: c.name.clone(),
                    image,
                    started: now + self.config.start_delay,
                    started_wall: String::new(),
                    restart_count: 0,
                    exit,
                    finished: None,
                    crash_loop: CrashLoop::new(self.config.backoff),
                    backing_off: None,
                    last_state: None,
                }
            })
            .collect::<Vec<_>>();
        let exits: Vec<Duration> = containers
            .iter()
            .filter_map(|c| c.exit.map(|e| e.1))
            .collect();
        s.pods.insert(
            uid.clone(),
            SimPod {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                restart_policy,
                containers,
            },
        );
        drop(s);
        self.wake_after(&uid, self.config.start_delay);
        self.wake_after(&uid, self.config.start_delay + self.config.ready_delay);
        for e in exits {
            self.wake_after(&uid, self.config.start_delay + e);
        }
        mark(&self.dirty, Some(&uid));
        self.notify.notify_one();
    }

    fn status(&self, uid: &str) -> Option<Vec<ContainerReport>> {
        let now = Instant::now();
        let mut s = self.lock();
        let override_ready = {
            let p = s.pods.get(uid)?;
            s.ready_override
                .get(&(p.namespace.clone(), p.name.clone()))
                .copied()
        };
        let p = s.pods.get_mut(uid)?;
        let (namespace, pod_name) = (p.namespace.clone(), p.name.clone());
        let mut wakes = vec![];
        let reports = p
            .containers
            .iter_mut()
            .map(|c| {
                let report = |c: &SimContainer, state, ready, message| ContainerReport {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    state,
                    ready,
                    restart_count: c.restart_count,
                    message,
                    last_state: c.last_state.clone(),
                    init: false,
                };
                if let Some(message) = invalid_image_name(&c.image) {
                    let waiting = ContainerState::Waiting {
                        reason: "InvalidImageName".into(),
                    };
                    return report(c, waiting, false, Some(message));
                }
                if now < c.started {
                    return match c.backing_off {
                        Some(wait) => report(
                            c,
                            ContainerState::Waiting {
                                reason: "CrashLoopBackOff".into(),
                            },
                            false,
                            Some(crash_loop_message(wait, &c.name, &pod_name, &namespace)),
                        ),
                        None => report(
                            c,
                            ContainerState::Waiting {
                                reason: "ContainerCreating".into(),
                            },
                            false,
                            None,
                        ),
                    };
                }
                if c.backing_off.take().is_some() {
                    // The back-off is over: the container runs again.
                    c.restart_count += 1;
                    c.started_wall.clear();
                }
                if c.started_wall.is_empty() {
                    c.started_wall = crate::meta::now();
                }
                if c.finished.is_none()
                    && let Some((code, after)) = c.exit
                    && now >= c.started + after
                {
                    let terminated = ContainerState::Terminated {
                        exit_code: code,
                        reason: if code == 0 { "Completed" } else { "Error" }.into(),
                        started_at: c.started_wall.clone(),
                        finished_at: crate::meta::now(),
                        message: None,
                    };
                    let restart = match p.restart_policy.as_str() {
                        "Always" => true,
                        "OnFailure" => code != 0,
                        _ => false,
                    };
                    if restart {
                        // The first exit restarts at once, later ones wait
                        // a doubling back-off, as on a kubelet.
                        let wait = c.crash_loop.after_exit(after);
                        c.last_state = Some(terminated);
                        c.started = now + wait;
                        c.started_wall.clear();
                        wakes.extend([wait, wait + after, wait + self.config.ready_delay]);
                        if wait.is_zero() {
                            c.restart_count += 1;
                            c.started_wall = crate::meta::now();
                        } else {
                            c.backing_off = Some(wait);
                            return report(
                                c,
                                ContainerState::Waiting {
                                    reason: "CrashLoopBackOff".into(),
                                },
                                false,
                                Some(crash_loop_message(wait, &c.name, &pod_name, &namespace)),
                            );
                        }
                    } else {
                        c.finished = Some((code, crate::meta::now()));
                    }
                }
                if let Some((code, at)) = &c.finished {
                    let state = ContainerState::Terminated {
                        exit_code: *code,
                        reason: if *code == 0 {
                            "Completed".into()
                        } else {
                            "Error".into()
                        },
                        started_at: c.started_wall.clone(),
                        finished_at: at.clone(),
                        message: None,
                    };
                    return report(c, state, false, None);
                }
                let ready = override_ready.unwrap_or(now >= c.started + self.config.ready_delay);
                let state = ContainerState::Running {
                    started_at: c.started_wall.clone(),
                };
                report(c, state, ready, None)
            })
            .collect();
        drop(s);
        for w in wakes {
            self.wake_after(uid, w);
        }
        Some(reports)
    }

    fn stop(&self, uid: &str) {
        self.lock().pods.remove(uid);
    }

    fn logs(&self, uid: &str, container: Option<&str>) -> Option<String> {
        let s = self.lock();
        let p = s.pods.get(uid)?;
        let c = match container {
            Some(name) => p.containers.iter().find(|c| c.name == name)?,
            None => p.containers.first()?,
        };
        Some(format!(
            "simulated container {} of pod {}/{} (image {})\nstarted\nready\n",
            c.name, p.namespace, p.name, c.image
        ))
    }

    fn changed(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    fn changed_pods(&self) -> Option<Vec<String>> {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        let uids: Vec<String> = d.uids.drain().collect();
        if std::mem::take(&mut d.all) {
            return None;
        }
        Some(uids)
    }
}

#[cfg(test)]
mod image_reference_tests {
    use super::invalid_image_name;

    #[test]
    fn a_malformed_image_reference_is_an_invalid_image_name_as_on_a_kubelet() {
        for good in [
            "postgres:16",
            "postgres",
            "docker.io/library/postgres:16.4-bookworm",
            "localhost:5000/team/postgres:17",
            "postgres@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(invalid_image_name(good), None, "{good:?}");
        }
        for bad in [
            "Postgres:16",
            "postgres::16",
            "postgres:16 ",
            "",
            "-x",
            "a/:b",
        ] {
            let message = invalid_image_name(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(message.contains("invalid reference format"), "{message}");
        }
    }
}
