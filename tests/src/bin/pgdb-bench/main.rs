//! The benchmark: many databases at once, level by level.
//!
//! For each chosen level it starts a fresh `pgdb-sandbox` process with the
//! simulated runtime, runs the level's operator binary against it (both as
//! processes, so their memory and CPU are read from `/proc`), creates N
//! `PostgresDB`s concurrently and waits until every one is Ready. It then
//! waits for the cluster to go quiet and watches it at rest. Write counts
//! and latencies come from the sandbox's `/metrics`
//! (`sandbox_client_requests_total` by User-Agent for the operator,
//! `sandbox_store_writes_total{source="controllers"}` for the built-in
//! controllers, `apiserver_request_duration_seconds` for latency), plus a
//! client asking `GET /api/v1/namespaces` every 50 ms throughout.
//!
//! It prints a table with the levels side by side and writes the same
//! figures as JSON. It measures; it does not judge (see
//! `docs/performance.md` for the targets). Build it and the binaries it runs
//! with `--release`:
//!
//! ```sh
//! cargo build --release -p sandbox -p level1-install -p level2-upgrade
//! cargo run --release -p tests --bin pgdb-bench -- --levels 1,2 --databases 1000
//! ```
//!
//! `--backup-bench` measures Level 3's backups instead ([`backup`]);
//! `--metrics-bench` measures Level 4's `/metrics` and collector with N
//! databases instead ([`metrics`]); `--autoscaling-bench` measures Level
//! 5's time from a read load to a replica serving it ([`autoscaling`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use serde::Serialize;
use shared::api::PostgresDB;
use shared::testing::DbBuilder;
use tests::harness::install_crd;
use tests::levels::LevelId;
use tests::scenarios::is_settled;
use tokio::process::{Child, Command};

mod autoscaling;
mod backup;
mod metrics;

/// Create many PostgresDBs at once against each level and measure.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// The levels to measure, comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    levels: Vec<u8>,
    /// How many databases to create.
    #[arg(long, default_value_t = 1000)]
    databases: usize,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to watch the cluster at rest, in seconds.
    #[arg(long, default_value_t = 60)]
    rest_seconds: u64,
    /// How long all databases may take to become Ready, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "pgdb-bench.json")]
    json: PathBuf,
    /// Measure Level 3's backups against a bare pg_dump, and a schedule
    /// slot's latency, on real PostgreSQL 15, instead of many databases.
    #[arg(long)]
    backup_bench: bool,
    /// With --backup-bench: about how much data to load, in MB.
    #[arg(long, default_value_t = 200)]
    size_mb: u64,
    /// With --backup-bench: how many schedule slots to measure.
    #[arg(long, default_value_t = 4)]
    slots: usize,
    /// With --backup-bench: the schedule's period, in seconds.
    #[arg(long, default_value_t = 15)]
    every_seconds: u64,
    /// Measure Level 4's `/metrics` answer time and its collector's CPU
    /// with --databases databases on one real PostgreSQL 15 (as root: it
    /// runs in a network namespace of its own).
    #[arg(long)]
    metrics_bench: bool,
    /// With --metrics-bench: the operator's --metrics-interval, in seconds.
    #[arg(long, default_value_t = 30)]
    interval_seconds: u64,
    /// With --metrics-bench: how long to measure the operator's CPU, in seconds.
    #[arg(long, default_value_t = 120)]
    window_seconds: u64,
    /// With --metrics-bench: how many `/metrics` answers to time.
    #[arg(long, default_value_t = 100)]
    scrapes: usize,
    /// Measure Level 5's autoscaling on real PostgreSQL 15: the time from
    /// a read-only pgbench load arriving to a replica serving it, and back.
    #[arg(long)]
    autoscaling_bench: bool,
    /// With --autoscaling-bench: how many load / no-load cycles.
    #[arg(long, default_value_t = 2)]
    runs: usize,
}

/// One level's figures.
#[derive(Debug, Default, Serialize)]
struct Figures {
    level: String,
    databases: usize,
    /// From the first create to the last database Ready.
    seconds_to_all_ready: f64,
    /// Write requests per database until the cluster was quiet, Events apart.
    operator_writes_per_database: f64,
    operator_event_writes_per_database: f64,
    /// Changes the built-in controllers stored per database.
    controller_writes_per_database: f64,
    operator_writes_by_request: BTreeMap<String, u64>,
    /// Writes per minute at rest: the operator's requests, everyone's requests,
    /// the built-in controllers' changes.
    operator_writes_per_minute_at_rest: f64,
    all_request_writes_per_minute_at_rest: f64,
    controller_writes_per_minute_at_rest: f64,
    rest_seconds: u64,
    operator_peak_rss_mib: f64,
    operator_cpu_seconds: f64,
    sandbox_peak_rss_mib: f64,
    sandbox_cpu_seconds: f64,
    /// Server-side latency of every request but watches, from the histogram.
    api_p50_ms: f64,
    api_p99_ms: f64,
    /// The probe's `GET /api/v1/namespaces`, as the client saw it.
    probe_p50_ms: f64,
    probe_p99_ms: f64,
    probe_max_ms: f64,
    probe_failures: usize,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    if args.backup_bench {
        return backup::run(backup::BackupArgs {
            size_mb: args.size_mb,
            slots: args.slots,
            every_seconds: args.every_seconds,
            json: args.json,
        })
        .await;
    }
    if args.autoscaling_bench {
        return autoscaling::run(autoscaling::AutoscalingArgs {
            runs: args.runs,
            json: args.json,
        })
        .await;
    }
    if args.metrics_bench {
        return metrics::run(metrics::MetricsArgs {
            databases: args.databases,
            concurrency: args.concurrency,
            timeout_seconds: args.timeout_seconds,
            interval_seconds: args.interval_seconds,
            window_seconds: args.window_seconds,
            scrapes: args.scrapes,
            json: args.json,
        })
        .await;
    }
    let mut all = vec![];
    for n in &args.levels {
        let level = LevelId::from_number(*n).ok_or(format!("no level {n}"))?;
        eprintln!("level {n}: {} databases", args.databases);
        all.push(measure(&args, level).await?);
    }
    println!("{}", table(&all));
    std::fs::write(&args.json, serde_json::to_string_pretty(&all)?)?;
    eprintln!("figures written to {}", args.json.display());
    Ok(())
}

/// A process started by the benchmark, killed when dropped.
struct Process {
    child: Child,
    pid: u32,
}

impl Process {
    fn start(binary: &Path, args: &[&str], log: &Path) -> Result<Process, Failure> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = Command::new(binary)
            .args(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} (build it with --release): {e}",
                    binary.display()
                )
            })?;
        let pid = child.id().ok_or("the process exited at once")?;
        Ok(Process { child, pid })
    }

    /// Peak resident memory (VmHWM) in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// User plus system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields, in clock ticks (100 per second on Linux).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The namespace the benchmark's databases live in.
const NAMESPACE: &str = "bench";

/// Starts a sandbox with the simulated runtime in `dir` (its log there),
/// waits for its kubeconfig, installs the CRD and creates [`NAMESPACE`].
async fn start_sandbox(dir: &Path) -> Result<(Process, Client, PathBuf), Failure> {
    let kubeconfig = dir.join("kubeconfig");
    let port = free_port()?;
    let sandbox = Process::start(
        &beside_me("pgdb-sandbox"),
        &[
            "--runtime",
            "simulated",
            "--port",
            &port.to_string(),
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
        ],
        &dir.join("sandbox.log"),
    )?;
    let start = Instant::now();
    while !kubeconfig.exists() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("the sandbox did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = client_for(&kubeconfig).await?;
    install_crd(&client).await?;
    let ns = NAMESPACE;
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    Ok((sandbox, client, kubeconfig))
}

fn beside_me(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().map(|d| d.join(name)).unwrap_or_default()
}

async fn client_for(kubeconfig: &Path) -> Result<Client, Failure> {
    let file = Kubeconfig::read_from(kubeconfig)?;
    let mut config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?;
    config.read_timeout = Some(Duration::from_secs(60));
    Ok(Client::try_from(config)?)
}

async fn measure(args: &Args, level: LevelId) -> Result<Figures, Failure> {
    let dir = std::env::temp_dir().join(format!(
        "pgdb-bench-{}-{}",
        std::process::id(),
        level.number()
    ));
    std::fs::create_dir_all(&dir)?;
    let (sandbox, client, kubeconfig) = start_sandbox(&dir).await?;
    let ns = NAMESPACE;
    let operator = Process::start(
        &level.binary(),
        &[
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
            "--namespace",
            ns,
            "--health-addr",
            "127.0.0.1:0",
        ],
        &dir.join("operator.log"),
    )?;
    // Let the operator start its watches before the burst.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = scrape(&client).await?;
    let (op_cpu0, sb_cpu0) = (operator.cpu_seconds(), sandbox.cpu_seconds());
    let probe = Probe::start(client.clone());
    let databases: Api<PostgresDB> = Api::namespaced(client.clone(), ns);
    let ready = tokio::spawn(all_ready(databases.clone(), args.databases));
    let t0 = Instant::now();
    let names: Vec<String> = (0..args.databases).map(|i| format!("db-{i}")).collect();
    let created = futures::stream::iter(names)
        .map(|name| {
            let api = databases.clone();
            async move {
                api.create(&PostParams::default(), &DbBuilder::manifest(&name).build())
                    .await
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await;
    if let Some(Err(e)) = created.into_iter().find(Result::is_err) {
        return Err(format!("a create failed: {e}").into());
    }
    tokio::time::timeout(Duration::from_secs(args.timeout_seconds), ready)
        .await
        .map_err(|_| "not every database became Ready in time")???;
    let seconds_to_all_ready = t0.elapsed().as_secs_f64();
    eprintln!("  all Ready after {seconds_to_all_ready:.2} s");
    let during = scrape(&client).await?;
    let probe = probe.stop().await;

    // Converged: wait until nobody writes for two seconds.
    let mut settled = during.clone();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = scrape(&client).await?;
        let quiet = all_writes(&now) == all_writes(&settled);
        settled = now;
        if quiet {
            break;
        }
    }
    let (op_cpu1, sb_cpu1) = (operator.cpu_seconds(), sandbox.cpu_seconds());
    eprintln!("  converged; watching at rest for {} s", args.rest_seconds);
    tokio::time::sleep(Duration::from_secs(args.rest_seconds)).await;
    let rest = scrape(&client).await?;

    let n = args.databases as f64;
    let agent = level.name();
    let per_min = |a: f64| a * 60.0 / args.rest_seconds.max(1) as f64;
    let op_writes = |m: &Metrics, events: bool| {
        m.sum("sandbox_client_requests_total", |l| {
            l["user_agent"].starts_with(agent)
                && is_write(&l["verb"])
                && (l["resource"] == "events") == events
        })
    };
    let mut by_request = BTreeMap::new();
    for (labels, v) in &settled.samples {
        if labels.get("__name__").map(String::as_str) == Some("sandbox_client_requests_total")
            && labels["user_agent"].starts_with(agent)
            && is_write(&labels["verb"])
        {
            let sub = if labels["subresource"].is_empty() {
                String::new()
            } else {
                format!("/{}", labels["subresource"])
            };
            let key = format!("{} {}{}", labels["verb"], labels["resource"], sub);
            let old = before.get(labels);
            *by_request.entry(key).or_default() += (v - old) as u64;
        }
    }
    let controller = |m: &Metrics| {
        m.sum("sandbox_store_writes_total", |l| {
            l["source"] == "controllers"
        })
    };
    let (p50, p99) = latency(&before, &during);
    let figures = Figures {
        level: agent.into(),
        databases: args.databases,
        seconds_to_all_ready,
        operator_writes_per_database: (op_writes(&settled, false) - op_writes(&before, false)) / n,
        operator_event_writes_per_database: (op_writes(&settled, true) - op_writes(&before, true))
            / n,
        controller_writes_per_database: (controller(&settled) - controller(&before)) / n,
        operator_writes_by_request: by_request,
        operator_writes_per_minute_at_rest: per_min(
            op_writes(&rest, false) + op_writes(&rest, true)
                - op_writes(&settled, false)
                - op_writes(&settled, true),
        ),
        all_request_writes_per_minute_at_rest: per_min(
            request_writes(&rest) - request_writes(&settled),
        ),
        controller_writes_per_minute_at_rest: per_min(controller(&rest) - controller(&settled)),
        rest_seconds: args.rest_seconds,
        operator_peak_rss_mib: operator.peak_rss_mib(),
        operator_cpu_seconds: op_cpu1 - op_cpu0,
        sandbox_peak_rss_mib: sandbox.peak_rss_mib(),
        sandbox_cpu_seconds: sb_cpu1 - sb_cpu0,
        api_p50_ms: p50 * 1000.0,
        api_p99_ms: p99 * 1000.0,
        probe_p50_ms: probe.quantile(0.5),
        probe_p99_ms: probe.quantile(0.99),
        probe_max_ms: probe.quantile(1.0),
        probe_failures: probe.failures,
    };
    operator.stop().await;
    sandbox.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}

fn free_port() -> Result<u16, Failure> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `n` databases are Ready, following a watch.
async fn all_ready(api: Api<PostgresDB>, n: usize) -> Result<(), Failure> {
    let mut ready = BTreeSet::new();
    let stream = watcher(api, watcher::Config::default());
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        // A watch that fell behind (410) is listed again by the watcher.
        let dbs = match event {
            Ok(watcher::Event::Apply(db) | watcher::Event::InitApply(db)) => vec![db],
            Ok(_) => vec![],
            Err(e) => {
                eprintln!("  (watch of PostgresDBs: {e}; listing again)");
                vec![]
            }
        };
        for db in dbs {
            if is_settled(&db) {
                ready.insert(db.name_any());
            }
        }
        if ready.len() >= n {
            return Ok(());
        }
    }
    Err("the watch of PostgresDBs ended".into())
}

fn is_write(verb: &str) -> bool {
    sandbox::counters::WRITE_VERBS.contains(&verb)
}

fn request_writes(m: &Metrics) -> f64 {
    m.sum("apiserver_request_total", |l| is_write(&l["verb"]))
}

fn all_writes(m: &Metrics) -> f64 {
    request_writes(m)
        + m.sum("sandbox_store_writes_total", |l| {
            l["source"] == "controllers"
        })
}

/// One scrape of `/metrics`: every sample by its labels (the name as `__name__`).
#[derive(Debug, Clone, Default)]
struct Metrics {
    samples: BTreeMap<BTreeMap<String, String>, f64>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut map = BTreeMap::from([("__name__".to_string(), name.to_string())]);
            for pair in split_labels(labels) {
                if let Some((k, v)) = pair.split_once('=') {
                    map.insert(k.to_string(), v.trim_matches('"').replace("\\\"", "\""));
                }
            }
            samples.insert(map, value);
        }
        Metrics { samples }
    }

    fn get(&self, labels: &BTreeMap<String, String>) -> f64 {
        self.samples.get(labels).copied().unwrap_or(0.0)
    }

    fn sum(&self, name: &str, keep: impl Fn(&BTreeMap<String, String>) -> bool) -> f64 {
        self.samples
            .iter()
            .filter(|(l, _)| l.get("__name__").map(String::as_str) == Some(name) && keep(l))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Splits `a="x",b="y,z"` on the commas between pairs.
fn split_labels(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (vec![], 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

async fn scrape(client: &Client) -> Result<Metrics, Failure> {
    let req = http::Request::get("/metrics").body(vec![])?;
    Ok(Metrics::parse(&client.request_text(req).await?))
}

/// p50 and p99 of every request but watches between two scrapes, as
/// Prometheus' `histogram_quantile` estimates them from the buckets.
fn latency(before: &Metrics, after: &Metrics) -> (f64, f64) {
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for (labels, v) in &after.samples {
        if labels.get("__name__").map(String::as_str)
            != Some("apiserver_request_duration_seconds_bucket")
            || labels["verb"] == "watch"
        {
            continue;
        }
        let le = match labels["le"].as_str() {
            "+Inf" => f64::INFINITY,
            s => s.parse().unwrap_or(f64::INFINITY),
        };
        // Keyed by the bound in microseconds, so the map sorts them.
        let key = if le.is_infinite() {
            u64::MAX
        } else {
            (le * 1e6) as u64
        };
        *buckets.entry(key).or_default() += v - before.get(labels);
    }
    let total = buckets.get(&u64::MAX).copied().unwrap_or(0.0);
    let quantile = |q: f64| {
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (bound, count) in &buckets {
            let upper = *bound as f64 / 1e6;
            if *count >= rank {
                if *bound == u64::MAX {
                    return lower;
                }
                let share = if count - below > 0.0 {
                    (rank - below) / (count - below)
                } else {
                    0.0
                };
                return lower + (upper - lower) * share;
            }
            lower = upper;
            below = *count;
        }
        lower
    };
    if total == 0.0 {
        (0.0, 0.0)
    } else {
        (quantile(0.5), quantile(0.99))
    }
}

/// A client asking a plain question every 50 ms, timing each answer.
struct Probe {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<ProbeResult>,
}

#[derive(Default)]
struct ProbeResult {
    millis: Vec<f64>,
    failures: usize,
}

impl ProbeResult {
    fn quantile(&self, q: f64) -> f64 {
        if self.millis.is_empty() {
            return 0.0;
        }
        let mut v = self.millis.clone();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

impl Probe {
    fn start(client: Client) -> Probe {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let result = Arc::new(Mutex::new(ProbeResult::default()));
        let task = tokio::spawn(async move {
            let api: Api<Namespace> = Api::all(client);
            loop {
                let t = Instant::now();
                let ok = api.list(&ListParams::default()).await.is_ok();
                {
                    let mut r = result.lock().unwrap_or_else(|e| e.into_inner());
                    r.millis.push(t.elapsed().as_secs_f64() * 1000.0);
                    r.failures += usize::from(!ok);
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            std::mem::take(&mut *result.lock().unwrap_or_else(|e| e.into_inner()))
        });
        Probe { stop, task }
    }

    async fn stop(self) -> ProbeResult {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// How a row of the table renders one level's figure.
type Cell = Box<dyn Fn(&Figures) -> String>;

/// The figures as a table, levels side by side.
fn table(all: &[Figures]) -> String {
    let rows: Vec<(&str, Cell)> = vec![
        ("databases", Box::new(|f| f.databases.to_string())),
        (
            "time to all Ready (s)",
            Box::new(|f| format!("{:.2}", f.seconds_to_all_ready)),
        ),
        (
            "operator writes / database",
            Box::new(|f| format!("{:.2}", f.operator_writes_per_database)),
        ),
        (
            "operator Events / database",
            Box::new(|f| format!("{:.2}", f.operator_event_writes_per_database)),
        ),
        (
            "built-in controller writes / database",
            Box::new(|f| format!("{:.2}", f.controller_writes_per_database)),
        ),
        (
            "operator writes / min at rest",
            Box::new(|f| format!("{:.1}", f.operator_writes_per_minute_at_rest)),
        ),
        (
            "all request writes / min at rest",
            Box::new(|f| format!("{:.1}", f.all_request_writes_per_minute_at_rest)),
        ),
        (
            "controller writes / min at rest",
            Box::new(|f| format!("{:.1}", f.controller_writes_per_minute_at_rest)),
        ),
        (
            "operator peak RSS (MiB)",
            Box::new(|f| format!("{:.1}", f.operator_peak_rss_mib)),
        ),
        (
            "operator CPU (s)",
            Box::new(|f| format!("{:.2}", f.operator_cpu_seconds)),
        ),
        (
            "sandbox peak RSS (MiB)",
            Box::new(|f| format!("{:.1}", f.sandbox_peak_rss_mib)),
        ),
        (
            "sandbox CPU (s)",
            Box::new(|f| format!("{:.2}", f.sandbox_cpu_seconds)),
        ),
        (
            "API p50 / p99 (ms)",
            Box::new(|f| format!("{:.1} / {:.1}", f.api_p50_ms, f.api_p99_ms)),
        ),
        (
            "probe p50 / p99 / max (ms)",
            Box::new(|f| {
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    f.probe_p50_ms, f.probe_p99_ms, f.probe_max_ms
                )
            }),
        ),
        ("probe failures", Box::new(|f| f.probe_failures.to_string())),
    ];
    let mut out = format!(
        "| figure |{}\n|---|{}\n",
        all.iter()
            .map(|f| format!(" {} |", f.level))
            .collect::<String>(),
        all.iter().map(|_| "---|").collect::<String>()
    );
    for (name, cell) in rows {
        out += &format!(
            "| {name} |{}\n",
            all.iter()
                .map(|f| format!(" {} |", cell(f)))
                .collect::<String>()
        );
    }
    for f in all {
        out += &format!(
            "\n{} writes by request: {:?}",
            f.level, f.operator_writes_by_request
        );
    }
    out
}
