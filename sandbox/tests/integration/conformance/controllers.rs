use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, PersistentVolumeClaim, Pod, Service,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{
    api_err, create, data_claim_templates, eventually, named, pod_ready, sandbox, statefulset,
    wait_ready_replicas,
};

/// A StatefulSet of `replicas` pods, each with a claim `data`.
fn sts(name: &str, replicas: i32) -> StatefulSet {
    statefulset(
        name,
        replicas,
        json!({"volumeClaimTemplates": data_claim_templates()}),
    )
}

async fn pod_names(api: &Api<Pod>, sel: &str) -> Vec<String> {
    let mut v: Vec<String> = api
        .list(&ListParams::default().labels(sel))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    v.sort();
    v
}

/// Waits until `api` no longer has `name`.
async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, || async move {
        api.get(name).await.is_err().then_some(())
    })
    .await;
}

/// Creates the ConfigMap `owner` and the ConfigMap `dep` it owns (its
/// deletion blocked by the owner), `dep` with `finalizers`; returns
/// `owner`.
async fn owner_and_dependent(api: &Api<ConfigMap>, finalizers: &[&str]) -> ConfigMap {
    let owner = create(api, &named("owner")).await;
    let mut dep = owned_cm("dep", &owner);
    if !finalizers.is_empty() {
        dep.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    }
    create(api, &dep).await;
    owner
}

fn owned_cm(name: &str, owner: &ConfigMap) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
        "name": owner.metadata.name, "uid": owner.metadata.uid, "blockOwnerDeletion": true}]}})).unwrap()
}

/// Upstream: the kubelet moves a pod Pending → Running, sets podIP,
/// container statuses and the Ready condition.
#[tokio::test]
async fn pods_become_running_and_ready() {
    let sb = sandbox().await;
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}})).unwrap();
    let created = api.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(created.spec.unwrap().node_name.as_deref(), Some("sandbox"));
    let p = eventually("pod p ready", || {
        let api = api.clone();
        async move { api.get("p").await.ok().filter(pod_ready) }
    })
    .await;
    let st = p.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert!(st.pod_ip.is_some());
    assert_eq!(st.container_statuses.unwrap()[0].restart_count, 0);
}

/// Upstream: a restartPolicy=Never pod whose container exits non-zero ends Failed.
#[tokio::test]
async fn a_failing_never_restart_pod_ends_failed() {
    let sb = sandbox().await;
    sb.simulated_runtime()
        .unwrap()
        .add_exit_rule(sandbox::ExitRule {
            image_contains: Some("fail".into()),
            pod_label: None,
            exit_code: 3,
            after: std::time::Duration::ZERO,
        });
    let api: Api<Pod> = Api::default_namespaced(sb.client());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "fail:1"}]}})).unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    eventually("pod p Failed", || {
        let api = api.clone();
        async move {
            api.get("p")
                .await
                .ok()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        }
    })
    .await;
}

/// Upstream: `default` and `kube-system` exist; deleting a namespace deletes its contents, then it.
#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() {
    let sb = sandbox().await;
    let nss: Api<Namespace> = Api::all(sb.client());
    nss.get("kube-system").await.unwrap();
    create(&nss, &named("tmp")).await;
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "tmp");
    create(&cms, &named("x")).await;
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    wait_gone(&nss, "tmp", "namespace tmp gone").await;
    let all: Api<ConfigMap> = Api::all(sb.client());
    assert!(
        all.list(&ListParams::default().fields("metadata.namespace=tmp"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Upstream: background propagation deletes dependents after the owner.
#[tokio::test]
async fn background_deletion_collects_dependents() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    owner_and_dependent(&api, &[]).await;
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    wait_gone(&api, "dep", "dependent collected").await;
}

/// Upstream: foreground propagation keeps the owner (deletionTimestamp +
/// foregroundDeletion finalizer) until its dependents are gone.
#[tokio::test]
async fn foreground_deletion_keeps_the_owner_until_dependents_are_gone() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    owner_and_dependent(&api, &["example.com/hold"]).await;
    api.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let o = api.get("owner").await.unwrap();
    assert!(
        o.metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    eventually("dependent marked for deletion", || {
        let api = api.clone();
        async move {
            api.get("dep")
                .await
                .ok()
                .filter(|d| d.metadata.deletion_timestamp.is_some())
        }
    })
    .await;
    assert!(
        api.get("owner").await.is_ok(),
        "owner waits for its dependent"
    );
    api.patch(
        "dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    wait_gone(&api, "owner", "owner gone").await;
}

/// Upstream: orphan propagation removes the owner's reference from
/// dependents and leaves them alive.
#[tokio::test]
async fn orphan_deletion_strips_owner_references() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sb.client());
    owner_and_dependent(&api, &[]).await;
    api.delete("owner", &DeleteParams::orphan()).await.unwrap();
    wait_gone(&api, "owner", "owner gone").await;
    let dep = api.get("dep").await.unwrap();
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());
}

/// Upstream: StatefulSet OrderedReady creates pods <set>-0.. in order, each
/// after the previous is Ready, with PVCs <template>-<set>-<ordinal>, and
/// reports status.
#[tokio::test]
async fn statefulset_creates_ordered_ready_pods_and_claims() {
    let sb = sandbox().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(sb.client());
    create(&sets, &sts("pg", 3)).await;
    let s = wait_ready_replicas(&sets, "pg", 3).await;
    let st = s.status.unwrap();
    assert_eq!(st.current_revision, st.update_revision);
    assert_eq!(st.observed_generation, Some(1));
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    assert_eq!(
        pod_names(&pods, "app=pg").await,
        vec!["pg-0", "pg-1", "pg-2"]
    );
    let p1 = pods.get("pg-1").await.unwrap();
    let p0 = pods.get("pg-0").await.unwrap();
    let ready_at = |p: &Pod| {
        p.status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .last_transition_time
            .clone()
    };
    assert!(p0.metadata.creation_timestamp <= p1.metadata.creation_timestamp);
    assert!(ready_at(&p0) <= ready_at(&p1));
    assert!(
        p1.metadata
            .labels
            .unwrap()
            .contains_key("controller-revision-hash")
    );
    let pvcs: Api<PersistentVolumeClaim> = Api::default_namespaced(sb.client());
    let bound = pvcs.get("data-pg-2").await.unwrap();
    assert!(bound.spec.unwrap().volume_name.is_some() || bound.status.is_some());
}

/// Upstream: OrderedReady waits for each pod to be Ready before the next.
#[tokio::test]
async fn statefulset_waits_for_an_unready_pod_before_creating_the_next() {
    let sb = sandbox().await;
    sb.simulated_runtime()
        .unwrap()
        .set_ready("default", "pg-0", Some(false));
    let sets: Api<StatefulSet> = Api::default_namespaced(sb.client());
    create(&sets, &sts("pg", 2)).await;
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    eventually("pg-0 running", || {
        let pods = pods.clone();
        async move {
            pods.get("pg-0")
                .await
                .ok()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        }
    })
    .await;
    // Give the controller several passes' worth of events; pg-1 must not appear.
    let cms: Api<ConfigMap> = Api::default_namespaced(sb.client());
    for i in 0..5 {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("nudge{i}")}})).unwrap(),
        )
        .await
        .unwrap();
    }
    assert_eq!(api_err(pods.get("pg-1").await).code, 404);
    sb.simulated_runtime()
        .unwrap()
        .set_ready("default", "pg-0", None);
    eventually("pg-1 created once pg-0 is ready", || {
        let pods = pods.clone();
        async move { pods.get("pg-1").await.ok() }
    })
    .await;
}

/// Upstream: scale-down removes the highest ordinals and keeps their PVCs
/// (persistentVolumeClaimRetentionPolicy Retain).
#[tokio::test]
async fn statefulset_scale_down_keeps_claims() {
    let sb = sandbox().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(sb.client());
    create(&sets, &sts("pg", 2)).await;
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    eventually("2 pods", || {
        let pods = pods.clone();
        async move { (pod_names(&pods, "app=pg").await.len() == 2).then_some(()) }
    })
    .await;
    sets.patch(
        "pg",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("only pg-0 left", || {
        let pods = pods.clone();
        async move { (pod_names(&pods, "app=pg").await == vec!["pg-0"]).then_some(()) }
    })
    .await;
    let pvcs: Api<PersistentVolumeClaim> = Api::default_namespaced(sb.client());
    pvcs.get("data-pg-1")
        .await
        .expect("claim kept after scale-down");
    sets.delete("pg", &DeleteParams::default()).await.unwrap();
    eventually("pods collected", || {
        let pods = pods.clone();
        async move { pod_names(&pods, "app=pg").await.is_empty().then_some(()) }
    })
    .await;
    pvcs.get("data-pg-0")
        .await
        .expect("claim kept after deletion");
}

/// Upstream: RollingUpdate replaces pods from the highest ordinal down to
/// the partition; pods below it keep the old revision.
#[tokio::test]
async fn statefulset_rolling_update_respects_partition() {
    let sb = sandbox().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(sb.client());
    create(&sets, &sts("pg", 3)).await;
    let first = wait_ready_replicas(&sets, "pg", 3).await;
    let old_rev = first.status.unwrap().current_revision.unwrap();
    let patch = json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
                                "template": {"spec": {"containers": [{"name": "db", "image": "postgres:17"}]}}}});
    sets.patch("pg", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let s = eventually("2 updated replicas", || {
        let sets = sets.clone();
        async move {
            sets.get("pg").await.ok().filter(|s| {
                let st = s.status.as_ref().unwrap();
                st.updated_replicas == Some(2) && st.ready_replicas == Some(3)
            })
        }
    })
    .await;
    let st = s.status.unwrap();
    assert_eq!(st.current_revision.as_deref(), Some(old_rev.as_str()));
    assert_ne!(st.update_revision.as_deref(), Some(old_rev.as_str()));
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let image = |p: Pod| p.spec.unwrap().containers[0].image.clone().unwrap();
    assert_eq!(image(pods.get("pg-0").await.unwrap()), "postgres:16");
    assert_eq!(image(pods.get("pg-2").await.unwrap()), "postgres:17");
}

/// Upstream: a Job runs pods to `completions` and gets Complete; one whose
/// pods keep failing past backoffLimit gets Failed.
#[tokio::test]
async fn jobs_complete_or_fail_past_their_backoff_limit() {
    let sb = sandbox().await;
    sb.simulated_runtime()
        .unwrap()
        .add_exit_rule(sandbox::ExitRule {
            image_contains: Some("broken".into()),
            pod_label: None,
            exit_code: 1,
            after: std::time::Duration::ZERO,
        });
    let jobs: Api<Job> = Api::default_namespaced(sb.client());
    let job = |name: &str, image: &str| -> Job {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"backoffLimit": 1, "completions": 2,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image}]}}}})).unwrap()
    };
    jobs.create(&PostParams::default(), &job("ok", "backup:1"))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &job("bad", "broken:1"))
        .await
        .unwrap();
    let cond = |j: &Job, t: &str| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
    };
    let ok = eventually("job ok Complete", || {
        let jobs = jobs.clone();
        async move { jobs.get("ok").await.ok().filter(|j| cond(j, "Complete")) }
    })
    .await;
    assert_eq!(ok.status.unwrap().succeeded, Some(2));
    let bad = eventually("job bad Failed", || {
        let jobs = jobs.clone();
        async move { jobs.get("bad").await.ok().filter(|j| cond(j, "Failed")) }
    })
    .await;
    assert_eq!(bad.status.unwrap().failed, Some(2));
}

/// A Job whose one pod keeps running until the test ends (exits after an hour).
fn long_job(name: &str, deadline: Option<i64>, suspend: bool) -> Job {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"activeDeadlineSeconds": deadline, "suspend": suspend,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "long-running:1"}]}}}}))
    .unwrap()
}

fn keep_long_running_pods(sb: &sandbox::Sandbox) {
    sb.simulated_runtime()
        .unwrap()
        .add_exit_rule(sandbox::ExitRule {
            image_contains: Some("long-running".into()),
            pod_label: None,
            exit_code: 0,
            after: std::time::Duration::from_secs(3600),
        });
}

fn job_condition(j: &Job, t: &str) -> Option<JobCondition> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
        .cloned()
}

/// Waits for the Job's pod to be Running, so the Job is truly active.
async fn job_pod_running(pods: &Api<Pod>, job: &str) {
    eventually(&format!("a Running pod of job {job}"), || {
        let pods = pods.clone();
        let sel = format!("job-name={job}");
        async move {
            pods.list(&ListParams::default().labels(&sel))
                .await
                .ok()?
                .items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        }
    })
    .await;
}

async fn deadline_exceeded(jobs: &Api<Job>, name: &str) -> Job {
    eventually(&format!("job {name} Failed"), || {
        let jobs = jobs.clone();
        let name = name.to_string();
        async move {
            jobs.get(&name)
                .await
                .ok()
                .filter(|j| job_condition(j, "Failed").is_some())
        }
    })
    .await
}

/// Upstream: a Job active longer than `activeDeadlineSeconds` (counted from
/// status.startTime) has its active pods terminated and gets `FailureTarget`
/// and `Failed` with reason DeadlineExceeded; the terminated pods count as
/// failed and a failed Job has no completionTime.
#[tokio::test]
async fn a_job_past_its_active_deadline_fails_and_loses_its_pods() {
    let sb = sandbox().await;
    keep_long_running_pods(&sb);
    let jobs: Api<Job> = Api::default_namespaced(sb.client());
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    jobs.create(&PostParams::default(), &long_job("slow", Some(1), false))
        .await
        .unwrap();
    // The pod may be gone again by the time a busy machine polls (its
    // deadline is 1 s): the Job's count of failed pods below shows it ran.
    let j = deadline_exceeded(&jobs, "slow").await;
    let failed = job_condition(&j, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Job was active longer than specified deadline")
    );
    let target = job_condition(&j, "FailureTarget").expect("FailureTarget condition");
    assert_eq!(target.reason.as_deref(), Some("DeadlineExceeded"));
    assert!(job_condition(&j, "Complete").is_none());
    let st = j.status.unwrap();
    assert_eq!(st.active, Some(0));
    assert_eq!(st.failed, Some(1), "the terminated pod counts as failed");
    assert!(st.start_time.is_some());
    assert!(st.completion_time.is_none(), "only a Complete Job has one");
    assert!(
        pod_names(&pods, "job-name=slow").await.is_empty(),
        "the Job's running pod is deleted"
    );
    // A finished Job stays as it is (no new pods, counters kept).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(pod_names(&pods, "job-name=slow").await.is_empty());
    assert_eq!(
        jobs.get("slow").await.unwrap().status.unwrap().failed,
        Some(1)
    );
}

/// Upstream: a suspended Job is never past its deadline (no startTime while
/// suspended); resuming it sets a new startTime, so the deadline counts from
/// the resume.
#[tokio::test]
async fn a_suspended_job_does_not_exceed_its_deadline() {
    let sb = sandbox().await;
    keep_long_running_pods(&sb);
    let jobs: Api<Job> = Api::default_namespaced(sb.client());
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    jobs.create(&PostParams::default(), &long_job("held", Some(1), true))
        .await
        .unwrap();
    // Past the deadline and a controller resync, had the clock been running.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let j = jobs.get("held").await.unwrap();
    assert!(
        job_condition(&j, "Failed").is_none(),
        "a suspended Job is not failed: {:?}",
        j.status
    );
    let st = j.status.unwrap_or_default();
    assert!(st.start_time.is_none(), "no startTime while suspended");
    assert_eq!(st.active.unwrap_or(0), 0);
    assert!(pod_names(&pods, "job-name=held").await.is_empty());

    let resumed = jiff::Timestamp::now();
    jobs.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    // Had the deadline counted from creation, the Job would fail at once,
    // before any pod is created.
    job_pod_running(&pods, "held").await;
    let started = jobs
        .get("held")
        .await
        .unwrap()
        .status
        .and_then(|s| s.start_time)
        .expect("startTime once resumed");
    assert!(
        started.0.as_second() >= resumed.as_second(),
        "startTime {started:?} is set anew at the resume ({resumed})"
    );
    let j = deadline_exceeded(&jobs, "held").await;
    assert_eq!(
        job_condition(&j, "Failed").unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
}

/// Upstream: `activeDeadlineSeconds` is mutable; setting one on a running
/// Job that has been active longer fails it.
#[tokio::test]
async fn an_active_deadline_set_on_a_running_job_applies() {
    let sb = sandbox().await;
    keep_long_running_pods(&sb);
    let jobs: Api<Job> = Api::default_namespaced(sb.client());
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    jobs.create(&PostParams::default(), &long_job("late", None, false))
        .await
        .unwrap();
    job_pod_running(&pods, "late").await;
    jobs.patch(
        "late",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"activeDeadlineSeconds": 1}})),
    )
    .await
    .expect("activeDeadlineSeconds can change");
    let j = deadline_exceeded(&jobs, "late").await;
    assert_eq!(
        job_condition(&j, "Failed").unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    assert!(pod_names(&pods, "job-name=late").await.is_empty());
}

/// Upstream: a PVC binds (Pending → Bound) and a larger request on a bound
/// claim is reflected in status.capacity (volume expansion).
#[tokio::test]
async fn pvc_binds_and_expands() {
    let sb = sandbox().await;
    let pvcs: Api<PersistentVolumeClaim> = Api::default_namespaced(sb.client());
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let cap = |p: &PersistentVolumeClaim| {
        p.status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .map(|q| q.0.clone())
    };
    eventually("claim bound", || {
        let pvcs = pvcs.clone();
        async move {
            pvcs.get("d")
                .await
                .ok()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        }
    })
    .await;
    pvcs.patch(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
    )
    .await
    .unwrap();
    eventually("capacity 2Gi", || {
        let pvcs = pvcs.clone();
        async move {
            pvcs.get("d")
                .await
                .ok()
                .filter(|p| cap(p).as_deref() == Some("2Gi"))
        }
    })
    .await;
    let e = api_err(
        pvcs.patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}})),
        )
        .await,
    );
    assert_eq!(e.code, 422, "claims cannot shrink");
}

/// Upstream: Endpoints (and EndpointSlices) of a Service list the ready pods its selector matches.
#[tokio::test]
async fn service_endpoints_follow_ready_pods() {
    let sb = sandbox().await;
    let svcs: Api<Service> = Api::default_namespaced(sb.client());
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "pg"}, "spec": {"selector": {"app": "pg"}, "ports": [{"port": 5432}]}})).unwrap();
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "labels": {"app": "pg"}}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let eps: Api<Endpoints> = Api::default_namespaced(sb.client());
    eventually("one ready address", || {
        let eps = eps.clone();
        async move {
            let e = eps.get("pg").await.ok()?;
            let addrs = e.subsets?.first()?.addresses.clone()?;
            (addrs.len() == 1).then_some(())
        }
    })
    .await;
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::default_namespaced(sb.client());
    let l = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=pg"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
}
