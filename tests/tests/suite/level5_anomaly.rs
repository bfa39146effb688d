//! Level 5's anomaly detection on real PostgreSQL 15: a database at rest
//! warms its baseline up (a sample every 5 s here, 12 of them), a pgbench
//! load far above it sets the `Anomaly` condition naming the metric, the
//! value and the range with a Warning Event, `/metrics` says
//! `pgdb_database_anomaly 1`, and once the load stops the condition
//! clears with a Normal Event; the baseline is kept in the ConfigMap
//! `<name>-baseline`, and a restarted operator carries on from it without
//! a new warm-up.
//!
//! Level 5 runs in-process with the collector measuring every second, and
//! reaches the server directly; pgbench runs `SELECT pg_sleep(0.05)`
//! against the primary's pod as the owner.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use shared::PostgresDB;
use shared::autopilot::anomaly::AnomalyDetectionSpec;
use shared::metrics::Metrics;
use shared::runner::RunOptions;
use shared::sql::DatabaseAccess;
use tests::builders::DbBuilder;
use tests::harness::{TestCluster, real_postgres};
use tests::levels::LevelId;
use tests::scenarios::anomaly_detected::Pgbench;

/// The first start of a real server, and the warm-up (12 samples 5 s
/// apart), on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(240);

const NAME: &str = "orders";

/// How long pgbench runs, and the longest wait for the condition under it.
const LOAD: Duration = Duration::from_secs(60);

fn anomaly(db: &PostgresDB) -> Option<(String, String, String)> {
    db.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Anomaly")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn anomaly_is(db: &PostgresDB, status: &str, reason: &str) -> bool {
    anomaly(db).is_some_and(|(s, r, _)| s == status && r == reason)
}

/// The baseline as kept, and the database's series: what a failure needs.
async fn diagnosis(cluster: &TestCluster, metrics: &Metrics) -> String {
    let baseline = cluster
        .api::<ConfigMap>()
        .get_opt(&format!("{NAME}-baseline"))
        .await
        .ok()
        .flatten()
        .and_then(|map| map.data)
        .and_then(|data| data.get("baseline.json").cloned())
        .unwrap_or_default();
    let now = jiff::Timestamp::now();
    let series: Vec<String> = metrics
        .encode()
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            line.starts_with("pgdb_database_transactions_committed_total")
                || line.starts_with("pgdb_database_last_measurement")
                || line.starts_with("pgdb_database_up")
                || line.starts_with("pgdb_database_connections{")
        })
        .map(str::to_string)
        .collect();
    format!(
        "at {now}: the baseline {baseline}\nthe series:\n{}",
        series.join("\n")
    )
}

fn anomaly_sample(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .find(|line| {
            line.starts_with("pgdb_database_anomaly{")
                && line.contains(&format!("postgresdb=\"{NAME}\""))
                && line.contains(&format!("metric=\"{metric}\""))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_far_above_the_learned_baseline_sets_the_anomaly_condition_and_its_end_clears_it() {
    let cluster = match TestCluster::sandbox(real_postgres(&[15])).await {
        Ok(cluster) => cluster.with_budget(WAIT),
        Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
    };
    let level = LevelId::Five.build();
    let metrics = Arc::new(Metrics::new(
        level.insights.map(|insights| insights.database_series),
    ));
    let operator = cluster.run_operator_with(
        LevelId::Five,
        RunOptions {
            database_access: DatabaseAccess::Direct,
            metrics: Some(metrics.clone()),
            metrics_interval: Some(Duration::from_secs(1)),
            ..Default::default()
        },
    );
    let db = DbBuilder::manifest(NAME)
        .version("15")
        .anomaly_detection(AnomalyDetectionSpec {
            interval_seconds: 5,
            warm_up_samples: 12,
            threshold_sigmas: 4,
            sustain_samples: 2,
        })
        .build();
    cluster.create(&db).await.expect("creates the database");

    // At rest, the warm-up ends: every metric within its baseline.
    if let Err(failed) = cluster
        .wait_for(NAME, "within its learned baseline", |db| {
            anomaly_is(db, "False", "WithinBaseline")
        })
        .await
    {
        panic!("{failed}");
    }
    let baseline = cluster
        .api::<ConfigMap>()
        .get(&format!("{NAME}-baseline"))
        .await
        .expect("the baseline is kept in a ConfigMap");
    let text = baseline
        .data
        .as_ref()
        .and_then(|d| d.get("baseline.json"))
        .expect("the baseline's JSON");
    let kept: serde_json::Value = serde_json::from_str(text).expect("the baseline parses");
    assert!(
        kept["samples"].as_u64().is_some_and(|n| n >= 12),
        "the baseline learned the warm-up: {text}"
    );

    // The load: 4 connections active where there are none at rest. (Their
    // transactions reach pg_stat_database only when a busy backend flushes
    // its statistics, which PostgreSQL 15 was seen to do a minute apart
    // under a steady load: the transactions per second deviate late, when
    // they do.)
    let started = std::time::Instant::now();
    let mut load = match Pgbench::start(&cluster, NAME, 4, LOAD.as_secs() as u32).await {
        Ok(load) => load,
        Err(failed) => panic!("{failed}"),
    };
    // Within pgbench's minute.
    let during = match cluster
        .eventually(LOAD, "PostgresDB orders is anomalous", || async {
            Ok(cluster
                .database(NAME)
                .await?
                .filter(|db| anomaly_is(db, "True", "MetricOutOfRange")))
        })
        .await
    {
        Ok(db) => db,
        Err(failed) => panic!(
            "{failed}\n{}\n{}",
            load.state(),
            diagnosis(&cluster, &metrics).await
        ),
    };
    let detected_after = started.elapsed();
    let (_, _, message) = anomaly(&during).expect("the condition");
    assert!(
        message.contains("activeConnections was") && message.contains("expected"),
        "{message}"
    );
    let detected = match cluster
        .wait_for_event(NAME, "AnomalyDetected", |e| {
            e.contains("AnomalyDetected") && e.contains("activeConnections is")
        })
        .await
    {
        Ok(event) => event,
        Err(failed) => panic!("{failed}"),
    };
    eprintln!(
        "under the load, {:.1} s after it started: {message}\n{detected}",
        detected_after.as_secs_f64()
    );
    assert!(detected.starts_with("Warning"), "{detected}");
    assert!(detected.contains("outside the expected"), "{detected}");
    // The collector passes the status on to /metrics with its next reading.
    let exported = cluster
        .eventually(WAIT, "pgdb_database_anomaly is 1", || async {
            let text = metrics.encode().unwrap_or_default();
            Ok((anomaly_sample(&text, "activeConnections") == Some(1.0)).then_some(text))
        })
        .await;
    if let Err(failed) = exported {
        panic!("{failed}\n{}", metrics.encode().unwrap_or_default());
    }

    // The load stops: back within range.
    load.stop().await;
    if let Err(failed) = cluster
        .wait_for(NAME, "back within its baseline", |db| {
            anomaly_is(db, "False", "WithinBaseline")
        })
        .await
    {
        panic!("{failed}");
    }
    if let Err(failed) = cluster
        .wait_for_event(NAME, "AnomalyCleared", |e| {
            e.contains("AnomalyCleared") && e.contains("activeConnections")
        })
        .await
    {
        panic!("{failed}");
    }
    let cleared = cluster
        .eventually(WAIT, "pgdb_database_anomaly is 0", || async {
            let text = metrics.encode().unwrap_or_default();
            Ok((anomaly_sample(&text, "activeConnections") == Some(0.0)).then_some(()))
        })
        .await;
    if let Err(failed) = cleared {
        panic!("{failed}");
    }

    // A restarted operator carries on from the ConfigMap: it learns more
    // samples without a new warm-up.
    operator.stop().await;
    let before = samples(&cluster).await;
    let restarted = cluster.run_operator_with(
        LevelId::Five,
        RunOptions {
            database_access: DatabaseAccess::Direct,
            metrics_interval: Some(Duration::from_secs(1)),
            ..Default::default()
        },
    );
    let carried_on = cluster
        .eventually(
            WAIT,
            "the restarted operator learns more samples",
            || async { Ok((samples(&cluster).await > before + 2).then_some(())) },
        )
        .await;
    if let Err(failed) = carried_on {
        panic!("{failed}\nsamples {before} before the restart");
    }
    let db = cluster
        .database(NAME)
        .await
        .ok()
        .flatten()
        .expect("the database exists");
    assert!(
        anomaly_is(&db, "False", "WithinBaseline"),
        "{:?}",
        anomaly(&db)
    );
    let learned = cluster
        .events(NAME)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|e| e.contains("BaselineLearned"))
        .count();
    assert_eq!(
        learned, 1,
        "the warm-up was announced again after the restart"
    );
    restarted.stop().await;
    cluster.finish().await;
}

/// The samples the baseline in the ConfigMap learned.
async fn samples(cluster: &TestCluster) -> u64 {
    cluster
        .api::<ConfigMap>()
        .get_opt(&format!("{NAME}-baseline"))
        .await
        .ok()
        .flatten()
        .and_then(|map| map.data)
        .and_then(|data| data.get("baseline.json").cloned())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|baseline| baseline["samples"].as_u64())
        .unwrap_or(0)
}
