//! Level 4 against a real Prometheus (`tests::harness::prometheus`): it
//! discovers the operator's metrics endpoint as a ServiceMonitor would
//! (role endpoints, `honor_labels`), scrapes the operator's and the
//! databases' series, loads the alerts of the operator's PrometheusRule,
//! and fires them when a database's server stops, its volume fills, or its
//! backups fail (the first two resolve once the server answers again and
//! the volume has room); every panel of the Grafana dashboard gets data.
//!
//! The alerts' `for` durations are shortened to a few seconds when loaded
//! (`Prometheus::load_rules`), so a test waits seconds rather than
//! minutes: promtool's unit tests (`level4_alerts`) prove each alert's
//! real `for`. The Level 4 binary runs on the host with its health (and
//! metrics) server on a free port, a short `--metrics-interval`, and
//! `POD_NAMESPACE` set to the test's namespace, where it applies its
//! PrometheusRule and dashboard ConfigMap.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use shared::backup::{BackupPhase, PostgresDBBackup, PostgresDBBackupSpec};
use tests::builders::DbBuilder;
use tests::connect::{Role, connect};
use tests::harness::prometheus::{
    self, JOB, Prometheus, PrometheusConfig, Sample, free_port, install_monitoring_crds,
    register_operator,
};
use tests::harness::{Failed, Operator, TestCluster, real_postgres};
use tests::levels::LevelId;

/// A first start of a real server, the collector's first measurements and
/// an alert's way through pending to firing, on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(180);
/// The alerts' `for`, shortened for these tests.
const SHORT_FOR: Duration = Duration::from_secs(3);

fn fail(failed: Failed) -> ! {
    panic!("{failed}")
}

/// A minimal metrics endpoint serving `text` (the text exposition format).
async fn stub_metrics(text: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let port = listener.local_addr().expect("bound").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if prometheus::http::read_request(&mut stream).await.is_ok() {
                    let _ = prometheus::http::respond(
                        &mut stream,
                        "200 OK",
                        "text/plain; version=0.0.4",
                        text.as_bytes(),
                    )
                    .await;
                }
            });
        }
    });
    port
}

fn label<'a>(s: &'a Sample, name: &str) -> Option<&'a str> {
    s.labels.get(name).map(String::as_str)
}

/// The harness itself, without an operator: a metrics endpoint registered
/// as the operator's is discovered and scraped with its own `namespace`
/// and `pod` labels kept (`honor_labels`), and an alert of a
/// PrometheusRule in the cluster fires once its (shortened) `for` passed.
#[tokio::test]
async fn prometheus_discovers_a_registered_metrics_endpoint_and_fires_the_rules_of_a_prometheusrule()
 {
    let cluster = TestCluster::start().await.expect("a cluster");
    let ns = cluster.namespace().to_string();
    let port = stub_metrics(
        "# TYPE pgdb_database_up gauge\n\
         pgdb_database_up{namespace=\"shop\",postgresdb=\"orders\",pod=\"orders-0\"} 0\n\
         # TYPE pgdb_operator_reconciles_total counter\n\
         pgdb_operator_reconciles_total{level=\"4\"} 3\n",
    )
    .await;
    register_operator(&cluster.client(), &ns, port)
        .await
        .unwrap_or_else(|f| fail(f));
    install_monitoring_crds(&cluster.client(), WAIT)
        .await
        .unwrap_or_else(|f| fail(f));
    let rule: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": prometheus::RULE_NAME, "namespace": ns},
        "spec": {"groups": [{"name": "stub", "interval": "1m", "rules": [
            {"alert": "StubDatabaseDown", "expr": "pgdb_database_up == 0", "for": "10m",
             "labels": {"severity": "critical"}}]}]},
    }))
    .expect("a PrometheusRule");
    let ar = ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: "PrometheusRule".into(),
        plural: "prometheusrules".into(),
    };
    Api::<DynamicObject>::namespaced_with(cluster.client(), &ns, &ar)
        .create(&PostParams::default(), &rule)
        .await
        .expect("the PrometheusRule is created");

    let prom = Prometheus::start(&cluster, PrometheusConfig::in_namespace(&ns))
        .await
        .unwrap_or_else(|f| fail(f));
    prom.wait_for_operator_target(WAIT)
        .await
        .unwrap_or_else(|f| fail(f));
    let up = prom
        .wait_for_data(WAIT, "pgdb_database_up")
        .await
        .unwrap_or_else(|f| fail(f));
    assert_eq!(label(&up[0], "namespace"), Some("shop"), "{up:?}");
    assert_eq!(label(&up[0], "pod"), Some("orders-0"), "{up:?}");
    assert_eq!(label(&up[0], "job"), Some(JOB), "{up:?}");
    let own = prom
        .wait_for_data(WAIT, "pgdb_operator_reconciles_total")
        .await
        .unwrap_or_else(|f| fail(f));
    assert_eq!(label(&own[0], "namespace"), Some(ns.as_str()), "{own:?}");

    let alerts = prom
        .load_rules(&cluster, &ns, Some(Duration::from_secs(1)), WAIT)
        .await
        .unwrap_or_else(|f| fail(f));
    assert_eq!(alerts, ["StubDatabaseDown"]);
    let alert = prom
        .wait_for_alert(WAIT, "StubDatabaseDown", &[("postgresdb", "orders")])
        .await
        .unwrap_or_else(|f| fail(f));
    assert_eq!(
        alert.labels.get("severity").map(String::as_str),
        Some("critical")
    );
    prom.stop().await;
    cluster.finish().await;
}

/// A real-PostgreSQL sandbox with the monitoring CRDs, the Level 4 binary
/// registered as the operator's metrics endpoint, a real Prometheus
/// scraping it with the operator's rules loaded, and `orders` Ready.
struct Fixture {
    cluster: TestCluster,
    operator: Option<Operator>,
    prom: Prometheus,
}

impl Fixture {
    async fn start() -> Self {
        let cluster = match TestCluster::sandbox(real_postgres(&[15])).await {
            Ok(c) => c.with_budget(WAIT),
            Err(e) => panic!("{}", shared::reconcile::error_chain(&e)),
        };
        let ns = cluster.namespace().to_string();
        install_monitoring_crds(&cluster.client(), WAIT)
            .await
            .unwrap_or_else(|f| fail(f));
        let port = free_port().unwrap_or_else(|f| fail(f));
        let addr = format!("127.0.0.1:{port}");
        let operator = cluster
            .run_binary_env(
                LevelId::Four,
                &["--health-addr", &addr, "--metrics-interval", "2s"],
                &[("POD_NAMESPACE", &ns)],
            )
            .unwrap_or_else(|e| panic!("{}", shared::reconcile::error_chain(&e)));
        register_operator(&cluster.client(), &ns, port)
            .await
            .unwrap_or_else(|f| fail(f));
        let prom = Prometheus::start(&cluster, PrometheusConfig::in_namespace(&ns))
            .await
            .unwrap_or_else(|f| fail(f));
        let fixture = Self {
            cluster,
            operator: Some(operator),
            prom,
        };
        let db = DbBuilder::manifest("orders").version("15").build();
        fixture.cluster.create(&db).await.expect("creates orders");
        fixture.wait_ready().await;
        fixture
            .prom
            .wait_for_operator_target(WAIT)
            .await
            .unwrap_or_else(|f| fail(f));
        fixture
            .prom
            .load_rules(&fixture.cluster, &ns, Some(SHORT_FOR), WAIT)
            .await
            .unwrap_or_else(|f| fail(f));
        fixture
    }

    async fn wait_ready(&self) {
        let ready = self
            .cluster
            .wait_for("orders", "Ready", |db| {
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

    fn ns(&self) -> &str {
        self.cluster.namespace()
    }

    /// The labels selecting `orders`' series.
    fn orders(&self) -> Vec<(&str, &str)> {
        vec![("namespace", self.ns()), ("postgresdb", "orders")]
    }

    /// `metric` of `orders`, as a selector.
    fn series(&self, metric: &str) -> String {
        format!(
            "{metric}{{namespace=\"{}\",postgresdb=\"orders\"}}",
            self.ns()
        )
    }

    fn runtime(&self) -> &sandbox::PostgresRuntime {
        self.cluster
            .sandbox_handle()
            .and_then(|s| s.postgres_runtime())
            .expect("the real runtime")
    }

    /// Waits until `promql` answers a sample equal to `value`.
    async fn wait_value(&self, promql: &str, value: f64) -> Vec<Sample> {
        self.prom
            .wait_for(WAIT, promql, |s| s.iter().any(|x| x.value == value))
            .await
            .unwrap_or_else(|f| fail(f))
    }

    /// Waits until alert `name` of `orders` is neither pending nor firing
    /// (its `ALERTS` series is gone).
    async fn wait_resolved(&self, name: &str) {
        let q = format!(
            "ALERTS{{alertname=\"{name}\",namespace=\"{}\",postgresdb=\"orders\"}}",
            self.ns()
        );
        self.prom
            .wait_for(WAIT, &q, |s| s.is_empty())
            .await
            .unwrap_or_else(|f| fail(f));
    }

    async fn finish(mut self) {
        if let Some(op) = self.operator.take() {
            op.stop().await;
        }
        self.prom.stop().await;
        self.cluster.finish().await;
    }
}

#[tokio::test]
async fn prometheus_discovers_and_scrapes_the_operator_and_each_databases_series() {
    let f = Fixture::start().await;
    let reconciles = f
        .prom
        .wait_for(WAIT, "pgdb_operator_reconciles_total", |s| {
            s.iter().any(|x| x.value > 0.0)
        })
        .await
        .unwrap_or_else(|e| fail(e));
    assert!(
        reconciles.iter().all(|s| label(s, "job") == Some(JOB)),
        "{reconciles:?}"
    );
    let up = f.wait_value(&f.series("pgdb_database_up"), 1.0).await;
    assert_eq!(label(&up[0], "pod"), Some("orders-0"), "{up:?}");
    // Real measurements: the server's version and the volume's capacity.
    let version = f
        .prom
        .wait_for_data(WAIT, &f.series("pgdb_database_server_version_num"))
        .await
        .unwrap_or_else(|e| fail(e));
    assert!(
        (150000.0..160000.0).contains(&version[0].value),
        "{version:?}"
    );
    f.wait_value(
        &f.series("pgdb_database_volume_capacity_bytes"),
        (1u64 << 30) as f64,
    )
    .await;
    f.finish().await;
}

#[tokio::test]
async fn stopping_a_databases_server_fires_postgresdb_down() {
    let f = Fixture::start().await;
    f.wait_value(&f.series("pgdb_database_up"), 1.0).await;
    // Measured before its server answered, the database was down for a
    // moment; once it answers, the alert is (or becomes, at the rule's
    // next evaluation) inactive. Asked at once, a busy machine's late
    // evaluation still showed the start's alert (seen once under load).
    f.wait_resolved("PostgresDBDown").await;
    // SIGSTOP: the server accepts connections and answers nothing.
    assert!(
        f.runtime().pause(f.ns(), "orders-0", None, true),
        "the server is paused"
    );
    let fired = f
        .prom
        .wait_for_alert(WAIT, "PostgresDBDown", &f.orders())
        .await;
    f.runtime().pause(f.ns(), "orders-0", None, false);
    let alert = fired.unwrap_or_else(|e| fail(e));
    assert_eq!(
        alert.labels.get("pod").map(String::as_str),
        Some("orders-0")
    );
    // Answering again, the database is up and the alert resolves.
    f.wait_value(&f.series("pgdb_database_up"), 1.0).await;
    f.wait_resolved("PostgresDBDown").await;
    f.finish().await;
}

#[tokio::test]
async fn filling_a_databases_volume_fires_postgresdb_storage_nearly_full() {
    let f = Fixture::start().await;
    f.prom
        .wait_for(WAIT, &f.series("pgdb_database_volume_used_bytes"), |s| {
            s.iter().any(|x| x.value > 0.0)
        })
        .await
        .unwrap_or_else(|e| fail(e));
    assert!(
        !f.prom
            .alert_active("PostgresDBStorageNearlyFull", &f.orders())
            .await
            .unwrap_or_else(|e| fail(e)),
        "PostgresDBStorageNearlyFull on a fresh volume"
    );
    f.runtime()
        .fill_volume(f.ns(), "data-orders-0", true)
        .expect("the volume fills");
    let fired = f
        .prom
        .wait_for_alert(WAIT, "PostgresDBStorageNearlyFull", &f.orders())
        .await;
    f.runtime()
        .fill_volume(f.ns(), "data-orders-0", false)
        .expect("the volume has room again");
    fired.unwrap_or_else(|e| fail(e));
    // With room again, the alert resolves.
    f.wait_resolved("PostgresDBStorageNearlyFull").await;
    f.finish().await;
}

#[tokio::test]
async fn failing_backups_fire_postgresdb_backup_failed() {
    let f = Fixture::start().await;
    // A session holding an exclusive lock: pg_dump cannot read the table
    // within its lock wait, and the backup fails.
    let owner = connect(&f.cluster, Role::Owner, "orders")
        .await
        .expect("the owner's Secret exists");
    owner
        .batch_execute("CREATE TABLE items (id int)")
        .await
        .expect("creates items");
    owner
        .batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE;")
        .await
        .expect("locks items");
    let backup = PostgresDBBackup::new(
        "locked-out",
        PostgresDBBackupSpec {
            database: "orders".into(),
        },
    );
    f.cluster
        .api::<PostgresDBBackup>()
        .create(&PostParams::default(), &backup)
        .await
        .expect("the backup is created");
    let failed = f
        .cluster
        .wait_for_object::<PostgresDBBackup>("locked-out", "Completed or Failed", |b| {
            matches!(
                b.and_then(|b| b.status.as_ref()).and_then(|s| s.phase),
                Some(BackupPhase::Completed | BackupPhase::Failed)
            )
        })
        .await
        .unwrap_or_else(|e| fail(e));
    let status = failed.and_then(|b| b.status).unwrap_or_default();
    assert_eq!(status.phase, Some(BackupPhase::Failed), "{status:?}");
    f.prom
        .wait_for_alert(WAIT, "PostgresDBBackupFailed", &f.orders())
        .await
        .unwrap_or_else(|e| fail(e));
    f.wait_value(&f.series("pgdb_database_last_backup_failed"), 1.0)
        .await;
    drop(owner);
    f.finish().await;
}

/// Every `expr` of the dashboard's panels (rows' panels too).
fn panel_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut todo: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = todo.pop() {
        todo.extend(panel["panels"].as_array().into_iter().flatten());
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push((title.clone(), expr.to_string()));
            }
        }
    }
    out
}

/// A panel's query with Grafana's variables filled in: the interval
/// variables as a minute, any other variable as "every value".
fn concrete(expr: &str) -> String {
    let mut q = expr
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "1m")
        .replace("${__interval}", "1m")
        .replace("$__range", "1h")
        .replace("${__range}", "1h");
    // `label="$var"` selects one value: make it a regex matching any.
    let mut out = String::new();
    while let Some(i) = q.find('$') {
        let before = &q[..i];
        let rest = &q[i + 1..];
        let (name_len, skip) = if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').unwrap_or(r.len());
            (end, end + 2)
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (end, end)
        };
        let _ = name_len;
        let before = match before.strip_suffix("=\"") {
            Some(b) if !b.ends_with('=') && !b.ends_with('!') && !b.ends_with('~') => {
                format!("{b}=~\"")
            }
            _ => before.to_string(),
        };
        out += &before;
        out += ".+";
        q = rest[skip..].to_string();
    }
    out + &q
}

#[tokio::test]
async fn every_dashboard_panels_query_returns_data() {
    let f = Fixture::start().await;
    // A completed backup and a schedule, so the backup panels have data.
    f.cluster
        .patch_spec(
            "orders",
            serde_json::json!({"backup": {"schedule": "0 3 * * *"}}),
        )
        .await
        .expect("a schedule");
    let backup = PostgresDBBackup::new(
        "first",
        PostgresDBBackupSpec {
            database: "orders".into(),
        },
    );
    f.cluster
        .api::<PostgresDBBackup>()
        .create(&PostParams::default(), &backup)
        .await
        .expect("the backup is created");
    f.wait_value(&f.series("pgdb_database_last_backup_failed"), 0.0)
        .await;
    f.prom
        .wait_for_data(
            WAIT,
            &f.series("pgdb_database_last_backup_timestamp_seconds"),
        )
        .await
        .unwrap_or_else(|e| fail(e));

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/monitoring/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let queries = panel_queries(&dashboard);
    assert!(!queries.is_empty(), "the dashboard has panels with queries");
    // A panel has data when one of its queries answers: a panel may show
    // a series that exists only once something happened (reconcile
    // failures) beside one that always does.
    let mut panels: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (title, expr) in &queries {
        panels.entry(title.clone()).or_default().push(expr.clone());
    }
    let mut empty = BTreeMap::new();
    for (title, exprs) in &panels {
        // Level 5 fills replication lag and anomalies in; at Level 4 the
        // series are absent.
        if exprs.iter().all(|e| {
            e.contains("pgdb_database_replication_lag_seconds")
                || e.contains("pgdb_database_anomaly")
        }) {
            continue;
        }
        let either = exprs
            .iter()
            .map(|e| format!("({})", concrete(e)))
            .collect::<Vec<_>>()
            .join(" or ");
        if let Err(e) = f.prom.wait_for_data(Duration::from_secs(60), &either).await {
            empty.insert(title.clone(), e.to_string());
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty
            .iter()
            .map(|(t, e)| format!("{t}: {e}"))
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    let _ = f
        .cluster
        .api::<PostgresDBBackup>()
        .list(&ListParams::default())
        .await;
    f.finish().await;
}

#[test]
fn dashboard_variables_are_filled_in_as_any_value() {
    assert_eq!(
        concrete(
            "sum(rate(x{namespace=\"$namespace\",postgresdb=~\"${postgresdb}\"}[$__rate_interval]))"
        ),
        "sum(rate(x{namespace=~\".+\",postgresdb=~\".+\"}[1m]))"
    );
    assert_eq!(concrete("up{job!=\"$job\"}"), "up{job!=\".+\"}");
}
