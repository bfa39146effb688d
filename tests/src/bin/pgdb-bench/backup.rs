//! `--backup-bench`: Level 3's backups against a bare `pg_dump`, and how
//! late a schedule slot's Job starts.
//!
//! It starts an in-process sandbox whose pods run real PostgreSQL 15 and
//! Level 3 in-process, creates the database `bench` (loaded with `pgbench
//! -i` at a scale matching `--size-mb`) and the empty database `ticks`,
//! both with a backup volume. Then:
//!
//! 1. It times a bare `pg_dump -Fc` of every database of `bench`'s server
//!    (and `pg_dumpall --globals-only`, which a backup holds too) from this
//!    machine through the database's Service, into a fresh directory on a
//!    tmpfs (`/dev/shm`, as the sandbox's volumes are tmpfs when it runs as
//!    root), before and after the backup; then a `PostgresDBBackup`, from
//!    its creation to `Completed`, and its Job's own runtime
//!    (`status.startedAt` to `status.completedAt`, whole seconds).
//! 2. It gives `ticks` a six-field schedule firing every `--every-seconds`
//!    and, for `--slots` slots after the change, measures from the slot
//!    (`status.scheduledFor`) to when a watch here first saw the backup,
//!    its Job and its pod running (milliseconds), and to the Job's
//!    `creationTimestamp` (whole seconds). The schedule runs on the empty
//!    database so that one backup never waits for the previous one (one
//!    backup of a database runs at a time) and the figure is the
//!    operator's and the Job controller's latency alone.
//!
//! It prints a table and writes the figures as JSON. It stops at measuring:
//! the targets are in `docs/performance.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use shared::backup::{BackupPhase, BackupSpec, PostgresDBBackup, PostgresDBBackupSpec};
use shared::keys::SCHEDULED_FOR_ANNOTATION;
use tests::builders::DbBuilder;
use tests::connect::{Role, connect, login};
use tests::harness::{TestCluster, real_postgres};
use tests::levels::LevelId;

use super::Failure;

/// What the backup mode is asked to do.
#[derive(Debug, Clone)]
pub struct BackupArgs {
    /// About how much data to load, in MB (pgbench's scale 1 is about 15 MB).
    pub size_mb: u64,
    /// How many schedule slots to measure.
    pub slots: usize,
    /// The schedule's period, in seconds.
    pub every_seconds: u64,
    /// Where to write the figures.
    pub json: PathBuf,
}

/// The figures of one run.
#[derive(Debug, Default, Serialize)]
struct BackupFigures {
    size_mb_asked: u64,
    pgbench_scale: u64,
    /// `pg_database_size` of every database of the server, summed, in MiB.
    data_mib: f64,
    load_seconds: f64,
    /// Each bare dump: `pg_dump -Fc` of every database plus
    /// `pg_dumpall --globals-only`, sequentially, from this machine.
    bare_dump_seconds: Vec<f64>,
    bare_dump_mean_seconds: f64,
    bare_dump_bytes: u64,
    /// From the backup's creation to a poll here seeing it Completed.
    backup_wall_seconds: f64,
    /// The Job's own runtime: `status.startedAt` to `status.completedAt`
    /// (whole seconds).
    backup_job_seconds: f64,
    backup_bytes: i64,
    /// `backup_wall_seconds` over the mean bare dump, in percent.
    overhead_wall_percent: f64,
    /// `backup_job_seconds` over the mean bare dump, in percent.
    overhead_job_percent: f64,
    schedule: String,
    slots: Vec<SlotFigures>,
    /// Over the slots measured: slot to the Job seen here, mean and max.
    slot_to_job_mean_seconds: f64,
    slot_to_job_max_seconds: f64,
    slot_to_pod_running_mean_seconds: f64,
    slot_to_pod_running_max_seconds: f64,
    /// `uptime`'s load averages when the run began and ended.
    load_average_at_start: String,
    load_average_at_end: String,
}

/// One schedule slot.
#[derive(Debug, Default, Serialize, Clone)]
struct SlotFigures {
    backup: String,
    slot: String,
    /// From the slot to a watch here first seeing each object (ms precision).
    to_backup_seen_seconds: f64,
    to_job_seen_seconds: f64,
    to_pod_running_seen_seconds: f64,
    /// From the slot to the Job's `creationTimestamp` (whole seconds).
    to_job_created_seconds: f64,
}

/// When a watch here first saw each object, by name: created, and (pods)
/// running.
#[derive(Debug, Default)]
struct Sightings {
    created: BTreeMap<String, Timestamp>,
    running: BTreeMap<String, Timestamp>,
}

type Seen = Arc<Mutex<Sightings>>;

const BIG: &str = "bench";
const TICKS: &str = "ticks";

pub async fn run(args: BackupArgs) -> Result<(), Failure> {
    let load_at_start = load_average();
    eprintln!("starting a real-PostgreSQL sandbox and Level 3 (load {load_at_start})");
    let cluster = TestCluster::sandbox(real_postgres(&[15]))
        .await?
        .with_budget(Duration::from_secs(900));
    let operator = cluster.run_operator(LevelId::Three);
    let result = measure(&cluster, &args, load_at_start).await;
    // The figures first: stopping checks that the operator exits cleanly.
    if let Ok(figures) = &result {
        println!("{}", table(figures));
        std::fs::write(&args.json, serde_json::to_string_pretty(figures)?)?;
        eprintln!("figures written to {}", args.json.display());
    }
    operator.stop().await;
    cluster.finish().await;
    result.map(|_| ())
}

async fn measure(
    cluster: &TestCluster,
    args: &BackupArgs,
    load_at_start: String,
) -> Result<BackupFigures, Failure> {
    let mut figures = BackupFigures {
        size_mb_asked: args.size_mb,
        load_average_at_start: load_at_start,
        ..Default::default()
    };
    for name in [BIG, TICKS] {
        let mut db = DbBuilder::manifest(name).version("15").build();
        db.spec.backup = Some(BackupSpec::default());
        cluster.create(&db).await?;
    }
    for name in [BIG, TICKS] {
        cluster
            .wait_for(name, "Ready", |db| {
                db.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .await?;
    }
    let owner = Target::of(cluster, Role::Owner, BIG).await?;
    let superuser = Target::of(cluster, Role::Superuser, BIG).await?;

    // Load.
    figures.pgbench_scale = (args.size_mb as f64 / 15.0).round().max(1.0) as u64;
    eprintln!(
        "loading about {} MB: pgbench -i -s {}",
        args.size_mb, figures.pgbench_scale
    );
    let started = Instant::now();
    owner
        .run(
            "pgbench",
            &[
                "-i",
                "-q",
                "-s",
                &figures.pgbench_scale.to_string(),
                &owner.dbname,
            ],
        )
        .await?;
    figures.load_seconds = started.elapsed().as_secs_f64();
    let admin = connect(cluster, Role::Superuser, BIG)
        .await
        .ok_or("no superuser login for bench")?;
    let databases: Vec<String> = admin
        .query(
            "SELECT datname FROM pg_catalog.pg_database \
             WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let bytes: i64 = admin
        .query_one(
            "SELECT sum(pg_database_size(datname))::bigint FROM pg_catalog.pg_database",
            &[],
        )
        .await?
        .get(0);
    figures.data_mib = bytes as f64 / 1048576.0;
    eprintln!(
        "loaded {:.1} MiB in {:.1} s; databases {databases:?}",
        figures.data_mib, figures.load_seconds
    );

    // A bare dump, the backup, a bare dump again.
    let (seconds, dumped) = superuser.bare_dump(&databases).await?;
    eprintln!("bare dump: {seconds:.2} s, {dumped} bytes");
    figures.bare_dump_seconds.push(seconds);
    let name = "bench-by-hand";
    let backups = cluster.api::<PostgresDBBackup>();
    let started = Instant::now();
    backups
        .create(
            &PostParams::default(),
            &PostgresDBBackup::new(
                name,
                PostgresDBBackupSpec {
                    database: BIG.into(),
                },
            ),
        )
        .await?;
    let done = loop {
        let backup = backups.get(name).await?;
        let phase = backup.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(BackupPhase::Completed | BackupPhase::Failed)) {
            break backup;
        }
        if started.elapsed() > cluster.budget() {
            return Err(format!("backup {name} did not finish: {:?}", backup.status).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    figures.backup_wall_seconds = started.elapsed().as_secs_f64();
    let status = done.status.unwrap_or_default();
    if status.phase != Some(BackupPhase::Completed) {
        return Err(format!("backup {name} failed: {:?}", status.error).into());
    }
    if let (Some(from), Some(to)) = (&status.started_at, &status.completed_at) {
        figures.backup_job_seconds = seconds_between(from.0, to.0);
    }
    figures.backup_bytes = status.size_bytes.unwrap_or_default();
    eprintln!(
        "backup: {:.2} s from creation to Completed, Job {:.0} s, {} bytes",
        figures.backup_wall_seconds, figures.backup_job_seconds, figures.backup_bytes
    );
    let (seconds, dumped) = superuser.bare_dump(&databases).await?;
    eprintln!("bare dump: {seconds:.2} s, {dumped} bytes");
    figures.bare_dump_seconds.push(seconds);
    figures.bare_dump_bytes = dumped;
    let bare =
        figures.bare_dump_seconds.iter().sum::<f64>() / figures.bare_dump_seconds.len() as f64;
    figures.bare_dump_mean_seconds = bare;
    figures.overhead_wall_percent = 100.0 * (figures.backup_wall_seconds - bare) / bare;
    figures.overhead_job_percent = 100.0 * (figures.backup_job_seconds - bare) / bare;

    // The schedule.
    measure_slots(cluster, args, &mut figures).await?;
    figures.load_average_at_end = load_average();
    Ok(figures)
}

async fn measure_slots(
    cluster: &TestCluster,
    args: &BackupArgs,
    figures: &mut BackupFigures,
) -> Result<(), Failure> {
    let seen: Seen = Arc::default();
    let watches = [
        watch_sightings(cluster.api::<PostgresDBBackup>(), seen.clone(), |_| false),
        watch_sightings(cluster.api::<Job>(), seen.clone(), |_| false),
        watch_sightings(cluster.api::<Pod>(), seen.clone(), |pod| {
            matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Running" | "Succeeded")
            )
        }),
    ];
    // The watches list what exists first; anything seen from here on is new.
    tokio::time::sleep(Duration::from_secs(1)).await;
    figures.schedule = format!("*/{} * * * * *", args.every_seconds);
    let changed = Timestamp::now();
    cluster
        .patch_spec(
            TICKS,
            serde_json::json!({ "backup": { "schedule": figures.schedule } }),
        )
        .await?;
    eprintln!(
        "schedule {} on {TICKS}: measuring {} slots",
        figures.schedule, args.slots
    );
    let backups = cluster.api::<PostgresDBBackup>();
    let deadline =
        Instant::now() + Duration::from_secs(args.every_seconds * (args.slots as u64 + 2) + 120);
    let slots = loop {
        let listed = backups.list(&Default::default()).await?.items;
        let mut slots = vec![];
        for backup in &listed {
            let Some(slot) = scheduled_for(backup) else {
                continue;
            };
            // A slot before the change was taken because the change made
            // it due, not at its time.
            if slot <= changed {
                continue;
            }
            let Some(job) = backup.status.as_ref().and_then(|s| s.job.clone()) else {
                continue;
            };
            let jobs = cluster.api::<Job>();
            let Some(job) = jobs.get_opt(&job).await? else {
                continue;
            };
            let pod_running = {
                let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                pods_of(&seen, &job).into_iter().min()
            };
            let Some(pod_running) = pod_running else {
                continue;
            };
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            let (Some(backup_seen), Some(job_seen)) = (
                seen.created
                    .get(&format!("PostgresDBBackup/{}", backup.name_any())),
                seen.created.get(&format!("Job/{}", job.name_any())),
            ) else {
                continue;
            };
            slots.push(SlotFigures {
                backup: backup.name_any(),
                slot: slot.to_string(),
                to_backup_seen_seconds: seconds_between(slot, *backup_seen),
                to_job_seen_seconds: seconds_between(slot, *job_seen),
                to_pod_running_seen_seconds: seconds_between(slot, pod_running),
                to_job_created_seconds: job
                    .meta()
                    .creation_timestamp
                    .as_ref()
                    .map_or(f64::NAN, |t| seconds_between(slot, t.0)),
            });
        }
        slots.sort_by(|a, b| a.slot.cmp(&b.slot));
        if slots.len() >= args.slots {
            slots.truncate(args.slots);
            break slots;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} slots started a Job in time: {slots:?}",
                slots.len(),
                args.slots
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for watch in watches {
        watch.abort();
    }
    cluster
        .patch_spec(TICKS, serde_json::json!({ "backup": { "suspend": true } }))
        .await?;
    let stats = |f: fn(&SlotFigures) -> f64| {
        let values: Vec<f64> = slots.iter().map(f).collect();
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        (mean, max)
    };
    (
        figures.slot_to_job_mean_seconds,
        figures.slot_to_job_max_seconds,
    ) = stats(|s| s.to_job_seen_seconds);
    (
        figures.slot_to_pod_running_mean_seconds,
        figures.slot_to_pod_running_max_seconds,
    ) = stats(|s| s.to_pod_running_seen_seconds);
    figures.slots = slots;
    Ok(())
}

/// The slot a scheduled backup was taken for.
fn scheduled_for(backup: &PostgresDBBackup) -> Option<Timestamp> {
    backup
        .status
        .as_ref()
        .and_then(|s| s.scheduled_for.as_ref())
        .map(|t| t.0)
        .or_else(|| {
            backup
                .annotations()
                .get(SCHEDULED_FOR_ANNOTATION)
                .and_then(|v| v.parse().ok())
        })
}

/// When the pods of `job` were first seen running.
fn pods_of(seen: &Sightings, job: &Job) -> Vec<Timestamp> {
    let uid = job.uid().unwrap_or_default();
    seen.running
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("Pod/{uid}/")))
        .map(|(_, t)| *t)
        .collect()
}

/// Watches `api`, noting when each object was first seen (as
/// `Kind/name`) and, for pods, when first seen `running` (as
/// `Pod/<owner uid>/name`).
fn watch_sightings<K>(
    api: Api<K>,
    seen: Seen,
    running: fn(&K) -> bool,
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(event) = stream.next().await {
            let Ok(object) = event else { continue };
            let now = Timestamp::now();
            let kind = K::kind(&());
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.created
                .entry(format!("{kind}/{}", object.name_any()))
                .or_insert(now);
            if running(&object) {
                let owner = object
                    .owner_references()
                    .first()
                    .map(|o| o.uid.clone())
                    .unwrap_or_default();
                seen.running
                    .entry(format!("{kind}/{owner}/{}", object.name_any()))
                    .or_insert(now);
            }
        }
    })
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_millisecond() - from.as_millisecond()) as f64 / 1000.0
}

/// Where and as whom the command-line tools reach a database: its
/// Service's ClusterIP, which the sandbox routes on this machine.
struct Target {
    host: String,
    user: String,
    password: String,
    dbname: String,
    tools: PathBuf,
}

impl Target {
    async fn of(cluster: &TestCluster, role: Role, name: &str) -> Result<Target, Failure> {
        let service = cluster.api::<Service>().get(name).await?;
        let host = service
            .spec
            .and_then(|s| s.cluster_ip)
            .ok_or(format!("Service {name} has no ClusterIP"))?;
        let config = login(cluster, role, name, None)
            .await
            .ok_or(format!("no login for {name}"))?;
        Ok(Target {
            host,
            user: config.get_user().unwrap_or_default().to_string(),
            password: String::from_utf8_lossy(config.get_password().unwrap_or_default())
                .into_owned(),
            dbname: config.get_dbname().unwrap_or_default().to_string(),
            tools: sandbox::PostgresConfig::default()
                .binaries
                .client()
                .unwrap_or_default(),
        })
    }

    /// Runs a client tool (from the sandbox's client tools) as this login.
    async fn run(&self, tool: &str, args: &[&str]) -> Result<(), Failure> {
        let output = tokio::process::Command::new(self.tools.join(tool))
            .args(["-h", &self.host, "-p", "5432", "-U", &self.user])
            .args(args)
            .env("PGPASSWORD", &self.password)
            .output()
            .await
            .map_err(|e| format!("cannot run {tool}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        Ok(())
    }

    /// Dumps `databases` with `pg_dump -Fc`, one after another, and the
    /// globals, into a fresh directory; the seconds taken and the bytes
    /// written. The directory is removed afterwards.
    async fn bare_dump(&self, databases: &[String]) -> Result<(f64, u64), Failure> {
        let parent = Path::new("/dev/shm");
        let parent = if parent.is_dir() {
            parent.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = parent.join(format!("pgdb-bench-dump-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let started = Instant::now();
        let globals = dir.join("globals.sql");
        self.run(
            "pg_dumpall",
            &[
                "--globals-only",
                "--no-role-passwords",
                "-f",
                &path_text(&globals),
            ],
        )
        .await?;
        for db in databases {
            let file = dir.join(format!("{db}.dump"));
            self.run("pg_dump", &["-Fc", "-d", db, "-f", &path_text(&file)])
                .await?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut bytes = 0;
        for entry in std::fs::read_dir(&dir)? {
            bytes += entry?.metadata()?.len();
        }
        std::fs::remove_dir_all(&dir)?;
        Ok((seconds, bytes))
    }
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `uptime`'s load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn table(f: &BackupFigures) -> String {
    let mut rows: Vec<(String, String)> = vec![
        (
            "data (MiB, pgbench scale)".into(),
            format!("{:.1} (scale {})", f.data_mib, f.pgbench_scale),
        ),
        (
            "load with pgbench -i (s)".into(),
            format!("{:.1}", f.load_seconds),
        ),
        (
            "bare pg_dump -Fc of every database + globals (s)".into(),
            format!(
                "{} (mean {:.2})",
                f.bare_dump_seconds
                    .iter()
                    .map(|s| format!("{s:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                f.bare_dump_mean_seconds
            ),
        ),
        (
            "bare dump size (bytes)".into(),
            f.bare_dump_bytes.to_string(),
        ),
        (
            "backup, creation to Completed (s)".into(),
            format!("{:.2}", f.backup_wall_seconds),
        ),
        (
            "backup Job, startedAt to completedAt (s, whole)".into(),
            format!("{:.0}", f.backup_job_seconds),
        ),
        ("backup size (bytes)".into(), f.backup_bytes.to_string()),
        (
            "overhead over the bare dump: wall / Job (%)".into(),
            format!(
                "{:.1} / {:.1}",
                f.overhead_wall_percent, f.overhead_job_percent
            ),
        ),
        ("schedule".into(), format!("`{}`", f.schedule)),
    ];
    for s in &f.slots {
        rows.push((
            format!("slot {} → backup / Job / pod running seen (s)", s.slot),
            format!(
                "{:.2} / {:.2} / {:.2} (Job creationTimestamp {:.0})",
                s.to_backup_seen_seconds,
                s.to_job_seen_seconds,
                s.to_pod_running_seen_seconds,
                s.to_job_created_seconds
            ),
        ));
    }
    rows.push((
        "slot → Job seen, mean / max (s)".into(),
        format!(
            "{:.2} / {:.2}",
            f.slot_to_job_mean_seconds, f.slot_to_job_max_seconds
        ),
    ));
    rows.push((
        "slot → pod running seen, mean / max (s)".into(),
        format!(
            "{:.2} / {:.2}",
            f.slot_to_pod_running_mean_seconds, f.slot_to_pod_running_max_seconds
        ),
    ));
    rows.push((
        "load average at start / end".into(),
        format!("{} / {}", f.load_average_at_start, f.load_average_at_end),
    ));
    let mut out = String::from("| figure | value |\n|---|---|\n");
    for (k, v) in rows {
        out += &format!("| {k} | {v} |\n");
    }
    out
}
