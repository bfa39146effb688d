//! `--autoscaling-bench`: the time from a read load arriving to a replica
//! serving it, and from the load leaving to the count back at
//! `minInstances`.
//!
//! It starts an in-process sandbox whose pods run real PostgreSQL 15 and
//! Level 5 in-process, creates the `ReadLoadScaled` scenario's database
//! (`spec.autoscaling` one to two instances, a target of 50% of the 17
//! usable connections, no scale-out window, a 20 s scale-in window) and
//! loads pgbench's tables. Then, `--runs` times: it starts the scenario's
//! read-only pgbench load (10 clients, in rounds that prefer the `-ro`
//! Service) and measures, from that instant, when a poll here (every
//! 250 ms) first saw the scale-out recorded in status, the new replica's
//! pod Ready, and pgbench's sessions on the replica (the replica serving
//! reads); then it stops the load and measures when status recorded the
//! scale-in and the replica's pod was gone.
//!
//! The decision waits for the next measurement (every 15 s), so the first
//! figure varies by up to that much from run to run; the replica's start is
//! a base backup of the whole database (pgbench scale 1, about 15 MB,
//! here). It prints a table and writes the figures as JSON; the targets, if
//! any, are in `docs/performance.md`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use tests::harness::{TestCluster, real_postgres};
use tests::levels::LevelId;
use tests::scenarios::is_settled;
use tests::scenarios::read_load_scaled::{
    ReadLoad, SCALE_IN_WINDOW, database, decided, init_pgbench, pgbench_sessions_on,
};

use super::Failure;

/// What the autoscaling mode is asked to do.
#[derive(Debug, Clone)]
pub struct AutoscalingArgs {
    /// How many load / no-load cycles to measure.
    pub runs: usize,
    /// Where to write the figures.
    pub json: PathBuf,
}

/// One cycle, in seconds from the load's start (the first three) or its
/// stop (the last two).
#[derive(Debug, Default, Serialize, Clone)]
struct Cycle {
    to_scale_out_recorded: f64,
    to_replica_ready: f64,
    to_replica_serving_reads: f64,
    to_scale_in_recorded: f64,
    to_replica_gone: f64,
}

/// The figures of one run of the mode.
#[derive(Debug, Default, Serialize)]
struct AutoscalingFigures {
    cycles: Vec<Cycle>,
    scale_in_window_seconds: u32,
    load_average_at_start: String,
    load_average_at_end: String,
}

const NAME: &str = "orders";
const REPLICA: &str = "orders-1";
/// One wait's bound: a first clone on a busy machine.
const BUDGET: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(250);

pub async fn run(args: AutoscalingArgs) -> Result<(), Failure> {
    let load_at_start = load_average();
    eprintln!("starting a real-PostgreSQL sandbox and Level 5 (load {load_at_start})");
    let cluster = TestCluster::sandbox(real_postgres(&[15]))
        .await?
        .with_budget(BUDGET);
    let operator = cluster.run_operator(LevelId::Five);
    let result = measure(&cluster, &args, load_at_start).await;
    if let Ok(figures) = &result {
        println!("{}", table(figures));
        std::fs::write(&args.json, serde_json::to_string_pretty(figures)?)?;
        eprintln!("figures written to {}", args.json.display());
    }
    operator.stop().await;
    cluster.finish().await;
    result.map(|_| ())
}

/// Polls `check` every [`POLL`] until it holds; the seconds since `from`.
async fn seconds_until<F, Fut>(what: &str, from: Instant, mut check: F) -> Result<f64, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            return Ok(from.elapsed().as_secs_f64());
        }
        if from.elapsed() > BUDGET {
            return Err(format!("timed out after {BUDGET:?} waiting until {what}").into());
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn instances(cluster: &TestCluster) -> Option<i32> {
    let db = cluster.database(NAME).await.ok()??;
    decided(&db).map(|d| d.instances)
}

async fn replica_ready(cluster: &TestCluster) -> bool {
    let Ok(Some(pod)) = cluster.api::<Pod>().get_opt(REPLICA).await else {
        return false;
    };
    pod.status
        .and_then(|s| s.conditions)
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn measure(
    cluster: &TestCluster,
    args: &AutoscalingArgs,
    load_at_start: String,
) -> Result<AutoscalingFigures, Failure> {
    cluster.create(&database()).await?;
    seconds_until(
        "the database is Ready, autoscaled at one instance",
        Instant::now(),
        || async {
            let Ok(Some(db)) = cluster.database(NAME).await else {
                return false;
            };
            is_settled(&db) && decided(&db).is_some_and(|d| d.instances == 1)
        },
    )
    .await?;
    init_pgbench(cluster, NAME).await?;
    let mut figures = AutoscalingFigures {
        scale_in_window_seconds: SCALE_IN_WINDOW,
        load_average_at_start: load_at_start,
        ..Default::default()
    };
    for run in 1..=args.runs {
        eprintln!("cycle {run}: load");
        let began = Instant::now();
        let load = ReadLoad::start(cluster, NAME).await?;
        let mut cycle = Cycle {
            to_scale_out_recorded: seconds_until("scaled out", began, || async {
                instances(cluster).await == Some(2)
            })
            .await?,
            ..Default::default()
        };
        cycle.to_replica_ready =
            seconds_until("the replica is ready", began, || replica_ready(cluster)).await?;
        cycle.to_replica_serving_reads =
            seconds_until("the replica serves reads", began, || async {
                pgbench_sessions_on(cluster, REPLICA)
                    .await
                    .is_some_and(|n| n > 0)
            })
            .await?;
        load.stop().await;
        eprintln!("cycle {run}: no load");
        let stopped = Instant::now();
        cycle.to_scale_in_recorded = seconds_until("scaled in", stopped, || async {
            instances(cluster).await == Some(1)
        })
        .await?;
        cycle.to_replica_gone = seconds_until("the replica is gone", stopped, || async {
            matches!(cluster.api::<Pod>().get_opt(REPLICA).await, Ok(None))
        })
        .await?;
        figures.cycles.push(cycle);
    }
    figures.load_average_at_end = load_average();
    Ok(figures)
}

/// `uptime`'s load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn table(f: &AutoscalingFigures) -> String {
    let mut out = String::from(
        "| cycle | load → scale-out recorded (s) | → replica Ready (s) | → replica serving reads (s) | no load → scale-in recorded (s) | → replica gone (s) |\n|---|---|---|---|---|---|\n",
    );
    for (k, c) in f.cycles.iter().enumerate() {
        out += &format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            k + 1,
            c.to_scale_out_recorded,
            c.to_replica_ready,
            c.to_replica_serving_reads,
            c.to_scale_in_recorded,
            c.to_replica_gone
        );
    }
    out += &format!(
        "\nscale-in window {} s; load average at start / end: {} / {}\n",
        f.scale_in_window_seconds, f.load_average_at_start, f.load_average_at_end
    );
    out
}
