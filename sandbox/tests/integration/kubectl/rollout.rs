//! `kubectl rollout status|history|undo`, `kubectl scale` and `kubectl get
//! deploy,rs` against the sandbox's Deployment and ReplicaSet controllers,
//! as a learner runs them on the operator's Deployment.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use sandbox::{SandboxConfig, SimulatedConfig};

use super::{Cluster, cluster_on};

/// A sandbox whose pods take a moment to become Ready, so a rollout
/// takes observable time.
async fn slow_pods() -> Cluster {
    cluster_on(SandboxConfig {
        simulated: SimulatedConfig {
            ready_delay: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// `kubectl create deployment web --image=<image> --replicas=<n>`.
async fn create_web(k: &Cluster, image: &str, replicas: u32) {
    k.ok(&[
        "create",
        "deployment",
        "web",
        &format!("--image={image}"),
        &format!("--replicas={replicas}"),
    ])
    .await;
}

async fn web(k: &Cluster) -> Deployment {
    Api::<Deployment>::namespaced(k.sb.client(), "default")
        .get("web")
        .await
        .expect("the Deployment exists")
}

/// The images of the pods that are not terminating.
async fn live_images(k: &Cluster) -> Vec<String> {
    Api::<Pod>::namespaced(k.sb.client(), "default")
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods list")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            p.spec.expect("a spec").containers[0]
                .image
                .clone()
                .unwrap_or_default()
        })
        .collect()
}

/// Upstream: `kubectl rollout status` returns only once the new template's
/// pods are all updated and available and no old pod is left, then says
/// it was successfully rolled out.
#[tokio::test]
async fn rollout_status_returns_once_the_new_template_is_available() {
    let k = slow_pods().await;
    create_web(&k, "nginx:1", 3).await;
    let out = k
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    k.ok(&["set", "image", "deployment/web", "nginx=nginx:2"])
        .await;
    let out = k
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let d = web(&k).await;
    let s = d.status.expect("a status");
    assert_eq!(
        (s.updated_replicas, s.available_replicas, s.replicas),
        (Some(3), Some(3), Some(3)),
        "rollout status returned before the rollout finished"
    );
    assert_eq!(live_images(&k).await, ["nginx:2"; 3]);
}

/// Upstream: `kubectl rollout history` lists a Deployment's revisions with
/// their change-cause, and `kubectl rollout undo` brings back the previous
/// template, which becomes the next revision.
#[tokio::test]
async fn rollout_undo_returns_to_the_previous_revision() {
    let k = cluster_on(SandboxConfig::default()).await;
    create_web(&k, "nginx:1", 2).await;
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    k.ok(&["set", "image", "deployment/web", "nginx=nginx:2"])
        .await;
    k.ok(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=to nginx 2",
    ])
    .await;
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let history = k.ok(&["rollout", "history", "deployment/web"]).await;
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [vec!["1", "<none>"], vec!["2", "to", "nginx", "2"]],
        "{history}"
    );

    let out = k.ok(&["rollout", "undo", "deployment/web"]).await;
    assert!(out.contains("deployment.apps/web rolled back"), "{out}");
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert_eq!(live_images(&k).await, ["nginx:1"; 2]);
    let d = web(&k).await;
    let annotations = d.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
    let sets = Api::<ReplicaSet>::namespaced(k.sb.client(), "default")
        .list(&ListParams::default())
        .await
        .expect("sets list")
        .items;
    assert_eq!(sets.len(), 2, "the rollback reuses the first set");
    let first = sets
        .iter()
        .find(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                .map(String::as_str)
                == Some("3")
        })
        .expect("a set at revision 3");
    assert_eq!(
        first
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision-history"))
            .map(String::as_str),
        Some("1")
    );
    let history = k.ok(&["rollout", "history", "deployment/web"]).await;
    assert!(
        history.contains("\n2 ") && history.contains("\n3 ") && !history.contains("\n1 "),
        "{history}"
    );
}

/// Upstream's printers: `kubectl get deploy,rs` shows READY, UP-TO-DATE and
/// AVAILABLE for Deployments and DESIRED, CURRENT and READY for
/// ReplicaSets; `kubectl scale` resizes through the scale subresource and
/// `kubectl get all` lists both kinds.
#[tokio::test]
async fn get_deploy_rs_shows_the_rollout_and_scale_resizes_it() {
    let k = cluster_on(SandboxConfig::default()).await;
    create_web(&k, "nginx:1", 2).await;
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let out = k.ok(&["scale", "deployment/web", "--replicas=3"]).await;
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let out = k.ok(&["get", "deploy,rs"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    assert_eq!(
        lines[1][..4],
        ["deployment.apps/web", "3/3", "3", "3"],
        "{out}"
    );
    let rs_header = lines
        .iter()
        .position(|l| l.first() == Some(&"NAME") && l.get(1) == Some(&"DESIRED"))
        .expect("a ReplicaSet table");
    assert_eq!(
        lines[rs_header],
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "{out}"
    );
    let row = &lines[rs_header + 1];
    assert!(row[0].starts_with("replicaset.apps/web-"), "{out}");
    assert_eq!(row[1..4], ["3", "3", "3"], "{out}");
    let all = k.ok(&["get", "all"]).await;
    assert!(
        all.contains("deployment.apps/web") && all.contains("replicaset.apps/web-"),
        "{all}"
    );
}

/// Upstream: `kubectl rollout status` fails once the Deployment's
/// Progressing condition says its progress deadline was exceeded.
#[tokio::test]
async fn rollout_status_fails_when_the_progress_deadline_is_exceeded() {
    let k = cluster_on(SandboxConfig {
        simulated: SimulatedConfig {
            ready_delay: Duration::from_secs(600),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    create_web(&k, "nginx:1", 1).await;
    k.ok(&[
        "patch",
        "deployment/web",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":1}}"#,
    ])
    .await;
    let r = k
        .run(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("deployment \"web\" exceeded its progress deadline"),
        "{}",
        r.stderr
    );
}
