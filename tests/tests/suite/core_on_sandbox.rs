//! The shared core and Level 1 against the sandbox, beyond the behaviour
//! matrix: the status a ready database reports, refusals that name the field,
//! the schema guarding the operator, a missing CRD, and leader election.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::ResourceExt;
use kube::api::PostParams;
use sandbox::{Sandbox, SandboxConfig};
use shared::api::{Phase, PostgresDB};
use shared::health::Leadership;
use shared::runner::{self, LeaderElection, RunOptions};
use tests::builders::DbBuilder;
use tests::harness::{Failed, OrFail, TestCluster, WAIT, ensure};
use tests::levels::LevelId;
use tests::scenarios::{condition, is_settled};
use tokio::sync::oneshot;

async fn cluster() -> TestCluster {
    match TestCluster::start().await {
        Ok(cluster) => cluster,
        Err(error) => panic!("no cluster: {}", shared::reconcile::error_chain(&error)),
    }
}

async fn create(cluster: &TestCluster, db: PostgresDB) {
    if let Err(error) = cluster.create(&db).await {
        panic!("{}", shared::reconcile::error_chain(&error));
    }
}

#[tokio::test]
async fn a_ready_database_reports_its_version_endpoint_and_credentials_and_owns_its_children()
-> Result<(), Failed> {
    let cluster = cluster().await;
    let operator = cluster.run_operator(LevelId::One);
    create(&cluster, DbBuilder::manifest("orders").build()).await;
    let db = cluster.wait_for("orders", "Ready", is_settled).await?;
    let status = db.status.clone().expect("status");
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.current_version.as_deref(), Some("16.4"));
    assert_eq!(status.ready_replicas, 1);
    assert_eq!(
        status.credentials_secret.as_deref(),
        Some("orders-credentials")
    );
    let host = format!("orders.{}.svc", cluster.namespace());
    assert_eq!(
        status.endpoint.map(|e| (e.host, e.port)),
        Some((host, 5432))
    );
    assert_eq!(status.observed_generation, db.metadata.generation);
    for name in ["orders-credentials", "orders-superuser"] {
        let secret = cluster
            .api::<Secret>()
            .get(name)
            .await
            .expect("the Secret exists");
        assert_eq!(
            secret.owner_references()[0].uid,
            db.uid().unwrap_or_default()
        );
    }
    cluster
        .api::<ConfigMap>()
        .get("orders-config")
        .await
        .expect("the ConfigMap exists");
    cluster
        .api::<Service>()
        .get("orders-headless")
        .await
        .expect("the headless Service exists");
    let sts = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("the StatefulSet exists");
    let image = sts
        .spec
        .and_then(|s| s.template.spec?.containers[0].image.clone());
    assert_eq!(image.as_deref(), Some("postgres:16.4"));
    cluster
        .wait_for_event("orders", "Created", |e| e.starts_with("Normal Created"))
        .await?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

/// A reconcile lists each kind of child by the database's instance label
/// (pruning needs the lists) and reads a child it asks for by name from
/// those lists: no GET of a child that exists.
#[tokio::test]
async fn a_reconcile_of_a_ready_database_reads_its_children_by_one_list_per_kind()
-> Result<(), Failed> {
    let cluster = cluster().await;
    let operator = cluster.run_operator(LevelId::One);
    create(&cluster, DbBuilder::manifest("orders").build()).await;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    let counters = cluster
        .sandbox_handle()
        .ok_or_else(|| Failed::new("needs the sandbox's request counts"))?
        .counters();
    let before = counters.snapshot();
    cluster.settle("orders").await?;
    let after = counters.snapshot();
    let new = |verb: &str, resource: &str| {
        let key = (verb.to_string(), resource.to_string());
        after.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0)
    };
    for resource in ["secrets", "services", "configmaps", "statefulsets"] {
        ensure(new("get", resource) == 0, || {
            format!(
                "{} GETs of {resource} in two reconciles",
                new("get", resource)
            )
        })?;
        ensure(new("list", resource) >= 2, || {
            format!(
                "{} lists of {resource} in two reconciles",
                new("list", resource)
            )
        })?;
    }
    operator.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_unsupported_version_is_refused_with_a_warning_naming_the_field() -> Result<(), Failed> {
    let cluster = cluster().await;
    let operator = cluster.run_operator(LevelId::One);
    create(
        &cluster,
        DbBuilder::manifest("legacy").version("12").build(),
    )
    .await;
    let db = cluster
        .wait_for("legacy", "refused", |db| {
            condition(db, "Ready").is_some_and(|(_, r)| r == "InvalidVersion")
        })
        .await?;
    let ready = db
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned())
        .expect("Ready");
    assert!(
        ready.message.starts_with("spec.version:"),
        "{}",
        ready.message
    );
    cluster
        .wait_for_event("legacy", "a Warning InvalidVersion", |e| {
            e.starts_with("Warning InvalidVersion")
        })
        .await?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn a_spec_the_schema_rejects_never_reaches_the_operator() {
    let cluster = cluster().await;
    let error = cluster
        .api::<PostgresDB>()
        .create(
            &PostParams::default(),
            &DbBuilder::manifest("bad").version("sixteen").build(),
        )
        .await
        .expect_err("the API server validates the pattern");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("spec.version")),
        "{error:?}"
    );
    cluster.finish().await;
}

#[tokio::test]
async fn a_storage_shrink_is_refused_and_the_statefulset_left_untouched() -> Result<(), Failed> {
    let cluster = cluster().await;
    let operator = cluster.run_operator(LevelId::One);
    create(&cluster, DbBuilder::manifest("orders").build()).await;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    let before = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("exists");
    if let Err(error) = cluster
        .patch_spec("orders", serde_json::json!({"storage": {"size": "500Mi"}}))
        .await
    {
        panic!("{}", shared::reconcile::error_chain(&error));
    }
    let db = cluster
        .wait_for("orders", "refused", |db| {
            condition(db, "Ready").is_some_and(|(_, r)| r == "RefusedStorageShrink")
        })
        .await?;
    assert_eq!(db.status.and_then(|s| s.phase), Some(Phase::Invalid));
    let after = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("exists");
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "the StatefulSet was not touched"
    );
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn the_operator_refuses_to_start_when_the_crd_is_not_installed() {
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("the sandbox starts");
    let result = runner::run(
        LevelId::One.build(),
        sandbox.client(),
        RunOptions::default(),
        std::future::pending(),
    )
    .await;
    let message = result.expect_err("no CRD").to_string();
    assert!(
        message.contains("level1-install crd | kubectl apply -f -"),
        "{message}"
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn with_leader_election_a_second_replica_stands_by() -> Result<(), Failed> {
    let cluster = cluster().await;
    let election = |holder: &str| LeaderElection {
        namespace: cluster.namespace().to_string(),
        lease_name: "pgdb-operator".into(),
        holder: holder.into(),
        ttl: Duration::from_secs(6),
    };
    // Each replica has a client of its own, whose User-Agent the sandbox
    // notes with every kind of request it makes.
    let run = |holder: &'static str, leading: Leadership, stopped: oneshot::Receiver<()>| {
        let options = RunOptions {
            leader_election: Some(election(holder)),
            leading,
            ..Default::default()
        };
        let kubeconfig = cluster.kubeconfig().to_path_buf();
        tokio::spawn(async move {
            let client =
                shared::cli::connect(Some(&kubeconfig), &format!("replica-{holder}/0")).await?;
            runner::run(LevelId::One.build(), client, options, async move {
                let _ = stopped.await;
            })
            .await
        })
    };
    let (first, second) = (Leadership::default(), Leadership::default());
    let (stop_first, first_stopped) = oneshot::channel::<()>();
    let (stop_second, second_stopped) = oneshot::channel::<()>();
    let one = run("one", first.clone(), first_stopped);
    cluster
        .eventually(WAIT, "the first replica leads", || async {
            Ok(first.get().then_some(()))
        })
        .await?;
    let two = run("two", second.clone(), second_stopped);
    let leases = cluster.api::<Lease>();
    let renewed_before = leases
        .get("pgdb-operator")
        .await
        .or_fail("read the Lease")?
        .spec
        .and_then(|s| s.renew_time);
    // The synchronisation point: the second replica has read the Lease
    // (its first attempt, at its start), and the first has renewed it
    // since (a third of its lifetime later).
    let counters = cluster.sandbox_handle().expect("a sandbox").counters();
    cluster
        .eventually(
            WAIT,
            "the second replica read the Lease and the first renewed it",
            || async {
                // Standing by all along, not only at the end.
                ensure(!second.get(), || {
                    "the second replica acts while the first leads".into()
                })?;
                let asked = counters
                    .requests_from("replica-two/")
                    .iter()
                    .any(|r| r.resource == "leases" && r.verb == "get");
                let lease = leases
                    .get("pgdb-operator")
                    .await
                    .or_fail("read the Lease")?;
                let spec = lease.spec.unwrap_or_default();
                Ok((asked && spec.renew_time > renewed_before).then_some(spec.holder_identity))
            },
        )
        .await?
        .filter(|holder| holder == "one")
        .ok_or_else(|| Failed::new("the Lease changed hands"))?;
    let wrote: Vec<_> = counters
        .requests_from("replica-two/")
        .into_iter()
        .filter(|r| r.resource == "leases" && r.verb != "get")
        .collect();
    ensure(wrote.is_empty(), || {
        format!("the standby wrote the Lease: {wrote:?}")
    })?;
    ensure(!second.get(), || {
        "the second replica must not act while the first leads".into()
    })?;
    let _ = stop_second.send(());
    let _ = stop_first.send(());
    assert!(matches!(
        tokio::time::timeout(WAIT, two).await,
        Ok(Ok(Ok(())))
    ));
    assert!(matches!(
        tokio::time::timeout(WAIT, one).await,
        Ok(Ok(Ok(())))
    ));
    cluster.finish().await;
    Ok(())
}

/// Asked to stop at once, before the controller's cache of databases is
/// filled, the operator still returns: a graceful shutdown waits for that
/// cache, which a stopped watch never fills (the Level 4 chapter's test
/// hung for good when its first block failed and it stopped the operator
/// at once).
#[tokio::test]
async fn an_operator_stopped_before_its_cache_is_filled_still_stops() -> Result<(), Failed> {
    let cluster = cluster().await;
    let client = shared::cli::connect(Some(cluster.kubeconfig()), "stopped-at-once/0")
        .await
        .or_fail("connect to the cluster")?;
    let options = RunOptions {
        namespace: Some(cluster.namespace().to_string()),
        ..Default::default()
    };
    let run = runner::run(LevelId::Four.build(), client, options, async {});
    let outcome = tokio::time::timeout(Duration::from_secs(60), run).await;
    ensure(outcome.is_ok(), || {
        "the operator did not return within 60 s of being asked to stop".into()
    })?;
    Ok(())
}
