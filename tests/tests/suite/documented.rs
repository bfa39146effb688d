//! Level 1's documented behaviours that had no test of their own
//! (docs/level1-install.md): the refusals `RefusedStorageClassChange` and
//! `InvalidParameter` naming their field and touching nothing, `Degraded`
//! for a pod whose image cannot be pulled, that cannot be scheduled, or
//! that crash-loops on a data directory a new major cannot read (Level 1
//! given a major change), a larger size applied to the existing volume, and
//! the data volume outliving the database.
//!
//! An unschedulable pod is covered end to end (the sandbox's scheduler
//! leaves a pod whose requests exceed its node's allocatable Pending with
//! `PodScheduled=False`) and at the assessment, the pure function that
//! reads the pod's `PodScheduled` condition, with several nodes' message.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, PodCondition, PodStatus, Secret, Service,
};
use kube::ResourceExt;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use shared::api::{ComputeResources, Phase, PostgresDB};
use shared::capability::ApplyReport;
use shared::conditions::{ConditionStatus, DEGRADED};
use shared::reconcile::{Decision, assess};
use shared::testing::{ObservedBuilder, at};
use tests::builders::DbBuilder;
use tests::connect::{Role, connect};
use tests::harness::{Failed, OrFail, TestCluster, ensure, real_postgres};
use tests::levels::LevelId;
use tests::scenarios::is_settled;

/// The `Ready` condition's reason and message.
fn ready_reason(db: &PostgresDB) -> Option<(String, String)> {
    let c = db
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.reason.clone(), c.message.clone()))
}

/// The condition `type_`'s status, reason and message.
fn condition_of(db: &PostgresDB, type_: &str) -> Option<(String, String, String)> {
    let c = db
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.to_string(), c.reason.clone(), c.message.clone()))
}

async fn sandbox() -> Result<TestCluster, Failed> {
    TestCluster::start()
        .await
        .or_fail("start a sandbox with the simulated runtime")
}

/// The children a refusal must leave alone, as they were: the
/// StatefulSet by its generation and spec (the settles annotate it), the
/// others by their resourceVersion.
async fn children(cluster: &TestCluster, name: &str) -> Result<BTreeMap<String, String>, Failed> {
    let mut versions = BTreeMap::new();
    let sts = cluster
        .api::<StatefulSet>()
        .get(name)
        .await
        .or_fail("read the StatefulSet")?;
    versions.insert(
        format!("StatefulSet/{name}"),
        format!(
            "generation {:?}, spec {}",
            sts.metadata.generation,
            serde_json::to_string(&sts.spec).unwrap_or_default()
        ),
    );
    let config = cluster
        .api::<ConfigMap>()
        .get(&format!("{name}-config"))
        .await
        .or_fail("read the ConfigMap")?;
    versions.insert(
        format!("ConfigMap/{name}-config"),
        config.resource_version().unwrap_or_default(),
    );
    let claim = cluster
        .api::<PersistentVolumeClaim>()
        .get(&format!("data-{name}-0"))
        .await
        .or_fail("read the data PVC")?;
    versions.insert(
        format!("PersistentVolumeClaim/data-{name}-0"),
        claim.resource_version().unwrap_or_default(),
    );
    Ok(versions)
}

/// After a settle, the writes the cluster received other than the
/// database's status and Events: a refusal makes none.
async fn writes_besides_status(cluster: &TestCluster, name: &str) -> Result<Vec<String>, Failed> {
    let writes = cluster
        .settle(name)
        .await?
        .ok_or_else(|| Failed::new("settle needs the sandbox"))?;
    Ok(writes.resources_except(&["postgresdbs", "events"]))
}

#[tokio::test]
async fn changing_the_storage_class_of_an_existing_database_is_refused_naming_the_field_and_nothing_is_touched()
-> Result<(), Failed> {
    let cluster = sandbox().await?;
    let operator = cluster.run_operator(LevelId::One);
    let mut db = DbBuilder::manifest("orders").build();
    db.spec.storage.storage_class_name = Some("standard".into());
    cluster.create(&db).await.or_fail("create the PostgresDB")?;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    // Once at rest: the comparison below starts from a settled database.
    writes_besides_status(&cluster, "orders").await?;
    let before = children(&cluster, "orders").await?;

    cluster
        .patch_spec(
            "orders",
            serde_json::json!({"storage": {"storageClassName": "fast"}}),
        )
        .await
        .or_fail("patch spec.storage.storageClassName")?;
    let refused = cluster
        .wait_for("orders", "refused with RefusedStorageClassChange", |db| {
            ready_reason(db).is_some_and(|(r, _)| r == "RefusedStorageClassChange")
        })
        .await?;
    let (_, message) = ready_reason(&refused).unwrap_or_default();
    ensure(message.contains("spec.storage.storageClassName"), || {
        format!("the condition names the field: {message}")
    })?;
    ensure(
        condition_of(&refused, "Ready").is_some_and(|(s, _, _)| s == "False"),
        || format!("Ready is False: {:?}", condition_of(&refused, "Ready")),
    )?;
    ensure(
        refused.status.as_ref().and_then(|s| s.phase) == Some(Phase::Invalid),
        || {
            format!(
                "phase Invalid: {:?}",
                refused.status.as_ref().and_then(|s| s.phase)
            )
        },
    )?;
    cluster
        .wait_for_event("orders", "a Warning RefusedStorageClassChange", |e| {
            e.starts_with("Warning RefusedStorageClassChange")
        })
        .await?;
    let written = writes_besides_status(&cluster, "orders").await?;
    ensure(written.is_empty(), || {
        format!("a refusal writes nothing but status and Events: {written:?}")
    })?;
    let after = children(&cluster, "orders").await?;
    ensure(after == before, || {
        format!("nothing touched: before {before:?}, after {after:?}")
    })?;
    let claim = cluster
        .api::<PersistentVolumeClaim>()
        .get("data-orders-0")
        .await
        .or_fail("read the data PVC")?;
    let class = claim.spec.and_then(|s| s.storage_class_name);
    ensure(class.as_deref() == Some("standard"), || {
        format!("the volume keeps its class: {class:?}")
    })?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn a_parameter_the_operator_sets_itself_is_refused_as_invalid_parameter_naming_the_field()
-> Result<(), Failed> {
    let cluster = sandbox().await?;
    let operator = cluster.run_operator(LevelId::One);
    // An existing database given `listen_addresses`.
    cluster
        .create(&DbBuilder::manifest("orders").build())
        .await
        .or_fail("create the PostgresDB orders")?;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    writes_besides_status(&cluster, "orders").await?;
    let before = children(&cluster, "orders").await?;
    cluster
        .patch_spec(
            "orders",
            serde_json::json!({"parameters": {"listen_addresses": "*"}}),
        )
        .await
        .or_fail("patch spec.parameters")?;
    let refused = cluster
        .wait_for("orders", "refused with InvalidParameter", |db| {
            ready_reason(db).is_some_and(|(r, _)| r == "InvalidParameter")
        })
        .await?;
    let (_, message) = ready_reason(&refused).unwrap_or_default();
    ensure(message.contains("spec.parameters.listen_addresses"), || {
        format!("the condition names the parameter's field: {message}")
    })?;
    cluster
        .wait_for_event("orders", "a Warning InvalidParameter", |e| {
            e.starts_with("Warning InvalidParameter")
        })
        .await?;
    let written = writes_besides_status(&cluster, "orders").await?;
    ensure(written.is_empty(), || {
        format!("a refusal writes nothing but status and Events: {written:?}")
    })?;
    let after = children(&cluster, "orders").await?;
    ensure(after == before, || {
        format!("nothing touched: before {before:?}, after {after:?}")
    })?;

    // A new database asking for `port` gets no child at all.
    cluster
        .create(
            &DbBuilder::manifest("billing")
                .parameter("port", "5433")
                .build(),
        )
        .await
        .or_fail("create the PostgresDB billing")?;
    let refused = cluster
        .wait_for("billing", "refused with InvalidParameter", |db| {
            ready_reason(db).is_some_and(|(r, _)| r == "InvalidParameter")
        })
        .await?;
    let (_, message) = ready_reason(&refused).unwrap_or_default();
    ensure(message.contains("spec.parameters.port"), || {
        format!("the condition names the parameter's field: {message}")
    })?;
    let sts = cluster
        .api::<StatefulSet>()
        .get_opt("billing")
        .await
        .or_fail("read StatefulSet billing")?;
    ensure(sts.is_none(), || "no StatefulSet for a refused spec".into())?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

/// Whether every owned child of `name` is gone.
async fn children_gone(cluster: &TestCluster, name: &str) -> Result<Vec<String>, Failed> {
    let mut left = Vec::new();
    if cluster
        .api::<StatefulSet>()
        .get_opt(name)
        .await
        .or_fail("read the StatefulSet")?
        .is_some()
    {
        left.push(format!("StatefulSet/{name}"));
    }
    for service in [name.to_string(), format!("{name}-headless")] {
        if cluster
            .api::<Service>()
            .get_opt(&service)
            .await
            .or_fail("read a Service")?
            .is_some()
        {
            left.push(format!("Service/{service}"));
        }
    }
    if cluster
        .api::<ConfigMap>()
        .get_opt(&format!("{name}-config"))
        .await
        .or_fail("read the ConfigMap")?
        .is_some()
    {
        left.push(format!("ConfigMap/{name}-config"));
    }
    for secret in [format!("{name}-credentials"), format!("{name}-superuser")] {
        if cluster
            .api::<Secret>()
            .get_opt(&secret)
            .await
            .or_fail("read a Secret")?
            .is_some()
        {
            left.push(format!("Secret/{secret}"));
        }
    }
    Ok(left)
}

/// Deletes database `name`, waits until the garbage collector took its
/// children, and checks that the data PVC is the one it was (same uid,
/// not being deleted).
async fn delete_and_keep_the_volume(cluster: &TestCluster, name: &str) -> Result<(), Failed> {
    let claim_name = format!("data-{name}-0");
    let claims = cluster.api::<PersistentVolumeClaim>();
    let uid = claims
        .get(&claim_name)
        .await
        .or_fail("read the data PVC")?
        .uid();
    cluster
        .api::<PostgresDB>()
        .delete(name, &DeleteParams::default())
        .await
        .or_fail(format!("delete PostgresDB {name}"))?;
    cluster
        .eventually(
            cluster.budget(),
            &format!("PostgresDB {name} and its children are gone"),
            || async {
                let left = children_gone(cluster, name).await?;
                let db = cluster.database(name).await?;
                Ok((left.is_empty() && db.is_none()).then_some(()))
            },
        )
        .await?;
    // Gone children settle nothing: read the claim after the pod is gone
    // too, when the StatefulSet's deletion has run its course.
    cluster
        .eventually(
            cluster.budget(),
            &format!("pod {name}-0 is gone"),
            || async {
                let pod = cluster
                    .api::<Pod>()
                    .get_opt(&format!("{name}-0"))
                    .await
                    .or_fail("read the pod")?;
                Ok(pod.is_none().then_some(()))
            },
        )
        .await?;
    let claim = claims
        .get_opt(&claim_name)
        .await
        .or_fail("read the data PVC")?;
    ensure(claim.as_ref().map(|c| c.uid()) == Some(uid.clone()), || {
        format!(
            "PVC {claim_name} survives with uid {uid:?}: {:?}",
            claim.as_ref().map(|c| c.uid())
        )
    })?;
    ensure(
        claim.is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        || format!("PVC {claim_name} is not being deleted"),
    )
}

#[tokio::test]
async fn deleting_a_database_deletes_its_children_and_keeps_its_data_volume() -> Result<(), Failed>
{
    let cluster = sandbox().await?;
    let operator = cluster.run_operator(LevelId::One);
    cluster
        .create(&DbBuilder::manifest("orders").build())
        .await
        .or_fail("create the PostgresDB")?;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    delete_and_keep_the_volume(&cluster, "orders").await?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn a_database_deleted_and_created_again_under_its_name_finds_its_rows() -> Result<(), Failed>
{
    let cluster = TestCluster::sandbox(real_postgres(&[15]))
        .await
        .or_fail("start a real-PostgreSQL sandbox")?
        .with_budget(std::time::Duration::from_secs(90));
    let operator = cluster.run_operator(LevelId::One);
    let db = DbBuilder::manifest("orders").version("15").build();
    cluster.create(&db).await.or_fail("create the PostgresDB")?;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    let owner = connect(&cluster, Role::Owner, "orders")
        .await
        .ok_or_else(|| Failed::new("the credentials and the Service exist"))?;
    owner
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1), (2), (3)")
        .await
        .or_fail("write rows")?;
    drop(owner);
    // The Secrets go with the database (they are its children); the data
    // directory keeps the passwords it was initialised with. A user who
    // means to come back keeps a copy of them, as `kubectl get secret -o
    // yaml` would, and puts it back before creating the database again.
    let secrets = cluster.api::<Secret>();
    let mut kept = Vec::new();
    for name in ["orders-credentials", "orders-superuser"] {
        let secret = secrets
            .get(name)
            .await
            .or_fail(format!("read Secret {name}"))?;
        kept.push(Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: secret.data,
            ..Default::default()
        });
    }

    delete_and_keep_the_volume(&cluster, "orders").await?;

    for secret in &kept {
        secrets
            .create(&PostParams::default(), secret)
            .await
            .or_fail("put a kept Secret back")?;
    }
    cluster
        .create(&db)
        .await
        .or_fail("create the PostgresDB again")?;
    cluster
        .wait_for("orders", "Ready again", is_settled)
        .await?;
    let owner = connect(&cluster, Role::Owner, "orders")
        .await
        .ok_or_else(|| Failed::new("the credentials and the Service exist"))?;
    let rows = owner
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .or_fail("read the rows written before the deletion")?;
    let count: i64 = rows.get(0);
    ensure(count == 3, || format!("3 rows survive, found {count}"))?;
    drop(owner);
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn a_pod_whose_image_cannot_be_pulled_degrades_the_database_with_the_kubelets_reason()
-> Result<(), Failed> {
    // A minor with no binaries installed fails like an image pull
    // (docs/sandbox.md); 16.3 is not one the install script fetches.
    let config = real_postgres(&[15]);
    ensure(
        config.postgres.binaries.server_for(16, Some(3)).is_err(),
        || {
            "PostgreSQL 16.3 is installed here: this test needs a version the runtime cannot pull"
                .into()
        },
    )?;
    let cluster = TestCluster::sandbox(config)
        .await
        .or_fail("start a real-PostgreSQL sandbox")?;
    let operator = cluster.run_operator(LevelId::One);
    cluster
        .create(&DbBuilder::manifest("orders").version("16.3").build())
        .await
        .or_fail("create the PostgresDB")?;
    let degraded = cluster
        .wait_for("orders", "Degraded by an image pull", |db| {
            condition_of(db, "Degraded").is_some_and(|(s, _, m)| {
                s == "True" && (m.contains("ErrImagePull") || m.contains("ImagePullBackOff"))
            })
        })
        .await?;
    ensure(
        degraded.status.as_ref().and_then(|s| s.phase) == Some(Phase::Degraded),
        || {
            format!(
                "phase Degraded: {:?}",
                degraded.status.as_ref().and_then(|s| s.phase)
            )
        },
    )?;
    let message = condition_of(&degraded, "Degraded")
        .map(|(_, _, m)| m)
        .unwrap_or_default();
    ensure(message.contains("orders-0"), || {
        format!("the message names the pod: {message}")
    })?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn a_database_requesting_more_cpu_than_any_node_has_is_degraded_with_the_schedulers_message()
-> Result<(), Failed> {
    let cluster = sandbox().await?;
    let operator = cluster.run_operator(LevelId::One);
    let mut db = DbBuilder::manifest("orders").build();
    db.spec.resources.requests = Some(ComputeResources {
        cpu: Some("64".into()),
        memory: Some("256Mi".into()),
    });
    cluster.create(&db).await.or_fail("create the PostgresDB")?;
    let scheduler = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are \
                     available: 1 No preemption victims found for incoming pod.";
    let degraded = cluster
        .wait_for("orders", "Degraded by an unschedulable pod", |db| {
            condition_of(db, "Degraded")
                .is_some_and(|(s, _, m)| s == "True" && m.contains(scheduler))
        })
        .await?;
    let (_, reason, message) = condition_of(&degraded, "Degraded").unwrap_or_default();
    ensure(
        reason == "PodFailing"
            && message == format!("pod orders-0 cannot be scheduled: {scheduler}"),
        || format!("Degraded names the pod and the scheduler's message: {reason}: {message}"),
    )?;
    ensure(
        degraded.status.as_ref().and_then(|s| s.phase) == Some(Phase::Degraded),
        || {
            format!(
                "phase Degraded: {:?}",
                degraded.status.as_ref().and_then(|s| s.phase)
            )
        },
    )?;
    let pod = cluster
        .api::<Pod>()
        .get("orders-0")
        .await
        .or_fail("read pod orders-0")?;
    ensure(
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none(),
        || format!("the pod is not bound to a node: {:?}", pod.spec),
    )?;
    cluster
        .wait_for_event("orders-0", "the scheduler's FailedScheduling", |e| {
            e.starts_with("Warning FailedScheduling") && e.contains(scheduler)
        })
        .await?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[test]
fn a_pod_the_scheduler_cannot_place_degrades_the_database_with_its_reason() {
    let db = DbBuilder::named("orders").build();
    let message = "0/3 nodes are available: 3 Insufficient memory.";
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("orders-0".into()),
            ..Default::default()
        },
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some(message.into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let observed = ObservedBuilder::new().with(&pod).build();
    let decision = Decision::Apply {
        changes: vec![],
        deletions: vec![],
        sql: vec![],
        notes: vec![],
    };
    let draft = assess(
        &LevelId::One.build(),
        &db,
        &observed,
        &decision,
        &ApplyReport::default(),
        at(1_000),
    );
    let degraded = draft.conditions.get(DEGRADED).expect("Degraded is set");
    assert!(
        degraded.status == ConditionStatus::True
            && degraded.is_warning()
            && degraded.message.contains("cannot be scheduled")
            && degraded.message.contains(message),
        "{degraded:?}"
    );
}

#[tokio::test]
async fn a_larger_storage_size_is_applied_to_the_existing_claim_and_not_to_the_claim_template()
-> Result<(), Failed> {
    let cluster = sandbox().await?;
    let operator = cluster.run_operator(LevelId::One);
    cluster
        .create(&DbBuilder::manifest("orders").storage("1Gi").build())
        .await
        .or_fail("create the PostgresDB")?;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    let claims = cluster.api::<PersistentVolumeClaim>();
    let uid = claims
        .get("data-orders-0")
        .await
        .or_fail("read the data PVC")?
        .uid();
    cluster
        .patch_spec("orders", serde_json::json!({"storage": {"size": "2Gi"}}))
        .await
        .or_fail("patch spec.storage.size")?;
    let grown = cluster
        .wait_for_object::<PersistentVolumeClaim>("data-orders-0", "asking for 2Gi", |claim| {
            claim
                .and_then(|c| c.spec.as_ref()?.resources.as_ref()?.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .is_some_and(|q| q.0 == "2Gi")
        })
        .await?;
    ensure(grown.as_ref().map(|c| c.uid()) == Some(uid), || {
        "the same claim grew, not a new one".into()
    })?;
    cluster
        .wait_for("orders", "Ready at the new generation", is_settled)
        .await?;
    let sts = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .or_fail("read the StatefulSet")?;
    let template: Vec<Option<String>> = sts
        .spec
        .and_then(|s| s.volume_claim_templates)
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            t.spec
                .and_then(|s| s.resources?.requests?.get("storage").map(|q| q.0.clone()))
        })
        .collect();
    ensure(template == [Some("1Gi".to_string())], || {
        format!("the claim template, which cannot change, keeps 1Gi: {template:?}")
    })?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn level1_given_a_new_major_leaves_the_pod_crash_looping_and_reports_degraded()
-> Result<(), Failed> {
    let cluster = TestCluster::sandbox(real_postgres(&[15, 16]))
        .await
        .or_fail("start a real-PostgreSQL sandbox")?
        .with_budget(std::time::Duration::from_secs(90));
    let operator = cluster.run_operator(LevelId::One);
    cluster
        .create(&DbBuilder::manifest("orders").version("15").build())
        .await
        .or_fail("create the PostgresDB")?;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    cluster
        .patch_spec("orders", serde_json::json!({"version": "16"}))
        .await
        .or_fail("patch spec.version")?;
    let degraded = cluster
        .wait_for("orders", "Degraded by a crash loop", |db| {
            condition_of(db, "Degraded")
                .is_some_and(|(s, _, m)| s == "True" && m.contains("CrashLoopBackOff"))
        })
        .await?;
    ensure(
        degraded.status.as_ref().and_then(|s| s.phase) == Some(Phase::Degraded),
        || {
            format!(
                "phase Degraded: {:?}",
                degraded.status.as_ref().and_then(|s| s.phase)
            )
        },
    )?;
    // The reason is the server's: it refuses the data directory 15 wrote.
    let pod = cluster
        .api::<Pod>()
        .get("orders-0")
        .await
        .or_fail("read the pod")?;
    let restarts: i32 = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    ensure(restarts > 0, || "the container restarted".into())?;
    let log = cluster
        .api::<Pod>()
        .logs(
            "orders-0",
            &kube::api::LogParams {
                previous: true,
                ..Default::default()
            },
        )
        .await
        .or_fail("read the previous run's log")?;
    ensure(log.contains("incompatible"), || {
        format!("the server refuses the data directory:\n{log}")
    })?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}
