//! Level 5's failover on real PostgreSQL 15: a database of several
//! instances loses its primary (its server killed, its pod deleted, its
//! pod frozen, its volume wiped), and the replica with the most WAL takes
//! over while a client writes rows through the read-write Service and
//! counts the acknowledged commits. Throughout, the read-write Service's
//! endpoints never list two pods and no two servers accept writes at once
//! (each asked four times a second); afterwards the old primary rejoins as
//! a replica by itself (rewound, or cloned when its volume was wiped),
//! never rebuilt by the operator, even while the new primary's first
//! checkpoint is still running. A switchover through `spec.primary` loses
//! no row, nor does a failover with synchronous replication; an operator
//! killed in the middle of a failover is replaced and the failover
//! completes; a replica whose volume is wiped is cloned again.
//!
//! Level 5 runs in-process, reaching the servers directly (the sandbox's
//! pod IPs are loopback addresses of this machine).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Service};
use kube::api::DeleteParams;
use sandbox::{KillKind, PostgresRuntime};
use serde_json::json;
use shared::api::PostgresDB;
use shared::ext::StatefulSetExt;
use shared::ha::{InstanceRole, PromotionKind, PromotionPhase, PromotionStatus, ReplicationSpec};
use shared::runner::RunOptions;
use shared::sql::DatabaseAccess;
use tests::builders::DbBuilder;
use tests::connect::{Role, login};
use tests::harness::{Operator, TestCluster, real_postgres};
use tests::levels::LevelId;

/// First starts, clones and failovers of real servers on a busy two-core
/// machine.
const WAIT: Duration = Duration::from_secs(240);

/// The database every test runs.
const NAME: &str = "orders";

struct Fixture {
    cluster: TestCluster,
    operator: Option<Operator>,
}

impl Fixture {
    /// A real-PostgreSQL 15 sandbox with Level 5 in-process, and `orders`
    /// with `instances` instances (synchronous replication when
    /// `synchronous`), every replica streaming, and a table `items`.
    async fn start(instances: i32, synchronous: bool) -> Self {
        let cluster = match TestCluster::sandbox(real_postgres(&[15])).await {
            Ok(cluster) => cluster.with_budget(WAIT),
            Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
        };
        let fixture = Self {
            operator: Some(start_operator(&cluster)),
            cluster,
        };
        let db = DbBuilder::manifest(NAME).version("15").instances(instances);
        fixture
            .cluster
            .create(&db.build())
            .await
            .expect("creates the database");
        fixture.wait_streaming(instances).await;
        if synchronous {
            // Turned on once the replicas stream, as on a running database.
            let replication = serde_json::to_value(ReplicationSpec {
                synchronous: true,
                synchronous_replicas: 1,
            })
            .expect("serialises");
            fixture
                .cluster
                .patch_spec(NAME, json!({ "replication": replication }))
                .await
                .expect("turns synchronous replication on");
            let superuser = fixture.primary_session(Role::Superuser).await;
            let waited = fixture
                .cluster
                .eventually(WAIT, "a replica confirms commits synchronously", || async {
                    let row = superuser
                        .query_one(
                            "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
                            &[],
                        )
                        .await
                        .map_err(|e| tests::harness::Failed::new(e.to_string()))?;
                    let synchronous: i64 = row.get(0);
                    Ok((synchronous >= 1).then_some(()))
                })
                .await;
            if let Err(failed) = waited {
                panic!("{failed}\n{}", fixture.pod_logs().await);
            }
        }
        let client = fixture.primary_session(Role::Owner).await;
        client
            .batch_execute("CREATE TABLE items (id bigint PRIMARY KEY)")
            .await
            .expect("creates the table");
        fixture
    }

    /// Kills `pod`'s server each time it runs until `check` holds of the
    /// database: a server that crash-loops. (Killed once, a server is
    /// restarted by the kubelet and recovers in place within a second,
    /// which is no reason to fail over.)
    async fn kill_until(&self, pod: &str, what: &str, check: impl Fn(&PostgresDB) -> bool) {
        let namespace = self.cluster.namespace().to_string();
        let started = Instant::now();
        loop {
            self.runtime()
                .kill_container(&namespace, pod, Some("postgres"), KillKind::Crash);
            let db = self.cluster.database(NAME).await.ok().flatten();
            if db.as_ref().is_some_and(&check) {
                return;
            }
            if started.elapsed() > WAIT {
                panic!(
                    "timed out killing {pod} until {what}\n{}\n{}",
                    self.cluster.diagnosis().await,
                    self.pod_logs().await
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Loses `pod`'s volume: its server is stopped (so nothing writes
    /// while the files go), the volume emptied, the server killed; the
    /// kubelet restarts it on the empty volume.
    fn wipe(&self, pod: &str) {
        let namespace = self.cluster.namespace();
        let runtime = self.runtime();
        assert!(runtime.pause(namespace, pod, Some("postgres"), true));
        runtime
            .delete_volume_data(namespace, &format!("data-{pod}"))
            .expect("wipes the volume");
        assert!(runtime.kill_container(namespace, pod, Some("postgres"), KillKind::Crash));
    }

    fn runtime(&self) -> &PostgresRuntime {
        self.cluster
            .sandbox_handle()
            .and_then(|s| s.postgres_runtime())
            .expect("the real runtime")
    }

    /// Waits until `check` holds of the database, failing with the
    /// cluster's diagnosis and the pods' logs.
    async fn wait_db(&self, what: &str, check: impl Fn(&PostgresDB) -> bool) -> PostgresDB {
        match self.cluster.wait_for(NAME, what, check).await {
            Ok(db) => db,
            Err(failed) => panic!("{failed}\n{}", self.pod_logs().await),
        }
    }

    async fn pod_logs(&self) -> String {
        let pods = self.cluster.api::<Pod>();
        let mut text = String::new();
        for k in 0..3 {
            let pod = format!("{NAME}-{k}");
            if let Ok(log) = pods.logs(&pod, &Default::default()).await {
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                text.push_str(&format!("--- log of {pod} (last lines, newest first)\n"));
                for line in tail {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }

    /// Waits until `instances` instances run, the StatefulSet has rolled
    /// every pod out, the primary accepts writes and each replica streams
    /// from it. (Entering instance mode rolls pod 0 once its first replica
    /// is ready; a fault injected before that rollout is done hits a pod
    /// the operator rightly treats as a planned restart.)
    async fn wait_streaming(&self, instances: i32) -> PostgresDB {
        let replicas = usize::try_from(instances - 1).unwrap_or(0);
        let db = self
            .wait_db(&format!("serving with {replicas} replicas"), |db| {
                let Some(status) = db.status.as_ref() else {
                    return false;
                };
                let Some(ha) = status.high_availability.as_ref() else {
                    return false;
                };
                let available = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "PrimaryAvailable" && c.status == "True");
                let streaming = ha
                    .members
                    .iter()
                    .filter(|m| m.role == InstanceRole::Replica && m.ready)
                    .count();
                available && streaming == replicas
            })
            .await;
        let rolled_out = self
            .cluster
            .wait_for_object::<StatefulSet>(
                NAME,
                "the StatefulSet runs its template on every pod",
                |sts| sts.is_some_and(|sts| sts.rollout().is_done()),
            )
            .await;
        if let Err(failed) = rolled_out {
            panic!("{failed}\n{}", self.pod_logs().await);
        }
        let superuser = self.primary_session(Role::Superuser).await;
        let waited = self
            .cluster
            .eventually(WAIT, "every replica streams from the primary", || async {
                let row = superuser
                    .query_one(
                        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                        &[],
                    )
                    .await
                    .map_err(|e| tests::harness::Failed::new(e.to_string()))?;
                let streaming: i64 = row.get(0);
                Ok((streaming == i64::try_from(replicas).unwrap_or(0)).then_some(()))
            })
            .await;
        if let Err(failed) = waited {
            panic!("{failed}\n{}", self.pod_logs().await);
        }
        db
    }

    /// A session as `role` through the read-write Service.
    async fn primary_session(&self, role: Role) -> tokio_postgres::Client {
        tests::connect::connect(&self.cluster, role, NAME)
            .await
            .expect("the credentials and the Service exist")
    }

    /// A session as `role` to one pod's server, by its IP.
    async fn pod_session(&self, role: Role, pod: &str) -> Option<tokio_postgres::Client> {
        let ip = self
            .cluster
            .api::<Pod>()
            .get(pod)
            .await
            .ok()?
            .status?
            .pod_ip?;
        let mut config = login(&self.cluster, role, NAME, None).await?;
        config.host(&ip).connect_timeout(Duration::from_secs(3));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(connection);
        Some(client)
    }

    async fn current_primary(&self) -> String {
        self.cluster
            .database(NAME)
            .await
            .ok()
            .flatten()
            .and_then(|db| db.status?.current_primary)
            .unwrap_or_else(|| format!("{NAME}-0"))
    }

    /// Waits for the promotion away from `from` to complete, and returns it.
    async fn wait_promoted(&self, from: &str, kind: PromotionKind) -> PromotionStatus {
        let db = self
            .wait_db(&format!("promoted away from {from}"), |db| {
                promotion(db).is_some_and(|p| {
                    p.from == from && p.kind == kind && p.phase == PromotionPhase::Completed
                })
            })
            .await;
        promotion(&db).expect("a promotion")
    }

    /// Waits until `pod` follows the primary: in recovery, its WAL
    /// receiver streaming on the primary's timeline, and what the primary
    /// had written a moment before replayed. (A replica that cannot follow
    /// a new timeline streams again and again on its old one, for a moment
    /// each time: `streaming` alone does not show it follows.)
    async fn wait_rejoined(&self, pod: &str) {
        let waited = self
            .cluster
            .eventually(WAIT, &format!("{pod} follows the primary's timeline"), || async {
                let Some(primary) = tests::connect::connect(&self.cluster, Role::Superuser, NAME).await
                else {
                    return Ok(None);
                };
                let Ok(written) = primary
                    .query_one(
                        "SELECT pg_current_wal_lsn()::text, \
                         ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
                        &[],
                    )
                    .await
                else {
                    return Ok(None);
                };
                let (lsn, timeline): (String, i32) = (written.get(0), written.get(1));
                let Some(session) = self.pod_session(Role::Superuser, pod).await else {
                    return Ok(None);
                };
                let row = session
                    .query_one(
                        "SELECT pg_is_in_recovery(), \
                         (SELECT status FROM pg_stat_wal_receiver), \
                         (SELECT received_tli FROM pg_stat_wal_receiver), \
                         coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                        &[&lsn],
                    )
                    .await;
                Ok(row.ok().and_then(|row| {
                    let in_recovery: bool = row.get(0);
                    let status: Option<String> = row.get(1);
                    let received_timeline: Option<i32> = row.get(2);
                    let replayed: bool = row.get(3);
                    (in_recovery
                        && status.as_deref() == Some("streaming")
                        && received_timeline == Some(timeline)
                        && replayed)
                        .then_some(())
                }))
            })
            .await;
        if let Err(failed) = waited {
            panic!("{failed}\n{}", self.pod_logs().await);
        }
        // Its instance script rewound it (or cloned it, its data gone)
        // and it followed the new timeline by itself: the operator did not
        // have to rebuild it (the instance script says so when asked to).
        let log = self
            .cluster
            .api::<Pod>()
            .logs(pod, &Default::default())
            .await
            .expect("reads the pod's log");
        let steps: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("instance.sh:") || l.starts_with("pg_rewind:"))
            .collect();
        eprintln!("{pod} rejoined: {}", steps.join(" / "));
        assert!(
            !log.contains("asked to rebuild this instance"),
            "{pod} did not follow the new timeline by itself: the operator rebuilt it\n{}\n{}",
            self.cluster.diagnosis().await,
            self.pod_logs().await
        );
    }

    /// Writes some 1,500 pages the replicas replay into their buffers, so
    /// the first checkpoint after a promotion is slow (about 0.1 s per
    /// dirty buffer): an old primary coming back is rewound before it
    /// ends.
    async fn dirty_the_replicas_buffers(&self) {
        self.primary_session(Role::Owner)
            .await
            .batch_execute(
                "CREATE TABLE padding AS \
                 SELECT g AS id, repeat('x', 200) AS filler FROM generate_series(1, 50000) g",
            )
            .await
            .expect("writes the padding");
    }

    /// The ids among `ids` that the primary does not hold.
    async fn missing(&self, ids: &[i64]) -> Vec<i64> {
        let client = self.primary_session(Role::Owner).await;
        let rows = client
            .query("SELECT id FROM items", &[])
            .await
            .expect("reads the rows");
        let present: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        ids.iter()
            .copied()
            .filter(|id| !present.contains(id))
            .collect()
    }

    async fn stop(mut self) {
        if let Some(operator) = self.operator.take() {
            operator.stop().await;
        }
        self.cluster.finish().await;
    }
}

fn promotion(db: &PostgresDB) -> Option<PromotionStatus> {
    db.status
        .as_ref()?
        .high_availability
        .as_ref()?
        .promotion
        .clone()
}

fn start_operator(cluster: &TestCluster) -> Operator {
    cluster.run_operator_with(
        LevelId::Five,
        RunOptions {
            database_access: DatabaseAccess::Direct,
            ..Default::default()
        },
    )
}

/// A client inserting rows through the read-write Service, one at a time,
/// reconnecting after any failure, recording each acknowledged id and when
/// it was acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(i64, Instant)>>>,
    /// When a write or a connection failed.
    failed: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    async fn start(cluster: &TestCluster) -> Self {
        let service = cluster
            .api::<Service>()
            .get(NAME)
            .await
            .expect("the read-write Service");
        let ip = service
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("a ClusterIP");
        let mut config = login(cluster, Role::Owner, NAME, None)
            .await
            .expect("the owner's Secret");
        config.host(&ip).connect_timeout(Duration::from_secs(2));
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let stop = stop.clone();
            let acknowledged = acknowledged.clone();
            let failed = failed.clone();
            async move {
                let mut next: i64 = 1;
                let mut session: Option<tokio_postgres::Client> = None;
                while !stop.load(Ordering::Relaxed) {
                    if session.is_none() {
                        match config.connect(tokio_postgres::NoTls).await {
                            Ok((client, connection)) => {
                                tokio::spawn(connection);
                                session = Some(client);
                            }
                            Err(_) => {
                                failed
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(Instant::now());
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        }
                    }
                    let Some(client) = session.as_ref() else {
                        continue;
                    };
                    let id = next;
                    next += 1;
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                    let insert = client.execute("INSERT INTO items (id) VALUES ($1)", &params);
                    match tokio::time::timeout(Duration::from_secs(3), insert).await {
                        Ok(Ok(_)) => acknowledged
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((id, Instant::now())),
                        _ => {
                            failed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Instant::now());
                            session = None;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self {
            stop,
            acknowledged,
            failed,
            task,
        }
    }

    fn acknowledged(&self) -> Vec<(i64, Instant)> {
        self.acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until a commit is acknowledged after the first failure
    /// since `since` (or after `since` when none failed); when.
    async fn wait_acknowledged_after(&self, cluster: &TestCluster, since: Instant) -> Instant {
        cluster
            .eventually(WAIT, "a write is accepted again", || async {
                let failed = self
                    .failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .copied()
                    .find(|at| *at > since)
                    .unwrap_or(since);
                Ok(self
                    .acknowledged()
                    .iter()
                    .map(|(_, at)| *at)
                    .find(|at| *at > failed))
            })
            .await
            .unwrap_or_else(|failed| panic!("{failed}"))
    }

    async fn stop(self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Watches the read-write Service's Endpoints, recording the most ready
/// addresses it ever listed at once.
struct EndpointsWatch {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl EndpointsWatch {
    fn start(cluster: &TestCluster) -> Self {
        let endpoints = cluster.api::<Endpoints>();
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let stop = stop.clone();
            let most = most.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Some(current)) = endpoints.get_opt(NAME).await {
                        let ready = current
                            .subsets
                            .unwrap_or_default()
                            .iter()
                            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                            .sum::<usize>();
                        most.fetch_max(ready, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Self { stop, most, task }
    }

    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.most.load(Ordering::Relaxed)
    }
}

/// Asks every pod's server, four times a second, whether it accepts
/// writes, recording the most that did at once (a frozen or stopped
/// server does not answer and is not counted).
struct WritableWatch {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl WritableWatch {
    async fn start(cluster: &TestCluster) -> Self {
        let pods = cluster.api::<Pod>();
        let login = login(cluster, Role::Superuser, NAME, None)
            .await
            .expect("the superuser's Secret");
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let stop = stop.clone();
            let most = most.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let ips: Vec<String> = pods
                        .list(&kube::api::ListParams::default())
                        .await
                        .map(|list| {
                            list.items
                                .into_iter()
                                .filter_map(|p| p.status?.pod_ip)
                                .collect()
                        })
                        .unwrap_or_default();
                    let asks = ips.iter().map(|ip| {
                        let mut config = login.clone();
                        config.host(ip).connect_timeout(Duration::from_secs(1));
                        async move {
                            let ask = async {
                                let (client, connection) =
                                    config.connect(tokio_postgres::NoTls).await.ok()?;
                                tokio::spawn(connection);
                                let row = client
                                    .query_one("SELECT NOT pg_is_in_recovery()", &[])
                                    .await
                                    .ok()?;
                                Some(row.get::<_, bool>(0))
                            };
                            tokio::time::timeout(Duration::from_secs(2), ask)
                                .await
                                .ok()
                                .flatten()
                                .unwrap_or(false)
                        }
                    });
                    let writable = futures::future::join_all(asks)
                        .await
                        .into_iter()
                        .filter(|w| *w)
                        .count();
                    most.fetch_max(writable, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        });
        Self { stop, most, task }
    }

    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.most.load(Ordering::Relaxed)
    }
}

/// How the primary is lost.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillServer,
    DeletePod,
    Freeze,
    WipeVolume,
}

/// Loses the primary by `fault` while a client writes; checks the
/// promotion, the fence and the old primary's return; returns the
/// acknowledged ids the new primary lacks.
async fn fail_over(fixture: &Fixture, fault: Fault) -> (PromotionStatus, Vec<i64>) {
    let namespace = fixture.cluster.namespace().to_string();
    let old = fixture.current_primary().await;
    let watch = EndpointsWatch::start(&fixture.cluster);
    let writable = WritableWatch::start(&fixture.cluster).await;
    let writer = Writer::start(&fixture.cluster).await;
    fixture
        .cluster
        .eventually(WAIT, "the writer's first commits", || async {
            Ok((writer.acknowledged().len() >= 20).then_some(()))
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    fixture.dirty_the_replicas_buffers().await;
    let fault_at = Instant::now();
    match fault {
        Fault::KillServer => {
            fixture
                .kill_until(&old, "a promotion started", |db| {
                    promotion(db).is_some_and(|p| p.from == old)
                })
                .await
        }
        Fault::DeletePod => fixture
            .cluster
            .api::<Pod>()
            .delete(&old, &DeleteParams::default())
            .await
            .map(|_| ())
            .expect("deletes the primary's pod"),
        Fault::Freeze => assert!(
            fixture
                .runtime()
                .pause(&namespace, &old, Some("postgres"), true)
        ),
        Fault::WipeVolume => fixture.wipe(&old),
    }
    let promotion = fixture.wait_promoted(&old, PromotionKind::Failover).await;
    let accepted = writer
        .wait_acknowledged_after(&fixture.cluster, fault_at)
        .await;
    eprintln!(
        "{fault:?}: {} promoted; the first write accepted {:.1}s after the fault",
        promotion.to,
        (accepted - fault_at).as_secs_f64()
    );
    assert_ne!(promotion.to, old);
    fixture.wait_rejoined(&old).await;
    let acknowledged = writer.stop().await;
    let most = watch.stop().await;
    assert!(
        most <= 1,
        "the read-write Service listed {most} pods at once"
    );
    let writable = writable.stop().await;
    assert_eq!(writable, 1, "servers accepting writes at once, at most");
    assert!(!acknowledged.is_empty());
    let missing = fixture.missing(&acknowledged).await;
    (promotion, missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_server_is_replaced_by_a_replica_and_rejoins_as_one() {
    let fixture = Fixture::start(3, false).await;
    let (promotion, missing) = fail_over(&fixture, Fault::KillServer).await;
    assert!(
        promotion.lag_bytes_at_failover.is_some(),
        "without synchronous replication the lag at failover is reported: {promotion:?}"
    );
    eprintln!(
        "lag at failover {:?} bytes; {} acknowledged rows lost",
        promotion.lag_bytes_at_failover,
        missing.len()
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_primary_pod_is_replaced_by_a_replica_and_rejoins_as_one() {
    let fixture = Fixture::start(2, false).await;
    let _ = fail_over(&fixture, Fault::DeletePod).await;
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_is_fenced_replaced_and_rejoins_as_a_replica() {
    let fixture = Fixture::start(2, false).await;
    let _ = fail_over(&fixture, Fault::Freeze).await;
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_volume_is_wiped_is_replaced_never_reinitialised_empty() {
    let fixture = Fixture::start(2, false).await;
    let (_, missing) = fail_over(&fixture, Fault::WipeVolume).await;
    // The old primary came back as a clone of the new one, not as an
    // empty database: the rows written before the wipe are there.
    assert!(
        missing.len() < 20,
        "{} acknowledged rows lost",
        missing.len()
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_replication_no_acknowledged_commit_is_lost_in_a_failover() {
    let fixture = Fixture::start(2, true).await;
    let (promotion, missing) = fail_over(&fixture, Fault::KillServer).await;
    assert_eq!(missing, Vec::<i64>::new(), "acknowledged rows lost");
    assert_eq!(promotion.lag_bytes_at_failover, None);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_to_spec_primary_loses_no_acknowledged_row() {
    let fixture = Fixture::start(2, false).await;
    let watch = EndpointsWatch::start(&fixture.cluster);
    let writable = WritableWatch::start(&fixture.cluster).await;
    let writer = Writer::start(&fixture.cluster).await;
    fixture
        .cluster
        .eventually(WAIT, "the writer's first commits", || async {
            Ok((writer.acknowledged().len() >= 20).then_some(()))
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    let asked = Instant::now();
    fixture
        .cluster
        .patch_spec(NAME, json!({ "primary": format!("{NAME}-1") }))
        .await
        .expect("patches spec.primary");
    let promotion = fixture
        .wait_promoted(&format!("{NAME}-0"), PromotionKind::Switchover)
        .await;
    assert_eq!(promotion.to, format!("{NAME}-1"));
    let accepted = writer
        .wait_acknowledged_after(&fixture.cluster, asked)
        .await;
    eprintln!(
        "switchover: the first write accepted {:.1}s after the request",
        (accepted - asked).as_secs_f64()
    );
    fixture.wait_rejoined(&format!("{NAME}-0")).await;
    let acknowledged = writer.stop().await;
    assert!(watch.stop().await <= 1, "the Service listed two pods");
    assert_eq!(
        writable.stop().await,
        1,
        "two servers accepted writes at once"
    );
    assert_eq!(fixture.missing(&acknowledged).await, Vec::<i64>::new());
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_during_a_failover_is_replaced_and_the_failover_completes() {
    let mut fixture = Fixture::start(2, false).await;
    let namespace = fixture.cluster.namespace().to_string();
    let watch = EndpointsWatch::start(&fixture.cluster);
    let old = fixture.current_primary().await;
    assert!(
        fixture
            .runtime()
            .pause(&namespace, &old, Some("postgres"), true)
    );
    // Killed as soon as the roles ConfigMap names another primary: the
    // fence has begun, the promotion has not been seen completing.
    let roles = fixture.cluster.api::<ConfigMap>();
    fixture
        .cluster
        .eventually(WAIT, "the roles ConfigMap names a new primary", || async {
            let primary = roles
                .get_opt(&format!("{NAME}-roles"))
                .await
                .ok()
                .flatten()
                .and_then(|cm| cm.data?.get("primary").cloned());
            Ok(primary.filter(|p| *p != old))
        })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    if let Some(operator) = fixture.operator.take() {
        operator.kill().await;
    }
    let phase = fixture
        .cluster
        .database(NAME)
        .await
        .ok()
        .flatten()
        .as_ref()
        .and_then(promotion)
        .map(|p| p.phase);
    eprintln!("the operator was killed with the promotion at {phase:?}");
    fixture.operator = Some(start_operator(&fixture.cluster));
    let promotion = fixture.wait_promoted(&old, PromotionKind::Failover).await;
    assert_ne!(promotion.to, old);
    fixture.wait_rejoined(&old).await;
    assert!(watch.stop().await <= 1, "the Service listed two pods");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_volume_is_wiped_is_cloned_again_and_streams() {
    let fixture = Fixture::start(2, false).await;
    let replica = format!("{NAME}-1");
    fixture.wipe(&replica);
    let primary = fixture.primary_session(Role::Owner).await;
    primary
        .execute("INSERT INTO items (id) VALUES (424242)", &[])
        .await
        .expect("writes on the primary");
    fixture.wait_rejoined(&replica).await;
    let waited = fixture
        .cluster
        .eventually(WAIT, "the row reaches the rebuilt replica", || async {
            let Some(session) = fixture.pod_session(Role::Owner, &replica).await else {
                return Ok(None);
            };
            let row = session
                .query_opt("SELECT 1 FROM items WHERE id = 424242", &[])
                .await;
            Ok(row.ok().flatten().map(|_| ()))
        })
        .await;
    if let Err(failed) = waited {
        panic!("{failed}\n{}", fixture.pod_logs().await);
    }
    assert_eq!(fixture.current_primary().await, format!("{NAME}-0"));
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_instance_reports_its_primary_and_is_never_fenced_when_its_server_dies() {
    let cluster = match TestCluster::sandbox(real_postgres(&[15])).await {
        Ok(cluster) => cluster.with_budget(WAIT),
        Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
    };
    let fixture = Fixture {
        operator: Some(start_operator(&cluster)),
        cluster,
    };
    fixture
        .cluster
        .create(&DbBuilder::manifest(NAME).version("15").build())
        .await
        .expect("creates the database");
    let db = fixture.wait_streaming(1).await;
    let ha = db
        .status
        .as_ref()
        .and_then(|s| s.high_availability.clone())
        .expect("reported");
    assert_eq!(ha.members.len(), 1);
    assert_eq!(ha.members[0].role, InstanceRole::Primary);
    assert_eq!(ha.timeline, Some(1));
    let uid = fixture
        .cluster
        .api::<Pod>()
        .get(&format!("{NAME}-0"))
        .await
        .expect("the pod")
        .metadata
        .uid;
    fixture
        .kill_until(&format!("{NAME}-0"), "its primary is reported lost", |db| {
            db.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "PrimaryAvailable"
                        && c.status == "False"
                        && c.reason == "NoFailoverCandidate"
                })
            })
        })
        .await;
    fixture.wait_streaming(1).await;
    let after = fixture
        .cluster
        .api::<Pod>()
        .get(&format!("{NAME}-0"))
        .await
        .expect("the pod")
        .metadata
        .uid;
    assert_eq!(after, uid, "the only instance's pod is never deleted");
    let db = fixture
        .cluster
        .database(NAME)
        .await
        .ok()
        .flatten()
        .expect("exists");
    assert!(promotion(&db).is_none());
    fixture.stop().await;
}

/// A former primary rewound onto a promoted standby's timeline, before its
/// WAL receiver starts (`rewound_standby.sh`).
const REWOUND_STANDBY: &str = include_str!("rewound_standby.sh");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_just_rewound_onto_the_primary_s_timeline_is_on_it_before_it_streams() {
    // Before its WAL receiver starts, a rewound old primary replays the WAL
    // pg_rewind copied, its last checkpoint still on the old timeline. Read
    // as "on an older timeline, not streaming", the operator rebuilt it when
    // the rejoin grace ended in that moment (a busy node makes it longer).
    let bin = sandbox::pgruntime::binaries::Binaries::default()
        .server(15)
        .unwrap_or_else(|missing| panic!("this test runs real PostgreSQL 15 and {missing}"));
    // initdb refuses root: as root, the servers run as the postgres user.
    let run_as = sandbox::pgruntime::process::RunAs::detect().unwrap_or_else(|why| panic!("{why}"));
    let mut command = tokio::process::Command::new("sh");
    command
        .args(["-c", REWOUND_STANDBY, "rewound_standby.sh"])
        .arg(&bin)
        .current_dir("/")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    run_as.apply(&mut command);
    let mut child = command.spawn().expect("runs the script");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("a stdin");
        stdin
            .write_all(level5_autopilot::autopilot::topology::MEMBER_SQL.as_bytes())
            .await
            .expect("writes the probe");
    }
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the script ends")
        .expect("the script runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the script failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {stdout}"))
            .to_string()
    };
    let primary_timeline: i64 = line("PRIMARY_TIMELINE ")
        .trim()
        .parse()
        .expect("a timeline");
    assert_eq!(primary_timeline, 2, "the promoted server's timeline");
    let row: Vec<Option<String>> = line("MEMBER ")
        .split('|')
        .map(|c| (!c.is_empty()).then(|| c.to_string()))
        .collect();
    let server = level5_autopilot::autopilot::topology::Server::from_answer(Some(&Ok(vec![row])));
    match server {
        level5_autopilot::autopilot::topology::Server::Replica {
            timeline,
            streaming,
            ..
        } => {
            assert!(!streaming, "it has no WAL receiver: {stdout}");
            assert_eq!(
                timeline,
                Some(primary_timeline),
                "a standby rewound onto timeline {primary_timeline} is on it: {stdout}"
            );
        }
        other => panic!("not read as a replica: {other:?}\n{stdout}"),
    }
}
