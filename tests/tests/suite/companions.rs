//! Companion controllers (`shared::capability::Companion`): the runner
//! starts a level's companions beside the `PostgresDB` reconcile, stops
//! them when the operator stops (and waits for them), and stops the
//! operator with the error of a companion that fails.
//!
//! The companions here leave ConfigMaps as traces in the watched
//! namespace: one when started, one when they saw the shutdown.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use shared::capability::{Companion, CompanionContext, CompanionRun, Level};
use shared::runner::{self, RunOptions};
use tests::harness::TestCluster;
use tokio::sync::oneshot;

async fn trace(context: &CompanionContext, name: &str) -> Result<(), shared::Error> {
    let namespace = context.namespace.clone().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(context.client.clone(), &namespace);
    let object = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &object)
        .await
        .map(|_| ())
        .map_err(|source| shared::Error::Kube {
            action: format!("create ConfigMap {name}"),
            source: Box::new(source),
        })
}

fn patient(context: CompanionContext) -> CompanionRun {
    Box::pin(async move {
        trace(&context, "companion-started").await?;
        context.shutdown.cancelled().await;
        // Work after the shutdown signal is waited for by the runner.
        tokio::time::sleep(Duration::from_millis(300)).await;
        trace(&context, "companion-stopped").await
    })
}

fn failing(_context: CompanionContext) -> CompanionRun {
    Box::pin(async move {
        Err(shared::Error::Desired {
            what: "the companion gave up".into(),
        })
    })
}

fn level_with(run: fn(CompanionContext) -> CompanionRun) -> Level {
    let mut level = level1_install::level();
    level.companions.push(Companion {
        name: "test-companion",
        run,
    });
    level
}

fn options(cluster: &TestCluster) -> RunOptions {
    RunOptions {
        namespace: Some(cluster.namespace().to_string()),
        ..Default::default()
    }
}

async fn exists(cluster: &TestCluster, name: &str) -> bool {
    cluster
        .api::<ConfigMap>()
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_runs_with_the_operator_and_stops_with_it() {
    let cluster = TestCluster::start().await.expect("a cluster");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runner::run(
        level_with(patient),
        cluster.client(),
        options(&cluster),
        async move {
            let _ = stopped.await;
        },
    ));
    let started = cluster
        .eventually(cluster.budget(), "the companion started", || async {
            Ok(exists(&cluster, "companion-started").await.then_some(()))
        })
        .await;
    if let Err(failed) = started {
        panic!("{failed}");
    }
    assert!(!exists(&cluster, "companion-stopped").await);
    let _ = stop.send(());
    let outcome = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the operator stops")
        .expect("the operator's task ends");
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        exists(&cluster, "companion-stopped").await,
        "the runner returned before its companion finished"
    );
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_that_fails_stops_the_operator_with_its_error() {
    let cluster = TestCluster::start().await.expect("a cluster");
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        runner::run(
            level_with(failing),
            cluster.client(),
            options(&cluster),
            std::future::pending(),
        ),
    )
    .await
    .expect("the operator stops by itself");
    let error = outcome.expect_err("the companion's error");
    assert!(
        shared::reconcile::error_chain(&error).contains("the companion gave up"),
        "{error}"
    );
    cluster.finish().await;
}

/// Leaves a trace a second after it starts, unless it was stopped first.
fn slow(context: CompanionContext) -> CompanionRun {
    Box::pin(async move {
        trace(&context, "companion-started").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        trace(&context, "companion-outlived-its-operator").await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_stops_when_its_operator_is_killed_and_acts_no_more() {
    let cluster = TestCluster::start().await.expect("a cluster");
    let task = tokio::spawn(runner::run(
        level_with(slow),
        cluster.client(),
        options(&cluster),
        std::future::pending::<()>(),
    ));
    let started = cluster
        .eventually(cluster.budget(), "the companion started", || async {
            Ok(exists(&cluster, "companion-started").await.then_some(()))
        })
        .await;
    if let Err(failed) = started {
        panic!("{failed}");
    }
    // What the harness does to kill an in-process operator, as a killed
    // process stops: the run's future is dropped, with no shutdown.
    task.abort();
    let _ = task.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !exists(&cluster, "companion-outlived-its-operator").await,
        "a companion of a killed operator went on acting"
    );
    cluster.finish().await;
}
