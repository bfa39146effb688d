//! Deployments and ReplicaSets as kube-controller-manager runs them: a
//! ReplicaSet keeps its replicas (adopting orphans, deleting unready pods
//! first), a Deployment rolls its pods through one ReplicaSet per template
//! within maxSurge and maxUnavailable (watched pod by pod), Recreate never
//! overlaps old and new pods, old sets beyond revisionHistoryLimit go,
//! and the scale subresource resizes both.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Resource;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use sandbox::{Sandbox, SandboxConfig, SimulatedConfig};
use serde_json::{Value, json};

use crate::common::{api_err, eventually, pod_ready, sandbox};

/// A pod template labelled `app: <app>` running `image`.
fn template(app: &str, image: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
           "spec": {"containers": [{"name": "web", "image": image}]}})
}

/// A ReplicaSet of `replicas` pods labelled `app: <name>`.
fn replica_set(name: &str, replicas: i32, image: &str) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": template(name, image)},
    }))
    .expect("a ReplicaSet")
}

/// A Deployment of `replicas` pods labelled `app: <name>`, with `strategy`.
fn deployment(name: &str, replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": template(name, image), "strategy": strategy},
    }))
    .expect("a Deployment")
}

/// A bare pod labelled `app: <app>` running `image`, with no controller.
fn pod(name: &str, app: &str, image: &str) -> Pod {
    let mut pod = template(app, image);
    pod["metadata"]["name"] = json!(name);
    serde_json::from_value(pod).expect("a pod")
}

/// Creates the Deployment `d`.
async fn create_deployment(deploys: &Api<Deployment>, d: &Deployment) -> Deployment {
    deploys
        .create(&PostParams::default(), d)
        .await
        .expect("the Deployment is created")
}

/// Changes the image of the Deployment `name`'s template, which starts a
/// rollout.
async fn set_image(deploys: &Api<Deployment>, name: &str, image: &str) -> Deployment {
    deploys
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})),
        )
        .await
        .expect("the template is changed")
}

/// Every ReplicaSet in the namespace.
async fn replica_sets(sb: &Sandbox) -> Vec<ReplicaSet> {
    Api::<ReplicaSet>::default_namespaced(sb.client())
        .list(&ListParams::default())
        .await
        .expect("sets list")
        .items
}

/// The pods there are now and a watch of every change after them.
async fn list_and_watch(
    pods: &Api<Pod>,
) -> (
    Vec<Pod>,
    futures::stream::BoxStream<'_, kube::Result<WatchEvent<Pod>>>,
) {
    let list = pods.list(&ListParams::default()).await.expect("pods list");
    let rv = list.metadata.resource_version.clone().expect("a list rv");
    let stream = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("the watch starts")
        .boxed();
    (list.items, stream)
}

/// A sandbox whose pods take `ready` to become Ready, so readiness gates
/// are observable.
async fn sandbox_with_ready_delay(ready: Duration) -> Sandbox {
    Sandbox::start(SandboxConfig {
        simulated: SimulatedConfig {
            ready_delay: ready,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("sandbox starts")
}

/// Waits (30 s at most) until `check` accepts the object; the failure
/// shows the object as it last was, status included, and the Events about
/// it.
async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let obj = api.get_opt(name).await.expect("the API answers");
        if let Some(o) = &obj
            && check(o)
        {
            return o.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let shown = obj
                .map(|o| serde_json::to_string_pretty(&o).unwrap_or_default())
                .unwrap_or_else(|| "(not found)".into());
            let events: Vec<String> = Api::<Event>::default_namespaced(api.clone().into_client())
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(name))
                .map(|e| {
                    format!(
                        "{} {}: {}",
                        e.type_.unwrap_or_default(),
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "timed out after 30s waiting for {name} {what}; it is:\n{shown}\nits Events:\n{}",
                events.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `kubectl rollout status`'s test: the rollout of the current generation
/// is complete.
fn rolled_out(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = &d.status else { return false };
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
}

fn image(p: &Pod) -> &str {
    p.spec.as_ref().expect("a spec").containers[0]
        .image
        .as_deref()
        .unwrap_or_default()
}

fn condition(d: &Deployment, ty: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

fn annotation(meta: &kube::api::ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

/// The `(reason, message)` of the Events about an object, from `component`.
async fn events_about(sb: &Sandbox, name: &str, component: &str) -> Vec<(String, String)> {
    Api::<Event>::default_namespaced(sb.client())
        .list(&ListParams::default())
        .await
        .expect("events list")
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some(component)
        })
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

async fn pods_of(api: &Api<Pod>, app: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("pods list")
        .items
}

/// Upstream: a ReplicaSet creates `<rs>-<suffix>` pods it controls up to
/// `spec.replicas`, replaces a deleted one, and reports replicas, ready,
/// available and fully labelled counts for the generation it saw.
#[tokio::test]
async fn a_replica_set_keeps_its_replicas_running_and_reports_them() {
    let sb = sandbox().await;
    let sets: Api<ReplicaSet> = Api::default_namespaced(sb.client());
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let rs = sets
        .create(&PostParams::default(), &replica_set("web", 3, "nginx:1"))
        .await
        .expect("the ReplicaSet is created");
    let uid = rs.metadata.uid.clone().expect("a uid");
    let done = wait_for(&sets, "web", "to report 3 available replicas", |rs| {
        rs.status.as_ref().is_some_and(|s| {
            s.replicas == 3
                && s.ready_replicas == Some(3)
                && s.available_replicas == Some(3)
                && s.fully_labeled_replicas == Some(3)
                && s.observed_generation == rs.metadata.generation
        })
    })
    .await;
    assert!(done.status.is_some());
    let owned = pods_of(&pods, "web").await;
    assert_eq!(owned.len(), 3);
    for p in &owned {
        let name = p.metadata.name.as_deref().unwrap_or_default();
        let suffix = name.strip_prefix("web-").expect("named after the set");
        assert_eq!(suffix.len(), 5, "{name}");
        let owner = &p.metadata.owner_references.as_ref().expect("an owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ReplicaSet", uid.as_str(), Some(true))
        );
    }
    let events = events_about(&sb, "web", "replicaset-controller").await;
    for p in &owned {
        let created = (
            "SuccessfulCreate".to_string(),
            format!(
                "Created pod: {}",
                p.metadata.name.as_deref().unwrap_or_default()
            ),
        );
        assert!(events.contains(&created), "{events:?}");
    }
    let victim = owned[0].metadata.name.clone().expect("a name");
    pods.delete(&victim, &Default::default())
        .await
        .expect("the pod is deleted");
    eventually("a replacement pod and the victim gone", || {
        let pods = pods.clone();
        let victim = victim.clone();
        async move {
            let now = pods_of(&pods, "web").await;
            let live: Vec<&Pod> = now
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == 3
                && live
                    .iter()
                    .all(|p| p.metadata.name.as_deref() != Some(victim.as_str())))
            .then_some(())
        }
    })
    .await;
}

/// Upstream: a pod without a controller that matches a ReplicaSet's
/// selector is adopted (it gets the set as its controller) and counts, so
/// only the missing replicas are created.
#[tokio::test]
async fn a_replica_set_adopts_a_matching_orphan_pod() {
    let sb = sandbox().await;
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    pods.create(&PostParams::default(), &pod("stray", "web", "nginx:1"))
        .await
        .expect("the orphan is created");
    let sets: Api<ReplicaSet> = Api::default_namespaced(sb.client());
    let rs = sets
        .create(&PostParams::default(), &replica_set("web", 2, "nginx:1"))
        .await
        .expect("the ReplicaSet is created");
    let uid = rs.metadata.uid.expect("a uid");
    let adopted = wait_for(&pods, "stray", "to be adopted", |p| {
        p.metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.uid == uid && r.controller == Some(true)))
    })
    .await;
    assert_eq!(adopted.metadata.name.as_deref(), Some("stray"));
    wait_for(&sets, "web", "to report 2 replicas", |rs| {
        rs.status.as_ref().is_some_and(|s| s.replicas == 2)
    })
    .await;
    assert_eq!(
        pods_of(&pods, "web").await.len(),
        2,
        "the orphan counts: one pod created, not two"
    );
}

/// Upstream: scaling a ReplicaSet down deletes pods that are not ready
/// before ready ones.
#[tokio::test]
async fn scaling_a_replica_set_down_deletes_unready_pods_first() {
    let sb = sandbox().await;
    let runtime = sb.simulated_runtime().expect("the simulated runtime");
    let sets: Api<ReplicaSet> = Api::default_namespaced(sb.client());
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    sets.create(&PostParams::default(), &replica_set("web", 3, "nginx:1"))
        .await
        .expect("the ReplicaSet is created");
    wait_for(&sets, "web", "to have 3 ready replicas", |rs| {
        rs.status
            .as_ref()
            .is_some_and(|s| s.ready_replicas == Some(3))
    })
    .await;
    let names: Vec<String> = pods_of(&pods, "web")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let unready = names[1].clone();
    runtime.set_ready("default", &unready, Some(false));
    wait_for(&sets, "web", "to count 2 ready replicas", |rs| {
        rs.status
            .as_ref()
            .is_some_and(|s| s.ready_replicas == Some(2))
    })
    .await;
    sets.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .expect("the set is scaled");
    let left = eventually("2 pods left", || {
        let pods = pods.clone();
        async move {
            let left: Vec<String> = pods_of(&pods, "web")
                .await
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.metadata.name)
                .collect();
            (left.len() == 2).then_some(left)
        }
    })
    .await;
    assert!(
        left.iter().all(|n| names.contains(n) && *n != unready),
        "the unready {unready} should have gone, left: {left:?}"
    );
}

/// Pods as a watch shows them: by name, the last version seen.
type Seen = BTreeMap<String, Pod>;

/// Upstream's rolling update: with replicas 4, maxSurge 1 and
/// maxUnavailable 1, no moment of the rollout (as a pod watch sees every
/// change) has more than 5 pods that are not terminating or fewer than 3
/// ready ones, and it ends with 4 pods of the new template, one new set of
/// revision 2 and the old set scaled to zero.
#[tokio::test]
async fn a_rolling_update_stays_within_max_surge_and_max_unavailable() {
    let sb = sandbox_with_ready_delay(Duration::from_millis(150)).await;
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    create_deployment(&deploys, &deployment("web", 4, "nginx:1", strategy)).await;
    let first = wait_for(&deploys, "web", "to roll out", rolled_out).await;
    assert_eq!(
        annotation(&first.metadata, "deployment.kubernetes.io/revision").as_deref(),
        Some("1")
    );

    let (listed, mut stream) = list_and_watch(&pods).await;
    let mut seen: Seen = listed
        .into_iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
        .collect();
    set_image(&deploys, "web", "nginx:2").await;

    let (mut most, mut fewest_ready) = (0, usize::MAX);
    let watched = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = stream.try_next().await.expect("the watch streams") {
            match ev {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    seen.insert(p.metadata.name.clone().unwrap_or_default(), p);
                }
                WatchEvent::Deleted(p) => {
                    seen.remove(p.metadata.name.as_deref().unwrap_or_default());
                }
                _ => continue,
            }
            let live: Vec<&Pod> = seen
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            most = most.max(live.len());
            fewest_ready = fewest_ready.min(live.iter().filter(|p| pod_ready(p)).count());
            if seen.len() == 4 && live.iter().all(|p| image(p) == "nginx:2" && pod_ready(p)) {
                return;
            }
        }
    })
    .await;
    assert!(
        watched.is_ok(),
        "the rollout did not end within 30s; pods seen: {:?}",
        seen.values()
            .map(|p| (p.metadata.name.clone(), image(p).to_string(), pod_ready(p)))
            .collect::<Vec<_>>()
    );
    assert!(
        most <= 5,
        "{most} pods at once, more than replicas + maxSurge"
    );
    assert!(
        fewest_ready >= 3,
        "only {fewest_ready} ready pods at one point, fewer than replicas - maxUnavailable"
    );

    let done = wait_for(&deploys, "web", "to roll out again", rolled_out).await;
    assert_eq!(
        annotation(&done.metadata, "deployment.kubernetes.io/revision").as_deref(),
        Some("2")
    );
    assert_eq!(
        condition(&done, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        condition(&done, "Progressing"),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );
    let mut all = replica_sets(&sb).await;
    all.sort_by_key(|rs| annotation(&rs.metadata, "deployment.kubernetes.io/revision"));
    let sizes: Vec<(Option<String>, Option<i32>)> = all
        .iter()
        .map(|rs| {
            (
                annotation(&rs.metadata, "deployment.kubernetes.io/revision"),
                rs.spec.as_ref().and_then(|s| s.replicas),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [(Some("1".into()), Some(0)), (Some("2".into()), Some(4))]
    );
    let new = &all[1];
    let hash = new
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .cloned()
        .expect("the new set carries the pod-template-hash label");
    assert_eq!(
        new.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    for p in pods_of(&pods, "web").await {
        assert_eq!(
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash")),
            Some(&hash)
        );
    }
}

/// Upstream's Recreate strategy: every old pod is gone (not merely
/// terminating) before the first pod of the new template is created.
#[tokio::test]
async fn a_recreate_deployment_removes_every_old_pod_before_creating_new_ones() {
    let sb = sandbox_with_ready_delay(Duration::from_millis(50)).await;
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    create_deployment(
        &deploys,
        &deployment("web", 3, "nginx:1", json!({"type": "Recreate"})),
    )
    .await;
    wait_for(&deploys, "web", "to roll out", rolled_out).await;
    let (listed, mut stream) = list_and_watch(&pods).await;
    let mut old: BTreeMap<String, ()> = listed
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .map(|n| (n, ()))
        .collect();
    set_image(&deploys, "web", "nginx:2").await;
    let mut new = 0;
    let watched = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = stream.try_next().await.expect("the watch streams") {
            match ev {
                WatchEvent::Added(p) => {
                    assert_eq!(image(&p), "nginx:2");
                    assert!(
                        old.is_empty(),
                        "new pod {:?} created while old pods {:?} still exist",
                        p.metadata.name,
                        old.keys().collect::<Vec<_>>()
                    );
                    new += 1;
                }
                WatchEvent::Deleted(p) => {
                    old.remove(p.metadata.name.as_deref().unwrap_or_default());
                }
                _ => {}
            }
            if new == 3 {
                return;
            }
        }
    })
    .await;
    assert!(watched.is_ok(), "3 new pods were not created within 30s");
    wait_for(&deploys, "web", "to roll out again", rolled_out).await;
}

/// Upstream: once a rollout completes, old ReplicaSets with no pods beyond
/// `revisionHistoryLimit` are deleted, lowest revision first.
#[tokio::test]
async fn old_replica_sets_beyond_the_revision_history_limit_are_deleted() {
    let sb = sandbox().await;
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    let mut d = deployment("web", 1, "nginx:1", json!({"type": "RollingUpdate"}));
    d.spec.as_mut().expect("a spec").revision_history_limit = Some(1);
    create_deployment(&deploys, &d).await;
    wait_for(&deploys, "web", "to roll out", rolled_out).await;
    for v in 2..=4 {
        set_image(&deploys, "web", &format!("nginx:{v}")).await;
        wait_for(&deploys, "web", "to roll out", rolled_out).await;
    }
    let revisions = eventually("only the new set and one old one are left", || {
        let sb = &sb;
        async move {
            let mut revs: Vec<String> = replica_sets(sb)
                .await
                .iter()
                .filter(|rs| rs.metadata.deletion_timestamp.is_none())
                .filter_map(|rs| annotation(&rs.metadata, "deployment.kubernetes.io/revision"))
                .collect();
            revs.sort();
            (revs.len() == 2).then_some(revs)
        }
    })
    .await;
    assert_eq!(revisions, ["3", "4"]);
}

/// Upstream: a ReplicaSet without a controller whose labels a Deployment's
/// selector matches is adopted; with another template it is an old set,
/// scaled to zero as the Deployment rolls out its own.
#[tokio::test]
async fn a_deployment_adopts_a_matching_orphan_replica_set() {
    let sb = sandbox().await;
    let sets: Api<ReplicaSet> = Api::default_namespaced(sb.client());
    let mut orphan = replica_set("manual", 2, "nginx:1");
    orphan.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    let spec = orphan.spec.as_mut().expect("a spec");
    spec.selector.match_labels = Some([("app".to_string(), "web".to_string())].into());
    spec.template = Some(serde_json::from_value(template("web", "nginx:1")).expect("a template"));
    sets.create(&PostParams::default(), &orphan)
        .await
        .expect("the orphan set is created");
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    let d = create_deployment(&deploys, &deployment("web", 2, "nginx:2", json!({}))).await;
    let uid = d.metadata.uid.expect("a uid");
    let adopted = wait_for(&sets, "manual", "to be adopted and emptied", |rs| {
        rs.metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.uid == uid && r.controller == Some(true)))
            && rs.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    })
    .await;
    assert_eq!(
        annotation(&adopted.metadata, "deployment.kubernetes.io/revision"),
        None,
        "an adopted old set keeps its annotations"
    );
    let done = wait_for(&deploys, "web", "to roll out", rolled_out).await;
    assert_eq!(
        annotation(&done.metadata, "deployment.kubernetes.io/revision").as_deref(),
        Some("1")
    );
}

/// Upstream: the scale subresource of a Deployment resizes its one set,
/// which records the size it was given for in `desired-replicas`.
#[tokio::test]
async fn scaling_a_deployment_resizes_its_replica_set() {
    let sb = sandbox().await;
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    create_deployment(&deploys, &deployment("web", 2, "nginx:1", json!({}))).await;
    wait_for(&deploys, "web", "to roll out", rolled_out).await;
    let scale = deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("the Deployment is scaled");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
    let done = wait_for(&deploys, "web", "to have 5 available replicas", |d| {
        rolled_out(d) && d.status.as_ref().and_then(|s| s.available_replicas) == Some(5)
    })
    .await;
    assert_eq!(
        annotation(&done.metadata, "deployment.kubernetes.io/revision").as_deref(),
        Some("1"),
        "scaling is not a new revision"
    );
    let all = replica_sets(&sb).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        annotation(
            &all[0].metadata,
            "deployment.kubernetes.io/desired-replicas"
        )
        .as_deref(),
        Some("5")
    );
    let rs = all[0].metadata.name.clone().expect("a name");
    let mut events = events_about(&sb, "web", "deployment-controller").await;
    events.sort();
    assert_eq!(
        events,
        [
            (
                "ScalingReplicaSet".into(),
                format!("Scaled up replica set {rs} to 2")
            ),
            (
                "ScalingReplicaSet".into(),
                format!("Scaled up replica set {rs} to 5 from 2")
            ),
        ]
    );
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    assert_eq!(pods_of(&pods, "web").await.len(), 5);
}

/// Upstream's defaults and validation: a Deployment gets the RollingUpdate
/// strategy with 25% surge and unavailability, a history limit of 10 and a
/// 600 s progress deadline; zero surge with zero unavailability, and a
/// selector that does not select the template, are refused naming the
/// field.
#[tokio::test]
async fn deployments_are_defaulted_and_bad_strategies_are_refused() {
    let sb = sandbox().await;
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    let d = create_deployment(&deploys, &deployment("web", 0, "nginx:1", Value::Null)).await;
    let spec = d.spec.expect("a spec");
    let strategy = serde_json::to_value(spec.strategy).expect("serializes");
    assert_eq!(
        strategy,
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));

    let e = api_err(
        deploys
            .create(
                &PostParams::default(),
                &deployment(
                    "stuck",
                    1,
                    "nginx:1",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
                ),
            )
            .await,
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"),
        "{}",
        e.message
    );
    let mut blind = deployment("blind", 1, "nginx:1", json!({}));
    blind.spec.as_mut().expect("a spec").selector.match_labels =
        Some([("app".to_string(), "other".to_string())].into());
    let e = api_err(deploys.create(&PostParams::default(), &blind).await);
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec.template.metadata.labels")
            && e.message
                .contains("`selector` does not match template `labels`"),
        "{}",
        e.message
    );
}

/// Upstream: a rollout that makes no progress for `progressDeadlineSeconds`
/// gets Progressing=False, reason ProgressDeadlineExceeded (what `kubectl
/// rollout status` fails on), and is not rolled back.
#[tokio::test]
async fn a_rollout_without_progress_exceeds_its_deadline() {
    let sb = sandbox_with_ready_delay(Duration::from_secs(600)).await;
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    let mut d = deployment("web", 1, "nginx:1", json!({}));
    d.spec.as_mut().expect("a spec").progress_deadline_seconds = Some(1);
    create_deployment(&deploys, &d).await;
    let stuck = wait_for(&deploys, "web", "to exceed its progress deadline", |d| {
        condition(d, "Progressing") == Some(("False".into(), "ProgressDeadlineExceeded".into()))
    })
    .await;
    let message = stuck
        .status
        .clone()
        .and_then(|s| s.conditions)
        .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Progressing"))
        .and_then(|c| c.message)
        .unwrap_or_default();
    assert!(
        message.starts_with("ReplicaSet \"web-")
            && message.ends_with("\" has timed out progressing."),
        "{message}"
    );
    assert_eq!(
        condition(&stuck, "Available").map(|(s, _)| s).as_deref(),
        Some("False")
    );
}

/// Upstream: a ReplicaSet counts a Ready pod as available only once it has
/// been Ready for `minReadySeconds`, and updates its status then without
/// any other change.
#[tokio::test]
async fn a_replica_set_counts_pods_available_after_min_ready_seconds() {
    let sb = sandbox().await;
    let sets: Api<ReplicaSet> = Api::default_namespaced(sb.client());
    let mut rs = replica_set("web", 2, "nginx:1");
    rs.spec.as_mut().expect("a spec").min_ready_seconds = Some(3);
    let mut stream = sets
        .watch(&WatchParams::default(), "0")
        .await
        .expect("the watch starts")
        .boxed();
    sets.create(&PostParams::default(), &rs)
        .await
        .expect("the ReplicaSet is created");
    // Every status the set had, in order, as (ready, available).
    let mut seen = vec![];
    let watched = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = stream.try_next().await.expect("the watch streams") {
            let (WatchEvent::Added(rs) | WatchEvent::Modified(rs)) = ev else {
                continue;
            };
            let s = rs.status.unwrap_or_default();
            seen.push((s.ready_replicas, s.available_replicas));
            if s.available_replicas == Some(2) {
                return;
            }
        }
    })
    .await;
    assert!(watched.is_ok(), "never 2 available replicas: {seen:?}");
    let ready_only = seen.iter().position(|s| *s == (Some(2), None));
    assert!(
        ready_only.is_some_and(|i| i + 1 < seen.len()),
        "2 ready pods should count as available only after minReadySeconds: {seen:?}"
    );
}

/// Upstream: a paused Deployment does not roll out a changed template (no
/// new ReplicaSet; Progressing Unknown, DeploymentPaused); resuming it
/// rolls it out.
#[tokio::test]
async fn a_paused_deployment_rolls_out_only_when_resumed() {
    let sb = sandbox().await;
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    create_deployment(&deploys, &deployment("web", 2, "nginx:1", json!({}))).await;
    wait_for(&deploys, "web", "to roll out", rolled_out).await;
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .expect("the Deployment is paused");
    let changed = set_image(&deploys, "web", "nginx:2").await;
    let generation = changed.metadata.generation;
    wait_for(&deploys, "web", "to show it is paused", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.observed_generation == generation)
            && condition(d, "Progressing") == Some(("Unknown".into(), "DeploymentPaused".into()))
    })
    .await;
    assert_eq!(replica_sets(&sb).await.len(), 1, "no new set while paused");
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .expect("the Deployment is resumed");
    wait_for(&deploys, "web", "to roll out the new template", |d| {
        rolled_out(d)
            && condition(d, "Progressing") == Some(("True".into(), "NewReplicaSetAvailable".into()))
    })
    .await;
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let images: Vec<String> = pods_of(&pods, "web")
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| image(p).to_string())
        .collect();
    assert_eq!(images, ["nginx:2", "nginx:2"]);
}

/// The sandbox's rule for controllers: once a rollout is done, syncing
/// the Deployment and its ReplicaSet again writes nothing.
#[tokio::test]
async fn a_rolled_out_deployment_at_rest_writes_nothing() {
    use sandbox::controllers::deployment::DeploymentController;
    use sandbox::controllers::queue::Controller;
    use sandbox::controllers::replicaset::ReplicaSetController;
    let sb = sandbox().await;
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    create_deployment(&deploys, &deployment("web", 2, "nginx:1", json!({}))).await;
    wait_for(&deploys, "web", "to roll out", rolled_out).await;
    let c = sb.cluster().clone();
    let sets: Vec<(String, String)> = c.store.keys("apps/replicasets", Some("default"));
    eventually(
        "a sync of the settled Deployment and set that writes nothing",
        || {
            let c = c.clone();
            let sets = sets.clone();
            async move {
                let before = c.store.current_rv();
                DeploymentController.reconcile(&c, &("default".into(), "web".into()));
                for key in &sets {
                    ReplicaSetController.reconcile(&c, key);
                }
                (c.store.current_rv() == before).then_some(())
            }
        },
    )
    .await;
}

/// Upstream: when the API refuses a set's pods (here the ServiceAccount
/// admission: the pods' ServiceAccount does not exist), the ReplicaSet gets
/// ReplicaFailure (FailedCreate, the API's message) with a Warning Event,
/// the Deployment shows the same condition, and once the ServiceAccount
/// exists the retries create the pods and the condition goes.
#[tokio::test]
async fn pods_the_api_refuses_show_as_replica_failure_until_they_can_be_created() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sb = sandbox().await;
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    let mut d = deployment("web", 1, "nginx:1", json!({}));
    let template = d
        .spec
        .as_mut()
        .expect("a spec")
        .template
        .spec
        .as_mut()
        .expect("a pod spec");
    template.service_account_name = Some("operator".into());
    create_deployment(&deploys, &d).await;
    let failing = wait_for(&deploys, "web", "to show ReplicaFailure", |d| {
        condition(d, "ReplicaFailure").is_some()
    })
    .await;
    let cond = failing
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "ReplicaFailure"))
        .cloned()
        .expect("the condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_deref()),
        ("True", Some("FailedCreate"))
    );
    let message = cond.message.unwrap_or_default();
    assert!(
        message.contains(
            "is forbidden: error looking up service account default/operator: serviceaccount \"operator\" not found"
        ),
        "{message}"
    );
    let rs = replica_sets(&sb).await.remove(0);
    let rs_name = rs.metadata.name.clone().expect("a name");
    let events = events_about(&sb, &rs_name, "replicaset-controller").await;
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "FailedCreate" && m.starts_with("Error creating: pods ")),
        "{events:?}"
    );

    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "operator"}})).expect("an SA");
    Api::<ServiceAccount>::default_namespaced(sb.client())
        .create(&PostParams::default(), &sa)
        .await
        .expect("the ServiceAccount is created");
    wait_for(&deploys, "web", "to roll out without ReplicaFailure", |d| {
        rolled_out(d) && condition(d, "ReplicaFailure").is_none()
    })
    .await;
}

/// The sizes of a Deployment's sets, by image.
async fn sizes_by_image(sb: &Sandbox) -> BTreeMap<String, i32> {
    replica_sets(sb)
        .await
        .into_iter()
        .map(|rs| {
            let spec = rs.spec.expect("a spec");
            let image = spec
                .template
                .and_then(|t| t.spec)
                .and_then(|s| s.containers[0].image.clone())
                .unwrap_or_default();
            (image, spec.replicas.unwrap_or(0))
        })
        .collect()
}

/// Upstream's proportional scaling: a Deployment scaled while a rollout is
/// stuck (the new pods crash) grows each active set in proportion to its
/// size, within the new `replicas + maxSurge`. With 10 replicas, maxSurge
/// 25% (3) and maxUnavailable 20% (2) the rollout stops at 8 old and 5 new
/// pods; scaled to 20 (surge 5), the 12 pods to add split as
/// round(8 * 25 / 13) - 8 = 7 and 5: 15 old and 10 new.
#[tokio::test]
async fn scaling_a_deployment_during_a_rollout_grows_its_sets_in_proportion() {
    let sb = sandbox().await;
    sb.simulated_runtime()
        .expect("the simulated runtime")
        .add_exit_rule(sandbox::ExitRule {
            image_contains: Some("crashy".into()),
            pod_label: None,
            exit_code: 1,
            after: Duration::ZERO,
        });
    let deploys: Api<Deployment> = Api::default_namespaced(sb.client());
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "20%"}});
    create_deployment(&deploys, &deployment("web", 10, "nginx:1", strategy)).await;
    wait_for(&deploys, "web", "to roll out", rolled_out).await;
    set_image(&deploys, "web", "crashy:2").await;
    let stuck: BTreeMap<String, i32> =
        [("crashy:2".to_string(), 5), ("nginx:1".to_string(), 8)].into();
    eventually("the rollout to stop at 8 old and 5 new pods", || {
        let sb = &sb;
        let stuck = stuck.clone();
        async move { (sizes_by_image(sb).await == stuck).then_some(()) }
    })
    .await;
    deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 20}})),
        )
        .await
        .expect("the Deployment is scaled");
    let grown: BTreeMap<String, i32> =
        [("crashy:2".to_string(), 10), ("nginx:1".to_string(), 15)].into();
    eventually("the sets to grow to 15 old and 10 new", || {
        let sb = &sb;
        let grown = grown.clone();
        async move { (sizes_by_image(sb).await == grown).then_some(()) }
    })
    .await;
    wait_for(&deploys, "web", "to observe its new size", |d| {
        d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
    })
    .await;
}
