//! Level 4's symptoms and ServiceMonitor on the sandbox, through the real
//! core: conditions that appear and clear with one Event each way, and a
//! ServiceMonitor applied only where its API is served.
//!
//! Readings are what the collector records; here the test records them
//! itself into the metrics it gives the in-process operator
//! (`RunOptions.metrics`), with the collector companion left out so the
//! test's readings are the only ones. So what is checked is the core and
//! the symptoms: a recorded reading whose summary changes reconciles the
//! database, and the conditions, Events and `status.insights` follow.
//! [`a_transaction_held_open_on_a_real_server_raises_long_running_transaction`]
//! runs the whole of Level 4, its collector included, against a real
//! server (it needs the collector and takes the threshold's five minutes).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use level4_insights::insights::monitor::{API_UNAVAILABLE, MONITORING_CONFIGURED, ServiceMonitor};
use level4_insights::insights::symptoms::{CONNECTIONS_SATURATED, LONG_RUNNING_TRANSACTION};
use shared::api::PostgresDB;
use shared::metrics::Metrics;
use shared::readings::DatabaseReading;
use shared::runner::{self, RunOptions};
use tests::builders::DbBuilder;
use tests::connect::{Role, connect};
use tests::harness::{Failed, Operator, OrFail, TestCluster, real_postgres};
use tests::scenarios::condition;
use tokio::sync::oneshot;

const NAME: &str = "orders";

/// The minimal ServiceMonitor CRD the tests install.
const SERVICE_MONITOR_CRD: &str =
    include_str!("../../fixtures/monitoring.coreos.com/servicemonitors.yaml");

async fn start() -> TestCluster {
    match TestCluster::start().await {
        Ok(cluster) => cluster.with_budget(Duration::from_secs(60)),
        Err(error) => panic!("no cluster: {}", shared::reconcile::error_chain(&error)),
    }
}

/// Level 4 in-process, watching the test's namespace, counting into and
/// reading from `metrics`; without its collector when `collect` is false.
fn run_level4(
    cluster: &TestCluster,
    metrics: Arc<Metrics>,
    collect: bool,
    interval: Option<Duration>,
) -> Operator {
    let (stop, stopped) = oneshot::channel::<()>();
    let instance = format!("level4-insights-{}", cluster.namespace());
    let options = RunOptions {
        namespace: Some(cluster.namespace().to_string()),
        instance: Some(instance.clone()),
        metrics: Some(metrics),
        metrics_interval: interval,
        ..Default::default()
    };
    let mut level = level4_insights::level();
    if !collect {
        level
            .companions
            .retain(|companion| companion.name != "insights-collector");
    }
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    let task = tokio::spawn(async move {
        let agent = shared::cli::user_agent("level4-insights");
        let client = shared::cli::connect(Some(&kubeconfig), &agent).await?;
        runner::run(level, client, options, async move {
            let _ = stopped.await;
        })
        .await
    });
    Operator::InProcess {
        stop: Some(stop),
        task,
        instance,
    }
}

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new(Some(
        level4_insights::insights::series::database_series,
    )))
}

/// A reading of `orders-0` with `connections` idle of 100 (3 reserved).
fn reading(connections: u64) -> DatabaseReading {
    DatabaseReading {
        at: jiff::Timestamp::now(),
        pod: format!("{NAME}-0"),
        server_version: Some("15.8".into()),
        connections: [("idle".to_string(), connections)].into(),
        max_connections: Some(100),
        reserved_connections: Some(3),
        oldest_transaction_seconds: Some(0.0),
        xid_age: Some(1_000),
        volume_used_bytes: Some(100 << 20),
        volume_capacity_bytes: Some(1 << 30),
        ..Default::default()
    }
}

fn record(cluster: &TestCluster, metrics: &Metrics, reading: DatabaseReading) {
    metrics
        .readings
        .record((cluster.namespace().to_string(), NAME.to_string()), reading);
}

fn has_condition(db: &PostgresDB, type_: &str, status: &str, reason: &str) -> bool {
    condition(db, type_).is_some_and(|(s, r)| s == status && r == reason)
}

/// The Events about the database with `reason`, as `Type Reason: note`.
async fn events_with(cluster: &TestCluster, reason: &str) -> Result<Vec<String>, Failed> {
    Ok(cluster
        .events(NAME)
        .await?
        .into_iter()
        .filter(|e| {
            e.split(':')
                .next()
                .is_some_and(|head| head.ends_with(reason))
        })
        .collect())
}

/// Fails unless exactly one Event with `reason` was published, once (the
/// recorder counts a repeat as a series, shown as `(xN)`).
async fn one_event(cluster: &TestCluster, reason: &str) -> Result<(), Failed> {
    let events = events_with(cluster, reason).await?;
    let repeated = |event: &str| {
        event.rsplit_once(" (x").is_some_and(|(_, count)| {
            count
                .strip_suffix(')')
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
    };
    if events.len() == 1 && !repeated(&events[0]) {
        return Ok(());
    }
    Err(Failed::new(format!(
        "expected one {reason} Event, got {events:?}\n{}",
        cluster.diagnosis().await
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_symptom_appears_and_clears_as_a_condition_with_one_event_each_way()
-> Result<(), Failed> {
    let cluster = start().await;
    let metrics = metrics();
    let operator = run_level4(&cluster, metrics.clone(), false, None);
    cluster
        .create(&DbBuilder::manifest(NAME).build())
        .await
        .or_fail("create the PostgresDB")?;
    cluster
        .wait_for(NAME, "not measured yet", |db| {
            has_condition(db, CONNECTIONS_SATURATED, "Unknown", "NotMeasured")
        })
        .await?;

    record(&cluster, &metrics, reading(10));
    let db = cluster
        .wait_for(NAME, "measured with connections available", |db| {
            has_condition(db, CONNECTIONS_SATURATED, "False", "ConnectionsAvailable")
        })
        .await?;
    let insights = db.status.and_then(|s| s.insights).unwrap_or_default();
    if (
        insights.connections,
        insights.max_connections,
        insights.storage_used_percent,
    ) != (Some(10), Some(97), Some(9))
    {
        return Err(Failed::new(format!(
            "status.insights does not show the reading: {insights:?}"
        )));
    }

    record(&cluster, &metrics, reading(90));
    cluster
        .wait_for(NAME, "ConnectionsSaturated", |db| {
            has_condition(db, CONNECTIONS_SATURATED, "True", "ConnectionsNearLimit")
        })
        .await?;
    // Another figure above the threshold: reconciled (the summary
    // changed), the count reaches status.insights, no second Warning.
    record(&cluster, &metrics, reading(95));
    cluster
        .wait_for(NAME, "showing 95 connections", |db| {
            db.status
                .as_ref()
                .and_then(|s| s.insights.as_ref())
                .is_some_and(|i| i.connections == Some(95))
        })
        .await?;
    cluster.settle(NAME).await?;
    one_event(&cluster, "ConnectionsNearLimit").await?;

    record(&cluster, &metrics, reading(10));
    cluster
        .wait_for(NAME, "no longer ConnectionsSaturated", |db| {
            has_condition(db, CONNECTIONS_SATURATED, "False", "ConnectionsAvailable")
        })
        .await?;
    cluster.settle(NAME).await?;
    one_event(&cluster, "ConnectionsAvailable").await?;
    one_event(&cluster, "ConnectionsNearLimit").await?;
    // The symptom never made the database look unready or failing.
    let db = cluster
        .database(NAME)
        .await?
        .ok_or_else(|| Failed::new("the database is gone"))?;
    if condition(&db, "Degraded").is_some_and(|(status, _)| status == "True") {
        return Err(Failed::new(format!(
            "a symptom degraded the database: {db:?}"
        )));
    }
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

async fn install_service_monitor_crd(cluster: &TestCluster) -> Result<(), Failed> {
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(SERVICE_MONITOR_CRD).or_fail("parse the ServiceMonitor CRD")?;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("level4-symptoms-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .or_fail("install the ServiceMonitor CRD")?;
    let monitors = cluster.api::<ServiceMonitor>();
    cluster
        .eventually(cluster.budget(), "ServiceMonitors are served", || async {
            Ok(monitors.list(&ListParams::default()).await.ok().map(|_| ()))
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_monitor_is_applied_only_once_its_api_is_served() -> Result<(), Failed> {
    let cluster = start().await;
    let metrics = metrics();
    let operator = run_level4(&cluster, metrics.clone(), false, None);
    cluster
        .create(&DbBuilder::manifest(NAME).build())
        .await
        .or_fail("create the PostgresDB")?;
    // Not served: reported, and the reconcile goes on (its status is
    // written, its other children applied).
    cluster
        .wait_for(NAME, "reporting the monitoring API unavailable", |db| {
            has_condition(db, MONITORING_CONFIGURED, "False", API_UNAVAILABLE)
        })
        .await?;
    cluster
        .wait_for_object::<k8s_openapi::api::apps::v1::StatefulSet>(NAME, "created", |s| {
            s.is_some()
        })
        .await?;

    install_service_monitor_crd(&cluster).await?;
    // A reading whose summary changed reconciles the database at once
    // (otherwise the periodic re-check notices the API).
    record(&cluster, &metrics, reading(1));
    cluster
        .wait_for(NAME, "MonitoringConfigured", |db| {
            has_condition(db, MONITORING_CONFIGURED, "True", "ServiceMonitorApplied")
        })
        .await?;
    let monitor = cluster
        .api::<ServiceMonitor>()
        .get(NAME)
        .await
        .or_fail("read the ServiceMonitor")?;
    let endpoint = monitor.spec.endpoints.first().cloned().unwrap_or_default();
    let relabeling = endpoint
        .metric_relabelings
        .first()
        .cloned()
        .unwrap_or_default();
    let owned = monitor
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "PostgresDB" && o.name == NAME);
    if !(owned
        && endpoint.port == "metrics"
        && endpoint.honor_labels
        && relabeling.action == "keep"
        && relabeling.regex == format!("{};{NAME}", cluster.namespace())
        && monitor.spec.namespace_selector.match_names == ["default"])
    {
        return Err(Failed::new(format!(
            "the ServiceMonitor is not the database's: {monitor:?}"
        )));
    }
    // Applied once, then left alone.
    let writes = cluster
        .settle(NAME)
        .await?
        .map(|w| w.resources_except(&["events"]))
        .unwrap_or_default();
    if writes.iter().any(|w| w.contains("servicemonitors")) {
        return Err(Failed::new(format!(
            "the ServiceMonitor was written again at rest: {writes:?}"
        )));
    }
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

/// The whole of Level 4, its collector included, against a real
/// PostgreSQL 15: a transaction held open past
/// [`level4_insights::insights::thresholds::TRANSACTION_SECONDS`] raises
/// LongRunningTransaction, and committing it clears it, one Event each
/// way. It waits the threshold out (five minutes): the age is the
/// server's own `xact_start`, which nothing can make older.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_held_open_on_a_real_server_raises_long_running_transaction()
-> Result<(), Failed> {
    let threshold = level4_insights::insights::thresholds::TRANSACTION_SECONDS;
    let cluster = TestCluster::sandbox(real_postgres(&[15]))
        .await
        .unwrap_or_else(|error| panic!("{}", shared::reconcile::error_chain(&error)))
        .with_budget(Duration::from_secs(120));
    let metrics = metrics();
    let operator = run_level4(
        &cluster,
        metrics.clone(),
        true,
        Some(Duration::from_secs(2)),
    );
    cluster
        .create(&DbBuilder::manifest(NAME).version("15").build())
        .await
        .or_fail("create the PostgresDB")?;
    cluster
        .wait_for(NAME, "Ready and measured", |db| {
            tests::scenarios::is_settled(db)
                && has_condition(db, LONG_RUNNING_TRANSACTION, "False", "NoLongTransaction")
        })
        .await?;
    let client = connect(&cluster, Role::Owner, NAME)
        .await
        .ok_or_else(|| Failed::new("no credentials or Service to connect with"))?;
    client
        .batch_execute("BEGIN; SELECT txid_current();")
        .await
        .or_fail("open a transaction")?;
    cluster
        .eventually(
            Duration::from_secs(threshold + 90),
            "LongRunningTransaction is True",
            || async {
                Ok(cluster.database(NAME).await?.filter(|db| {
                    has_condition(
                        db,
                        LONG_RUNNING_TRANSACTION,
                        "True",
                        "TransactionOpenTooLong",
                    )
                }))
            },
        )
        .await?;
    client
        .batch_execute("COMMIT")
        .await
        .or_fail("commit the transaction")?;
    cluster
        .wait_for(NAME, "no longer LongRunningTransaction", |db| {
            has_condition(db, LONG_RUNNING_TRANSACTION, "False", "NoLongTransaction")
        })
        .await?;
    one_event(&cluster, "TransactionOpenTooLong").await?;
    one_event(&cluster, "NoLongTransaction").await?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}
