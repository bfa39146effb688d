//! Level 4's collector on real PostgreSQL 15: every database's series
//! appear at `/metrics` with the figures its server reports (connections,
//! sizes, XID age, version) and its volume's usage from the kubelet's
//! stats; a deleted database's series disappear; a server that stops
//! answering is `pgdb_database_up 0` without delaying the measurement of
//! another database.
//!
//! Level 4 runs in-process with the test's own [`Metrics`] (what its
//! `/metrics` serves, read here with [`Metrics::encode`]), measuring every
//! second, and connecting to pods directly (the sandbox's pod IPs are
//! loopback addresses of this machine).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::DeleteParams;
use shared::metrics::Metrics;
use shared::runner::{self, RunOptions};
use shared::sql::DatabaseAccess;
use tests::builders::DbBuilder;
use tests::connect::{Role, connect};
use tests::harness::{Operator, TestCluster, real_postgres};
use tokio::sync::oneshot;

/// First starts of real servers on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(180);

/// How often the operator measures each database here.
const INTERVAL: Duration = Duration::from_secs(1);

struct Fixture {
    cluster: TestCluster,
    operator: Option<Operator>,
    metrics: Arc<Metrics>,
}

impl Fixture {
    /// A real-PostgreSQL 15 sandbox with Level 4 running in-process, and
    /// the databases `names`, Ready.
    async fn start(names: &[&str]) -> Self {
        let cluster = match TestCluster::sandbox(real_postgres(&[15])).await {
            Ok(cluster) => cluster.with_budget(WAIT),
            Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
        };
        let metrics = Arc::new(Metrics::new(Some(
            level4_insights::insights::series::database_series,
        )));
        let operator = start_operator(&cluster, metrics.clone());
        let fixture = Self {
            cluster,
            operator: Some(operator),
            metrics,
        };
        for name in names {
            let db = DbBuilder::manifest(name).version("15").build();
            fixture
                .cluster
                .create(&db)
                .await
                .expect("creates the database");
        }
        for name in names {
            let ready = fixture
                .cluster
                .wait_for(name, "Ready", |db| {
                    db.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .await;
            if let Err(failed) = ready {
                panic!("{failed}");
            }
        }
        fixture
    }

    /// The value of the series `name` with exactly `labels` (beyond the
    /// database's own), in what `/metrics` serves now.
    fn value(&self, name: &str, database: &str, labels: &str) -> Option<f64> {
        let text = self.metrics.encode().expect("encodes");
        let namespace = self.cluster.namespace();
        let mut selector =
            format!("namespace=\"{namespace}\",postgresdb=\"{database}\",pod=\"{database}-0\"");
        if !labels.is_empty() {
            selector.push(',');
            selector.push_str(labels);
        }
        let prefix = format!("{name}{{{selector}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Waits until `check` holds of the series served, failing with them.
    async fn wait_series(&self, what: &str, check: impl Fn(&Self) -> bool) {
        let waited = self
            .cluster
            .eventually(WAIT, what, || async { Ok(check(self).then_some(())) })
            .await;
        if let Err(failed) = waited {
            panic!(
                "{failed}\n/metrics served:\n{}",
                self.metrics.encode().unwrap_or_default()
            );
        }
    }

    /// The seconds between the successive measurements of `database`
    /// seen within `window`.
    async fn measurement_gaps(&self, database: &str, window: Duration) -> Vec<f64> {
        let name = "pgdb_database_last_measurement_timestamp_seconds";
        let started = Instant::now();
        let mut last = self.value(name, database, "");
        let mut gaps = Vec::new();
        while started.elapsed() < window {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.value(name, database, "");
            if let (Some(now), Some(previous)) = (now, last)
                && now > previous
            {
                gaps.push(now - previous);
            }
            if now.is_some() {
                last = now;
            }
        }
        gaps
    }

    async fn stop(mut self) {
        if let Some(operator) = self.operator.take() {
            operator.stop().await;
        }
        self.cluster.finish().await;
    }
}

fn start_operator(cluster: &TestCluster, metrics: Arc<Metrics>) -> Operator {
    let (stop, stopped) = oneshot::channel::<()>();
    let instance = format!("level4-insights-{}", std::process::id());
    let options = RunOptions {
        namespace: Some(cluster.namespace().to_string()),
        instance: Some(instance.clone()),
        database_access: DatabaseAccess::Direct,
        metrics: Some(metrics),
        metrics_interval: Some(INTERVAL),
        ..Default::default()
    };
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    let task = tokio::spawn(async move {
        let agent = shared::cli::user_agent("level4-insights");
        let client = shared::cli::connect(Some(&kubeconfig), &agent).await?;
        runner::run(level4_insights::level(), client, options, async move {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databases_series_carry_what_its_server_reports_and_disappear_when_it_is_deleted() {
    let fixture = Fixture::start(&["orders"]).await;
    // The owner writes rows and keeps a transaction open in a session of
    // its own.
    let owner = connect(&fixture.cluster, Role::Owner, "orders")
        .await
        .expect("the owner's Secret exists");
    owner
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, body text);
             INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;",
        )
        .await
        .expect("writes rows");
    let holder = connect(&fixture.cluster, Role::Owner, "orders")
        .await
        .expect("a second session");
    holder
        .batch_execute("BEGIN; SELECT txid_current();")
        .await
        .expect("opens a transaction");
    let datname: String = owner
        .query_one("SELECT current_database()", &[])
        .await
        .expect("names its database")
        .get(0);
    let size: i64 = owner
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await
        .expect("sizes its database")
        .get(0);

    // A measurement that began after the transaction went idle: one taken
    // while the session still ran its SELECT saw it active (seen once
    // under load).
    let idle_since = jiff::Timestamp::now().as_second() as f64;
    fixture
        .wait_series(
            "orders is measured up, with its open transaction, after it went idle",
            |f| {
                f.value("pgdb_database_up", "orders", "") == Some(1.0)
                    && f.value(
                        "pgdb_database_last_measurement_timestamp_seconds",
                        "orders",
                        "",
                    )
                    .is_some_and(|at| at >= idle_since + 1.0)
                    && f.value("pgdb_database_oldest_transaction_age_seconds", "orders", "")
                        .is_some_and(|age| age > 0.0)
            },
        )
        .await;
    let value = |name: &str, labels: &str| fixture.value(name, "orders", labels);
    let version_num = value("pgdb_database_server_version_num", "").expect("version");
    assert!(
        (150000.0..160000.0).contains(&version_num),
        "server_version_num {version_num}"
    );
    let idle_in_transaction = value("pgdb_database_connections", "state=\"idle in transaction\"");
    assert_eq!(
        idle_in_transaction,
        Some(1.0),
        "the open transaction's session"
    );
    let idle = value("pgdb_database_connections", "state=\"idle\"").expect("idle sessions");
    assert!(idle >= 1.0, "the owner's idle session: {idle}");
    let max = value("pgdb_database_max_connections", "").expect("max_connections");
    let reserved = value("pgdb_database_reserved_connections", "").expect("reserved");
    assert!(max > reserved, "max_connections {max}, reserved {reserved}");
    let measured_size = value(
        "pgdb_database_size_bytes",
        &format!("datname=\"{datname}\""),
    )
    .expect("the owner's database is sized");
    assert!(
        measured_size >= size as f64 * 0.9,
        "size {measured_size}, the server says {size}"
    );
    let committed = value(
        "pgdb_database_transactions_committed_total",
        &format!("datname=\"{datname}\""),
    )
    .expect("commits");
    assert!(committed >= 2.0, "commits {committed}");
    let xid_age = value("pgdb_database_xid_age", "").expect("XID age");
    assert!(xid_age > 0.0, "XID age {xid_age}");
    assert!(value("pgdb_database_wal_bytes", "").is_some_and(|b| b >= 16.0 * 1024.0 * 1024.0));
    assert!(value("pgdb_database_last_measurement_timestamp_seconds", "").is_some());
    let text = fixture.metrics.encode().expect("encodes");
    assert!(
        text.contains("pgdb_database_info{") && text.contains("version=\"15."),
        "{text}"
    );
    drop(holder);
    drop(owner);

    fixture
        .cluster
        .api::<shared::api::PostgresDB>()
        .delete("orders", &DeleteParams::default())
        .await
        .expect("deletes orders");
    let gone = fixture
        .cluster
        .eventually(WAIT, "orders is gone", || async {
            Ok(fixture
                .cluster
                .database("orders")
                .await?
                .is_none()
                .then_some(()))
        })
        .await;
    if let Err(failed) = gone {
        panic!("{failed}");
    }
    fixture
        .wait_series("no series of orders is left", |f| {
            !f.metrics
                .encode()
                .unwrap_or_default()
                .contains("postgresdb=\"orders\"")
        })
        .await;
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_is_down_without_delaying_another_databases_measurement() {
    let fixture = Fixture::start(&["orders", "billing"]).await;
    fixture
        .wait_series("both databases are measured up", |f| {
            f.value("pgdb_database_up", "orders", "") == Some(1.0)
                && f.value("pgdb_database_up", "billing", "") == Some(1.0)
        })
        .await;
    let namespace = fixture.cluster.namespace().to_string();
    let runtime = fixture
        .cluster
        .sandbox_handle()
        .and_then(|s| s.postgres_runtime())
        .expect("the real runtime");
    // How often billing is measured with both servers answering: on a
    // busy machine a measurement can outlast the 1 s interval.
    let before = fixture
        .measurement_gaps("billing", Duration::from_secs(8))
        .await;
    // SIGSTOP: the kernel still accepts connections, the server never
    // answers them, the worst case for a collector.
    assert!(
        runtime.pause(&namespace, "orders-0", None, true),
        "pauses orders' server"
    );
    // While orders' measurements hang (each until its timeout), billing is
    // measured as often as before.
    let during = fixture
        .measurement_gaps("billing", Duration::from_secs(8))
        .await;
    fixture
        .wait_series("orders is down", |f| {
            f.value("pgdb_database_up", "orders", "") == Some(0.0)
        })
        .await;
    let text = fixture.metrics.encode().expect("encodes");
    runtime.pause(&namespace, "orders-0", None, false);
    let slowest = before
        .iter()
        .copied()
        .fold(INTERVAL.as_secs_f64(), f64::max);
    assert!(
        during.len() + 1 >= before.len() && during.iter().all(|gap| *gap <= slowest + 1.0),
        "billing's measurements came {before:?} seconds apart before orders hung, \
         {during:?} while it hung"
    );
    assert_eq!(
        fixture.value("pgdb_database_up", "billing", ""),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains(&format!(
            "pgdb_database_connections{{namespace=\"{namespace}\",postgresdb=\"orders\""
        )),
        "a server that is down has no SQL figures:\n{text}"
    );
    fixture.stop().await;
}

/// Needs the sandbox's kubelet stats summary
/// (`/api/v1/nodes/<node>/proxy/stats/summary`): until it is served, the
/// collector reports volume usage as unknown and this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_volumes_usage_comes_from_the_kubelets_stats() {
    let fixture = Fixture::start(&["orders"]).await;
    fixture
        .wait_series("orders' volume usage is measured", |f| {
            f.value("pgdb_database_volume_used_bytes", "orders", "")
                .is_some()
                && f.value("pgdb_database_volume_capacity_bytes", "orders", "")
                    .is_some()
        })
        .await;
    let used = fixture
        .value("pgdb_database_volume_used_bytes", "orders", "")
        .expect("used");
    let capacity = fixture
        .value("pgdb_database_volume_capacity_bytes", "orders", "")
        .expect("capacity");
    // The data directory of a fresh server holds more than its WAL segment.
    assert!(used > 16.0 * 1024.0 * 1024.0, "used {used}");
    assert!(capacity >= used, "capacity {capacity}, used {used}");
    fixture.stop().await;
}
