//! Level 2's major upgrades on the sandbox's real-PostgreSQL runtime: a
//! PostgresDB written at 15 is upgraded to 16 by a real pg_dumpall, initdb,
//! restore and verification, its rows survive, and the old volume and the
//! dump are kept; without `allowMajor` nothing is touched; a restore that
//! fails rolls back to the old server with its data, which takes writes
//! again; a client writing to the pod past the fenced Service loses no
//! write the old server acknowledged; a migration past its timeout is
//! stopped and rolled back (on the simulated runtime). Skipped, with a note,
//! when the PostgreSQL 15 or 16 binaries are missing (`scripts/install-postgres.sh`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use sandbox::{PostgresConfig, RuntimeKind, SandboxConfig};
use serde_json::json;
use shared::api::{PostgresDB, UpgradePhase};
use tests::builders::DbBuilder;
use tests::connect::{Role, connect_to, login};
use tests::harness::{Operator, TestCluster};
use tests::levels::LevelId;

/// Long enough for a first start, or a dump, restore, verification and
/// switch, on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(180);

struct Cluster {
    inner: TestCluster,
    operator: Option<Operator>,
}

impl Cluster {
    /// A real-PostgreSQL sandbox with Level 2 running, when the majors' binaries exist.
    async fn start(majors: &[u32]) -> Option<Self> {
        let postgres = PostgresConfig::default();
        for &major in majors {
            if let Err(missing) = postgres.binaries.server(major) {
                eprintln!("skipped: {missing}");
                return None;
            }
        }
        let config = SandboxConfig {
            runtime_kind: RuntimeKind::Postgres,
            postgres,
            ..Default::default()
        };
        let inner = match TestCluster::sandbox(config).await {
            Ok(cluster) => cluster.with_budget(WAIT),
            Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
        };
        let operator = Some(inner.run_operator(LevelId::Two));
        Some(Self { inner, operator })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        self.inner.api()
    }

    async fn database(&self) -> Option<PostgresDB> {
        self.inner
            .database("orders")
            .await
            .expect("lists PostgresDBs")
    }

    /// The database's status, its Events, every pod's state, and the logs
    /// of the upgrade Job's pods and of the database pod.
    async fn diagnose(&self) -> String {
        let db = self.database().await;
        let mut text = format!(
            "database status: {}\n{}",
            serde_json::to_string_pretty(&db.and_then(|d| d.status)).unwrap_or_default(),
            self.inner.diagnosis().await
        );
        if let Ok(Some(sts)) = self.api::<StatefulSet>().get_opt("orders").await {
            let managers: Vec<String> = sts
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .map(|m| format!("{:?} {:?}", m.manager, m.operation))
                .collect();
            text += &format!(
                "StatefulSet orders: managed by {managers:?}; template volumes {}\n",
                serde_json::to_string(&sts.spec.and_then(|s| s.template.spec).map(|p| p.volumes))
                    .unwrap_or_default()
            );
        }
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for pod in pods {
            let name = pod.name_any();
            text += &format!(
                "pod {name}: {}\n",
                serde_json::to_string(
                    &pod.status
                        .as_ref()
                        .map(|s| (&s.phase, &s.container_statuses))
                )
                .unwrap_or_default()
            );
            if name.contains("-upgrade-") || name == "orders-0" {
                let log = self
                    .api::<Pod>()
                    .logs(&name, &Default::default())
                    .await
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                text += &format!(
                    "log of {name} (last lines):\n{}\n",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        text
    }

    /// Polls `check` until it holds, failing with [`Cluster::diagnose`].
    async fn wait_until<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let waited = self
            .inner
            .eventually(WAIT, what, || async { Ok(check().await.then_some(())) })
            .await;
        if let Err(failed) = waited {
            panic!("{failed}{}", self.diagnose().await);
        }
    }

    async fn condition(&self, type_: &str) -> Option<(String, String, String)> {
        let status = self.database().await?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status, c.reason, c.message))
    }

    async fn ready_at(&self, version: &str) -> bool {
        let Some(status) = self.database().await.and_then(|d| d.status) else {
            return false;
        };
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            && status.ready_replicas == 1
            && status.current_version.as_deref() == Some(version)
    }

    async fn upgrade_phase(&self) -> Option<UpgradePhase> {
        self.database()
            .await?
            .status?
            .upgrade
            .filter(|u| u.major.is_some())
            .map(|u| u.phase)
    }

    /// (host address, user, password, dbname) from a credentials Secret;
    /// the superuser's connect to `postgres`.
    /// Logs in through the Service with the Secret's credentials.
    async fn connect_as(&self, secret: &str, dbname: Option<&str>) -> tokio_postgres::Client {
        let role = if secret.ends_with("credentials") {
            Role::Owner
        } else {
            Role::Superuser
        };
        connect_to(&self.inner, role, "orders", dbname)
            .await
            .unwrap_or_else(|| panic!("the sandbox's Service of orders is reachable as {secret}"))
    }

    async fn claim_exists(&self, name: &str) -> bool {
        self.api::<PersistentVolumeClaim>()
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .is_some()
    }

    async fn stop(self) {
        if let Some(operator) = self.operator {
            operator.stop().await;
        }
        let denied = tests::rbac::ungranted(&self.inner, LevelId::Two);
        assert!(
            denied.is_empty(),
            "deploy/rbac.yaml does not grant what Level 2 did: {denied:?}"
        );
        self.inner.finish().await;
    }
}

async fn scalar(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .query_one(&format!("SELECT ({sql})::text"), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Creates `orders` at 15, waits for it, and writes rows as its owner into
/// two tables, and as the superuser into a second database.
async fn database_at_15_with_rows(cluster: &Cluster) {
    let began = Instant::now();
    cluster
        .api::<PostgresDB>()
        .create(
            &PostParams::default(),
            &DbBuilder::named("orders").version("15").build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_until("the database is Ready at 15", || cluster.ready_at("15"))
        .await;
    eprintln!("orders became Ready at 15 in {:.1?}", began.elapsed());
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three');
             CREATE TABLE lines (id bigint PRIMARY KEY, item int REFERENCES items, amount numeric(10,2), at timestamptz);
             INSERT INTO lines SELECT g, 1 + g % 3, g * 1.25, '2026-01-01'::timestamptz + g * interval '1 minute'
               FROM generate_series(1, 500) g;
             CREATE SEQUENCE invoice_numbers START 1000;
             SELECT nextval('invoice_numbers') FROM generate_series(1, 3);
             CREATE MATERIALIZED VIEW item_totals AS SELECT item, sum(amount) AS total FROM lines GROUP BY item;
             SELECT lo_from_bytea(0, 'a scanned invoice');",
        )
        .await
        .expect("the owner writes rows");
    let superuser = cluster.connect_as("orders-superuser", None).await;
    superuser
        .batch_execute("CREATE DATABASE reports")
        .await
        .expect("the superuser creates a database");
    let reports = cluster
        .connect_as("orders-superuser", Some("reports"))
        .await;
    reports
        .batch_execute(
            "CREATE TABLE totals (day date PRIMARY KEY, total numeric);
             INSERT INTO totals VALUES ('2026-01-01', 42.5), ('2026-01-02', 7);",
        )
        .await
        .expect("rows in a second database");
}

/// What the owner's and the reports' tables hold, to compare before and after.
async fn contents(cluster: &Cluster) -> Vec<String> {
    let owner = cluster.connect_as("orders-credentials", None).await;
    let reports = cluster
        .connect_as("orders-superuser", Some("reports"))
        .await;
    vec![
        scalar(&owner, "SELECT count(*) FROM items").await,
        scalar(
            &owner,
            "SELECT string_agg(name, ',' ORDER BY id) FROM items",
        )
        .await,
        scalar(&owner, "SELECT count(*) FROM lines").await,
        scalar(&owner, "SELECT sum(amount) FROM lines").await,
        scalar(&reports, "SELECT sum(total) FROM totals").await,
        scalar(&owner, "SELECT last_value FROM invoice_numbers").await,
        scalar(&owner, "SELECT sum(total) FROM item_totals").await,
        scalar(
            &owner,
            "SELECT string_agg(convert_from(lo_get(oid), 'UTF8'), ',') FROM pg_largeobject_metadata",
        )
        .await,
    ]
}

/// A client that connects to pod `orders-0` itself, past the Service, and
/// inserts a numbered row into `ticks` every 20 ms as the owner,
/// reconnecting when its session ends (to whatever pod then has that name).
/// It records the inserts the server acknowledged, and why others failed.
struct DirectWriter {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<i64>>>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DirectWriter {
    fn start(pods: Api<Pod>, login: tokio_postgres::Config) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let (done, acks, failed) = (stop.clone(), acknowledged.clone(), failures.clone());
        let note = move |failure: String| {
            let mut failed = failed.lock().expect("not poisoned");
            if !failed.contains(&failure) {
                failed.push(failure);
            }
        };
        let task = tokio::spawn(async move {
            let mut client: Option<tokio_postgres::Client> = None;
            let mut n: i64 = 0;
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let Some(session) = client.as_ref().filter(|c| !c.is_closed()) else {
                    let ip = pods
                        .get_opt("orders-0")
                        .await
                        .ok()
                        .flatten()
                        .and_then(|p| p.status?.pod_ip);
                    let Some(ip) = ip else { continue };
                    let mut config = login.clone();
                    config.host(&ip).connect_timeout(Duration::from_secs(1));
                    match config.connect(tokio_postgres::NoTls).await {
                        Ok((session, connection)) => {
                            tokio::spawn(connection);
                            client = Some(session);
                        }
                        Err(error) => note(format!("connect: {error}")),
                    }
                    continue;
                };
                n += 1;
                match session
                    .execute("INSERT INTO ticks VALUES ($1)", &[&n])
                    .await
                {
                    Ok(_) => acks.lock().expect("not poisoned").push(n),
                    Err(error) => note(format!(
                        "insert: {}",
                        error
                            .as_db_error()
                            .map_or(error.to_string(), |e| e.message().to_string())
                    )),
                }
            }
        });
        Self {
            stop,
            acknowledged,
            failures,
            task,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().expect("not poisoned").len()
    }

    /// Stops writing: the acknowledged inserts and the distinct failures.
    async fn stop(self) -> (Vec<i64>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let acknowledged = self.acknowledged.lock().expect("not poisoned").clone();
        let failures = self.failures.lock().expect("not poisoned").clone();
        (acknowledged, failures)
    }
}

async fn server_version(cluster: &Cluster) -> String {
    let owner = cluster.connect_as("orders-credentials", None).await;
    scalar(&owner, "current_setting('server_version')").await
}

#[tokio::test]
async fn a_major_upgrade_moves_real_data_from_15_to_16_and_keeps_the_old_volume_and_the_dump() {
    let Some(mut cluster) = Cluster::start(&[15, 16]).await else {
        return;
    };
    database_at_15_with_rows(&cluster).await;
    let before = contents(&cluster).await;
    assert_eq!(before[..3], ["3", "one,two,three", "500"]);

    let began = Instant::now();
    cluster
        .inner
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("the spec is patched");
    // While migrating, the read-write Service selects no pod.
    cluster
        .wait_until("the migration starts with the Service fenced", || async {
            let fenced = cluster
                .api::<Service>()
                .get("orders")
                .await
                .ok()
                .and_then(|s| s.spec?.selector)
                .is_some_and(|s| s.contains_key("pgdb.example.com/fenced-by"));
            cluster.upgrade_phase().await == Some(UpgradePhase::Migrating) && fenced
        })
        .await;
    // The operator dies mid-migration; another one carries on from what
    // the cluster holds (status.upgrade, the Job, the volumes).
    if let Some(operator) = cluster.operator.take() {
        operator.kill().await;
    }
    cluster.operator = Some(cluster.inner.run_operator(LevelId::Two));
    cluster
        .wait_until("the upgrade completes and 16 is Ready", || async {
            cluster.upgrade_phase().await == Some(UpgradePhase::Complete)
                && cluster.ready_at("16").await
        })
        .await;
    eprintln!(
        "15 to 16 took {:.1?} from the spec change to Ready",
        began.elapsed()
    );

    let version = server_version(&cluster).await;
    assert!(
        version.starts_with("16"),
        "SHOW server_version is {version}"
    );
    assert_eq!(contents(&cluster).await, before, "every row survived");

    let db = cluster.database().await.expect("the database");
    let up = db.status.and_then(|s| s.upgrade).expect("status.upgrade");
    let major = up.major.expect("status.upgrade.major");
    eprintln!(
        "status.upgrade: {}",
        serde_json::to_string(&major).unwrap_or_default()
    );
    assert_eq!(
        (up.from_version.as_str(), up.to_version.as_str()),
        ("15", "16")
    );
    assert_eq!(major.previous_data_volume, "data-orders-0");
    assert_eq!(major.data_volume, "orders-data-16");
    assert_eq!(major.backup_volume, "orders-backup-16");
    assert!(major.retain_until.is_some());
    let verified = major.verified.clone().unwrap_or_default();
    for checked in [
        "3 tables, 505 rows",
        "1 sequences",
        "1 materialized views",
        "1 large objects",
    ] {
        assert!(verified.contains(checked), "{checked} in: {verified}");
    }
    for claim in ["data-orders-0", "orders-backup-16", "orders-data-16"] {
        assert!(cluster.claim_exists(claim).await, "PVC {claim} is kept");
    }
    let job = cluster.api::<Job>().get(&major.job).await.expect("the Job");
    assert_eq!(job.status.and_then(|s| s.succeeded), Some(1));
    let sts = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("the StatefulSet");
    let template = sts.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(template.containers[0].image.as_deref(), Some("postgres:16"));
    assert!(template.volumes.iter().flatten().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == "orders-data-16")
    }));
    let events = cluster.inner.events("orders").await.expect("lists Events");
    for reason in [
        "MajorUpgradeStarted",
        "MajorUpgradeVerified",
        "MajorUpgradeComplete",
    ] {
        assert!(
            events.iter().any(|e| e.contains(reason)),
            "an Event {reason}:\n{}",
            events.join("\n")
        );
    }
    // The rows can still be written to after the upgrade.
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("INSERT INTO items VALUES (4, 'four')")
        .await
        .expect("16 takes writes");
    drop(owner);

    // At rest after the upgrade, a whole reconcile writes nothing (the
    // first settle lets the upgrade's last reconciles end).
    cluster.inner.settle("orders").await.expect("settles");
    let writes = cluster
        .inner
        .settle("orders")
        .await
        .expect("settles")
        .expect("a sandbox");
    assert_eq!(writes.total(), 0, "writes at rest: {writes:?}");
    cluster.stop().await;
}

#[tokio::test]
async fn without_allow_major_a_major_change_is_refused_and_nothing_is_touched() {
    let Some(cluster) = Cluster::start(&[15]).await else {
        return;
    };
    database_at_15_with_rows(&cluster).await;
    let generation = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("the StatefulSet")
        .metadata
        .generation;
    cluster
        .inner
        .patch_spec("orders", json!({"version": "16"}))
        .await
        .expect("the spec is patched");
    cluster
        .wait_until("the change is refused", || async {
            cluster
                .condition("Ready")
                .await
                .is_some_and(|(status, reason, _)| {
                    status == "False" && reason == "RefusedMajorUpgrade"
                })
        })
        .await;
    let (_, _, message) = cluster.condition("Ready").await.expect("Ready");
    assert!(message.contains("allowMajor"), "{message}");
    // A reconcile that began after the refusal was written has ended.
    cluster.inner.settle("orders").await.expect("settles");
    let sts = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("the StatefulSet");
    assert_eq!(
        sts.metadata.generation, generation,
        "the StatefulSet is untouched"
    );
    assert_eq!(
        sts.spec
            .expect("spec")
            .template
            .spec
            .expect("pod spec")
            .containers[0]
            .image
            .as_deref(),
        Some("postgres:15")
    );
    let jobs = cluster
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .expect("lists");
    assert!(jobs.items.is_empty(), "no Job");
    let claims: Vec<String> = cluster
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await
        .expect("lists")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(claims, ["data-orders-0"]);
    assert!(server_version(&cluster).await.starts_with("15"));
    assert_eq!(contents(&cluster).await[0], "3");
    let events = cluster.inner.events("orders").await.expect("lists Events");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Warning RefusedMajorUpgrade")),
        "{}",
        events.join("\n")
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_migration_whose_restore_fails_rolls_back_and_the_old_data_serves_again() {
    let Some(cluster) = Cluster::start(&[15, 16]).await else {
        return;
    };
    database_at_15_with_rows(&cluster).await;
    // A setting 15 accepts and 16 no longer knows (renamed debug_parallel_query):
    // the dump carries it, and its restore into 16 fails.
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("ALTER DATABASE app SET force_parallel_mode = off")
        .await
        .expect("15 accepts the setting");
    drop(owner);
    let before = contents(&cluster).await;

    let began = Instant::now();
    cluster
        .inner
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("the spec is patched");
    cluster
        .wait_until(
            "the upgrade is rolled back and 15 is Ready again",
            || async {
                cluster.upgrade_phase().await == Some(UpgradePhase::RolledBack)
                    && cluster.ready_at("15").await
                    && cluster
                        .condition("Progressing")
                        .await
                        .is_some_and(|(_, reason, _)| reason == "MajorUpgradeRolledBack")
            },
        )
        .await;
    eprintln!(
        "the failed migration was rolled back in {:.1?}",
        began.elapsed()
    );

    let db = cluster.database().await.expect("the database");
    let up = db.status.and_then(|s| s.upgrade).expect("status.upgrade");
    let major = up.major.expect("status.upgrade.major");
    let failure = major.failure.clone().unwrap_or_default();
    eprintln!("failure: {failure}");
    assert!(
        failure.contains("force_parallel_mode") || failure.contains("kubectl logs job/"),
        "the failure says why, or where to read why: {failure}"
    );
    assert!(major.switched_at.is_none(), "rolled back before any switch");
    let (_, reason, message) = cluster.condition("Progressing").await.expect("Progressing");
    assert_eq!(reason, "MajorUpgradeRolledBack", "{message}");

    // The old server serves again, through the Service, with every row.
    let version = server_version(&cluster).await;
    assert!(
        version.starts_with("15"),
        "SHOW server_version is {version}"
    );
    assert_eq!(contents(&cluster).await, before);
    // The Job had made 15 read-only before it dumped; the rollback lifts that.
    cluster
        .wait_until("the write fence on 15 is lifted", || async {
            let events = cluster.inner.events("orders").await.expect("lists Events");
            ["WriteFenceRemoved", "WritesResumed"]
                .iter()
                .all(|reason| events.iter().any(|e| e.contains(reason)))
        })
        .await;
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("INSERT INTO items VALUES (4, 'four')")
        .await
        .expect("15 takes writes again");
    let service = cluster
        .api::<Service>()
        .get("orders")
        .await
        .expect("the Service");
    assert!(
        !service
            .spec
            .and_then(|s| s.selector)
            .is_some_and(|s| s.contains_key("pgdb.example.com/fenced-by"))
    );

    // The evidence stays.
    let job = cluster
        .api::<Job>()
        .get(&major.job)
        .await
        .expect("the Job is kept");
    assert_eq!(job.status.and_then(|s| s.failed), Some(1));
    assert!(cluster.claim_exists("orders-backup-16").await);
    assert!(cluster.claim_exists("data-orders-0").await);
    let events = cluster.inner.events("orders").await.expect("lists Events");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Warning MajorUpgradeRolledBack")),
        "{}",
        events.join("\n")
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_major_can_be_skipped_and_setting_the_previous_version_returns_to_the_kept_volume() {
    let Some(cluster) = Cluster::start(&[15, 17]).await else {
        return;
    };
    database_at_15_with_rows(&cluster).await;
    let before = contents(&cluster).await;

    let began = Instant::now();
    cluster
        .inner
        .patch_spec(
            "orders",
            json!({"version": "17", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("the spec is patched");
    cluster
        .wait_until("15 is upgraded to 17", || async {
            cluster.upgrade_phase().await == Some(UpgradePhase::Complete)
                && cluster.ready_at("17").await
        })
        .await;
    eprintln!("15 to 17 took {:.1?}", began.elapsed());
    assert!(server_version(&cluster).await.starts_with("17"));
    assert_eq!(contents(&cluster).await, before);
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("INSERT INTO items VALUES (4, 'written on 17')")
        .await
        .expect("17 takes writes");
    drop(owner);

    // Within the retention, the previous version is a way back, not a refused downgrade.
    let began = Instant::now();
    cluster
        .inner
        .patch_spec("orders", json!({"version": "15"}))
        .await
        .expect("the spec is patched");
    cluster
        .wait_until("15 serves its kept volume again", || async {
            cluster.upgrade_phase().await == Some(UpgradePhase::RolledBack)
                && cluster.ready_at("15").await
                && cluster
                    .condition("Progressing")
                    .await
                    .is_some_and(|(_, reason, _)| reason == "MajorUpgradeRolledBack")
        })
        .await;
    eprintln!("17 back to 15 took {:.1?}", began.elapsed());
    assert!(server_version(&cluster).await.starts_with("15"));
    assert_eq!(
        contents(&cluster).await,
        before,
        "the data as it was before the upgrade; what 17 wrote is on its own volume"
    );
    assert!(
        cluster.claim_exists("orders-data-17").await,
        "17's data is kept"
    );
    cluster
        .wait_until(
            "the write fence the migration set on 15 is lifted",
            || async {
                let events = cluster.inner.events("orders").await.expect("lists Events");
                events.iter().any(|e| e.contains("WritesResumed"))
            },
        )
        .await;
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("INSERT INTO items VALUES (5, 'written on 15 again')")
        .await
        .expect("15 takes writes again");
    drop(owner);
    let (_, reason, message) = cluster.condition("Progressing").await.expect("Progressing");
    assert_eq!(reason, "MajorUpgradeRolledBack");
    assert!(message.contains("orders-data-17"), "{message}");
    let (ready, ready_reason, _) = cluster.condition("Ready").await.expect("Ready");
    assert_eq!(
        (ready.as_str(), ready_reason.as_str()),
        ("True", "DatabaseReady")
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_client_writing_to_the_pod_past_the_fenced_service_loses_no_acknowledged_write() {
    let Some(cluster) = Cluster::start(&[15, 16]).await else {
        return;
    };
    database_at_15_with_rows(&cluster).await;
    let owner = cluster.connect_as("orders-credentials", None).await;
    owner
        .batch_execute("CREATE TABLE ticks (n bigint PRIMARY KEY)")
        .await
        .expect("the owner creates a table");
    drop(owner);
    let login = login(&cluster.inner, Role::Owner, "orders", None)
        .await
        .expect("the owner's login");
    let writer = DirectWriter::start(cluster.api::<Pod>(), login);
    cluster
        .wait_until("the direct writer's inserts are acknowledged", || async {
            writer.acknowledged() >= 10
        })
        .await;

    cluster
        .inner
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true}}),
        )
        .await
        .expect("the spec is patched");
    cluster
        .wait_until("the upgrade completes or rolls back", || async {
            matches!(
                cluster.upgrade_phase().await,
                Some(UpgradePhase::Complete | UpgradePhase::RolledBack)
            )
        })
        .await;
    let (acknowledged, failures) = writer.stop().await;
    eprintln!(
        "{} inserts acknowledged; failures: {failures:#?}",
        acknowledged.len()
    );
    assert_eq!(
        cluster.upgrade_phase().await,
        Some(UpgradePhase::Complete),
        "writes to the pod during the migration must not fail it\n{}",
        cluster.diagnose().await
    );
    cluster
        .wait_until("16 is Ready", || cluster.ready_at("16"))
        .await;

    let owner = cluster.connect_as("orders-credentials", None).await;
    let stored: std::collections::BTreeSet<i64> = owner
        .query("SELECT n FROM ticks", &[])
        .await
        .expect("16 has the table")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let lost: Vec<i64> = acknowledged
        .iter()
        .filter(|n| !stored.contains(n))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "inserts 15 acknowledged and 16 does not have: {lost:?}"
    );
    assert!(
        failures.iter().any(|f| f.contains("read-only transaction")),
        "the old server refused, rather than accepted and lost, the writes made during the migration: {failures:#?}"
    );
    assert_eq!(contents(&cluster).await[..3], ["3", "one,two,three", "500"]);
    cluster.stop().await;
}

#[tokio::test]
async fn a_migration_that_outlives_its_timeout_is_stopped_and_rolled_back() {
    let config = SandboxConfig {
        runtime_kind: RuntimeKind::Simulated,
        ..Default::default()
    };
    let cluster = match TestCluster::sandbox(config).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
    };
    // The migration's pod runs for an hour, as a huge database's would.
    cluster
        .sandbox_handle()
        .and_then(|s| s.simulated_runtime())
        .expect("the simulated runtime")
        .add_exit_rule(sandbox::ExitRule {
            image_contains: None,
            pod_label: Some(("app.kubernetes.io/component".into(), "major-upgrade".into())),
            exit_code: 0,
            after: Duration::from_secs(3600),
        });
    let operator = cluster.run_operator(LevelId::Two);
    cluster
        .api::<PostgresDB>()
        .create(
            &PostParams::default(),
            &DbBuilder::named("orders").version("15").build(),
        )
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("orders", "Ready at 15", tests::scenarios::is_settled)
        .await
        .expect("Ready at 15");

    let began = Instant::now();
    cluster
        .patch_spec(
            "orders",
            json!({"version": "16", "upgrade": {"allowMajor": true, "migrationTimeoutSeconds": 10}}),
        )
        .await
        .expect("the spec is patched");
    let db = cluster
        .wait_for("orders", "the upgrade rolled back", |db| {
            db.status
                .as_ref()
                .and_then(|s| s.upgrade.as_ref())
                .is_some_and(|u| u.phase == UpgradePhase::RolledBack)
        })
        .await
        .expect("rolled back");
    let elapsed = began.elapsed();
    let major = db
        .status
        .and_then(|s| s.upgrade)
        .and_then(|u| u.major)
        .expect("status.upgrade.major");
    let failure = major.failure.unwrap_or_default();
    assert!(
        failure.contains("spec.upgrade.migrationTimeoutSeconds"),
        "{failure}"
    );
    // status.startTime has whole seconds, so the deadline may fall up to a
    // second before ten seconds after the Job's creation.
    assert!(
        elapsed >= Duration::from_secs(9),
        "not before the deadline: {elapsed:?}"
    );
    let job = cluster
        .api::<Job>()
        .get(&major.job)
        .await
        .expect("the Job is kept");
    let failed = job
        .status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    assert_eq!(
        failed.and_then(|c| c.reason).as_deref(),
        Some("DeadlineExceeded")
    );
    let job_pods = cluster
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("job-name={}", major.job)))
        .await
        .expect("lists pods");
    assert!(
        job_pods.items.is_empty(),
        "the migration's pod was stopped: {:?}",
        job_pods
            .items
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>()
    );
    cluster
        .wait_for("orders", "Ready at 15 again", |db| {
            tests::scenarios::is_settled(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.current_version.as_deref())
                    == Some("15")
        })
        .await
        .expect("Ready at 15 again");
    operator.stop().await;
    cluster.finish().await;
}
