//! Level 3's backups on real PostgreSQL: a `PostgresDBBackup` made by hand
//! is taken by a Job running the server's own pg_dump, as the backup role,
//! into the backup volume or a real S3 server (moto's), with a manifest
//! whose counts are the rows the database holds; a failing backup says
//! what pg_dump said; a killed backup is Failed, never stuck Running; and
//! deleting a backup deletes its files. With `spec.backup.verify`, a backup
//! is Completed only once restored into a scratch server and verified, and
//! one whose manifest disagrees with its dump is Failed.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, PostParams};
use level3_lifecycle::lifecycle::manifest::Manifest;
use sandbox::KillKind;
use shared::backup::{
    BackupDestination, BackupPhase, BackupSpec, PostgresDBBackup, PostgresDBBackupSpec,
    S3Destination,
};
use shared::keys::{BACKUP_FILES_FINALIZER, BACKUP_LABEL, INSTANCE_LABEL};
use shared::runner::{self, RunOptions};
use tests::builders::DbBuilder;
use tests::connect::{Role, connect};
use tests::harness::s3::S3Server;
use tests::harness::{Operator, TestCluster, real_postgres};
use tokio::sync::oneshot;

/// A first start, a role, and a backup or two on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(180);

struct Fixture {
    cluster: TestCluster,
    operator: Option<Operator>,
}

impl Fixture {
    /// A real-PostgreSQL 15 sandbox (the sandbox's client tools are 15's)
    /// with Level 3 running in-process, and the database `orders` with
    /// `spec.backup` as given, Ready.
    async fn start(backup: BackupSpec) -> Self {
        let cluster = match TestCluster::sandbox(real_postgres(&[15])).await {
            Ok(cluster) => cluster.with_budget(WAIT),
            Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
        };
        let operator = start_operator(&cluster);
        let fixture = Self {
            cluster,
            operator: Some(operator),
        };
        let mut db = DbBuilder::manifest("orders").version("15").build();
        db.spec.backup = Some(backup);
        fixture.cluster.create(&db).await.expect("creates orders");
        let ready = fixture
            .cluster
            .wait_for("orders", "Ready", |db| {
                db.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .await;
        if let Err(failed) = ready {
            panic!("{failed}");
        }
        fixture
    }

    /// Writes `rows` rows into `items` and three into `notes`, as the owner.
    async fn write_rows(&self, rows: i64) -> tokio_postgres::Client {
        let client = connect(&self.cluster, Role::Owner, "orders")
            .await
            .expect("the owner's Secret exists");
        client
            .batch_execute(&format!(
                "CREATE TABLE items (id bigint PRIMARY KEY, name text);
                 INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {rows}) g;
                 CREATE TABLE notes (body text);
                 INSERT INTO notes VALUES ('a'), ('b'), ('c');"
            ))
            .await
            .expect("writes rows");
        client
    }

    /// Creates a `PostgresDBBackup` of orders as a user does: no labels.
    async fn backup(&self, name: &str) {
        let backup = PostgresDBBackup::new(
            name,
            PostgresDBBackupSpec {
                database: "orders".into(),
            },
        );
        self.cluster
            .api::<PostgresDBBackup>()
            .create(&PostParams::default(), &backup)
            .await
            .unwrap_or_else(|e| panic!("creates backup {name}: {e}"));
    }

    async fn backups_diagnosis(&self) -> String {
        let mut text = String::new();
        let backups = self
            .cluster
            .api::<PostgresDBBackup>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for b in backups {
            text += &format!(
                "backup {}: {}\n",
                b.name_any(),
                serde_json::to_string_pretty(&b.status).unwrap_or_default()
            );
        }
        let pods = self
            .cluster
            .api::<Pod>()
            .list(&ListParams::default().labels(BACKUP_LABEL))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for pod in pods {
            let log = self
                .cluster
                .api::<Pod>()
                .logs(&pod.name_any(), &Default::default())
                .await
                .unwrap_or_default();
            text += &format!("log of {}:\n{log}\n", pod.name_any());
        }
        text
    }

    /// Waits until backup `name` satisfies `check`, failing with every
    /// backup's status and its Jobs' logs.
    async fn wait_backup(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(Option<&PostgresDBBackup>) -> bool,
    ) -> Option<PostgresDBBackup> {
        match self
            .cluster
            .wait_for_object::<PostgresDBBackup>(name, what, check)
            .await
        {
            Ok(found) => found,
            Err(failed) => panic!("{failed}\n{}", self.backups_diagnosis().await),
        }
    }

    async fn finished(&self, name: &str) -> PostgresDBBackup {
        self.wait_backup(name, "Completed or Failed", |b| {
            matches!(
                b.and_then(|b| b.status.as_ref()).and_then(|s| s.phase),
                Some(BackupPhase::Completed | BackupPhase::Failed)
            )
        })
        .await
        .expect("exists")
    }

    async fn delete_backup(&self, name: &str) {
        self.cluster
            .api::<PostgresDBBackup>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deletes backup {name}: {e}"));
        self.wait_backup(name, "gone", |b| b.is_none()).await;
    }

    /// The host directory of the backup volume.
    fn backup_volume(&self) -> PathBuf {
        self.cluster
            .sandbox_handle()
            .and_then(|s| s.postgres_runtime())
            .and_then(|rt| rt.volume_path(self.cluster.namespace(), "orders-backups"))
            .expect("the backup volume is bound")
    }

    /// Stops the operator, checks that deploy/base/rbac.yaml grants every kind
    /// of request it made, and removes the cluster.
    async fn stop(mut self) {
        if let Some(operator) = self.operator.take() {
            operator.stop().await;
        }
        let rules = tests::rbac::deployed_rules();
        let made = self
            .cluster
            .sandbox_handle()
            .map(|sandbox| sandbox.counters().requests_from("level3-lifecycle/"))
            .unwrap_or_default();
        let denied: Vec<String> = made
            .iter()
            .filter(|request| request.resource != "pods/portforward")
            .filter(|request| !rules.iter().any(|rule| rule.allows(request)))
            .map(tests::rbac::describe)
            .collect();
        assert!(
            denied.is_empty(),
            "deploy/base/rbac.yaml does not grant what Level 3 did: {denied:?}"
        );
        self.cluster.finish().await;
    }
}

/// Level 3, in-process, with a client of its own as its binary has.
fn start_operator(cluster: &TestCluster) -> Operator {
    let (stop, stopped) = oneshot::channel::<()>();
    let instance = format!("level3-lifecycle-{}", std::process::id());
    let options = RunOptions {
        namespace: Some(cluster.namespace().to_string()),
        instance: Some(instance.clone()),
        ..Default::default()
    };
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    let task = tokio::spawn(async move {
        let agent = shared::cli::user_agent("level3-lifecycle");
        let client = shared::cli::connect(Some(&kubeconfig), &agent).await?;
        runner::run(level3_lifecycle::level(), client, options, async move {
            let _ = stopped.await;
        })
        .await
    });
    Operator::InProcess {
        stop: Some(stop),
        task,
        instance,
    }
}

fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn table_rows(manifest: &Manifest, database: &str, table: &str) -> Option<i64> {
    manifest
        .databases
        .iter()
        .find(|d| d.name == database)?
        .tables
        .iter()
        .find(|t| t.name == table)
        .map(|t| t.rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_real_rows_completes_with_a_manifest_that_counts_them_and_deleting_it_removes_its_files()
 {
    let fixture = Fixture::start(BackupSpec::default()).await;
    fixture.write_rows(1000).await;
    fixture.backup("by-hand").await;
    let backup = fixture.finished("by-hand").await;
    let status = backup.status.clone().unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(BackupPhase::Completed),
        "{}",
        fixture.backups_diagnosis().await
    );
    // Adopted: labelled with its database, its files guarded by the finalizer.
    assert_eq!(
        backup.labels().get(INSTANCE_LABEL).map(String::as_str),
        Some("orders")
    );
    assert!(
        backup
            .finalizers()
            .iter()
            .any(|f| f == BACKUP_FILES_FINALIZER)
    );
    let summary = status.summary.clone().expect("a summary");
    assert_eq!(summary.tables, 2, "{summary:?}");
    assert_eq!(summary.rows, 1003, "{summary:?}");
    assert!(
        summary.databases >= 2,
        "postgres and the application database: {summary:?}"
    );
    assert!(
        status
            .server_version
            .as_deref()
            .unwrap_or_default()
            .starts_with("15")
    );
    assert!(status.size_bytes.unwrap_or_default() > 0);
    assert!(status.size.is_some());
    let location = status.location.clone().expect("a location");
    assert_eq!(location.volume.as_deref(), Some("orders-backups"));

    // The manifest beside the files: every file's SHA-256, every table's rows.
    let folder = fixture.backup_volume().join("by-hand");
    let text = std::fs::read_to_string(folder.join("manifest.json")).expect("a manifest");
    let manifest: Manifest = serde_json::from_str(&text).expect("the manifest parses");
    assert_eq!(manifest.backup, "by-hand");
    assert_eq!(manifest.database, "orders");
    let app = DbBuilder::manifest("orders").build().spec.database.name;
    assert_eq!(table_rows(&manifest, &app, "items"), Some(1000), "{text}");
    assert_eq!(table_rows(&manifest, &app, "notes"), Some(3), "{text}");
    let items = manifest
        .databases
        .iter()
        .flat_map(|d| &d.tables)
        .find(|t| t.name == "items")
        .expect("items");
    assert!(items.digest.is_some(), "a small table gets a digest");
    assert!(manifest.files.iter().any(|f| f.name == "globals.sql"));
    for file in &manifest.files {
        let path = folder.join(&file.name);
        assert_eq!(sha256(&path), file.sha256, "{}", file.name);
        assert_eq!(
            std::fs::metadata(&path).map(|m| m.len()).ok(),
            Some(file.bytes)
        );
    }
    // A real custom-format dump of the application database.
    let listed = std::process::Command::new("pg_restore")
        .arg("--list")
        .arg(folder.join(format!("{app}.dump")))
        .output()
        .expect("pg_restore runs");
    let toc = String::from_utf8_lossy(&listed.stdout);
    assert!(toc.contains("TABLE DATA public items"), "{toc}");
    // Taken as the backup role, never the superuser.
    let superuser = connect(&fixture.cluster, Role::Superuser, "orders")
        .await
        .expect("login");
    let role = superuser
        .query_one(
            "SELECT rolsuper::text FROM pg_roles WHERE rolname = 'pgdb_backup'",
            &[],
        )
        .await
        .expect("the backup role exists");
    assert_eq!(role.get::<_, String>(0), "false");
    assert!(
        fixture
            .cluster
            .events("by-hand")
            .await
            .expect("Events")
            .iter()
            .any(|e| e.contains("BackupCompleted")),
        "a BackupCompleted Event"
    );

    // The role was set up once: at rest its login check passes and no
    // statement runs again.
    let setups: Vec<_> = fixture
        .cluster
        .event_objects("orders")
        .await
        .expect("Events")
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("BackupRoleReady"))
        .collect();
    assert_eq!(setups.len(), 1, "{setups:?}");
    assert!(
        setups[0].series.as_ref().is_none_or(|s| s.count <= 1),
        "the role was set up again and again: {setups:?}"
    );

    fixture.delete_backup("by-hand").await;
    assert!(!folder.exists(), "the files are deleted with the backup");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_backup_says_what_pg_dump_said_and_a_killed_one_is_failed_not_stuck_running() {
    let fixture = Fixture::start(BackupSpec::default()).await;
    let owner = fixture.write_rows(10).await;
    // A session holding an exclusive lock on items: pg_dump cannot read it
    // within its lock wait.
    owner
        .batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE;")
        .await
        .expect("locks items");
    fixture.backup("locked-out").await;
    let backup = fixture.finished("locked-out").await;
    let status = backup.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    let error = status.error.unwrap_or_default();
    assert!(
        error.contains("pg_dump: error:"),
        "pg_dump's own words: {error}"
    );
    assert!(error.contains("timeout"), "{error}");
    let folder = fixture.backup_volume().join("locked-out");
    assert!(
        !folder.exists(),
        "a failed backup leaves no half-written folder"
    );
    // The Event follows the status write that said Failed.
    fixture
        .cluster
        .eventually(WAIT, "a BackupFailed Event", || async {
            let events = fixture.cluster.events("locked-out").await?;
            Ok(events
                .iter()
                .any(|e| e.contains("BackupFailed"))
                .then_some(()))
        })
        .await
        .unwrap_or_else(|f| panic!("{f}"));

    // The next backup waits on the same lock; its container is killed.
    fixture.backup("killed").await;
    let pod = fixture
        .cluster
        .eventually(WAIT, "the backup's pod runs", || async {
            let pods = fixture
                .cluster
                .api::<Pod>()
                .list(&ListParams::default().labels(&format!("{BACKUP_LABEL}=killed")))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            Ok(pods
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .map(|p| p.name_any()))
        })
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runtime = fixture
        .cluster
        .sandbox_handle()
        .and_then(|s| s.postgres_runtime())
        .expect("real runtime");
    assert!(runtime.kill_container(
        fixture.cluster.namespace(),
        &pod,
        Some("backup"),
        KillKind::Crash
    ));
    let backup = fixture.finished("killed").await;
    let status = backup.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    let error = status.error.unwrap_or_default();
    assert!(error.contains("killed"), "{error}");
    owner.batch_execute("ROLLBACK").await.expect("unlocks");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_to_s3_goes_to_the_bucket_and_leaves_with_its_backup_and_missing_or_wrong_keys_fail_it()
 {
    let s3 = S3Server::start().await;
    s3.create_bucket("pg-backups")
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    let destination = BackupDestination {
        s3: Some(S3Destination {
            endpoint: s3.endpoint().to_string(),
            bucket: "pg-backups".into(),
            prefix: Some("team".into()),
            region: None,
            credentials_secret: "s3-keys".into(),
        }),
        volume: None,
    };
    let fixture = Fixture::start(BackupSpec {
        destination,
        ..Default::default()
    })
    .await;
    fixture.write_rows(100).await;

    // No Secret yet: Failed, naming the field and the keys.
    fixture.backup("no-keys").await;
    let status = fixture.finished("no-keys").await.status.unwrap_or_default();
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    let error = status.error.unwrap_or_default();
    assert!(
        error.contains(
            "spec.backup.destination.s3.credentialsSecret: Secret s3-keys does not exist"
        ),
        "{error}"
    );

    let keys = |access: &str, secret: &str| Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("s3-keys".into()),
            ..Default::default()
        },
        string_data: Some(
            [
                ("AWS_ACCESS_KEY_ID".to_string(), access.to_string()),
                ("AWS_SECRET_ACCESS_KEY".to_string(), secret.to_string()),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let secrets = fixture.cluster.api::<Secret>();
    secrets
        .create(
            &PostParams::default(),
            &keys(s3.access_key(), s3.secret_key()),
        )
        .await
        .expect("creates the keys");
    fixture.backup("to-s3").await;
    let status = fixture.finished("to-s3").await.status.unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(BackupPhase::Completed),
        "{}",
        fixture.backups_diagnosis().await
    );
    assert_eq!(status.summary.as_ref().map(|s| s.rows), Some(103));
    let path = format!("team/{}/orders/to-s3/", fixture.cluster.namespace());
    let location = status.location.expect("location");
    assert_eq!(
        location.s3.as_deref(),
        Some(format!("s3://pg-backups/{path}").as_str())
    );
    let keys = s3
        .list("pg-backups", &path)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(keys.iter().any(|k| k == "manifest.json"), "{keys:?}");
    assert!(keys.iter().any(|k| k == "globals.sql"), "{keys:?}");
    let manifest: Manifest = serde_json::from_slice(
        &s3.read("pg-backups", &format!("{path}manifest.json"))
            .await
            .unwrap_or_else(|f| panic!("{f}")),
    )
    .expect("the manifest parses");
    let app = DbBuilder::manifest("orders").build().spec.database.name;
    assert_eq!(table_rows(&manifest, &app, "items"), Some(100));
    for file in &manifest.files {
        assert!(
            keys.contains(&file.name),
            "{} uploaded: {keys:?}",
            file.name
        );
    }

    fixture.delete_backup("to-s3").await;
    let left = s3.list("pg-backups", &path).await.unwrap_or_default();
    assert!(
        left.is_empty(),
        "the files are deleted with the backup: {left:?}"
    );

    // Keys a bucket does not know: Failed, in the bucket's own words.
    let checking = S3Server::start_checking_keys().await;
    checking
        .create_bucket("pg-backups")
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    fixture
        .cluster
        .patch_spec(
            "orders",
            serde_json::json!({"backup": {"destination": {"s3": {"endpoint": checking.endpoint()}}}}),
        )
        .await
        .expect("points the backups at the bucket checking keys");
    fixture.backup("wrong-keys").await;
    let status = fixture
        .finished("wrong-keys")
        .await
        .status
        .unwrap_or_default();
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    let error = status.error.unwrap_or_default();
    assert!(
        error.starts_with(
            "checking the bucket pg-backups failed: error listing: InvalidAccessKeyId"
        ),
        "{error}"
    );
    checking.stop().await;
    fixture.stop().await;
    s3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_stopped_mid_backup_carries_it_on_with_one_job_and_no_stuck_backup() {
    let mut fixture = Fixture::start(BackupSpec::default()).await;
    let owner = fixture.write_rows(10).await;
    // pg_dump waits on this lock while the operator is away.
    owner
        .batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE;")
        .await
        .expect("locks items");
    fixture.backup("across-restart").await;
    fixture
        .wait_backup("across-restart", "Running", |b| {
            b.and_then(|b| b.status.as_ref()).and_then(|s| s.phase) == Some(BackupPhase::Running)
        })
        .await;
    if let Some(operator) = fixture.operator.take() {
        operator.stop().await;
    }
    owner.batch_execute("ROLLBACK").await.expect("unlocks");
    // The Job finishes while no operator watches.
    let jobs = fixture.cluster.api::<k8s_openapi::api::batch::v1::Job>();
    let done = fixture
        .cluster
        .eventually(WAIT, "the backup's Job succeeded", || async {
            Ok(jobs
                .get_opt("across-restart-backup")
                .await
                .ok()
                .flatten()
                .and_then(|j| j.status)
                .and_then(|s| s.succeeded)
                .filter(|n| *n > 0))
        })
        .await;
    if let Err(failed) = done {
        panic!("{failed}\n{}", fixture.backups_diagnosis().await);
    }
    let stale = fixture
        .cluster
        .api::<PostgresDBBackup>()
        .get("across-restart")
        .await
        .expect("reads the backup");
    assert_eq!(
        stale.status.and_then(|s| s.phase),
        Some(BackupPhase::Running),
        "nobody reported it yet"
    );
    fixture.operator = Some(start_operator(&fixture.cluster));
    let status = fixture
        .finished("across-restart")
        .await
        .status
        .unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(BackupPhase::Completed),
        "{}",
        fixture.backups_diagnosis().await
    );
    assert_eq!(status.summary.map(|s| s.rows), Some(13));
    let listed = jobs
        .list(&ListParams::default().labels(&format!("{BACKUP_LABEL}=across-restart")))
        .await
        .expect("lists Jobs");
    assert_eq!(listed.items.len(), 1, "one Job, not a second attempt");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_backup_volume_fails_the_backup_and_leaves_the_database_serving() {
    let fixture = Fixture::start(BackupSpec::default()).await;
    let owner = fixture.write_rows(1000).await;
    // A first backup makes the volume's directory (a volume is made when
    // a pod first mounts it); then it is filled.
    fixture.backup("first").await;
    let status = fixture.finished("first").await.status.unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(BackupPhase::Completed),
        "{}",
        fixture.backups_diagnosis().await
    );
    let runtime = fixture
        .cluster
        .sandbox_handle()
        .and_then(|s| s.postgres_runtime())
        .expect("real runtime");
    let namespace = fixture.cluster.namespace().to_string();
    runtime
        .fill_volume(&namespace, "orders-backups", true)
        .expect("fills the backup volume");
    fixture.backup("no-room").await;
    let status = fixture.finished("no-room").await.status.unwrap_or_default();
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    let error = status.error.unwrap_or_default();
    assert!(
        error.contains("No space left on device") || error.contains("Permission denied"),
        "the tool's own words: {error}"
    );
    // The database still serves, and takes writes.
    owner
        .batch_execute("INSERT INTO notes VALUES ('after the failed backup')")
        .await
        .expect("the database takes writes");
    let db = fixture
        .cluster
        .database("orders")
        .await
        .expect("reads")
        .expect("exists");
    assert!(
        db.status.as_ref().is_some_and(|s| s
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")),
        "the database stays Ready"
    );
    runtime
        .fill_volume(&namespace, "orders-backups", false)
        .expect("gives the room back");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_verify_a_backup_completes_once_restored_and_verified_and_one_whose_manifest_lies_fails()
 {
    let mut fixture = Fixture::start(BackupSpec {
        verify: true,
        ..Default::default()
    })
    .await;
    let owner = fixture.write_rows(10).await;
    fixture.backup("verified").await;
    let status = fixture
        .finished("verified")
        .await
        .status
        .unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(BackupPhase::Completed),
        "{}",
        fixture.backups_diagnosis().await
    );
    let verification = status.verification.clone().expect("verification recorded");
    assert!(verification.passed, "{verification:?}");
    assert!(verification.message.contains("13 rows"), "{verification:?}");
    let jobs = fixture.cluster.api::<k8s_openapi::api::batch::v1::Job>();
    assert!(
        jobs.get_opt("verified-verify")
            .await
            .expect("reads Jobs")
            .is_some(),
        "verified by the verify Job"
    );

    // A backup whose manifest is changed between its dump and its
    // verification (the operator away meanwhile) does not verify.
    owner
        .batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE;")
        .await
        .expect("locks items");
    fixture.backup("tampered").await;
    fixture
        .wait_backup("tampered", "Running", |b| {
            b.and_then(|b| b.status.as_ref()).and_then(|s| s.phase) == Some(BackupPhase::Running)
        })
        .await;
    if let Some(operator) = fixture.operator.take() {
        operator.stop().await;
    }
    owner.batch_execute("ROLLBACK").await.expect("unlocks");
    let done = fixture
        .cluster
        .eventually(WAIT, "the backup's Job succeeded", || async {
            Ok(jobs
                .get_opt("tampered-backup")
                .await
                .ok()
                .flatten()
                .and_then(|j| j.status)
                .and_then(|s| s.succeeded)
                .filter(|n| *n > 0))
        })
        .await;
    if let Err(failed) = done {
        panic!("{failed}\n{}", fixture.backups_diagnosis().await);
    }
    let path = fixture
        .backup_volume()
        .join("tampered")
        .join("manifest.json");
    let text = std::fs::read_to_string(&path).expect("a manifest");
    let mut manifest: Manifest = serde_json::from_str(&text).expect("the manifest parses");
    for table in manifest.databases.iter_mut().flat_map(|d| &mut d.tables) {
        if table.name == "items" {
            table.rows += 1;
        }
    }
    std::fs::write(&path, serde_json::to_string(&manifest).expect("serializes"))
        .expect("rewrites the manifest");
    fixture.operator = Some(start_operator(&fixture.cluster));
    let status = fixture
        .finished("tampered")
        .await
        .status
        .unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(BackupPhase::Failed),
        "{}",
        fixture.backups_diagnosis().await
    );
    assert!(
        !status.verification.clone().expect("recorded").passed,
        "{status:?}"
    );
    let error = status.error.clone().unwrap_or_default();
    assert!(error.contains("items"), "{error}");
    assert!(
        fixture
            .cluster
            .events("tampered")
            .await
            .expect("Events")
            .iter()
            .any(|e| e.contains("BackupFailed")),
        "a BackupFailed Event"
    );
    fixture.stop().await;
}
