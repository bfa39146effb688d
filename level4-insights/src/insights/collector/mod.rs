//! The collector: a companion measuring every database on an interval into
//! the shared readings ([`shared::readings`]), which `/metrics` encodes as
//! series ([`super::series`]) and the reconcile reads as `Observed`.
//!
//! Each interval (`--metrics-interval`, 30 s by default) it measures each
//! database's primary pod:
//! - with SQL, one constant statement ([`measure::COLLECT_SQL`], in
//!   `collect.sql`) asked as the superuser of Level 1's Secret, over the
//!   operator's one connection path ([`shared::sql::Connector`], so the
//!   `--database-access` of the reconcile applies); a connection is opened
//!   for the measurement and closed after it (the benchmark measures what
//!   that costs, see `docs/performance.md`);
//! - through the kubelet's volume stats ([`stats`]), read once per node per
//!   interval, for the data volume's used bytes and capacity;
//! - from the objects: its backups' last success and last result, and the
//!   deadline [`super::thresholds::backup_deadline`] gives.
//!
//! What it reads of the cluster comes from reflectors (PostgresDBs, the
//! managed Pods and Secrets, PostgresDBBackups), so an interval makes no
//! API request per database: the only requests are one stats summary per
//! node (and, with port-forward access, the API server's tunnel to each
//! pod, which is why the operator in a cluster connects directly).
//!
//! A server that does not answer is a reading with `down` set
//! (`pgdb_database_up 0`) once its measurement times out; it never delays
//! another database's: each database is measured on its own schedule, at
//! most [`CONCURRENCY`] at once, each within [`MEASURE_TIMEOUT`], and a
//! database whose previous measurement is still running is not measured
//! again until it ends. A database that is gone has its reading forgotten
//! at the next interval, and a measurement that ends after it went is not
//! recorded, so its series disappear.
//!
//! Where it stops: the primary (ordinal 0) is measured; replicas and their
//! lag are Level 5's. Figures are recorded as measured; what they mean
//! (symptoms) is [`super::symptoms`]' and the alerts'.

pub mod measure;
pub mod stats;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use level1_install::api::Names;
use serde::de::DeserializeOwned;
use shared::api::PostgresDB;
use shared::backup::PostgresDBBackup;
use shared::capability::{Companion, CompanionContext, CompanionRun};
use shared::metrics::Metrics;
use shared::names::managed_selector;
use shared::readings::DatabaseKey;
use shared::sql::{Connector, SqlAnswer, SqlProbe};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use self::measure::{COLLECT_SQL, Plan};
use self::stats::NodesStats;

/// How many databases are measured at once.
pub const CONCURRENCY: usize = 32;

/// How long one database's measurement may take, connecting included,
/// before it counts as down.
pub const MEASURE_TIMEOUT: Duration = Duration::from_secs(10);

/// The collector companion.
pub fn companion() -> Companion {
    Companion {
        name: "insights-collector",
        run,
    }
}

fn run(context: CompanionContext) -> CompanionRun {
    Box::pin(async move {
        let Some(metrics) = context.metrics.clone() else {
            // A level without metrics has nothing to collect into.
            context.shutdown.cancelled().await;
            return Ok(());
        };
        Collector::start(&context, metrics).run(context).await;
        Ok(())
    })
}

/// The objects the collector reads, kept by reflectors.
#[derive(Clone)]
struct Stores {
    databases: Store<PostgresDB>,
    pods: Store<Pod>,
    secrets: Store<Secret>,
    backups: Store<PostgresDBBackup>,
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

fn reflect<K>(api: Api<K>, config: watcher::Config, tasks: &mut JoinSet<()>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tasks.spawn(stream.for_each(|_| futures::future::ready(())));
    reader
}

/// The collector's state between intervals: its stores and which
/// databases are being measured.
struct Collector {
    client: kube::Client,
    connector: Connector,
    metrics: Arc<Metrics>,
    stores: Stores,
    reflectors: JoinSet<()>,
    in_flight: Arc<Mutex<HashSet<DatabaseKey>>>,
    permits: Arc<Semaphore>,
}

impl Collector {
    fn start(context: &CompanionContext, metrics: Arc<Metrics>) -> Self {
        let client = context.client.clone();
        let namespace = context.namespace.as_deref();
        let managed = watcher::Config::default().labels(&managed_selector());
        let mut reflectors = JoinSet::new();
        let stores = Stores {
            databases: reflect(
                api(&client, namespace),
                watcher::Config::default(),
                &mut reflectors,
            ),
            pods: reflect(api(&client, namespace), managed.clone(), &mut reflectors),
            secrets: reflect(api(&client, namespace), managed, &mut reflectors),
            backups: reflect(
                api(&client, namespace),
                watcher::Config::default(),
                &mut reflectors,
            ),
        };
        Self {
            connector: Connector::new(client.clone(), context.database_access),
            client,
            metrics,
            stores,
            reflectors,
            in_flight: Arc::default(),
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
        }
    }

    async fn ready(&self) -> bool {
        let s = &self.stores;
        let (a, b, c, d) = tokio::join!(
            s.databases.wait_until_ready(),
            s.pods.wait_until_ready(),
            s.secrets.wait_until_ready(),
            s.backups.wait_until_ready(),
        );
        a.is_ok() && b.is_ok() && c.is_ok() && d.is_ok()
    }

    async fn run(mut self, context: CompanionContext) {
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            ready = self.ready() => if !ready {
                tracing::error!("the collector's reflectors stopped before they were filled");
                return;
            }
        }
        let mut measurements = JoinSet::new();
        let mut ticker = tokio::time::interval(context.metrics_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = context.shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            // Finished measurements are reaped, so the set stays small.
            while measurements.try_join_next().is_some() {}
            self.interval(&mut measurements);
        }
        measurements.shutdown().await;
        self.reflectors.shutdown().await;
    }

    /// One interval: forgets the databases that are gone, reads the nodes'
    /// stats once, and starts the measurement of every database not still
    /// being measured.
    fn interval(&self, measurements: &mut JoinSet<()>) {
        let databases = self.stores.databases.state();
        let present: HashSet<DatabaseKey> = databases
            .iter()
            .map(|db| (db.namespace().unwrap_or_default(), db.name_any()))
            .collect();
        self.metrics.readings.retain(|key| present.contains(key));

        let plans = self.plans(&databases);
        let nodes: BTreeSet<String> = plans.iter().filter_map(|p| p.node.clone()).collect();
        let node_stats = tokio::spawn(stats::read_all(
            self.client.clone(),
            nodes.into_iter().collect(),
        ))
        .map(|read| Arc::new(read.unwrap_or_default()))
        .shared();
        for plan in plans {
            let started = self
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(plan.key.clone());
            if !started {
                tracing::debug!(database = ?plan.key, "still being measured; skipped this interval");
                continue;
            }
            let measurement = Measurement {
                connector: self.connector.clone(),
                metrics: self.metrics.clone(),
                databases: self.stores.databases.clone(),
                in_flight: self.in_flight.clone(),
                permits: self.permits.clone(),
            };
            measurements.spawn(measurement.run(plan, node_stats.clone()));
        }
    }

    /// What to measure of each database, from the stores.
    fn plans(&self, databases: &[Arc<PostgresDB>]) -> Vec<Plan> {
        let backups = self.stores.backups.state();
        let mut by_database: HashMap<DatabaseKey, Vec<&PostgresDBBackup>> = HashMap::new();
        for backup in &backups {
            by_database
                .entry((
                    backup.namespace().unwrap_or_default(),
                    backup.spec.database.clone(),
                ))
                .or_default()
                .push(backup);
        }
        databases
            .iter()
            .map(|db| {
                let namespace = db.namespace().unwrap_or_default();
                let names = Names::of(db);
                let pod = self.stores.pods.get(
                    &ObjectRef::new(&names.pod(shared::ha::primary_ordinal(db))).within(&namespace),
                );
                let secret = self
                    .stores
                    .secrets
                    .get(&ObjectRef::new(&names.superuser).within(&namespace));
                let backups = by_database
                    .get(&(namespace, db.name_any()))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                measure::plan(db, pod.as_deref(), secret.as_deref(), backups)
            })
            .collect()
    }
}

/// What one database's measurement needs.
struct Measurement {
    connector: Connector,
    metrics: Arc<Metrics>,
    databases: Store<PostgresDB>,
    in_flight: Arc<Mutex<HashSet<DatabaseKey>>>,
    permits: Arc<Semaphore>,
}

impl Measurement {
    async fn run(self, plan: Plan, node_stats: impl std::future::Future<Output = Arc<NodesStats>>) {
        let key = plan.key.clone();
        let at = jiff::Timestamp::now();
        let answer: SqlAnswer = match &plan.target {
            Err(why) => Err(why.clone()),
            Ok(target) => {
                // A closed semaphore cannot happen (it is never closed);
                // measuring without a permit would then be the safe side.
                let _permit = self.permits.acquire().await.ok();
                let probe = SqlProbe {
                    name: "collect".into(),
                    target: target.clone(),
                    statement: COLLECT_SQL,
                };
                let asked = self.connector.answer(&key.0, std::slice::from_ref(&probe));
                match tokio::time::timeout(MEASURE_TIMEOUT, asked).await {
                    Ok(mut answers) => answers
                        .pop()
                        .map(|(_, answer)| answer)
                        .unwrap_or_else(|| Err("the server gave no answer".to_string())),
                    Err(_) => Err(format!("no answer within {}s", MEASURE_TIMEOUT.as_secs())),
                }
            }
        };
        let node_stats = node_stats.await;
        let reading = measure::reading(&plan, &answer, &node_stats, at);
        if let Some(why) = &reading.down {
            tracing::debug!(database = ?key, why, "database down");
        }
        // A database deleted while it was measured keeps no reading.
        let exists = self
            .databases
            .get(&ObjectRef::new(&key.1).within(&key.0))
            .is_some();
        if exists {
            self.metrics.readings.record(key.clone(), reading);
        }
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
    }
}
