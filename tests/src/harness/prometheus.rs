//! A real Prometheus against a [`TestCluster`]: started on a free port
//! with a temporary directory of its own, short scrape and evaluation
//! intervals, and one scrape job that finds the operator as a
//! ServiceMonitor would (role `endpoints`: the Service labelled
//! `app.kubernetes.io/name: pgdb-operator`, port `metrics`, path
//! `/metrics`, `honor_labels: true`, so the database series keep their own
//! `namespace` and `pod` labels). Its rules are the ones the operator put
//! in its PrometheusRule ([`Prometheus::load_rules`]).
//!
//! The operator runs outside the cluster (in the test process or as a
//! binary on the host), so [`register_operator`] makes it discoverable as
//! upstream registers an external endpoint: a Service without selector,
//! `pgdb-operator-metrics`, and an Endpoints object pointing at
//! `127.0.0.1:<its health port>`.
//!
//! Discovery is `kubernetes_sd_configs` with the cluster's kubeconfig when
//! the Prometheus binary has it. Debian's `prometheus` package is built
//! without Kubernetes discovery; with it the harness serves the same
//! targets, with the same labels, over `http_sd_configs` ([`discovery`]),
//! and says so ([`Prometheus::discovery`]). The binary is `$PGDB_PROMETHEUS`,
//! else `prometheus` on PATH, else the tools directory of
//! `scripts/install-tools.sh`; without one the test fails, saying to run it.
//!
//! Queries and waits are bounded; a wait that fails shows the expression,
//! the last answer, Prometheus's targets and the end of its log.

pub mod discovery;
pub mod http;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::{Failed, OrFail, TestCluster, eventually};

/// The operator's metrics Service, as deploy/base/operator.yaml names it.
pub const METRICS_SERVICE: &str = "pgdb-operator-metrics";
/// The PrometheusRule the operator applies in its namespace.
pub const RULE_NAME: &str = "pgdb-operator-alerts";
/// The scrape job's name (as prometheus-operator names a ServiceMonitor's
/// job: the Service's name).
pub const JOB: &str = METRICS_SERVICE;
const MANAGER: &str = "pgdb-tests";

/// How Prometheus finds its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// `kubernetes_sd_configs`, role endpoints, with the cluster's kubeconfig.
    Kubernetes,
    /// `http_sd_configs` served by the harness from the cluster's
    /// Endpoints (a binary built without Kubernetes discovery).
    Http,
}

/// How to run Prometheus.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// The namespaces whose Endpoints are discovered (the operator's).
    pub namespaces: Vec<String>,
    /// How often targets are scraped.
    pub scrape_interval: Duration,
    /// How often rules are evaluated.
    pub evaluation_interval: Duration,
}

impl PrometheusConfig {
    /// Discovery in `namespace`, scraping and evaluating every second.
    pub fn in_namespace(namespace: &str) -> Self {
        Self {
            namespaces: vec![namespace.to_string()],
            scrape_interval: Duration::from_secs(1),
            evaluation_interval: Duration::from_secs(1),
        }
    }
}

/// One sample of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels (with `__name__` when the result keeps it).
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// One alert as Prometheus's `/api/v1/alerts` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Its labels (`alertname`, `severity`, the series' labels).
    pub labels: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
}

/// A running Prometheus, stopped when dropped.
pub struct Prometheus {
    child: tokio::process::Child,
    dir: PathBuf,
    addr: SocketAddr,
    discovery: Discovery,
    _http_sd: Option<discovery::HttpDiscovery>,
    config: PrometheusConfig,
}

/// The Prometheus binary: `$PGDB_PROMETHEUS`, else on PATH, else in the
/// tools directory.
fn find_binary(name: &str) -> Option<PathBuf> {
    if name == "prometheus"
        && let Some(p) = std::env::var_os("PGDB_PROMETHEUS")
    {
        return Some(PathBuf::from(p));
    }
    crate::tools::find(name)
}

fn unique_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "pgdb-prometheus-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ))
}

/// A Prometheus duration (`90s`, `5m`, `1h30m`) as a [`Duration`].
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total += n * ms;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_millis(total))
}

/// A [`Duration`] as a Prometheus duration, in milliseconds.
fn format_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The rule groups of a PrometheusRule's spec as a Prometheus rule file,
/// each alert's `for` at most `max_for` and each group's interval at most
/// `max_interval` when given.
pub fn rule_file(spec: &Value, max_for: Option<Duration>, max_interval: Option<Duration>) -> Value {
    let mut groups = spec.get("groups").cloned().unwrap_or_else(|| json!([]));
    for group in groups.as_array_mut().into_iter().flatten() {
        if let (Some(cap), Some(i)) = (
            max_interval,
            group
                .get("interval")
                .and_then(Value::as_str)
                .and_then(parse_duration),
        ) && i > cap
        {
            group["interval"] = json!(format_duration(cap));
        }
        for rule in group
            .get_mut("rules")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let (Some(cap), Some(f)) = (
                max_for,
                rule.get("for")
                    .and_then(Value::as_str)
                    .and_then(parse_duration),
            ) && f > cap
            {
                rule["for"] = json!(format_duration(cap));
            }
        }
    }
    json!({ "groups": groups })
}

/// Registers an operator serving `/metrics` on `127.0.0.1:port` in
/// `namespace`: the Service `pgdb-operator-metrics` (no selector, label
/// `app.kubernetes.io/name: pgdb-operator`, port `metrics`) and its
/// Endpoints, both applied server-side (again with another port moves it).
pub async fn register_operator(
    client: &kube::Client,
    namespace: &str,
    port: u16,
) -> Result<(), Failed> {
    let labels = json!({"app.kubernetes.io/name": "pgdb-operator"});
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": METRICS_SERVICE, "namespace": namespace, "labels": labels},
        "spec": {"ports": [{"name": "metrics", "port": port, "targetPort": port, "protocol": "TCP"}]},
    }))
    .or_fail("build the metrics Service")?;
    let eps: Endpoints = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": METRICS_SERVICE, "namespace": namespace, "labels": labels},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                     "ports": [{"name": "metrics", "port": port, "protocol": "TCP"}]}],
    }))
    .or_fail("build the metrics Endpoints")?;
    let pp = PatchParams::apply(MANAGER).force();
    Api::<Service>::namespaced(client.clone(), namespace)
        .patch(METRICS_SERVICE, &pp, &Patch::Apply(&svc))
        .await
        .or_fail(format!("apply Service {namespace}/{METRICS_SERVICE}"))?;
    Api::<Endpoints>::namespaced(client.clone(), namespace)
        .patch(METRICS_SERVICE, &pp, &Patch::Apply(&eps))
        .await
        .or_fail(format!("apply Endpoints {namespace}/{METRICS_SERVICE}"))?;
    Ok(())
}

/// A minimal `monitoring.coreos.com/v1` CRD of `kind` (`ServiceMonitor`,
/// `PrometheusRule`): served, namespaced, its spec kept as written. Enough
/// for the operator to apply its objects on a cluster without
/// prometheus-operator; the real CRDs validate more.
fn monitoring_crd(kind: &str, plural: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                      "listKind": format!("{kind}List")},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}],
        },
    })
}

/// Installs minimal ServiceMonitor and PrometheusRule CRDs
/// (`monitoring.coreos.com/v1`) and waits until both are served.
pub async fn install_monitoring_crds(
    client: &kube::Client,
    budget: Duration,
) -> Result<(), Failed> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ] {
        let crd: CustomResourceDefinition = serde_json::from_value(monitoring_crd(kind, plural))
            .or_fail(format!("build the {kind} CRD"))?;
        let name = format!("{plural}.monitoring.coreos.com");
        crds.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .or_fail(format!("apply CRD {name}"))?;
        let ar = ApiResource {
            group: "monitoring.coreos.com".into(),
            version: "v1".into(),
            api_version: "monitoring.coreos.com/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        eventually(budget, &format!("{kind}s to be served"), || async {
            Ok(api.list(&Default::default()).await.ok().map(|_| ()))
        })
        .await?;
    }
    Ok(())
}

/// A free port on 127.0.0.1 (for the operator's health server).
pub fn free_port() -> Result<u16, Failed> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .or_fail("find a free port on 127.0.0.1")
}

/// Whether this Prometheus has Kubernetes discovery: its promtool (beside
/// it, else on PATH) checks a configuration that uses it.
async fn has_kubernetes_sd(binary: &Path, dir: &Path) -> bool {
    let promtool = binary
        .parent()
        .map(|d| d.join("promtool"))
        .filter(|p| p.is_file())
        .or_else(|| find_binary("promtool"));
    let Some(promtool) = promtool else {
        return true;
    };
    let probe = dir.join("probe.yml");
    let text =
        "scrape_configs:\n- job_name: probe\n  kubernetes_sd_configs:\n  - role: endpoints\n";
    if std::fs::write(&probe, text).is_err() {
        return true;
    }
    let out = tokio::process::Command::new(promtool)
        .args(["check", "config", "--syntax-only"])
        .arg(&probe)
        .output()
        .await;
    let _ = std::fs::remove_file(&probe);
    match out {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            !text.contains("kubernetes_sd_configs not found")
        }
        Err(_) => true,
    }
}

impl Prometheus {
    /// Starts Prometheus against `cluster`, discovering in
    /// `config.namespaces`, and waits until it is ready.
    pub async fn start(cluster: &TestCluster, config: PrometheusConfig) -> Result<Self, Failed> {
        let binary = find_binary("prometheus").ok_or_else(|| {
            Failed::new(
                "this test runs a real Prometheus, and none is installed: run scripts/install-tools.sh (Debian: apt-get install prometheus), or set PGDB_PROMETHEUS to a prometheus binary",
            )
        })?;
        let dir = unique_dir();
        for sub in ["rules", "data"] {
            std::fs::create_dir_all(dir.join(sub))
                .or_fail(format!("create {}", dir.join(sub).display()))?;
        }
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let kubernetes = has_kubernetes_sd(&binary, &dir).await;
        let (discovery, http_sd, sd) = if kubernetes {
            let sd = json!({"kubernetes_sd_configs": [{
                "role": "endpoints",
                "kubeconfig_file": cluster.kubeconfig(),
                "namespaces": {"names": config.namespaces},
            }]});
            (Discovery::Kubernetes, None, sd)
        } else {
            let server =
                discovery::HttpDiscovery::start(cluster.client(), config.namespaces.clone())
                    .await
                    .or_fail("serve HTTP service discovery for Prometheus")?;
            let sd = json!({"http_sd_configs": [{"url": server.url(), "refresh_interval": "1s"}]});
            (Discovery::Http, Some(server), sd)
        };
        let interval = format_duration(config.scrape_interval);
        let mut job = json!({
            "job_name": JOB,
            "honor_labels": true,
            "metrics_path": "/metrics",
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_name"], "regex": "pgdb-operator", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": "metrics", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
                {"source_labels": ["__meta_kubernetes_endpoint_port_name"], "target_label": "endpoint"},
            ],
        });
        if let (Some(job), Some(sd)) = (job.as_object_mut(), sd.as_object()) {
            job.extend(sd.clone());
        }
        let file = json!({
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": format_duration(config.evaluation_interval),
            },
            "rule_files": [dir.join("rules").join("*.yaml")],
            "scrape_configs": [job],
        });
        let config_path = dir.join("prometheus.yml");
        let text = serde_yaml::to_string(&file).or_fail("render Prometheus's configuration")?;
        std::fs::write(&config_path, text).or_fail(format!("write {}", config_path.display()))?;
        let log_path = dir.join("prometheus.log");
        let log =
            std::fs::File::create(&log_path).or_fail(format!("create {}", log_path.display()))?;
        let err = log.try_clone().or_fail("duplicate a file handle")?;
        let child = tokio::process::Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-lifecycle")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .or_fail(format!("start {}", binary.display()))?;
        let mut me = Self {
            child,
            dir,
            addr,
            discovery,
            _http_sd: http_sd,
            config,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(Failed::new(format!(
                    "Prometheus exited ({status})\n{}",
                    me.log_tail(40)
                )));
            }
            let ready = http::request(addr, "GET", "/-/ready").await;
            if ready.is_ok_and(|a| a.status == 200) {
                return Ok(me);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Failed::new(format!(
                    "Prometheus was not ready within 30 s\n{}",
                    me.log_tail(40)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How it discovers targets.
    pub fn discovery(&self) -> Discovery {
        self.discovery
    }

    /// Its URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "Prometheus's log ({}), last {} lines:\n{}",
            self.dir.join("prometheus.log").display(),
            all.len() - from,
            all[from..].join("\n")
        )
    }

    /// One API call's `data`, failing on an error answer.
    async fn api(&self, method: &str, path: &str) -> Result<Value, Failed> {
        let answer = http::request(self.addr, method, path)
            .await
            .or_fail(format!("ask Prometheus {method} {path}"))?;
        let v: Value = serde_json::from_str(&answer.body).map_err(|e| {
            Failed::new(format!(
                "Prometheus answered {method} {path} with {} and no JSON ({e}): {}",
                answer.status, answer.body
            ))
        })?;
        if v["status"] != "success" {
            return Err(Failed::new(format!(
                "Prometheus answered {method} {path} with {}: {v}",
                answer.status
            )));
        }
        Ok(v["data"].clone())
    }

    /// An instant query's samples (a scalar is one sample without labels).
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, Failed> {
        let data = self
            .api(
                "GET",
                &format!("/api/v1/query?query={}", http::encode(promql)),
            )
            .await?;
        let value = |v: &Value| {
            v.get(1)
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        Ok(match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| Sample {
                    labels: serde_json::from_value(r["metric"].clone()).unwrap_or_default(),
                    value: value(&r["value"]),
                })
                .collect(),
            Some("scalar") => vec![Sample {
                labels: BTreeMap::new(),
                value: value(&data["result"]),
            }],
            _ => vec![],
        })
    }

    /// Waits (at most `budget`) until `promql` answers samples that
    /// `accept` takes; returns them. A failure shows the last answer,
    /// the targets and the log's end.
    pub async fn wait_for(
        &self,
        budget: Duration,
        promql: &str,
        accept: impl Fn(&[Sample]) -> bool,
    ) -> Result<Vec<Sample>, Failed> {
        let last = std::sync::Mutex::new(String::from("(no answer yet)"));
        let r = eventually(
            budget,
            &format!("the query {promql} to answer as expected"),
            || async {
                match self.query(promql).await {
                    Ok(samples) => {
                        if let Ok(mut l) = last.lock() {
                            *l = format!("{samples:?}");
                        }
                        Ok(accept(&samples).then_some(samples))
                    }
                    Err(e) => {
                        if let Ok(mut l) = last.lock() {
                            *l = e.to_string();
                        }
                        Ok(None)
                    }
                }
            },
        )
        .await;
        match r {
            Ok(samples) => Ok(samples),
            Err(failed) => {
                let last = last.lock().map(|l| l.clone()).unwrap_or_default();
                Err(self.failure(failed, &format!("last answer: {last}")).await)
            }
        }
    }

    /// Waits until `promql` answers at least one sample.
    pub async fn wait_for_data(
        &self,
        budget: Duration,
        promql: &str,
    ) -> Result<Vec<Sample>, Failed> {
        self.wait_for(budget, promql, |s| !s.is_empty()).await
    }

    /// The active alerts.
    pub async fn alerts(&self) -> Result<Vec<Alert>, Failed> {
        let data = self.api("GET", "/api/v1/alerts").await?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| Alert {
                labels: serde_json::from_value(a["labels"].clone()).unwrap_or_default(),
                state: a["state"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// Waits (at most `budget`) until alert `name` whose labels include
    /// `labels` is `firing`; returns it. A failure shows the alerts seen
    /// last, the targets and the log's end.
    pub async fn wait_for_alert(
        &self,
        budget: Duration,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<Alert, Failed> {
        let last = std::sync::Mutex::new(String::new());
        let matches = |a: &Alert| {
            a.labels.get("alertname").map(String::as_str) == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| a.labels.get(*k).map(String::as_str) == Some(*v))
        };
        let r = eventually(
            budget,
            &format!("alert {name} {labels:?} to fire"),
            || async {
                let alerts = self.alerts().await?;
                if let Ok(mut l) = last.lock() {
                    *l = format!("{alerts:#?}");
                }
                Ok(alerts
                    .into_iter()
                    .find(|a| matches(a) && a.state == "firing"))
            },
        )
        .await;
        match r {
            Ok(a) => Ok(a),
            Err(failed) => {
                let last = last.lock().map(|l| l.clone()).unwrap_or_default();
                Err(self
                    .failure(failed, &format!("alerts last seen: {last}"))
                    .await)
            }
        }
    }

    /// Whether alert `name` with `labels` is active (pending or firing) now.
    pub async fn alert_active(&self, name: &str, labels: &[(&str, &str)]) -> Result<bool, Failed> {
        Ok(self.alerts().await?.iter().any(|a| {
            a.labels.get("alertname").map(String::as_str) == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| a.labels.get(*k).map(String::as_str) == Some(*v))
        }))
    }

    /// The active targets, one line each: scrape URL, health, last error,
    /// labels; and how many were dropped by relabelling.
    pub async fn targets(&self) -> Result<String, Failed> {
        let data = self.api("GET", "/api/v1/targets").await?;
        let mut lines: Vec<String> = data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{} {} last error {:?} labels {}",
                    t["scrapeUrl"].as_str().unwrap_or_default(),
                    t["health"].as_str().unwrap_or_default(),
                    t["lastError"].as_str().unwrap_or_default(),
                    t["labels"]
                )
            })
            .collect();
        if lines.is_empty() {
            lines.push("(no active target)".into());
        }
        let dropped = data["droppedTargets"].as_array().map_or(0, Vec::len);
        lines.push(format!(
            "{dropped} discovered target(s) dropped by relabelling"
        ));
        Ok(lines.join("\n"))
    }

    /// Waits until the operator's metrics endpoint is an active target
    /// scraped with health `up`.
    pub async fn wait_for_operator_target(&self, budget: Duration) -> Result<(), Failed> {
        self.wait_for(budget, &format!("up{{job=\"{JOB}\"}}"), |s| {
            s.iter().any(|x| x.value == 1.0)
        })
        .await
        .map(|_| ())
    }

    /// `failed`, with `context`, the targets and the log's end.
    async fn failure(&self, failed: Failed, context: &str) -> Failed {
        let targets = self
            .targets()
            .await
            .unwrap_or_else(|e| format!("(targets unavailable: {e})"));
        Failed::new(format!(
            "{failed}\n{context}\nPrometheus's targets ({:?} discovery):\n{targets}\n{}",
            self.discovery,
            self.log_tail(30)
        ))
    }

    /// Loads the rules of the operator's PrometheusRule (`pgdb-operator-alerts`
    /// in `namespace`, waited for within `budget`) as Prometheus's rule
    /// file, each alert's `for` at most `max_for` when given (the e2e tests
    /// shorten it; promtool's unit tests prove the real `for`), each group's
    /// interval at most the evaluation interval; reloads Prometheus and
    /// waits until it reports them. Returns the alert names loaded.
    pub async fn load_rules(
        &self,
        cluster: &TestCluster,
        namespace: &str,
        max_for: Option<Duration>,
        budget: Duration,
    ) -> Result<Vec<String>, Failed> {
        let ar = ApiResource {
            group: "monitoring.coreos.com".into(),
            version: "v1".into(),
            api_version: "monitoring.coreos.com/v1".into(),
            kind: "PrometheusRule".into(),
            plural: "prometheusrules".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), namespace, &ar);
        let rule = eventually(
            budget,
            &format!("PrometheusRule {namespace}/{RULE_NAME} to exist"),
            || async { Ok(api.get_opt(RULE_NAME).await.ok().flatten()) },
        )
        .await?;
        let spec = rule.data.get("spec").cloned().unwrap_or_default();
        let file = rule_file(&spec, max_for, Some(self.config.evaluation_interval));
        let names: Vec<String> = file["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["alert"].as_str().map(String::from))
            .collect();
        let path = self.dir.join("rules").join(format!("{RULE_NAME}.yaml"));
        let text = serde_yaml::to_string(&file).or_fail("render the rule file")?;
        std::fs::write(&path, text).or_fail(format!("write {}", path.display()))?;
        let answer = http::request(self.addr, "POST", "/-/reload")
            .await
            .or_fail("ask Prometheus to reload")?;
        if answer.status != 200 {
            return Err(Failed::new(format!(
                "Prometheus refused the rules of {namespace}/{RULE_NAME} ({}): {}\nthe rule file:\n{}\n{}",
                answer.status,
                answer.body,
                std::fs::read_to_string(&path).unwrap_or_default(),
                self.log_tail(20)
            )));
        }
        eventually(budget, "Prometheus to report the loaded alerts", || async {
            let data = self.api("GET", "/api/v1/rules?type=alert").await?;
            let loaded: Vec<String> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .filter_map(|r| r["name"].as_str().map(String::from))
                .collect();
            Ok(names.iter().all(|n| loaded.contains(n)).then_some(()))
        })
        .await?;
        Ok(names)
    }

    /// Stops Prometheus and removes its directory.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_durations_are_read_and_capped_in_rule_files() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5x"), None);
        let spec = json!({"groups": [{"name": "g", "interval": "30s", "rules": [
            {"alert": "A", "expr": "up == 0", "for": "5m"},
            {"alert": "B", "expr": "up == 0", "for": "1s"},
            {"alert": "C", "expr": "up == 0"},
        ]}]});
        let file = rule_file(
            &spec,
            Some(Duration::from_secs(2)),
            Some(Duration::from_secs(1)),
        );
        let g = &file["groups"][0];
        assert_eq!(g["interval"], "1000ms");
        assert_eq!(g["rules"][0]["for"], "2000ms");
        assert_eq!(g["rules"][1]["for"], "1s");
        assert!(g["rules"][2].get("for").is_none());
    }
}
