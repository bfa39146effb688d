//! Steps and reads several scenarios share. Each step checks that its
//! action succeeded; each read fails on an API error instead of reading
//! it as "absent".

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use shared::api::{Phase, PostgresDB};
use shared::backup::{BackupPhase, PostgresDBBackup, PostgresDBBackupSpec};
use shared::names::common_labels;

use crate::connect::{Role, connect};
use crate::harness::{Failed, OrFail, TestCluster};

/// The database every scenario makes.
pub const NAME: &str = "orders";

/// The condition's status and reason.
pub fn condition(db: &PostgresDB, type_: &str) -> Option<(String, String)> {
    let c = db
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Whether condition `type_` is True.
pub fn is_true(db: &PostgresDB, type_: &str) -> bool {
    condition(db, type_).is_some_and(|(status, _)| status == "True")
}

/// Ready and nothing in progress.
pub fn is_settled(db: &PostgresDB) -> bool {
    db.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
        && db.status.as_ref().and_then(|s| s.observed_generation) == db.metadata.generation
}

/// Settled at `version`.
pub fn is_settled_at(db: &PostgresDB, version: &str) -> bool {
    is_settled(db) && current_version(db).as_deref() == Some(version)
}

/// `status.currentVersion`.
pub fn current_version(db: &PostgresDB) -> Option<String> {
    db.status.as_ref()?.current_version.clone()
}

/// Creates `db` and waits until it is settled.
pub async fn create_ready(cluster: &TestCluster, db: PostgresDB) -> Result<PostgresDB, Failed> {
    let name = db.name_any();
    cluster
        .create(&db)
        .await
        .or_fail(format!("create PostgresDB {name}"))?;
    cluster.wait_for(&name, "Ready", is_settled).await
}

/// Merge-patches the database's spec and returns the generation it got.
pub async fn patch_spec(cluster: &TestCluster, spec: serde_json::Value) -> Result<i64, Failed> {
    let patched = cluster
        .patch_spec(NAME, spec.clone())
        .await
        .or_fail(format!("patch the spec of {NAME} with {spec}"))?;
    patched
        .metadata
        .generation
        .ok_or_else(|| Failed::new(format!("PostgresDB {NAME} has no generation")))
}

/// The database as it is now.
pub async fn current(cluster: &TestCluster) -> Result<PostgresDB, Failed> {
    cluster
        .database(NAME)
        .await?
        .ok_or_else(|| Failed::new(format!("PostgresDB {NAME} is gone")))
}

/// The first container's image in a StatefulSet's pod template.
pub fn image_of(sts: Option<&StatefulSet>) -> Option<String> {
    sts?.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

/// The live StatefulSet of the database, `None` when absent.
pub async fn statefulset(cluster: &TestCluster) -> Result<Option<StatefulSet>, Failed> {
    cluster
        .api::<StatefulSet>()
        .get_opt(NAME)
        .await
        .or_fail(format!("read StatefulSet {NAME}"))
}

/// The image the live StatefulSet runs, `None` when it has none.
pub async fn live_image(cluster: &TestCluster) -> Result<Option<String>, Failed> {
    Ok(image_of(statefulset(cluster).await?.as_ref()))
}

/// Writes three rows into a new table `items`, as the owner.
pub async fn write_three_rows(cluster: &TestCluster) -> Result<(), Failed> {
    let database = connect(cluster, Role::Owner, NAME)
        .await
        .ok_or_else(|| Failed::new("a Ready database has no Service or owner's Secret"))?;
    database
        .batch_execute("CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2), (3);")
        .await
        .or_fail("write three rows as the owner")
}

/// Creates the database at the version backups run on (see
/// `super::BACKUP_VERSION`), waits until it is Ready and writes three rows:
/// what a backup scenario starts from.
pub async fn create_ready_with_rows(cluster: &TestCluster) -> Result<(), Failed> {
    create_ready(
        cluster,
        crate::builders::DbBuilder::manifest(NAME)
            .version(super::BACKUP_VERSION)
            .build(),
    )
    .await?;
    write_three_rows(cluster).await
}

/// Opens a session, as the owner, that holds an exclusive lock on `items`
/// until it rolls back or closes: a pg_dump waits on it.
pub async fn lock_items(cluster: &TestCluster) -> Result<tokio_postgres::Client, Failed> {
    let holder = connect(cluster, Role::Owner, NAME)
        .await
        .ok_or_else(|| Failed::new("a Ready database has no Service or owner's Secret"))?;
    holder
        .batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE;")
        .await
        .or_fail("lock items in another session")?;
    Ok(holder)
}

/// Asks for a backup of the database: a `PostgresDBBackup` named `name`,
/// labelled as Level 3 labels its own.
pub async fn request_backup(cluster: &TestCluster, name: &str) -> Result<(), Failed> {
    let mut backup = PostgresDBBackup::new(
        name,
        PostgresDBBackupSpec {
            database: NAME.into(),
        },
    );
    backup.metadata.labels = Some(common_labels(NAME));
    cluster
        .api::<PostgresDBBackup>()
        .create(&PostParams::default(), &backup)
        .await
        .or_fail(format!("create PostgresDBBackup {name}"))?;
    Ok(())
}

/// The backup `name` once a level that takes backups (3 and above) has
/// finished it, Completed or Failed; below Level 3, as it is once a
/// reconcile after its creation has ended (nothing takes it).
pub async fn finished_backup(
    cluster: &TestCluster,
    level: crate::levels::LevelId,
    name: &str,
) -> Result<Option<PostgresDBBackup>, Failed> {
    if level >= crate::levels::LevelId::Three {
        cluster
            .wait_for_object::<PostgresDBBackup>(name, "finished", |b| {
                b.and_then(|b| b.status.as_ref()?.phase)
                    .is_some_and(|p| matches!(p, BackupPhase::Completed | BackupPhase::Failed))
            })
            .await
    } else {
        cluster.settle(NAME).await?;
        cluster
            .api::<PostgresDBBackup>()
            .get_opt(name)
            .await
            .or_fail(format!("read PostgresDBBackup {name}"))
    }
}

/// How many rows `items` holds, read as the owner; `None` when the table
/// is gone (the data was lost). Any other failure fails the run.
pub async fn rows(cluster: &TestCluster) -> Result<Option<i64>, Failed> {
    let database = connect(cluster, Role::Owner, NAME)
        .await
        .ok_or_else(|| Failed::new("the database has no Service or owner's Secret"))?;
    match database.query_one("SELECT count(*) FROM items", &[]).await {
        Ok(row) => Ok(Some(row.get::<_, i64>(0))),
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            Ok(None)
        }
        Err(error) => Err(error).or_fail("count the rows of items"),
    }
}

/// What the database's server says its version is (major.minor), asked
/// the way the operator asks: as the superuser, at pod `orders-0`, directly
/// or through a port-forward (so this works on kind too).
pub async fn server_version(cluster: &TestCluster) -> Result<String, Failed> {
    let secret = cluster
        .api::<Secret>()
        .get(&format!("{NAME}-superuser"))
        .await
        .or_fail("read the superuser's Secret")?;
    let pod = cluster
        .api::<Pod>()
        .get(&format!("{NAME}-0"))
        .await
        .or_fail("read the database's pod")?;
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .ok_or_else(|| Failed::new(format!("the superuser's Secret has no {key}")))
    };
    let pod_ip = pod
        .status
        .and_then(|s| s.pod_ip)
        .ok_or_else(|| Failed::new("the database's pod has no IP"))?;
    let probe = shared::sql::SqlProbe {
        name: "version".into(),
        target: shared::sql::SqlTarget {
            pod: format!("{NAME}-0"),
            pod_ip: Some(pod_ip),
            port: 5432,
            user: field("username")?,
            password: field("password")?,
            database: "postgres".into(),
        },
        statement: "SHOW server_version",
    };
    let connector =
        shared::sql::Connector::new(cluster.client(), shared::sql::DatabaseAccess::Auto);
    let answers = connector.answer(cluster.namespace(), &[probe]).await;
    match answers.first().map(|(_, answer)| answer) {
        Some(Ok(_)) => Ok(shared::sql::scalar(answers.first().map(|(_, a)| a))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or_default()
            .to_string()),
        Some(Err(error)) => Err(Failed::new(format!(
            "the server did not say its version: {error}"
        ))),
        None => Err(Failed::new("the server did not say its version")),
    }
}

/// The password in the owner's Secret, `None` while it does not exist.
pub async fn owner_password(cluster: &TestCluster) -> Result<Option<Vec<u8>>, Failed> {
    let secret = cluster
        .api::<Secret>()
        .get_opt(&format!("{NAME}-credentials"))
        .await
        .or_fail("read the owner's Secret")?;
    Ok(secret.and_then(|s| s.data?.get("password").map(|p| p.0.clone())))
}

/// The objects of kind `K` labelled as the database's, in the namespace.
pub async fn children<K>(cluster: &TestCluster) -> Result<Vec<K>, Failed>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let selector = ListParams::default().labels(&shared::names::instance_selector(NAME));
    Ok(cluster
        .api::<K>()
        .list(&selector)
        .await
        .or_fail(format!("list the {}s of {NAME}", K::kind(&())))?
        .items)
}
