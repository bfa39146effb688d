//! `--metrics-bench`: what Level 4's metrics cost with many databases.
//!
//! Two figures, both from the real processes:
//! - how long the operator's `/metrics` takes to answer once it holds the
//!   readings of every database (N GETs in a row, client side);
//! - the operator's CPU while it collects every database at the interval
//!   (`/proc/<pid>/stat` over a window of several intervals at rest, so
//!   reconciles are over and what is left is collecting and serving).
//!
//! The setup: a `pgdb-sandbox` with the simulated runtime, whose pods get
//! addresses in 10.244.0.0/16, and the `level4-insights` binary connecting
//! to pods directly. For the pods to answer SQL, the benchmark runs in a
//! network namespace of its own (it re-executes itself under `unshare
//! --net`, so it must run as root), where all of 10.244.0.0/16 is a local
//! address, and one real PostgreSQL 15 listens on port 5432 of every
//! address: each database's measurement is a real login and the real
//! `collect.sql` on a real server. The namespace keeps the benchmark's
//! port 5432 apart from anything else on the machine. The server trusts
//! its clients (no SCRAM exchange), so a login costs the operator less
//! than with passwords; the figures say so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, PostParams};
use serde::Serialize;
use shared::api::PostgresDB;
use shared::testing::DbBuilder;
use tests::levels::LevelId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Failure, NAMESPACE, Process, all_ready, free_port, start_sandbox};

/// Set in the re-executed benchmark, inside its network namespace.
const IN_NAMESPACE: &str = "PGDB_BENCH_NETNS";

/// The simulated runtime's pod addresses (see the sandbox's kubelet).
const POD_RANGE: &str = "10.244.0.0/16";

/// What `--metrics-bench` is given.
pub struct MetricsArgs {
    pub databases: usize,
    pub concurrency: usize,
    pub timeout_seconds: u64,
    pub interval_seconds: u64,
    pub window_seconds: u64,
    pub scrapes: usize,
    pub json: PathBuf,
}

/// The figures.
#[derive(Debug, Default, Serialize)]
struct Figures {
    databases: usize,
    interval_seconds: u64,
    /// Databases measured up in the last `/metrics` before the window.
    databases_up: usize,
    /// Size of one `/metrics` answer.
    metrics_bytes: usize,
    metrics_p50_ms: f64,
    metrics_p99_ms: f64,
    metrics_max_ms: f64,
    /// The operator's CPU over the window at rest, in cores.
    window_seconds: u64,
    operator_cpu_seconds: f64,
    operator_cores: f64,
    /// The server's CPU over the same window (every login and query).
    postgres_cpu_seconds: f64,
    operator_peak_rss_mib: f64,
}

/// Runs the benchmark, in a network namespace of its own.
pub async fn run(args: MetricsArgs) -> Result<(), Failure> {
    if std::env::var_os(IN_NAMESPACE).is_none() {
        return reexecute_in_namespace().await;
    }
    let dir = std::env::temp_dir().join(format!("pgdb-metrics-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let postgres = start_postgres(&dir).await?;
    let outcome = measure(&args, &dir, &postgres).await;
    postgres.stop().await;
    let figures = outcome?;
    println!("{}", table(&figures));
    std::fs::write(&args.json, serde_json::to_string_pretty(&figures)?)?;
    eprintln!("figures written to {}", args.json.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs this same command again under `unshare --net`, with the loopback
/// up and the pods' range local.
async fn reexecute_in_namespace() -> Result<(), Failure> {
    let exe = std::env::current_exe()?;
    let script =
        format!("ip link set lo up && ip route add local {POD_RANGE} dev lo && exec \"$@\"");
    let status = tokio::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", &script, "sh"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(IN_NAMESPACE, "1")
        .status()
        .await
        .map_err(|e| format!("cannot run unshare (the benchmark needs root): {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the benchmark in its network namespace failed: {status}").into())
    }
}

/// The PostgreSQL 15 binaries' directory.
fn pg_bin() -> Result<PathBuf, Failure> {
    let dir = PathBuf::from("/usr/lib/postgresql/15/bin");
    if dir.join("postgres").exists() {
        Ok(dir)
    } else {
        Err("PostgreSQL 15 is not installed (scripts/install-postgres.sh)".into())
    }
}

/// Initialises and starts a server listening on port 5432 of every
/// address, trusting its clients, as the `postgres` user.
async fn start_postgres(dir: &Path) -> Result<Process, Failure> {
    let bin = pg_bin()?;
    let data = dir.join("pgdata");
    std::fs::create_dir_all(&data)?;
    let owned = tokio::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .await?;
    if !owned.success() {
        return Err("cannot give the data directory to the postgres user".into());
    }
    let initdb = tokio::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("initdb"))
        .args(["-U", "postgres", "--auth=trust", "-D"])
        .arg(&data)
        .output()
        .await?;
    if !initdb.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr)).into());
    }
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhost all all 0.0.0.0/0 trust\n",
    )?;
    let log = dir.join("postgres.log");
    std::fs::File::create(&log)?;
    let _ = tokio::process::Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&log)
        .status()
        .await;
    let server = Process::start(
        Path::new("runuser"),
        &[
            "-u",
            "postgres",
            "--",
            &bin.join("postgres").to_string_lossy(),
            "-D",
            &data.to_string_lossy(),
            "-c",
            "listen_addresses=*",
            "-c",
            "port=5432",
            "-c",
            "max_connections=200",
            "-c",
            &format!("unix_socket_directories={}", dir.display()),
        ],
        &log,
    )?;
    let start = Instant::now();
    while tokio::net::TcpStream::connect("10.244.1.2:5432")
        .await
        .is_err()
    {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(server)
}

/// CPU seconds of a process and all its descendants (the server's
/// backends are children of the postmaster, itself a child of runuser).
fn tree_cpu_seconds(pid: u32) -> f64 {
    let mut total = 0.0;
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime, stime, and the children's that were waited for.
        total += (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / 100.0;
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        pending.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    total
}

/// One `GET /metrics`: the body and how long the whole answer took.
async fn get_metrics(port: u16) -> Result<(String, Duration), Failure> {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "/metrics answered {}",
            text.lines().next().unwrap_or_default()
        )
        .into());
    }
    Ok((text, took))
}

fn count_up(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("pgdb_database_up{"))
        // The encoder writes gauges as floats ("1.0").
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0))
        .count()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(args: &MetricsArgs, dir: &Path, postgres: &Process) -> Result<Figures, Failure> {
    let (sandbox, client, kubeconfig) = start_sandbox(dir).await?;
    let ns = NAMESPACE;
    let health = free_port()?;
    let interval = format!("{}s", args.interval_seconds);
    let health_addr = format!("127.0.0.1:{health}");
    let operator = Process::start(
        &LevelId::Four.binary(),
        &[
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
            "--namespace",
            ns,
            "--health-addr",
            &health_addr,
            "--database-access",
            "direct",
            "--metrics-interval",
            &interval,
        ],
        &dir.join("operator.log"),
    )?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let databases: Api<PostgresDB> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    let ready = tokio::spawn(all_ready(databases.clone(), args.databases));
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
    eprintln!(
        "  all {} Ready after {:.1} s",
        args.databases,
        start.elapsed().as_secs_f64()
    );

    // Every database measured up at least once.
    let waited = Instant::now();
    let mut up = 0;
    while waited.elapsed() < Duration::from_secs(args.interval_seconds * 3 + 30) {
        up = count_up(&get_metrics(health).await?.0);
        if up >= args.databases {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("  {up} databases measured up");

    // The CPU window: several intervals at rest.
    let (op0, pg0) = (operator.cpu_seconds(), tree_cpu_seconds(postgres.pid));
    eprintln!(
        "  measuring the operator's CPU for {} s",
        args.window_seconds
    );
    tokio::time::sleep(Duration::from_secs(args.window_seconds)).await;
    let (op1, pg1) = (operator.cpu_seconds(), tree_cpu_seconds(postgres.pid));

    // /metrics, N times in a row.
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..args.scrapes {
        let (text, took) = get_metrics(health).await?;
        bytes = text.len();
        times.push(took.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let figures = Figures {
        databases: args.databases,
        interval_seconds: args.interval_seconds,
        databases_up: up,
        metrics_bytes: bytes,
        metrics_p50_ms: quantile(&times, 0.5),
        metrics_p99_ms: quantile(&times, 0.99),
        metrics_max_ms: quantile(&times, 1.0),
        window_seconds: args.window_seconds,
        operator_cpu_seconds: op1 - op0,
        operator_cores: (op1 - op0) / args.window_seconds.max(1) as f64,
        postgres_cpu_seconds: pg1 - pg0,
        operator_peak_rss_mib: operator.peak_rss_mib(),
    };
    operator.stop().await;
    sandbox.stop().await;
    Ok(figures)
}

fn table(f: &Figures) -> String {
    let rows = [
        (
            "databases (measured up)",
            format!("{} ({})", f.databases, f.databases_up),
        ),
        ("interval (s)", f.interval_seconds.to_string()),
        ("/metrics size (bytes)", f.metrics_bytes.to_string()),
        (
            "/metrics p50 / p99 / max (ms)",
            format!(
                "{:.1} / {:.1} / {:.1}",
                f.metrics_p50_ms, f.metrics_p99_ms, f.metrics_max_ms
            ),
        ),
        (
            "operator CPU at rest (s over window, cores)",
            format!(
                "{:.2} over {} s = {:.3}",
                f.operator_cpu_seconds, f.window_seconds, f.operator_cores
            ),
        ),
        (
            "PostgreSQL CPU over the window (s)",
            format!("{:.2}", f.postgres_cpu_seconds),
        ),
        (
            "operator peak RSS (MiB)",
            format!("{:.1}", f.operator_peak_rss_mib),
        ),
    ];
    let mut text = String::from("| figure | level4-insights |\n|---|---|\n");
    for (name, value) in rows {
        text.push_str(&format!("| {name} | {value} |\n"));
    }
    text
}
