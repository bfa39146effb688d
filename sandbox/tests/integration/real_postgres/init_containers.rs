//! Init containers: each runs to success, in order, on the pod's volumes,
//! before any other container starts; a failing one is restarted (or fails
//! the pod under restartPolicy Never) and the others never start. Their
//! states, with termination messages, are in `initContainerStatuses`.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use serde_json::json;

use super::{create, start, wait_pod};

fn init_status<'a>(p: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    p.status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == name)
}

fn condition(p: &Pod, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

#[tokio::test]
async fn init_containers_run_in_order_to_success_before_the_containers_on_the_same_volumes() {
    let sb = start().await;
    create(
        &sb,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "inits"},
               "spec": {"restartPolicy": "Never",
                   "volumes": [{"name": "work", "emptyDir": {}}],
                   "initContainers": [
                       {"name": "first", "image": "postgres:15",
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                        "command": ["sh", "-c", "echo one > /work/order; echo 'first done' > /dev/termination-log"]},
                       {"name": "second", "image": "postgres:15",
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                        "command": ["sh", "-c", "sleep 1; echo two >> /work/order"]}],
                   "containers": [{"name": "main", "image": "postgres:15",
                       "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                       "command": ["sh", "-c", "echo three >> /work/order; tr '\\n' ' ' < /work/order > /dev/termination-log"]}]}}),
    )
    .await;
    let pod = wait_pod(&sb, "inits", "Succeeded", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    let first = init_status(&pod, "first").expect("the first init container's status");
    let terminated = first
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.message.as_deref(), Some("first done\n"));
    let main = &pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .expect("statuses")[0];
    let message = main
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.message.clone());
    assert_eq!(message.as_deref(), Some("one two three "));
    assert_eq!(condition(&pod, "Initialized").as_deref(), Some("True"));
    sb.shutdown().await;
}

#[tokio::test]
async fn a_failing_init_container_keeps_the_containers_from_starting() {
    let sb = start().await;
    let pod = |name: &str, policy: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"restartPolicy": policy,
                   "initContainers": [{"name": "check", "image": "postgres:15",
                       "command": ["sh", "-c", "echo 'refused' > /dev/termination-log; exit 3"]}],
                   "containers": [{"name": "main", "image": "postgres:15",
                       "command": ["sh", "-c", "sleep 60"]}]}})
    };
    create(&sb, pod("never", "Never")).await;
    create(&sb, pod("always", "Always")).await;
    let failed = wait_pod(&sb, "never", "Failed", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;
    let check = init_status(&failed, "check").expect("its status");
    let terminated = check
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!(
        (terminated.exit_code, terminated.message.as_deref()),
        (3, Some("refused\n"))
    );
    let waiting = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c[0].state.as_ref()?.waiting.as_ref()?.reason.clone())
    };
    assert_eq!(waiting(&failed).as_deref(), Some("PodInitializing"));
    // Under Always, it is restarted with back-off; the pod stays Pending.
    let restarted = wait_pod(&sb, "always", "a restarted init container", |p| {
        init_status(p, "check").is_some_and(|s| s.restart_count >= 1)
    })
    .await;
    assert_eq!(
        restarted.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert_eq!(
        condition(&restarted, "Initialized").as_deref(),
        Some("False")
    );
    assert_eq!(waiting(&restarted).as_deref(), Some("PodInitializing"));
    sb.shutdown().await;
}
