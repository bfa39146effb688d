//! A database with `spec.autoscaling` (one to two instances, a target of
//! 50% of the usable connections, `max_connections: 20`) gets a read-only
//! pgbench load of 10 clients, then the load stops.
//!
//! Below Level 5 the section is not implemented: one instance serves the
//! load and stays alone. Level 5 measures 10 of 17 usable connections
//! (59%, above the target by more than the 10% tolerance) and scales out
//! to two instances; the load, whose clients prefer a replica (each round
//! of pgbench connects through the `-ro` Service when it routes anywhere,
//! else through the read-write one), moves to the new replica; once the
//! load has stopped for the scale-in window it scales back in to one.
//!
//! The load runs from this machine against the Services' addresses, which
//! it routes to on the sandbox only; elsewhere the scenario says it did
//! not run.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use sandbox::SandboxConfig;
use shared::autopilot::autoscaling::{AutoscalingSpec, AutoscalingStatus};
use tokio::task::JoinHandle;

use super::steps::{NAME, children, condition, create_ready, current};
use super::{Observed, REPLICATION_VERSION, Scenario, count, real_postgres};
use crate::builders::DbBuilder;
use crate::connect::{Role, login};
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

/// pgbench's clients: 10 of the 17 connections `max_connections: 20`
/// leaves clients (3 are reserved for superusers), 59%.
pub const CLIENTS: u32 = 10;
/// The database's `max_connections`.
pub const MAX_CONNECTIONS: &str = "20";
/// The target, in percent of the usable connections.
pub const TARGET_PERCENT: u32 = 50;
/// The scale-in window, short for a test.
pub const SCALE_IN_WINDOW: u32 = 20;
/// One pgbench round: each round connects anew, so new rounds reach a
/// replica once the `-ro` Service routes to one.
const ROUND: Duration = Duration::from_secs(6);
/// Transactions per second over all clients: enough to be a load, light
/// on a busy two-core machine.
const RATE: u32 = 20;

/// `spec.autoscaling` of the scenario's database.
pub fn autoscaling() -> AutoscalingSpec {
    AutoscalingSpec {
        target_connections_percent: TARGET_PERCENT,
        scale_out_stabilization_seconds: 0,
        scale_in_stabilization_seconds: SCALE_IN_WINDOW,
        ..AutoscalingSpec::between(1, 2)
    }
}

/// The scenario's database: one instance asked for, autoscaled to two.
pub fn database() -> shared::api::PostgresDB {
    DbBuilder::manifest(NAME)
        .version(REPLICATION_VERSION)
        .parameter("max_connections", MAX_CONNECTIONS)
        .autoscaling(autoscaling())
        .build()
}

/// What the load generator has seen.
#[derive(Debug, Default)]
struct LoadLog {
    /// The Service each round connected through, in order.
    rounds: Vec<String>,
    /// Rounds that ran to their end.
    completed: usize,
    /// Why the last failed round failed.
    last_error: Option<String>,
}

/// A read-only pgbench load (`pgbench -S`) of [`CLIENTS`] clients, in
/// rounds of [`ROUND`]; each round connects through the `<name>-ro`
/// Service when it routes to a replica, else through `<name>`, as a client
/// that sends its reads to replicas when there are any.
pub struct ReadLoad {
    log: Arc<Mutex<LoadLog>>,
    task: JoinHandle<()>,
}

/// The namespace's Services and their Endpoints, for a task of its own.
#[derive(Clone)]
struct Routes {
    endpoints: kube::Api<Endpoints>,
    services: kube::Api<Service>,
}

impl Routes {
    fn of(cluster: &TestCluster) -> Self {
        Self {
            endpoints: cluster.api::<Endpoints>(),
            services: cluster.api::<Service>(),
        }
    }
}

/// The address of Service `name`, when it exists and routes to a ready
/// endpoint.
async fn routing_address(routes: &Routes, name: &str) -> Option<String> {
    let endpoints = routes.endpoints.get_opt(name).await.ok()??;
    let routed = endpoints
        .subsets
        .unwrap_or_default()
        .iter()
        .any(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()));
    if !routed {
        return None;
    }
    let service = routes.services.get_opt(name).await.ok()??;
    service.spec?.cluster_ip
}

/// Runs pgbench with `args` against `host` as the database's owner (the
/// password in the environment, never on the command line).
async fn pgbench(config: &tokio_postgres::Config, host: &str, args: &[&str]) -> Result<(), String> {
    let user = config.get_user().unwrap_or_default();
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or_default();
    let output = tokio::process::Command::new("pgbench")
        .args(args)
        .args(["-h", host, "-p", "5432", "-U", user, dbname])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("pgbench did not start: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "pgbench {}: {}",
            output.status,
            stderr.lines().last().unwrap_or_default()
        ))
    }
}

/// The owner's login to database `name`.
async fn owner(cluster: &TestCluster, name: &str) -> Result<tokio_postgres::Config, Failed> {
    login(cluster, Role::Owner, name, None)
        .await
        .ok_or_else(|| Failed::new(format!("the owner's Secret of {name} is missing")))
}

/// Creates pgbench's tables (scale 1) through the read-write Service.
pub async fn init_pgbench(cluster: &TestCluster, name: &str) -> Result<(), Failed> {
    let config = owner(cluster, name).await?;
    let host = routing_address(&Routes::of(cluster), name)
        .await
        .ok_or_else(|| Failed::new(format!("Service {name} routes nowhere")))?;
    pgbench(&config, &host, &["-i", "-s", "1", "-q"])
        .await
        .map_err(|why| Failed::new(format!("pgbench -i: {why}")))
}

impl ReadLoad {
    /// Starts the load on database `name`.
    pub async fn start(cluster: &TestCluster, name: &str) -> Result<Self, Failed> {
        let config = owner(cluster, name).await?;
        let log = Arc::new(Mutex::new(LoadLog::default()));
        let task = tokio::spawn(load_forever(
            Routes::of(cluster),
            name.to_string(),
            config,
            log.clone(),
        ));
        Ok(Self { log, task })
    }

    /// The Service each round connected through, in order.
    pub fn rounds(&self) -> Vec<String> {
        self.lock().rounds.clone()
    }

    /// How many rounds ran to their end.
    pub fn completed(&self) -> usize {
        self.lock().completed
    }

    /// Why the last failed round failed, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Stops the load (the running pgbench is killed).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoadLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn load_forever(
    routes: Routes,
    name: String,
    config: tokio_postgres::Config,
    log: Arc<Mutex<LoadLog>>,
) {
    let clients = CLIENTS.to_string();
    let seconds = ROUND.as_secs().to_string();
    let rate = RATE.to_string();
    let read_only = format!("{name}-ro");
    loop {
        let (service, host) = match routing_address(&routes, &read_only).await {
            Some(host) => (read_only.clone(), Some(host)),
            None => (name.clone(), routing_address(&routes, &name).await),
        };
        let Some(host) = host else {
            log.lock().unwrap_or_else(|e| e.into_inner()).last_error =
                Some(format!("Service {service} routes nowhere"));
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let args = [
            "-n", "-S", "-c", &clients, "-j", "2", "-T", &seconds, "-R", &rate,
        ];
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .rounds
            .push(service);
        let ran = pgbench(&config, &host, &args).await;
        {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            match ran {
                Ok(()) => log.completed += 1,
                Err(why) => log.last_error = Some(why),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The number of pgbench sessions on the server of pod `pod` (`None`: no
/// answer), asked as the superuser at the pod's address.
pub async fn pgbench_sessions_on(cluster: &TestCluster, pod: &str) -> Option<i64> {
    let ip = cluster
        .api::<Pod>()
        .get_opt(pod)
        .await
        .ok()??
        .status?
        .pod_ip?;
    let mut config = login(cluster, Role::Superuser, NAME, None).await?;
    config.host(&ip).connect_timeout(Duration::from_secs(2));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'",
            &[],
        )
        .await
        .ok()?;
    row.try_get::<_, i64>(0).ok()
}

/// The instance count the autoscaler recorded.
pub fn decided(db: &shared::api::PostgresDB) -> Option<AutoscalingStatus> {
    db.status.as_ref()?.autopilot.as_ref()?.autoscaling.clone()
}

/// The database's pods that are ready.
async fn ready_pods(cluster: &TestCluster) -> Result<usize, Failed> {
    Ok(children::<Pod>(cluster)
        .await?
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count())
}

pub struct ReadLoadScaled;

/// What the database did under the load and after it.
#[derive(Debug, PartialEq)]
pub struct Scaling {
    /// `spec.autoscaling` is implemented (no `SpecImplemented=False`
    /// naming it).
    pub implemented: bool,
    /// Pods ready under the load (once it was served: by a replica where
    /// one was added, else after a round of it).
    pub under_load: usize,
    /// pgbench's sessions were seen on a replica.
    pub replica_served_reads: bool,
    /// Pods ready once the load stopped (and, where implemented, the
    /// autoscaler scaled back in).
    pub after: usize,
    /// The autoscaler's Events about the database, in order
    /// (`ScaledOut`, `ScaledIn`).
    pub events: Vec<String>,
}

impl Scaling {
    fn expected_below_level5() -> Self {
        Self {
            implemented: false,
            under_load: 1,
            replica_served_reads: false,
            after: 1,
            events: Vec::new(),
        }
    }
}

impl fmt::Display for Scaling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.implemented {
            write!(f, "SpecImplemented=True")?;
        } else {
            write!(f, "SpecImplemented=False (spec.autoscaling)")?;
        }
        write!(f, "; under load {}", count(self.under_load, "instance"))?;
        if self.replica_served_reads {
            write!(f, ", reads served by the new replica")?;
        }
        write!(f, "; after it {}", count(self.after, "instance"))?;
        if !self.events.is_empty() {
            write!(f, " ({})", self.events.join(", then "))?;
        }
        Ok(())
    }
}

impl Scenario for ReadLoadScaled {
    type Observation = Scaling;
    const NAME: &'static str = "ReadLoadScaled";
    const TITLE: &'static str = "`autoscaling` (1 to 2 instances) under a read-only pgbench load of 10 clients, then none (real PostgreSQL)";

    fn expected(level: LevelId) -> Scaling {
        match level {
            LevelId::One | LevelId::Two | LevelId::Three | LevelId::Four => {
                Scaling::expected_below_level5()
            }
            LevelId::Five => Scaling {
                implemented: true,
                under_load: 2,
                replica_served_reads: true,
                after: 1,
                events: vec!["ScaledOut".into(), "ScaledIn".into()],
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(240)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Scaling>, Failed> {
        if cluster.sandbox_handle().is_none() {
            return Ok(Observed::NotRun(
                "not run (needs the sandbox: pgbench connects to the Services' addresses)".into(),
            ));
        }
        let operator = cluster.run_operator(level);
        let db = create_ready(cluster, database()).await?;
        let implemented = !db
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "SpecImplemented"))
            .is_some_and(|c| c.status == "False" && c.message.contains("spec.autoscaling"))
            && condition(&db, "SpecImplemented").is_some();
        init_pgbench(cluster, NAME).await?;
        let load = ReadLoad::start(cluster, NAME).await?;
        let replica = format!("{NAME}-1");
        let served = cluster
            .eventually(cluster.budget(), "the load is served", || async {
                if !implemented {
                    return Ok((load.completed() > 0).then_some(false));
                }
                let scaled = decided(&current(cluster).await?).is_some_and(|d| d.instances == 2);
                let on_replica = scaled
                    && pgbench_sessions_on(cluster, &replica)
                        .await
                        .is_some_and(|n| n > 0);
                Ok(on_replica.then_some(true))
            })
            .await;
        let replica_served_reads = match served {
            Ok(served) => served,
            Err(failed) => {
                let why = load.last_error().unwrap_or_else(|| "none".into());
                let rounds = load.rounds();
                load.stop().await;
                return Err(Failed::new(format!(
                    "{failed}\npgbench rounds {rounds:?}, last failure: {why}"
                )));
            }
        };
        let under_load = ready_pods(cluster).await?;
        load.stop().await;
        if implemented {
            cluster
                .eventually(
                    cluster.budget(),
                    "scaled back in to one instance",
                    || async {
                        let back =
                            decided(&current(cluster).await?).is_some_and(|d| d.instances == 1);
                        Ok((back && children::<Pod>(cluster).await?.len() == 1).then_some(()))
                    },
                )
                .await?;
        }
        let after = ready_pods(cluster).await?;
        let mut events: Vec<String> = Vec::new();
        for event in cluster.events(NAME).await? {
            let reason = event.split([' ', ':']).nth(1).unwrap_or_default();
            if ["ScaledOut", "ScaledIn"].contains(&reason)
                && events.last().map(String::as_str) != Some(reason)
            {
                events.push(reason.to_string());
            }
        }
        operator.stop().await;
        Ok(Observed::Seen(Scaling {
            implemented,
            under_load,
            replica_served_reads,
            after,
            events,
        }))
    }
}
