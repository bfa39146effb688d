//! The kubelet on the simulated runtime: a container that keeps exiting is
//! restarted with the crash-loop back-off (upstream `kuberuntime`'s
//! `doBackOff` over a `flowcontrol.Backoff` of 10 s doubling to 300 s;
//! shortened here through `SimulatedConfig::backoff`).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, PostParams};
use sandbox::{BackOffConfig, ExitRule, Sandbox, SandboxConfig, SimulatedConfig};
use serde_json::json;
use tokio::time::Instant;

/// A sandbox whose crash-loop back-off starts at `initial` and stops
/// doubling at `max`, with containers of images containing "crash" exiting
/// with code 1 after `runs`.
async fn crashing_sandbox(initial: Duration, max: Duration, runs: Duration) -> Sandbox {
    let sb = Sandbox::start(SandboxConfig {
        simulated: SimulatedConfig {
            backoff: BackOffConfig { initial, max },
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    sb.simulated_runtime()
        .expect("the simulated runtime")
        .add_exit_rule(ExitRule {
            image_contains: Some("crash".into()),
            pod_label: None,
            exit_code: 1,
            after: runs,
        });
    sb
}

fn crashing_pod(name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "crash:1"}]}}))
    .expect("a pod")
}

fn container(p: &Pod) -> Option<ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

/// What the pod looked like each time its container's restartCount rose,
/// and every CrashLoopBackOff message seen, polled every 10 ms until the
/// count reaches `restarts` (or `limit` passes).
struct Observed {
    /// When each restartCount (index + 1) was first seen, from the pod's
    /// creation.
    restarted_at: Vec<Duration>,
    back_off_messages: Vec<String>,
    /// The pod's phases once its container had restarted.
    phases: Vec<String>,
    last: ContainerStatus,
}

async fn observe_restarts(api: &Api<Pod>, name: &str, restarts: i32, limit: Duration) -> Observed {
    let created = Instant::now();
    let mut seen = Observed {
        restarted_at: vec![],
        back_off_messages: vec![],
        phases: vec![],
        last: ContainerStatus::default(),
    };
    loop {
        let pod = api.get(name).await.expect("the pod exists");
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        let restarted = !seen.restarted_at.is_empty();
        if let Some(phase) = phase.filter(|p| restarted && seen.phases.last() != Some(p)) {
            seen.phases.push(phase);
        }
        if let Some(c) = container(&pod) {
            while (seen.restarted_at.len() as i32) < c.restart_count {
                seen.restarted_at.push(created.elapsed());
            }
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
            if let Some(w) = waiting.filter(|w| w.reason.as_deref() == Some("CrashLoopBackOff")) {
                let message = w.message.clone().unwrap_or_default();
                if seen.back_off_messages.last() != Some(&message) {
                    seen.back_off_messages.push(message);
                }
            }
            seen.last = c.clone();
            if c.restart_count >= restarts {
                return seen;
            }
        }
        assert!(
            created.elapsed() < limit,
            "timed out after {limit:?} waiting for {restarts} restarts of pod {name}; seen: restarts at {:?}, back-offs {:?}, status {:?}",
            seen.restarted_at,
            seen.back_off_messages,
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Upstream: the first exit of a restartPolicy=Always container restarts
/// it at once; each later exit leaves it `waiting` with reason
/// CrashLoopBackOff (message "back-off 10s restarting failed
/// container=c pod=p_ns") for a back-off that doubles up to the cap, while
/// the pod stays Running and restartCount counts the restarts.
#[tokio::test]
async fn a_container_that_keeps_failing_waits_in_crash_loop_back_off_with_growing_gaps() {
    let initial = Duration::from_millis(300);
    let max = Duration::from_millis(1200);
    let runs = Duration::from_millis(50);
    let sb = crashing_sandbox(initial, max, runs).await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &crashing_pod("p"))
        .await
        .expect("the pod is created");
    let seen = observe_restarts(&api, "p", 5, Duration::from_secs(20)).await;
    // Restart n+1 comes at least `runs` plus the n-th back-off after restart n:
    // 300 ms, 600 ms, 1200 ms, then capped at 1200 ms.
    let gaps: Vec<Duration> = seen.restarted_at.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, wait) in gaps.iter().zip([300, 600, 1200, 1200]) {
        assert!(
            // Less 100 ms for when each count was seen.
            *gap >= Duration::from_millis(wait) + runs - Duration::from_millis(100),
            "gaps between restarts {gaps:?}: one is shorter than its back-off {wait} ms"
        );
    }
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "gaps do not grow: {gaps:?}"
    );
    assert!(
        gaps[3] < Duration::from_millis(2400),
        "the back-off doubled past its cap: {gaps:?}"
    );
    assert_eq!(
        seen.back_off_messages.first().map(String::as_str),
        Some("back-off 300ms restarting failed container=c pod=p_default"),
        "{:?}",
        seen.back_off_messages
    );
    assert!(
        seen.back_off_messages
            .iter()
            .any(|m| m.starts_with("back-off 600ms "))
            && seen
                .back_off_messages
                .iter()
                .any(|m| m.starts_with("back-off 1.2s ")),
        "{:?}",
        seen.back_off_messages
    );
    assert_eq!(seen.phases, ["Running"], "the pod's phases");
    let last = seen
        .last
        .last_state
        .and_then(|s| s.terminated)
        .expect("lastState.terminated after a restart");
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    sb.shutdown().await;
}

/// Upstream: the first exit is restarted at once, with no CrashLoopBackOff.
#[tokio::test]
async fn the_first_exit_of_a_container_is_restarted_at_once() {
    let sb = crashing_sandbox(
        Duration::from_secs(30),
        Duration::from_secs(60),
        Duration::from_millis(500),
    )
    .await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &crashing_pod("p"))
        .await
        .expect("the pod is created");
    let seen = observe_restarts(&api, "p", 1, Duration::from_secs(10)).await;
    assert!(
        seen.back_off_messages.is_empty(),
        "{:?}",
        seen.back_off_messages
    );
    // The second exit then waits the whole 30 s back-off.
    let pod = crate::common::eventually("pod p in CrashLoopBackOff", || {
        let api = api.clone();
        async move {
            let pod = api.get("p").await.ok()?;
            let waiting = container(&pod)?.state?.waiting?;
            (waiting.reason.as_deref() == Some("CrashLoopBackOff")).then_some(waiting)
        }
    })
    .await;
    assert_eq!(
        pod.message.as_deref(),
        Some("back-off 30s restarting failed container=c pod=p_default")
    );
    let c = container(&api.get("p").await.expect("the pod exists")).expect("a status");
    assert_eq!(c.restart_count, 1);
    assert!(!c.ready);
    sb.shutdown().await;
}

/// Upstream: a back-off entry not used for twice the cap has expired
/// (`flowcontrol.Backoff`'s `hasExpired`), so a container that ran that
/// long before failing is restarted at once again.
#[tokio::test]
async fn a_container_that_ran_longer_than_twice_the_cap_is_restarted_at_once() {
    let sb = crashing_sandbox(
        Duration::from_millis(200),
        Duration::from_millis(300),
        Duration::from_millis(700),
    )
    .await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    api.create(&PostParams::default(), &crashing_pod("p"))
        .await
        .expect("the pod is created");
    let seen = observe_restarts(&api, "p", 3, Duration::from_secs(10)).await;
    assert!(
        seen.back_off_messages.is_empty(),
        "{:?}",
        seen.back_off_messages
    );
    sb.shutdown().await;
}
