//! The scenarios every level is put through, each with what every level is
//! expected to do.
//!
//! A scenario drives a cluster the way a user (or an accident) would and
//! describes what it observed in one short, deterministic sentence. The
//! suite compares that sentence with the expectation declared here for each
//! level, and the sentences form the behaviour matrix in
//! `docs/behaviour-matrix.md`. Reading a row across the levels is the
//! course's lesson.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use shared::api::{Phase, PostgresDB};

use crate::builders::DbBuilder;
use crate::connect::{Role, connect};
use crate::harness::{TestCluster, WAIT};
use crate::levels::LevelId;

/// A scenario of the behaviour suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// A `PostgresDB` is created.
    Install,
    /// Someone deletes the database's StatefulSet.
    DeletedStatefulSet,
    /// Someone edits the generated ConfigMap by hand.
    EditedChild,
    /// The database is paused, a child deleted, then resumed.
    Pause,
    /// The spec names a major version the operator does not support.
    InvalidSpec,
    /// The version goes from 16.2 to 16.4.
    MinorUpgrade,
    /// The version is lowered from 16.4 to 16.2.
    VersionLowered,
    /// The operator dies in the middle of a reconcile and is started again.
    RestartMidReconcile,
    /// Nothing changes: what does the operator write?
    AtRest,
    /// The spec uses a section (`upgrade`) only higher levels implement.
    UnimplementedSection,
    /// The version goes from 16.4 to 17.
    MajorBump,
    /// The version goes to 16.5, whose pods never become ready.
    FailedMinorUpgrade,
    /// A reloadable parameter (`work_mem`) changes on a real server.
    ParameterChanged,
    /// Level 1's operator is replaced by this level's on a running database.
    OperatorSwap,
    /// The operator is killed during a minor upgrade and started again.
    RestartMidUpgrade,
    /// The version goes from 15 to 16 with `upgrade.allowMajor`, on real data.
    MajorUpgradeWithData,
}

impl Scenario {
    /// Every scenario, in the matrix's order.
    pub const ALL: [Scenario; 16] = [
        Scenario::Install,
        Scenario::DeletedStatefulSet,
        Scenario::EditedChild,
        Scenario::Pause,
        Scenario::InvalidSpec,
        Scenario::MinorUpgrade,
        Scenario::VersionLowered,
        Scenario::RestartMidReconcile,
        Scenario::AtRest,
        Scenario::UnimplementedSection,
        Scenario::MajorBump,
        Scenario::FailedMinorUpgrade,
        Scenario::ParameterChanged,
        Scenario::OperatorSwap,
        Scenario::RestartMidUpgrade,
        Scenario::MajorUpgradeWithData,
    ];

    /// The matrix row's label.
    pub fn title(self) -> &'static str {
        match self {
            Scenario::Install => "A PostgresDB is created",
            Scenario::DeletedStatefulSet => {
                "Its StatefulSet is deleted (real PostgreSQL, 3 rows written)"
            }
            Scenario::EditedChild => "Its ConfigMap is edited by hand",
            Scenario::Pause => "It is paused, its Service deleted, then resumed",
            Scenario::InvalidSpec => "Its version is an unsupported major (12)",
            Scenario::MinorUpgrade => "Its version goes from 16.2 to 16.4",
            Scenario::VersionLowered => "Its version is lowered from 16.4 to 16.2",
            Scenario::RestartMidReconcile => {
                "The operator is killed mid-reconcile and its binary started again"
            }
            Scenario::AtRest => "Nothing changes and a reconcile runs",
            Scenario::UnimplementedSection => "Its spec sets `upgrade`, a Level 2 section",
            Scenario::MajorBump => "Its version goes from 16.4 to 17",
            Scenario::FailedMinorUpgrade => {
                "Its version goes to 16.5, whose pods never become ready"
            }
            Scenario::ParameterChanged => "Its `work_mem` parameter changes (real PostgreSQL)",
            Scenario::OperatorSwap => "The Level 1 operator running it is replaced by this level's",
            Scenario::RestartMidUpgrade => {
                "The operator is killed during the upgrade 16.2 to 16.4 (real PostgreSQL)"
            }
            Scenario::MajorUpgradeWithData => {
                "Its version goes from 15 to 16 with `upgrade.allowMajor` (real PostgreSQL, 3 rows)"
            }
        }
    }

    /// What `level` is expected to do.
    pub fn expected(self, level: LevelId) -> &'static str {
        use LevelId::{One, Two};
        match (self, level) {
            (Scenario::Install, _) => {
                "Ready; 2 Secrets, 1 ConfigMap, 2 Services, 1 StatefulSet created"
            }
            (Scenario::DeletedStatefulSet, _) => {
                "StatefulSet recreated, Ready again on the same data volume; 3 rows intact"
            }
            (Scenario::EditedChild, _) => "edit reverted; Warning DriftRepaired",
            (Scenario::Pause, _) => "Service left deleted while paused; recreated on resume",
            (Scenario::InvalidSpec, _) => {
                "refused: Ready=False InvalidVersion naming spec.version; nothing created"
            }
            (Scenario::MinorUpgrade, _) => {
                "image swapped to postgres:16.4; Ready at 16.4; the server reports 16.4"
            }
            (Scenario::VersionLowered, One) => "accepted: image swapped to postgres:16.2",
            (Scenario::VersionLowered, Two) => {
                "refused: Ready=False RefusedDowngrade; image kept at postgres:16.4"
            }
            (Scenario::RestartMidReconcile, _) => {
                "resumed from the cluster: Ready, generated password kept"
            }
            (Scenario::AtRest, _) => "0 writes",
            (Scenario::UnimplementedSection, One) => {
                "SpecImplemented=False (spec.upgrade); Warning SectionNotImplemented; still Ready"
            }
            (Scenario::UnimplementedSection, Two) => "SpecImplemented=True; Ready",
            (Scenario::MajorBump, One) => "accepted: image swapped to postgres:17",
            (Scenario::MajorBump, Two) => {
                "refused: Ready=False RefusedMajorUpgrade; image kept at postgres:16.4"
            }
            (Scenario::FailedMinorUpgrade, One) => "image postgres:16.5 kept; not Ready",
            (Scenario::FailedMinorUpgrade, Two) => {
                "rolled back to postgres:16.4; Ready at 16.4; Warning UpgradeRolledBack"
            }
            (Scenario::ParameterChanged, One) => "work_mem is 8MB after a server restart",
            (Scenario::ParameterChanged, Two) => {
                "work_mem is 8MB without a restart (reloaded); status says Reload"
            }
            (Scenario::OperatorSwap, _) => "no child rewritten; the pod kept running, 0 restarts",
            (Scenario::RestartMidUpgrade, One) => {
                "Ready at 16.4; the server reports 16.4; no rollout recorded"
            }
            (Scenario::MajorUpgradeWithData, One) => {
                "image swapped to postgres:16; not Ready: the server refuses the data directory 15 wrote"
            }
            (Scenario::MajorUpgradeWithData, Two) => {
                "Ready at 16 on a new volume, the server reports 16; 3 rows intact; the 15 volume and the dump kept"
            }
            (Scenario::RestartMidUpgrade, Two) => {
                "Ready at 16.4; the server reports 16.4; the rollout resumed (start time kept) and completed"
            }
        }
    }

    /// The sandbox a scenario needs: the default one, except where the
    /// simulated runtime must be able to keep a pod from becoming ready.
    pub fn sandbox_config(self) -> sandbox::SandboxConfig {
        let mut config = sandbox::SandboxConfig::default();
        match self {
            Scenario::FailedMinorUpgrade => {
                config.simulated.ready_delay = Duration::from_millis(300)
            }
            // Where data is at stake or the operator speaks SQL, pods run
            // real PostgreSQL.
            Scenario::DeletedStatefulSet
            | Scenario::MinorUpgrade
            | Scenario::ParameterChanged
            | Scenario::RestartMidUpgrade
            | Scenario::MajorUpgradeWithData => {
                config.runtime_kind = sandbox::RuntimeKind::Postgres
            }
            _ => {}
        }
        config
    }

    /// Runs the scenario against `level` on `cluster` and describes what happened.
    pub async fn run(self, cluster: &TestCluster, level: LevelId) -> String {
        match self {
            Scenario::Install => install(cluster, level).await,
            Scenario::DeletedStatefulSet => deleted_statefulset(cluster, level).await,
            Scenario::EditedChild => edited_child(cluster, level).await,
            Scenario::Pause => pause(cluster, level).await,
            Scenario::InvalidSpec => invalid_spec(cluster, level).await,
            Scenario::MinorUpgrade => minor_upgrade(cluster, level).await,
            Scenario::VersionLowered => version_lowered(cluster, level).await,
            Scenario::RestartMidReconcile => restart_mid_reconcile(cluster, level).await,
            Scenario::AtRest => at_rest(cluster, level).await,
            Scenario::UnimplementedSection => unimplemented_section(cluster, level).await,
            Scenario::MajorBump => major_bump(cluster, level).await,
            Scenario::FailedMinorUpgrade => failed_minor_upgrade(cluster, level).await,
            Scenario::ParameterChanged => parameter_changed(cluster, level).await,
            Scenario::OperatorSwap => operator_swap(cluster, level).await,
            Scenario::RestartMidUpgrade => restart_mid_upgrade(cluster, level).await,
            Scenario::MajorUpgradeWithData => major_upgrade_with_data(cluster, level).await,
        }
    }
}

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

/// Ready and nothing in progress.
pub fn is_settled(db: &PostgresDB) -> bool {
    db.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
        && db.status.as_ref().and_then(|s| s.observed_generation) == db.metadata.generation
}

fn image_of(sts: Option<&StatefulSet>) -> Option<String> {
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

/// The image the live StatefulSet `orders` runs.
async fn live_image(cluster: &TestCluster) -> Option<String> {
    let sts = cluster
        .api::<StatefulSet>()
        .get_opt("orders")
        .await
        .ok()
        .flatten();
    image_of(sts.as_ref())
}

/// The `PostgresDB` `orders` as it is now.
async fn current(cluster: &TestCluster) -> Option<PostgresDB> {
    cluster
        .api::<PostgresDB>()
        .get_opt("orders")
        .await
        .ok()
        .flatten()
}

async fn create_ready(cluster: &TestCluster, db: PostgresDB) -> PostgresDB {
    let name = db.name_any();
    if let Err(error) = cluster.create(&db).await {
        panic!("{}", shared::reconcile::error_chain(&error));
    }
    cluster.wait_for(&name, "Ready", is_settled).await
}

async fn patch_spec(cluster: &TestCluster, name: &str, spec: serde_json::Value) {
    if let Err(error) = cluster.patch_spec(name, spec).await {
        panic!("{}", shared::reconcile::error_chain(&error));
    }
}

/// How many objects of kind `K` match `selector` in the test's namespace.
async fn count_children<K>(cluster: &TestCluster, selector: &ListParams) -> usize
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    cluster
        .api::<K>()
        .list(selector)
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

async fn install(cluster: &TestCluster, level: LevelId) -> String {
    let operator = cluster.run_operator(level);
    create_ready(cluster, DbBuilder::named("orders").build()).await;
    let selector = ListParams::default().labels(&shared::names::instance_selector("orders"));
    let count = |n: usize, kind: &str| format!("{n} {kind}{}", if n == 1 { "" } else { "s" });
    let secrets = count_children::<Secret>(cluster, &selector).await;
    let config_maps = count_children::<ConfigMap>(cluster, &selector).await;
    let services = count_children::<Service>(cluster, &selector).await;
    let statefulsets = count_children::<StatefulSet>(cluster, &selector).await;
    operator.stop().await;
    format!(
        "Ready; {}, {}, {}, {} created",
        count(secrets, "Secret"),
        count(config_maps, "ConfigMap"),
        count(services, "Service"),
        count(statefulsets, "StatefulSet")
    )
}

async fn deleted_statefulset(cluster: &TestCluster, level: LevelId) -> String {
    let operator = cluster.run_operator(level);
    create_ready(cluster, DbBuilder::named("orders").build()).await;
    let database = connect(cluster, Role::Owner, "orders")
        .await
        .expect("a Ready database has its Service and its owner's Secret");
    let written = database
        .batch_execute("CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2), (3);")
        .await;
    assert!(written.is_ok(), "writing rows failed: {written:?}");
    drop(database);
    let claim = |c: Option<&PersistentVolumeClaim>| c.map(|c| c.uid());
    let volume_before = claim(
        cluster
            .api::<PersistentVolumeClaim>()
            .get_opt("data-orders-0")
            .await
            .ok()
            .flatten()
            .as_ref(),
    );
    let sts_before = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .map(|s| s.uid())
        .ok()
        .flatten();
    let _ = cluster
        .api::<StatefulSet>()
        .delete("orders", &DeleteParams::default())
        .await;
    let recreated = cluster
        .wait_for_object::<StatefulSet>("orders", "recreated", |s| {
            s.is_some_and(|s| s.uid() != sts_before)
        })
        .await
        .is_some();
    cluster.wait_for("orders", "Ready again", is_settled).await;
    let volume_after = claim(
        cluster
            .api::<PersistentVolumeClaim>()
            .get_opt("data-orders-0")
            .await
            .ok()
            .flatten()
            .as_ref(),
    );
    let rows = match connect(cluster, Role::Owner, "orders").await {
        Some(database) => database
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .ok(),
        None => None,
    };
    operator.stop().await;
    let volume = if volume_before.is_some() && volume_before == volume_after {
        "the same"
    } else {
        "a new"
    };
    let data = match rows {
        Some(rows) => format!("{rows} rows intact"),
        None => "rows lost".to_string(),
    };
    format!(
        "StatefulSet {}, Ready again on {volume} data volume; {data}",
        if recreated {
            "recreated"
        } else {
            "not recreated"
        }
    )
}

async fn edited_child(cluster: &TestCluster, level: LevelId) -> String {
    let operator = cluster.run_operator(level);
    create_ready(cluster, DbBuilder::named("orders").build()).await;
    let patch = serde_json::json!({"data": {"postgresql.conf": "edited by hand\n"}});
    let _ = cluster
        .api::<ConfigMap>()
        .patch(
            "orders-config",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await;
    let restored = |c: Option<&ConfigMap>| {
        c.and_then(|c| c.data.as_ref()?.get("postgresql.conf").cloned())
            .is_some_and(|conf| conf.contains("listen_addresses"))
    };
    cluster
        .wait_for_object::<ConfigMap>("orders-config", "restored", restored)
        .await;
    // Events are published after the write they report.
    let warned = cluster
        .event_within("orders", WAIT, |e| e.starts_with("Warning DriftRepaired"))
        .await
        .is_some();
    operator.stop().await;
    format!(
        "edit reverted; {}",
        if warned {
            "Warning DriftRepaired"
        } else {
            "no Event"
        }
    )
}

async fn pause(cluster: &TestCluster, level: LevelId) -> String {
    let operator = cluster.run_operator(level);
    create_ready(cluster, DbBuilder::named("orders").build()).await;
    patch_spec(cluster, "orders", serde_json::json!({"paused": true})).await;
    cluster
        .wait_for("orders", "Paused", |db| {
            db.status.as_ref().and_then(|s| s.phase) == Some(Phase::Paused)
        })
        .await;
    let _ = cluster
        .api::<Service>()
        .delete("orders", &DeleteParams::default())
        .await;
    // A paused operator must not act; give it ample time to (wrongly) do so.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left_alone = cluster
        .api::<Service>()
        .get_opt("orders")
        .await
        .ok()
        .flatten()
        .is_none();
    patch_spec(cluster, "orders", serde_json::json!({"paused": false})).await;
    cluster
        .wait_for_object::<Service>("orders", "recreated after resuming", |s| s.is_some())
        .await;
    operator.stop().await;
    format!(
        "Service {} while paused; recreated on resume",
        if left_alone {
            "left deleted"
        } else {
            "recreated"
        }
    )
}

async fn invalid_spec(cluster: &TestCluster, level: LevelId) -> String {
    let operator = cluster.run_operator(level);
    if let Err(error) = cluster
        .create(&DbBuilder::named("legacy").version("12").build())
        .await
    {
        panic!("{}", shared::reconcile::error_chain(&error));
    }
    let db = cluster
        .wait_for("legacy", "refused", |db| {
            condition(db, "Ready").is_some_and(|(s, r)| s == "False" && r.starts_with("Invalid"))
        })
        .await;
    let ready = db
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
    let (reason, message) = ready.map(|c| (c.reason, c.message)).unwrap_or_default();
    let field = message.split(':').next().unwrap_or_default().to_string();
    let created = cluster
        .api::<StatefulSet>()
        .get_opt("legacy")
        .await
        .ok()
        .flatten()
        .is_some()
        || cluster
            .api::<Secret>()
            .get_opt("legacy-credentials")
            .await
            .ok()
            .flatten()
            .is_some();
    operator.stop().await;
    format!(
        "refused: Ready=False {reason} naming {field}; {}",
        if created {
            "children created"
        } else {
            "nothing created"
        }
    )
}

async fn minor_upgrade(cluster: &TestCluster, level: LevelId) -> String {
    let operator = cluster.run_operator(level);
    create_ready(cluster, DbBuilder::named("orders").version("16.2").build()).await;
    patch_spec(cluster, "orders", serde_json::json!({"version": "16.4"})).await;
    let db = cluster
        .wait_for("orders", "Ready at 16.4", |db| {
            is_settled(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.current_version.as_deref())
                    == Some("16.4")
        })
        .await;
    let image = live_image(cluster).await.unwrap_or_default();
    let version = db
        .status
        .and_then(|s| s.current_version)
        .unwrap_or_default();
    let reports = server_version(cluster).await;
    operator.stop().await;
    format!("image swapped to {image}; Ready at {version}; the server reports {reports}")
}

/// What the database's server says its version is (major.minor), asked
/// the way the operator asks: as the superuser, at pod `orders-0`, directly
/// or through a port-forward (so this works on kind too).
async fn server_version(cluster: &TestCluster) -> String {
    let secret = cluster.api::<Secret>().get("orders-superuser").await.ok();
    let pod = cluster.api::<Pod>().get("orders-0").await.ok();
    let field = |key: &str| {
        secret
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let (Some(user), Some(password), Some(pod_ip)) = (
        field("username"),
        field("password"),
        pod.and_then(|p| p.status?.pod_ip),
    ) else {
        return "(not asked: no superuser Secret or pod IP)".into();
    };
    let probe = shared::sql::SqlProbe {
        name: "version".into(),
        target: shared::sql::SqlTarget {
            pod: "orders-0".into(),
            pod_ip: Some(pod_ip),
            port: 5432,
            user,
            password,
            database: "postgres".into(),
        },
        statement: "SHOW server_version",
    };
    let connector =
        shared::sql::Connector::new(cluster.client(), shared::sql::DatabaseAccess::Auto);
    let answers = connector.answer(cluster.namespace(), &[probe]).await;
    match answers.first().map(|(_, answer)| answer) {
        Some(Ok(_)) => shared::sql::scalar(answers.first().map(|(_, a)| a))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or_default()
            .to_string(),
        Some(Err(error)) => format!("(no answer: {error})"),
        None => "(no answer)".into(),
    }
}

async fn version_lowered(cluster: &TestCluster, level: LevelId) -> String {
    change_version(cluster, level, "16.4", "16.2").await
}

async fn major_bump(cluster: &TestCluster, level: LevelId) -> String {
    change_version(cluster, level, "16.4", "17").await
}

/// Creates a database at `from`, asks for `to`, and reports whether the
/// operator swapped the image or refused the change.
async fn change_version(cluster: &TestCluster, level: LevelId, from: &str, to: &str) -> String {
    let operator = cluster.run_operator(level);
    create_ready(cluster, DbBuilder::named("orders").version(from).build()).await;
    patch_spec(cluster, "orders", serde_json::json!({ "version": to })).await;
    let wanted_image = format!("postgres:{to}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let outcome = loop {
        let image = live_image(cluster).await;
        if image.as_deref() == Some(wanted_image.as_str()) {
            break format!("accepted: image swapped to {wanted_image}");
        }
        let db = current(cluster).await;
        if let Some((_, reason)) = db
            .as_ref()
            .and_then(|db| condition(db, "Ready"))
            .filter(|(s, r)| s == "False" && r.starts_with("Refused"))
        {
            break format!(
                "refused: Ready=False {reason}; image kept at {}",
                image.unwrap_or_default()
            );
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "neither swapped nor refused within {WAIT:?}; events:\n{}",
                cluster.events("orders").await.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    operator.stop().await;
    outcome
}

async fn unimplemented_section(cluster: &TestCluster, level: LevelId) -> String {
    let operator = cluster.run_operator(level);
    let mut db = DbBuilder::named("orders").build();
    db.spec.upgrade = Some(shared::api::UpgradeSpec::default());
    let db = create_ready(cluster, db).await;
    let implemented = db.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "SpecImplemented")
            .cloned()
    });
    let outcome = match implemented {
        Some(c) if c.status == "False" => {
            let field = c
                .message
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let warned = cluster
                .event_within("orders", WAIT, |e| {
                    e.starts_with("Warning SectionNotImplemented")
                })
                .await
                .is_some();
            format!(
                "SpecImplemented=False ({field}); {}; still Ready",
                if warned {
                    "Warning SectionNotImplemented"
                } else {
                    "no Event"
                }
            )
        }
        Some(c) => format!("SpecImplemented={}; Ready", c.status),
        None => "no SpecImplemented condition".into(),
    };
    operator.stop().await;
    outcome
}

async fn failed_minor_upgrade(cluster: &TestCluster, level: LevelId) -> String {
    let Some(runtime) = cluster.sandbox_handle().and_then(|s| s.simulated_runtime()) else {
        return "not run (needs the sandbox's simulated runtime to make 16.5 fail)".into();
    };
    // The broken release: a postgres:16.5 container exits before it could
    // pass its readiness probe (see `sandbox_config`), again and again.
    runtime.add_exit_rule(sandbox::ExitRule {
        image_contains: Some("postgres:16.5".into()),
        pod_label: None,
        exit_code: 1,
        after: Duration::from_millis(100),
    });
    let operator = cluster.run_operator(level);
    let mut db = DbBuilder::named("orders").version("16.4").build();
    db.spec.upgrade = Some(shared::api::UpgradeSpec {
        health_timeout_seconds: 10,
        ..Default::default()
    });
    create_ready(cluster, db).await;
    patch_spec(cluster, "orders", serde_json::json!({"version": "16.5"})).await;
    // Past the health timeout, plus time for a rollback to happen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let outcome = loop {
        let db = current(cluster).await;
        let image = live_image(cluster).await.unwrap_or_default();
        let rolled_back = db
            .as_ref()
            .and_then(|d| d.status.as_ref()?.upgrade.clone())
            .is_some_and(|u| u.phase == shared::api::UpgradePhase::RolledBack);
        if rolled_back
            && image == "postgres:16.4"
            && db
                .as_ref()
                .is_some_and(|d| condition(d, "Ready").is_some_and(|(s, _)| s == "True"))
        {
            let warned = cluster
                .event_within("orders", WAIT, |e| {
                    e.starts_with("Warning UpgradeRolledBack")
                })
                .await
                .is_some();
            let version = db
                .and_then(|d| d.status?.current_version)
                .unwrap_or_default();
            break format!(
                "rolled back to {image}; Ready at {version}; {}",
                if warned {
                    "Warning UpgradeRolledBack"
                } else {
                    "no Event"
                }
            );
        }
        if tokio::time::Instant::now() > deadline {
            let phase = db.as_ref().and_then(|d| d.status.as_ref()?.phase);
            let ready = db
                .as_ref()
                .and_then(|d| condition(d, "Ready"))
                .is_some_and(|(s, _)| s == "True");
            let degraded = db
                .as_ref()
                .and_then(|d| condition(d, "Degraded"))
                .is_some_and(|(s, _)| s == "True");
            break format!(
                "image {image} kept; {}{}{}",
                if ready { "Ready" } else { "not Ready" },
                if degraded { ", Degraded" } else { "" },
                if phase.is_none() { ", no phase" } else { "" }
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    operator.stop().await;
    outcome
}

async fn credentials_password(cluster: &TestCluster) -> Option<Vec<u8>> {
    let secret = cluster
        .api::<Secret>()
        .get_opt("orders-credentials")
        .await
        .ok()
        .flatten()?;
    secret.data?.get("password").map(|p| p.0.clone())
}

async fn restart_mid_reconcile(cluster: &TestCluster, level: LevelId) -> String {
    // On the sandbox, StatefulSet writes fail, so the first operator is
    // certainly stopped with the database half-built.
    if let Some(sandbox) = cluster.sandbox_handle() {
        sandbox
            .faults()
            .fail_next(1_000, Some("patch"), Some("statefulsets"), 500);
    }
    let first = cluster.run_operator(level);
    if let Err(error) = cluster.create(&DbBuilder::named("orders").build()).await {
        panic!("{}", shared::reconcile::error_chain(&error));
    }
    cluster
        .wait_for_object::<Secret>("orders-credentials", "created", |s| s.is_some())
        .await;
    let password = credentials_password(cluster).await;
    first.kill().await;
    if let Some(sandbox) = cluster.sandbox_handle() {
        sandbox.faults().clear();
    }
    let second = match cluster.run_binary(level) {
        Ok(operator) => operator,
        Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
    };
    cluster
        .wait_for("orders", "Ready after the restart", is_settled)
        .await;
    let kept = credentials_password(cluster).await == password;
    second.stop().await;
    format!(
        "resumed from the cluster: Ready, generated password {}",
        if kept { "kept" } else { "regenerated" }
    )
}

async fn at_rest(cluster: &TestCluster, level: LevelId) -> String {
    let Some(sandbox) = cluster.sandbox_handle() else {
        return "not measured (needs the sandbox's request counters)".into();
    };
    let operator = cluster.run_operator(level);
    create_ready(cluster, DbBuilder::named("orders").build()).await;
    // Let the last status write and the watch events it causes settle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counters = sandbox.counters();
    counters.reset();
    // Someone else's annotation triggers a reconcile without changing
    // anything the operator owns.
    let touch = serde_json::json!({"metadata": {"annotations": {"example.com/touched": "yes"}}});
    let _ = cluster
        .api::<StatefulSet>()
        .patch("orders", &PatchParams::default(), &Patch::Merge(&touch))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while counters.get("get", "statefulsets") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconcile followed the annotation: {:?}",
            counters.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = counters.writes().saturating_sub(1);
    operator.stop().await;
    format!("{writes} writes")
}

/// When the server behind the database's Service started.
async fn server_started(cluster: &TestCluster) -> Option<String> {
    let client = connect(cluster, Role::Superuser, "orders").await?;
    client
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .await
        .ok()
        .map(|row| row.get(0))
}

async fn parameter_changed(cluster: &TestCluster, level: LevelId) -> String {
    let operator = cluster.run_operator(level);
    create_ready(cluster, DbBuilder::named("orders").version("15").build()).await;
    let before = server_started(cluster).await;
    let pods_before = children_state(cluster).await.1;
    assert!(
        before.is_some(),
        "the server's start time could not be read"
    );
    patch_spec(
        cluster,
        "orders",
        serde_json::json!({"parameters": {"work_mem": "8MB"}}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let settled = current(cluster).await.is_some_and(|db| {
            is_settled(&db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.configuration.as_ref())
                    .is_none_or(|c| c.applied)
        });
        let work_mem = match connect(cluster, Role::Superuser, "orders").await {
            Some(client) => client
                .query_one("SHOW work_mem", &[])
                .await
                .ok()
                .map(|row| row.get::<_, String>(0)),
            None => None,
        };
        if settled && work_mem.as_deref() == Some("8MB") {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "work_mem is {work_mem:?}, not 8MB, after {WAIT:?}; events:\n{}",
                cluster.events("orders").await.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A restart is what Kubernetes shows: the pod replaced or its container
    // restarted. The server's own start time is kept for the diagnosis.
    let after = server_started(cluster).await;
    let pods_after = children_state(cluster).await.1;
    let restarted = pods_after != pods_before;
    if restarted || after != before {
        // Shown with a failing matrix row: which restart it was.
        eprintln!(
            "ParameterChanged on level {}: server started {before:?}, now {after:?}; pods {pods_before:?}, now {pods_after:?}; events:\n{}",
            level.number(),
            cluster.events("orders").await.join("\n")
        );
    }
    let method = current(cluster)
        .await
        .and_then(|db| db.status?.configuration)
        .map(|c| format!("; status says {:?}", c.applied_by))
        .unwrap_or_default();
    operator.stop().await;
    if restarted {
        format!("work_mem is 8MB after a server restart{method}")
    } else {
        format!("work_mem is 8MB without a restart (reloaded){method}")
    }
}

/// The resourceVersion of every child, by kind and name, and the pods'
/// uids and restart counts.
async fn children_state(cluster: &TestCluster) -> (Vec<String>, Vec<String>) {
    let selector = ListParams::default().labels(&shared::names::instance_selector("orders"));
    let mut versions = Vec::new();
    macro_rules! versions_of {
        ($kind:ty) => {
            for object in cluster
                .api::<$kind>()
                .list(&selector)
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                versions.push(format!(
                    "{}/{}@{}",
                    <$kind as kube::Resource>::kind(&()),
                    object.name_any(),
                    object.resource_version().unwrap_or_default()
                ));
            }
        };
    }
    versions_of!(Secret);
    versions_of!(ConfigMap);
    versions_of!(Service);
    versions_of!(StatefulSet);
    let pods = cluster
        .api::<Pod>()
        .list(&selector)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|pod| {
            let restarts: i32 = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|c| c.iter().map(|c| c.restart_count).sum())
                .unwrap_or(0);
            format!(
                "{}:{}:{restarts}",
                pod.name_any(),
                pod.uid().unwrap_or_default()
            )
        })
        .collect();
    (versions, pods)
}

async fn operator_swap(cluster: &TestCluster, level: LevelId) -> String {
    let first = cluster.run_operator(LevelId::One);
    create_ready(cluster, DbBuilder::named("orders").build()).await;
    // Let the last status write and the watch events it causes settle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.stop().await;
    let (children, pods) = children_state(cluster).await;
    if let Some(sandbox) = cluster.sandbox_handle() {
        sandbox.counters().reset();
    }
    let second = cluster.run_operator(level);
    // The new operator reconciles the database when it starts, reading its
    // StatefulSet first; then it has a moment to write anything it wants.
    let deadline = tokio::time::Instant::now() + WAIT;
    if let Some(sandbox) = cluster.sandbox_handle() {
        while sandbox.counters().get("get", "statefulsets") == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new operator never reconciled: {:?}",
                sandbox.counters().snapshot()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster
        .wait_for("orders", "Ready under the new operator", is_settled)
        .await;
    let (children_after, pods_after) = children_state(cluster).await;
    second.stop().await;
    let rewritten: Vec<String> = children_after
        .iter()
        .filter(|c| !children.contains(c))
        .map(|c| c.split('@').next().unwrap_or_default().to_string())
        .collect();
    let pods_kept = pods == pods_after && !pods.is_empty();
    let restarts: i32 = pods_after
        .iter()
        .filter_map(|p| p.rsplit(':').next()?.parse::<i32>().ok())
        .sum();
    format!(
        "{}; {}, {restarts} restarts",
        if rewritten.is_empty() {
            "no child rewritten".to_string()
        } else {
            format!("rewritten: {}", rewritten.join(", "))
        },
        if pods_kept {
            "the pod kept running"
        } else {
            "the pod was replaced"
        }
    )
}

async fn restart_mid_upgrade(cluster: &TestCluster, level: LevelId) -> String {
    let first = cluster.run_operator(level);
    create_ready(cluster, DbBuilder::named("orders").version("16.2").build()).await;
    patch_spec(cluster, "orders", serde_json::json!({"version": "16.4"})).await;
    // Killed once the new image is in the StatefulSet: the rollout is under way.
    cluster
        .wait_for_object::<StatefulSet>("orders", "on postgres:16.4", |sts| {
            image_of(sts).as_deref() == Some("postgres:16.4")
        })
        .await;
    // A level that records rollouts does so in the same reconcile, just
    // after the StatefulSet write.
    let mut started_at = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while started_at.is_none() && tokio::time::Instant::now() < deadline {
        started_at = current(cluster)
            .await
            .and_then(|db| db.status?.upgrade)
            .filter(|u| u.to_version == "16.4")
            .map(|u| u.started_at);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().await;
    let second = cluster.run_operator(level);
    let db = cluster
        .wait_for("orders", "Ready at 16.4", |db| {
            is_settled(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.current_version.as_deref())
                    == Some("16.4")
        })
        .await;
    let reports = server_version(cluster).await;
    second.stop().await;
    let rollout = match db.status.and_then(|s| s.upgrade) {
        None => "no rollout recorded".to_string(),
        Some(upgrade) => format!(
            "the rollout resumed (start time {}) and {}",
            if Some(&upgrade.started_at) == started_at.as_ref() {
                "kept"
            } else {
                "lost"
            },
            match upgrade.phase {
                shared::api::UpgradePhase::Complete => "completed".to_string(),
                other => format!("ended {other:?}"),
            }
        ),
    };
    format!("Ready at 16.4; the server reports {reports}; {rollout}")
}

async fn major_upgrade_with_data(cluster: &TestCluster, level: LevelId) -> String {
    let operator = cluster.run_operator(level);
    let mut db = DbBuilder::named("orders").version("15").build();
    db.spec.upgrade = Some(shared::api::UpgradeSpec {
        allow_major: true,
        ..Default::default()
    });
    create_ready(cluster, db).await;
    let database = connect(cluster, Role::Owner, "orders")
        .await
        .expect("a Ready database has its Service and its owner's Secret");
    let written = database
        .batch_execute("CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2), (3);")
        .await;
    assert!(written.is_ok(), "writing rows failed: {written:?}");
    drop(database);
    patch_spec(cluster, "orders", serde_json::json!({"version": "16"})).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let outcome = loop {
        let db = current(cluster).await;
        let at_16 = db.as_ref().is_some_and(|db| {
            is_settled(db)
                && db
                    .status
                    .as_ref()
                    .and_then(|s| s.current_version.as_deref())
                    == Some("16")
        });
        if at_16 {
            break major_upgrade_outcome(cluster).await;
        }
        // A container that exited is asked for its log (Level 1 swapped the
        // image under the old data directory).
        let restarted = cluster
            .api::<Pod>()
            .get_opt("orders-0")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.status?.container_statuses)
            .is_some_and(|c| c.iter().any(|c| c.restart_count > 0));
        let log = if restarted {
            cluster
                .api::<Pod>()
                .logs(
                    "orders-0",
                    &kube::api::LogParams {
                        previous: true,
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_default()
        } else {
            String::new()
        };
        if log.contains("database files are incompatible with server") {
            let image = live_image(cluster).await.unwrap_or_default();
            // The status follows the pod a reconcile later.
            let mut ready = true;
            let settle = tokio::time::Instant::now() + Duration::from_secs(10);
            while ready && tokio::time::Instant::now() < settle {
                ready = current(cluster)
                    .await
                    .and_then(|db| condition(&db, "Ready"))
                    .is_some_and(|(s, _)| s == "True");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            break format!(
                "image swapped to {image}; {}: the server refuses the data directory 15 wrote",
                if ready { "still Ready" } else { "not Ready" }
            );
        }
        if tokio::time::Instant::now() > deadline {
            let pod = cluster
                .api::<Pod>()
                .get_opt("orders-0")
                .await
                .ok()
                .flatten();
            panic!(
                "neither upgraded nor crash-looping within {WAIT:?}\nstatus: {}\npod: {}\npod log:\n{log}\nevents:\n{}",
                serde_json::to_string_pretty(&db.and_then(|d| d.status)).unwrap_or_default(),
                serde_json::to_string_pretty(&pod.and_then(|p| p.status)).unwrap_or_default(),
                cluster.events("orders").await.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    operator.stop().await;
    outcome
}

/// After a major upgrade to 16: where the data is, what the server says,
/// whether the rows came along and the old volume stayed.
async fn major_upgrade_outcome(cluster: &TestCluster) -> String {
    let sts = cluster
        .api::<StatefulSet>()
        .get_opt("orders")
        .await
        .ok()
        .flatten();
    let on_new_volume = sts
        .as_ref()
        .and_then(|s| s.spec.as_ref()?.template.spec.as_ref()?.volumes.clone())
        .is_some_and(|volumes| {
            volumes.iter().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == "orders-data-16")
            })
        });
    let reports = server_version(cluster).await;
    let major = reports.split('.').next().unwrap_or_default().to_string();
    let rows = match connect(cluster, Role::Owner, "orders").await {
        Some(database) => database
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .ok(),
        None => None,
    };
    let claims = cluster
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|c| c.name_any())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let kept = claims.iter().any(|c| c == "data-orders-0")
        && claims.iter().any(|c| c == "orders-backup-16");
    format!(
        "Ready at 16 on {} volume, the server reports {major}; {}; the 15 volume and the dump {}",
        if on_new_volume { "a new" } else { "the old" },
        match rows {
            Some(rows) => format!("{rows} rows intact"),
            None => "rows lost".into(),
        },
        if kept { "kept" } else { "gone" }
    )
}
