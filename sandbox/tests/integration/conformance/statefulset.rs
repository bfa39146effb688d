//! StatefulSet policies beyond the default OrderedReady / RollingUpdate:
//! `podManagementPolicy: Parallel` (pods created and deleted without
//! waiting for each other) and `updateStrategy: OnDelete` (a template
//! change replaces no pod; a pod deleted by someone else comes back at the
//! new revision), and the claims' retention policy when the set is
//! deleted, as upstream's StatefulSet controller does.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{
    data_claim_templates, eventually, pod_ready, sandbox, statefulset, wait_ready_replicas,
};

fn image(p: &Pod) -> String {
    p.spec.as_ref().expect("a spec").containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// The pods that exist now, by name.
async fn existing(pods: &Api<Pod>, names: &[&str]) -> Vec<Pod> {
    let mut found = vec![];
    for n in names {
        if let Some(p) = pods.get_opt(n).await.expect("the API answers") {
            found.push(p);
        }
    }
    found
}

/// Creates the StatefulSet `set`.
async fn create_set(sets: &Api<StatefulSet>, set: &StatefulSet) -> StatefulSet {
    sets.create(&PostParams::default(), set)
        .await
        .expect("the StatefulSet is created")
}

/// Waits until every pod of `names` exists; returns them.
async fn wait_all_exist(pods: &Api<Pod>, names: &[&str]) -> Vec<Pod> {
    eventually(&format!("{names:?} exist"), || async move {
        let found = existing(pods, names).await;
        (found.len() == names.len()).then_some(found)
    })
    .await
}

/// Upstream: with podManagementPolicy Parallel the controller creates all
/// missing pods at once, without waiting for the others to be Running and
/// Ready (OrderedReady would stop at an unready pg-0).
#[tokio::test]
async fn a_parallel_statefulset_creates_every_pod_without_waiting_for_readiness() {
    let sb = sandbox().await;
    let runtime = sb.simulated_runtime().expect("the simulated runtime");
    for p in ["pg-0", "pg-1", "pg-2"] {
        runtime.set_ready("default", p, Some(false));
    }
    let sets: Api<StatefulSet> = Api::default_namespaced(sb.client());
    create_set(
        &sets,
        &statefulset("pg", 3, json!({"podManagementPolicy": "Parallel"})),
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let all = wait_all_exist(&pods, &["pg-0", "pg-1", "pg-2"]).await;
    assert!(!all.iter().any(pod_ready), "no pod is ready");
}

/// Upstream: a Parallel StatefulSet scaled down deletes every condemned pod
/// at once (OrderedReady deletes the highest ordinal and waits for it to
/// be gone). A finalizer holds each deleted pod so the deletions can be
/// seen side by side.
#[tokio::test]
async fn a_parallel_statefulset_scaled_down_deletes_its_pods_at_once() {
    let sb = sandbox().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(sb.client());
    create_set(
        &sets,
        &statefulset("pg", 3, json!({"podManagementPolicy": "Parallel"})),
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let names = ["pg-0", "pg-1", "pg-2"];
    wait_all_exist(&pods, &names).await;
    let hold = json!({"metadata": {"finalizers": ["example.com/hold"]}});
    for n in names {
        pods.patch(n, &PatchParams::default(), &Patch::Merge(&hold))
            .await
            .expect("the finalizer is added");
    }
    sets.patch(
        "pg",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .expect("the StatefulSet is scaled to 0");
    eventually("all three pods marked for deletion together", || {
        let pods = pods.clone();
        async move {
            let found = existing(&pods, &names).await;
            (found.len() == 3
                && found
                    .iter()
                    .all(|p| p.metadata.deletion_timestamp.is_some()))
            .then_some(())
        }
    })
    .await;
    let release = json!({"metadata": {"finalizers": null}});
    for n in names {
        pods.patch(n, &PatchParams::default(), &Patch::Merge(&release))
            .await
            .expect("the finalizer is removed");
    }
    eventually("the pods are gone", || {
        let pods = pods.clone();
        async move { existing(&pods, &names).await.is_empty().then_some(()) }
    })
    .await;
}

/// Upstream: with updateStrategy OnDelete a template change moves
/// `updateRevision` but replaces no pod; a pod deleted by someone else is
/// recreated from the new template, and the others keep the old one.
#[tokio::test]
async fn an_on_delete_statefulset_replaces_a_pod_only_when_it_is_deleted() {
    let sb = sandbox().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(sb.client());
    create_set(
        &sets,
        &statefulset("pg", 2, json!({"updateStrategy": {"type": "OnDelete"}})),
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let first = wait_ready_replicas(&sets, "pg", 2).await;
    let old_revision = first
        .status
        .and_then(|s| s.current_revision)
        .expect("a current revision");
    let before = existing(&pods, &["pg-0", "pg-1"]).await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "db", "image": "postgres:17"}]}}}});
    sets.patch("pg", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("the template is changed");
    // The controller has seen the change once the status says so; a
    // RollingUpdate would have deleted pg-1 in that same pass.
    eventually("the new revision in status", || {
        let sets = sets.clone();
        let old_revision = old_revision.clone();
        async move {
            sets.get("pg").await.ok().filter(|s| {
                let st = s.status.as_ref().expect("a status");
                st.observed_generation == s.metadata.generation
                    && st.update_revision.as_ref() != Some(&old_revision)
            })
        }
    })
    .await;
    let after = existing(&pods, &["pg-0", "pg-1"]).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.metadata.uid, b.metadata.uid, "a pod was replaced");
        assert!(
            a.metadata.deletion_timestamp.is_none(),
            "pod {:?} is being deleted",
            a.metadata.name
        );
        assert_eq!(image(a), "postgres:16");
    }
    pods.delete("pg-1", &DeleteParams::default())
        .await
        .expect("pg-1 is deleted");
    let old_uid = before[1].metadata.uid.clone();
    eventually("pg-1 recreated at the new revision and ready", || {
        let sets = sets.clone();
        let pods = pods.clone();
        let old_uid = old_uid.clone();
        async move {
            let pod = pods.get("pg-1").await.ok()?;
            let set = sets.get("pg").await.ok()?;
            let st = set.status?;
            (pod.metadata.uid != old_uid
                && image(&pod) == "postgres:17"
                && st.ready_replicas == Some(2)
                && st.updated_replicas == Some(1))
            .then_some(())
        }
    })
    .await;
    // That pass saw every pod ready: a RollingUpdate would now take pg-0.
    let set = sets.get("pg").await.expect("the StatefulSet exists");
    let st = set.status.expect("a status");
    assert_eq!(st.current_revision.as_deref(), Some(old_revision.as_str()));
    assert_eq!(st.current_replicas, Some(1));
    let pg0 = pods.get("pg-0").await.expect("pg-0 exists");
    assert_eq!(
        pg0.metadata.uid, before[0].metadata.uid,
        "pg-0 was replaced"
    );
    assert!(pg0.metadata.deletion_timestamp.is_none());
    assert_eq!(image(&pg0), "postgres:16");
}

/// Upstream: `persistentVolumeClaimRetentionPolicy.whenDeleted: Delete`
/// makes the StatefulSet an owner of its claims, so the garbage collector
/// deletes them with it; the default (Retain) leaves them.
#[tokio::test]
async fn claims_go_with_their_statefulset_only_when_the_policy_says_delete() {
    let sb = sandbox().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(sb.client());
    let claim_template = data_claim_templates();
    create_set(
        &sets,
        &statefulset("kept", 1, json!({"volumeClaimTemplates": claim_template})),
    )
    .await;
    let gone = create_set(
        &sets,
        &statefulset(
            "gone",
            1,
            json!({"volumeClaimTemplates": claim_template,
                       "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"}}),
        ),
    )
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(sb.client());
    let owned = eventually("both claims exist", || {
        let claims = claims.clone();
        async move {
            let kept = claims.get_opt("data-kept-0").await.ok()??;
            let gone = claims.get_opt("data-gone-0").await.ok()??;
            Some((kept, gone))
        }
    })
    .await;
    assert!(
        owned
            .0
            .metadata
            .owner_references
            .is_none_or(|o| o.is_empty())
    );
    let owners = owned.1.metadata.owner_references.expect("an owner");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("StatefulSet", "gone")
    );
    assert_eq!(Some(&owners[0].uid), gone.metadata.uid.as_ref());
    for set in ["kept", "gone"] {
        sets.delete(set, &DeleteParams::background())
            .await
            .expect("the set is deleted");
    }
    eventually("data-gone-0 deleted with its set", || {
        let claims = claims.clone();
        async move { matches!(claims.get_opt("data-gone-0").await, Ok(None)).then_some(()) }
    })
    .await;
    assert!(
        claims
            .get_opt("data-kept-0")
            .await
            .expect("the API answers")
            .is_some(),
        "a retained claim was deleted"
    );
}
