//! The operator's own metrics (Level 4): `/metrics` on the health port of
//! the level4-insights binary, whose counters move as it reconciles (a
//! failed reconcile counted with the API server's reason), with the
//! process's series beside them, and whose scrape asks the API server
//! nothing; Levels 1 to 3 answer 404 there. And the readings' trigger: a
//! reading whose summary changes reconciles exactly its database, one
//! whose summary is unchanged reconciles none.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use shared::api::{Phase, PostgresDB};
use shared::metrics::Metrics;
use shared::readings::DatabaseReading;
use shared::runner::{self, RunOptions};
use tests::builders::DbBuilder;
use tests::harness::{Failed, OrFail, TestCluster, ensure};
use tests::levels::LevelId;
use tests::scenarios::is_settled;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// A local address no one listens on now.
fn free_address() -> Result<String, Failed> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").or_fail("bind a free port")?;
    let address = listener.local_addr().or_fail("read the port")?;
    Ok(address.to_string())
}

/// The status line and body of `GET path` at `address`, `None` while
/// nothing listens.
async fn get(address: &str, path: &str) -> Option<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.lines().next()?.to_string();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of the sample `series` (name and labels, as written) in an
/// OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// The value of `series`, failing with the whole text when it is absent.
fn value(text: &str, series: &str) -> Result<f64, Failed> {
    sample(text, series).ok_or_else(|| Failed::new(format!("no sample {series} in:\n{text}")))
}

const RECONCILES: &str = "pgdb_operator_reconciles_total{level=\"level4-insights\"}";
const DURATIONS: &str = "pgdb_operator_reconcile_duration_seconds_count{level=\"level4-insights\"}";
const FORBIDDEN: &str =
    "pgdb_operator_reconcile_failures_total{level=\"level4-insights\",reason=\"Forbidden\"}";
const STATEFULSETS_CREATED: &str =
    "pgdb_operator_applied_objects_total{kind=\"StatefulSet\",change=\"create\"}";

/// `/metrics` of the operator at `address`, once it answers 200 with the
/// reconcile counter (the controller has started).
async fn scrape(cluster: &TestCluster, address: &str) -> Result<String, Failed> {
    scrape_until(cluster, address, "the operator serves /metrics", |_| true).await
}

/// Scrapes until the exposition satisfies `done`: a reconcile is counted
/// when it ends, a moment after the write a test waits for.
async fn scrape_until(
    cluster: &TestCluster,
    address: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> Result<String, Failed> {
    let last = std::sync::Mutex::new(String::new());
    let scraped = cluster
        .eventually(cluster.budget(), what, || async {
            Ok(match get(address, "/metrics").await {
                Some((status, body))
                    if status == "HTTP/1.1 200 OK" && sample(&body, RECONCILES).is_some() =>
                {
                    let finished = done(&body);
                    *last.lock().unwrap_or_else(|e| e.into_inner()) = body.clone();
                    finished.then_some(body)
                }
                _ => None,
            })
        })
        .await;
    scraped.map_err(|failed| {
        let last = last.lock().unwrap_or_else(|e| e.into_inner());
        Failed::new(format!("{failed}; the last scrape:\n{last}"))
    })
}

/// Whether the series `name` is at least `at_least`.
fn reached(body: &str, name: &str, at_least: f64) -> bool {
    sample(body, name).is_some_and(|v| v >= at_least)
}

#[tokio::test]
async fn the_level4_binary_serves_counters_that_move_as_it_reconciles_and_its_process_series()
-> Result<(), Failed> {
    let cluster = TestCluster::start().await.or_fail("start a sandbox")?;
    let sandbox = cluster
        .sandbox_handle()
        .ok_or_else(|| Failed::new("this test counts the sandbox's requests"))?;
    let address = free_address()?;
    let operator = cluster
        .run_binary_with(LevelId::Four, &["--health-addr", &address])
        .or_fail("start Level 4's binary")?;
    let before = scrape(&cluster, &address).await?;
    ensure(value(&before, RECONCILES)? == 0.0, || {
        format!("no reconcile yet, the counter at zero:\n{before}")
    })?;
    let now = jiff::Timestamp::now().as_second() as f64;
    let started = value(&before, "process_start_time_seconds")?;
    ensure(started <= now + 1.0 && started > now - 600.0, || {
        format!("the process started a moment ago ({started}, now {now})")
    })?;
    for series in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_threads",
    ] {
        let figure = value(&before, series)?;
        ensure(figure >= 0.0, || format!("{series} is {figure}"))?;
    }
    ensure(
        value(&before, "process_resident_memory_bytes")? > 0.0,
        || "the operator uses memory".into(),
    )?;

    // The first write of the database's StatefulSet is refused, as a
    // missing RBAC rule would refuse it: that reconcile fails, and the
    // retry succeeds.
    sandbox
        .faults()
        .fail_next(1, Some("patch"), Some("statefulsets"), 403);
    cluster
        .create(&DbBuilder::manifest("orders").build())
        .await
        .or_fail("create a PostgresDB")?;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    // The reconcile that wrote Ready is counted once it returns.
    let after = scrape_until(
        &cluster,
        &address,
        "a failed reconcile and the successful one that wrote Ready are counted, \
         with their durations",
        |body| reached(body, RECONCILES, 2.0) && reached(body, DURATIONS, 2.0),
    )
    .await?;
    let reconciles = value(&after, RECONCILES)?;
    ensure(value(&after, FORBIDDEN)? == 1.0, || {
        format!("the refused write is one failure, by the API server's reason:\n{after}")
    })?;
    ensure(value(&after, STATEFULSETS_CREATED)? == 1.0, || {
        format!("the StatefulSet written once (the refused write is not counted):\n{after}")
    })?;
    cluster.settle("orders").await?;
    // Settling waits for two reconciles to begin; each is counted once it
    // has ended.
    scrape_until(
        &cluster,
        &address,
        &format!("the two reconciles settling started are counted (were {reconciles})"),
        |body| reached(body, RECONCILES, reconciles + 2.0),
    )
    .await?;

    // A scrape reads memory: in a window of scrapes the API server gets
    // no request at all. The operator at rest may still ask something of
    // its own (a resync), so a few windows are tried; a scrape that
    // called the API server would show in every one.
    let counters = sandbox.counters();
    let mut windows = Vec::new();
    for _ in 0..5 {
        let requests = counters.snapshot();
        for _ in 0..20 {
            let answered = get(&address, "/metrics").await;
            ensure(
                answered.as_ref().map(|(status, _)| status.as_str()) == Some("HTTP/1.1 200 OK"),
                || format!("a scrape answered {answered:?}"),
            )?;
        }
        let asked: Vec<_> = counters
            .snapshot()
            .into_iter()
            .filter(|(key, n)| requests.get(key) != Some(n))
            .map(|((verb, resource), _)| format!("{verb} {resource}"))
            .collect();
        if asked.is_empty() {
            break;
        }
        windows.push(asked);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure(windows.len() < 5, || {
        format!("every window of 20 scrapes saw API requests: {windows:?}")
    })?;
    operator.stop().await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn levels_one_to_three_answer_404_at_metrics() -> Result<(), Failed> {
    let cluster = TestCluster::start().await.or_fail("start a sandbox")?;
    for level in [LevelId::One, LevelId::Two, LevelId::Three] {
        let address = free_address()?;
        let operator = cluster
            .run_binary_with(level, &["--health-addr", &address])
            .or_fail(format!("start {}'s binary", level.name()))?;
        cluster
            .eventually(
                cluster.budget(),
                &format!("{} serves /healthz", level.name()),
                || async {
                    let answer = get(&address, "/healthz").await;
                    Ok(answer
                        .filter(|(status, _)| status == "HTTP/1.1 200 OK")
                        .map(|_| ()))
                },
            )
            .await?;
        let metrics = get(&address, "/metrics").await;
        ensure(
            metrics.as_ref().map(|(status, _)| status.as_str()) == Some("HTTP/1.1 404 Not Found"),
            || format!("{} answers /metrics with {metrics:?}", level.name()),
        )?;
        operator.stop().await;
    }
    cluster.finish().await;
    Ok(())
}

/// A reading of `pod` with `connections` idle clients.
fn reading(pod: &str, connections: u64) -> DatabaseReading {
    DatabaseReading {
        at: jiff::Timestamp::now(),
        pod: pod.into(),
        server_version: Some("16.4".into()),
        connections: [("idle".to_string(), connections)].into(),
        max_connections: Some(100),
        reserved_connections: Some(3),
        ..Default::default()
    }
}

/// Sets `name`'s `status.phase` to Paused behind the operator's back.
/// Status changes trigger no reconcile, and the next reconcile of `name`
/// writes the phase back: whether it stays Paused tells whether `name`
/// was reconciled.
async fn mark(cluster: &TestCluster, name: &str) -> Result<(), Failed> {
    let databases: Api<PostgresDB> = cluster.api();
    databases
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Paused" } })),
        )
        .await
        .or_fail(format!("mark the status of {name}"))?;
    Ok(())
}

async fn phase(cluster: &TestCluster, name: &str) -> Result<Option<Phase>, Failed> {
    Ok(cluster
        .database(name)
        .await?
        .and_then(|db| db.status?.phase))
}

/// Reconciles begun (each begins with a GET of its database) minus those
/// ended (counted in `metrics`), from the sandbox's count `at_start`.
fn in_flight(
    cluster: &TestCluster,
    metrics: &Metrics,
    at_start: u64,
) -> Result<(u64, u64), Failed> {
    let begun = cluster
        .sandbox_handle()
        .ok_or_else(|| Failed::new("this test counts the sandbox's requests"))?
        .counters()
        .get("get", "postgresdbs")
        - at_start;
    let text = metrics.encode().or_fail("encode the metrics")?;
    let ended = sample(&text, RECONCILES).unwrap_or(0.0) as u64;
    Ok((begun, ended))
}

/// Waits until every reconcile begun has ended and none began for a
/// second (a status write's follow-up reconcile comes sooner), so what
/// the test does next starts from rest.
async fn quiet(cluster: &TestCluster, metrics: &Metrics, at_start: u64) -> Result<u64, Failed> {
    cluster
        .eventually(
            cluster.budget(),
            "every reconcile begun has ended, and none begins for a second",
            || async {
                let (begun, ended) = in_flight(cluster, metrics, at_start)?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let later = in_flight(cluster, metrics, at_start)?;
                Ok((begun == ended && later == (begun, ended)).then_some(begun))
            },
        )
        .await
}

#[tokio::test]
async fn a_reading_whose_summary_changes_reconciles_exactly_its_database_and_an_unchanged_one_none()
-> Result<(), Failed> {
    let cluster = TestCluster::start().await.or_fail("start a sandbox")?;
    let at_start = cluster
        .sandbox_handle()
        .ok_or_else(|| Failed::new("this test counts the sandbox's requests"))?
        .counters()
        .get("get", "postgresdbs");
    // Level 4 without its collector: this test is the only one recording
    // readings, into the metrics it gives the operator.
    let metrics = Arc::new(Metrics::new(Some(
        level4_insights::insights::series::database_series,
    )));
    let mut level = LevelId::Four.build();
    level
        .companions
        .retain(|companion| companion.name != "insights-collector");
    let options = RunOptions {
        namespace: Some(cluster.namespace().to_string()),
        metrics: Some(metrics.clone()),
        metrics_interval: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    let operator = tokio::spawn(async move {
        let agent = shared::cli::user_agent(LevelId::Four.name());
        let client = shared::cli::connect(Some(&kubeconfig), &agent).await?;
        runner::run(level, client, options, async move {
            let _ = stopped.await;
        })
        .await
    });
    for name in ["orders", "stock"] {
        cluster
            .create(&DbBuilder::manifest(name).build())
            .await
            .or_fail(format!("create PostgresDB {name}"))?;
    }
    for name in ["orders", "stock"] {
        cluster.wait_for(name, "Ready", is_settled).await?;
    }
    quiet(&cluster, &metrics, at_start).await?;
    let namespace = cluster.namespace().to_string();
    let key = || (namespace.clone(), "orders".to_string());

    // A first reading: the summary changes (from none).
    mark(&cluster, "orders").await?;
    mark(&cluster, "stock").await?;
    metrics.readings.record(key(), reading("orders-0", 2));
    cluster
        .eventually(
            cluster.budget(),
            "orders is reconciled (its phase written back)",
            || async {
                Ok(phase(&cluster, "orders")
                    .await?
                    .filter(|p| *p != Phase::Paused))
            },
        )
        .await?;
    quiet(&cluster, &metrics, at_start).await?;
    let other = phase(&cluster, "stock").await?;
    ensure(other == Some(Phase::Paused), || {
        format!("stock, whose reading did not change, was not reconciled: its phase is {other:?}")
    })?;

    // The same summary (a later measurement of the same figures): nothing.
    mark(&cluster, "orders").await?;
    let (began, _) = in_flight(&cluster, &metrics, at_start)?;
    metrics.readings.record(key(), reading("orders-0", 2));
    let now = quiet(&cluster, &metrics, at_start).await?;
    let unchanged = phase(&cluster, "orders").await?;
    ensure(unchanged == Some(Phase::Paused) && now == began, || {
        format!(
            "an unchanged summary reconciles nothing: orders' phase is {unchanged:?}, \
             reconciles begun {began} then {now}"
        )
    })?;

    // One more connection: the summary changes again.
    metrics.readings.record(key(), reading("orders-0", 3));
    cluster
        .eventually(cluster.budget(), "orders is reconciled again", || async {
            Ok(phase(&cluster, "orders")
                .await?
                .filter(|p| *p != Phase::Paused))
        })
        .await?;
    let other = phase(&cluster, "stock").await?;
    ensure(other == Some(Phase::Paused), || {
        format!("stock is still not reconciled: its phase is {other:?}")
    })?;
    let _ = stop.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(30), operator).await;
    ensure(matches!(stopped, Ok(Ok(Ok(())))), || {
        format!("the operator stopped cleanly: {stopped:?}")
    })?;
    cluster.finish().await;
    Ok(())
}

/// The documents of a YAML file under `deploy/`.
fn deployed(path: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let file = format!("{}/../deploy/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde_yaml::Value::deserialize(document).expect("valid YAML"))
        .collect()
}

fn of_kind<'a>(documents: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    documents
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

#[test]
fn the_deployed_metrics_service_and_servicemonitor_reach_the_operator_s_health_port() {
    let operator = deployed("base/operator.yaml");
    let deployment = of_kind(&operator, "Deployment")[0];
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<&str> = container["env"]
        .as_sequence()
        .expect("the container's env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"POD_NAMESPACE"), "{env:?}");
    let services = of_kind(&operator, "Service");
    let service = services
        .iter()
        .find(|s| s["metadata"]["name"].as_str() == Some("pgdb-operator-metrics"))
        .expect("the Service pgdb-operator-metrics in deploy/base/operator.yaml");
    assert_eq!(
        service["metadata"]["labels"]["app.kubernetes.io/name"].as_str(),
        Some("pgdb-operator")
    );
    assert_eq!(
        service["metadata"]["namespace"],
        deployment["metadata"]["namespace"]
    );
    let selector = service["spec"]["selector"]
        .as_mapping()
        .expect("a selector");
    for (key, value) in selector {
        assert_eq!(
            &pod_labels[key], value,
            "the Service selects the operator's pods"
        );
    }
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["name"].as_str(), Some("metrics"));
    let target = port["targetPort"].as_str().expect("a named target port");
    let health = container["ports"]
        .as_sequence()
        .expect("container ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(target))
        .expect("the target port is the container's");
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let address = args
        .iter()
        .skip_while(|a| **a != "--health-addr")
        .nth(1)
        .expect("--health-addr");
    assert!(
        address.ends_with(&format!(
            ":{}",
            health["containerPort"].as_u64().expect("a number")
        )),
        "{address} vs {health:?}"
    );

    let monitors = deployed("monitoring/operator-servicemonitor.yaml");
    let monitor = of_kind(&monitors, "ServiceMonitor")[0];
    assert_eq!(
        monitor["metadata"]["namespace"],
        deployment["metadata"]["namespace"]
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
        Some("pgdb-operator")
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("metrics"));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
}

#[test]
fn the_deployed_rbac_grants_level_4_s_monitoring_objects_and_the_kubelet_s_stats() {
    let rules = tests::rbac::deployed_rules();
    let grants = |verb: &str, group: &str, resource: &str| {
        let request = sandbox::RequestKind {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
        };
        rules.iter().any(|rule| rule.allows(&request))
    };
    for verb in ["get", "list", "watch", "create", "patch", "delete"] {
        assert!(
            grants(verb, "monitoring.coreos.com", "servicemonitors"),
            "{verb}"
        );
        assert!(
            grants(verb, "monitoring.coreos.com", "prometheusrules"),
            "{verb}"
        );
    }
    assert!(grants("get", "", "nodes/proxy"));
    assert!(grants("patch", "", "configmaps"));
}
