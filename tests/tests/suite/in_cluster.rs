//! The operator as users deploy it: `kubectl apply -k
//! deploy/overlays/<crate>` on a sandbox whose pods run real processes.
//! The operator's two pods run the level's binary in-cluster (the
//! ServiceAccount token the kubelet mounts, `KUBERNETES_SERVICE_*`), one
//! holds the Lease, and every request is authorized by the RBAC of
//! deploy/base/rbac.yaml as the API server enforces it. The behaviour
//! scenarios that install, repair drift, upgrade and back up run so too,
//! and a permission the RBAC lacks fails a scenario with the 403 in its
//! message.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use sandbox::RuntimeKind;
use tests::builders::DbBuilder;
use tests::deploy::NAMESPACE;
use tests::harness::{Failed, OrFail, TestCluster, ensure};
use tests::levels::LevelId;
use tests::scenarios::steps::{NAME, create_ready};

/// Two operator pods starting, a database's first initdb, and a rollout
/// of the operator on a busy two-core machine.
const BUDGET: Duration = Duration::from_secs(180);

/// A sandbox running real processes, whose operators run in it.
async fn cluster() -> TestCluster {
    TestCluster::real_postgres_15(BUDGET)
        .await
        .operators_in_cluster()
}

/// The database's pods: (name, uid, container restarts).
async fn database_pods(cluster: &TestCluster) -> Result<Vec<(String, String, i32)>, Failed> {
    let selector = ListParams::default().labels(&shared::names::instance_selector(NAME));
    let pods = cluster
        .api::<Pod>()
        .list(&selector)
        .await
        .or_fail("list the database's pods")?;
    Ok(pods
        .items
        .into_iter()
        .map(|p| {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|cs| cs.iter().map(|c| c.restart_count).sum())
                .unwrap_or(0);
            (p.name_any(), p.uid().unwrap_or_default(), restarts)
        })
        .collect())
}

#[tokio::test]
async fn level1_applied_with_kubectl_apply_k_runs_two_pods_one_leader_and_makes_a_database_ready()
-> Result<(), Failed> {
    let cluster = cluster().await;
    cluster.apply_overlay(LevelId::One).await?;
    let deployment = cluster.wait_operator_rolled_out().await?;
    let pods = cluster.operator_pod_names().await?;
    ensure(pods.len() == 2, || {
        format!("the operator runs two pods, not {pods:?}: {deployment:?}")
    })?;
    let leader = cluster.wait_operator_leader(None, BUDGET).await?;
    ensure(pods.contains(&leader), || {
        format!("the Lease's holder {leader} is one of the operator's pods {pods:?}")
    })?;
    create_ready(&cluster, DbBuilder::manifest(NAME).build()).await?;
    // The leader acted, under its ServiceAccount: its log says so.
    let log = cluster.kubectl(&["logs", "-n", NAMESPACE, &leader]).await?;
    ensure(log.contains(NAME), || {
        format!("the leader {leader}'s log names the database {NAME}:\n{log}")
    })?;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn deleting_the_leader_pod_hands_the_lease_to_the_other_replica_within_the_lease_time()
-> Result<(), Failed> {
    let cluster = cluster().await;
    cluster.apply_overlay(LevelId::One).await?;
    cluster.wait_operator_rolled_out().await?;
    let leader = cluster.wait_operator_leader(None, BUDGET).await?;
    let standby = cluster
        .operator_pod_names()
        .await?
        .into_iter()
        .find(|name| *name != leader)
        .ok_or_else(|| Failed::new(format!("no operator pod stands by beside {leader}")))?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NAMESPACE);
    pods.delete(&leader, &DeleteParams::default())
        .await
        .or_fail(format!("delete the leader pod {leader}"))?;
    // The replica that was standing by takes the Lease: a graceful stop
    // releases it at once, and a holder that stops renewing loses it after
    // the lease's 15 s; the bound is that, plus a renewal period.
    let new_leader = cluster
        .wait_operator_leader(Some(&leader), Duration::from_secs(15 + 5 + 10))
        .await?;
    // The standby that was running took over, not the ReplicaSet's
    // replacement for the deleted pod.
    ensure(new_leader == standby, || {
        format!("the Lease moved from {leader} to the standby {standby}, not to {new_leader}")
    })?;
    // The new leader reconciles: a database created now becomes Ready.
    create_ready(&cluster, DbBuilder::manifest(NAME).build()).await?;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn setting_the_deployment_s_image_to_level2_upgrades_the_operator_with_no_database_restart()
-> Result<(), Failed> {
    let cluster = cluster().await;
    cluster.apply_overlay(LevelId::One).await?;
    cluster.wait_operator_rolled_out().await?;
    create_ready(&cluster, DbBuilder::manifest(NAME).build()).await?;
    let before = database_pods(&cluster).await?;
    let old_leader = cluster.wait_operator_leader(None, BUDGET).await?;
    cluster.set_operator_image(LevelId::Two).await?;
    cluster.wait_operator_rolled_out().await?;
    let new_leader = cluster
        .wait_operator_leader(Some(&old_leader), BUDGET)
        .await?;
    let image = cluster
        .kubectl(&[
            "get",
            "pod",
            "-n",
            NAMESPACE,
            &new_leader,
            "-o",
            "jsonpath={.spec.containers[0].image}",
        ])
        .await?;
    ensure(image == tests::deploy::image(LevelId::Two), || {
        format!("the new leader {new_leader} runs Level 2's image, not {image}")
    })?;
    // Level 2 has taken the database over once it names itself in the
    // SpecImplemented condition; the database's pods are the same ones,
    // never restarted.
    cluster
        .wait_for(NAME, "reconciled by Level 2", |db| {
            db.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "SpecImplemented" && c.message.contains(LevelId::Two.name())
                })
            }) && tests::scenarios::is_settled(db)
        })
        .await?;
    let after = database_pods(&cluster).await?;
    ensure(before == after, || {
        format!(
            "the database's pods (name, uid, restarts) are unchanged: before {before:?}, after {after:?}"
        )
    })?;
    cluster.finish().await;
    Ok(())
}

/// Runs scenario `name` against `level` with the operator in-cluster, on
/// the scenario's own sandbox with real processes.
async fn scenario_in_cluster(name: &str, level: LevelId) -> Result<(), Failed> {
    let entry = tests::scenarios::find(name)
        .ok_or_else(|| Failed::new(format!("there is no scenario {name}")))?;
    let mut config = (entry.sandbox_config)();
    config.runtime_kind = RuntimeKind::Postgres;
    let cluster = TestCluster::sandbox(config)
        .await
        .or_fail("start a sandbox")?
        .with_budget((entry.budget)().max(BUDGET))
        .operators_in_cluster();
    let outcome = entry.run(&cluster, level).await?;
    ensure(outcome.matches, || {
        format!(
            "{name} at {} in-cluster observed {:?}, expected {:?}\n{}",
            level.name(),
            outcome.observed,
            outcome.expected,
            outcome.difference.unwrap_or_default()
        )
    })?;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn the_install_scenario_passes_with_each_level_in_cluster() -> Result<(), Failed> {
    for level in [LevelId::One, LevelId::Three, LevelId::Five] {
        scenario_in_cluster("Install", level).await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_drift_scenarios_pass_with_level1_in_cluster() -> Result<(), Failed> {
    scenario_in_cluster("EditedChild", LevelId::One).await?;
    scenario_in_cluster("DeletedStatefulSet", LevelId::One).await
}

#[tokio::test]
async fn the_minor_upgrade_scenario_passes_with_level2_in_cluster() -> Result<(), Failed> {
    scenario_in_cluster("MinorUpgrade", LevelId::Two).await
}

#[tokio::test]
async fn the_backup_scenario_passes_with_level3_in_cluster() -> Result<(), Failed> {
    scenario_in_cluster("BackupRestored", LevelId::Three).await
}

#[tokio::test]
async fn a_permission_the_rbac_lacks_fails_the_install_scenario_with_the_403_in_its_message()
-> Result<(), Failed> {
    let cluster = cluster().await;
    cluster.apply_overlay(LevelId::One).await?;
    cluster.wait_operator_rolled_out().await?;
    // The operator's ClusterRole without its rule for StatefulSets.
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(cluster.client());
    let mut role = roles
        .get("pgdb-operator")
        .await
        .or_fail("read ClusterRole pgdb-operator")?;
    let rules = role.rules.take().unwrap_or_default();
    let kept: Vec<_> = rules
        .into_iter()
        .filter(|r| {
            !r.resources
                .iter()
                .flatten()
                .any(|resource| resource == "statefulsets")
        })
        .collect();
    let patch = serde_json::json!({"rules": kept});
    roles
        .patch(
            "pgdb-operator",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .or_fail("remove the StatefulSet rule from ClusterRole pgdb-operator")?;
    cluster
        .create(&DbBuilder::manifest(NAME).build())
        .await
        .or_fail(format!("create PostgresDB {NAME}"))?;
    let ready = cluster
        .eventually(
            Duration::from_secs(60),
            &format!("PostgresDB {NAME} is Ready"),
            || async {
                Ok(cluster
                    .database(NAME)
                    .await?
                    .filter(tests::scenarios::is_settled))
            },
        )
        .await;
    let failed = match ready {
        Ok(_) => {
            return Err(Failed::new(
                "the database became Ready though the operator may not touch StatefulSets",
            ));
        }
        Err(failed) => failed,
    };
    ensure(
        failed.message().contains("forbidden")
            && failed.message().contains("statefulsets")
            && failed
                .message()
                .contains("system:serviceaccount:pgdb-system:pgdb-operator"),
        || format!("the failure names the 403 for statefulsets and the ServiceAccount:\n{failed}"),
    )?;
    cluster.finish().await;
    Ok(())
}
