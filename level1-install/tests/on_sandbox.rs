//! Level 1 against a real API server: the embedded sandbox, with its
//! simulated pod runtime (pods start and pass their probes at once).
//!
//! Each test starts its own sandbox, installs the CRD through the API,
//! runs the Level 1 controller in-process over HTTP, and drives it the way
//! a user would: apply a `PostgresDB`, edit or delete children, change the
//! spec, and read status and Events.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use sandbox::{Sandbox, SandboxConfig};
use serde_json::json;
use shared::api::{PostgresDB, PostgresDBSpec, StorageSpec};
use shared::health::Readiness;
use shared::runner::{self, LeaderElection, RunOptions};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);

/// A sandbox with the CRD installed and Level 1 running against it.
struct Cluster {
    sandbox: Sandbox,
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    operator: tokio::task::JoinHandle<Result<(), shared::Error>>,
}

impl Cluster {
    async fn start() -> Self {
        let sandbox = Sandbox::start(SandboxConfig::default())
            .await
            .expect("the sandbox starts");
        let client = sandbox.client();
        install_crd(&client).await;
        let (stop, stopped) = oneshot::channel::<()>();
        let operator = tokio::spawn(runner::run(
            level1_install::level(),
            client.clone(),
            RunOptions::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            sandbox,
            client,
            stop: Some(stop),
            operator,
        }
    }

    fn databases(&self) -> Api<PostgresDB> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create(&self, db: PostgresDB) -> PostgresDB {
        self.databases()
            .create(&PostParams::default(), &db)
            .await
            .expect("the PostgresDB is accepted")
    }

    /// Waits until `check` holds for the database, failing with its status and Events.
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&PostgresDB) -> bool,
    ) -> PostgresDB {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let db = self
                .databases()
                .get_opt(name)
                .await
                .expect("the API answers");
            if let Some(db) = db.filter(|db| check(db)) {
                return db;
            }
            if tokio::time::Instant::now() > deadline {
                let db = self.databases().get_opt(name).await.ok().flatten();
                panic!(
                    "timed out after {WAIT:?} waiting for {name} to be {what}\nstatus: {}\nevents:\n{}",
                    serde_json::to_string_pretty(&db.and_then(|d| d.status)).unwrap_or_default(),
                    self.events(name).await.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until an object of kind `K` satisfies `check` (None: absent).
    async fn wait_for_object<K>(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(Option<&K>) -> bool,
    ) -> Option<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let object = self
                .api::<K>()
                .get_opt(name)
                .await
                .expect("the API answers");
            if check(object.as_ref()) {
                return object;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {name} to be {what}; it is {object:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Events about `name` once one satisfies `check` (Events are
    /// published after the writes they report), or after [`WAIT`].
    async fn events_once(&self, name: &str, check: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let events = self.events(name).await;
            if events.iter().any(|e| check(e)) || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `reason: note` of every Event about `name`, oldest first.
    async fn events(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = self.api();
        let list = events
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        list.into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                format!(
                    "{} {}: {}",
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default()
                )
            })
            .collect()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(WAIT, &mut self.operator).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the operator stops cleanly: {result:?}"
        );
        self.sandbox.shutdown().await;
    }
}

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &PostgresDB::crd())
        .await
        .expect("the CRD is accepted");
    let databases: Api<PostgresDB> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    while databases.list(&ListParams::default()).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CRD is never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Builds `PostgresDB` objects.
struct Db(PostgresDB);

impl Db {
    fn named(name: &str) -> Self {
        let spec = PostgresDBSpec {
            version: "16.4".into(),
            image: None,
            storage: StorageSpec {
                size: "1Gi".into(),
                storage_class_name: None,
            },
            resources: shared::api::ResourcesSpec::default_for_database(),
            database: Default::default(),
            parameters: Default::default(),
            paused: false,
            upgrade: None,
        };
        Self(PostgresDB::new(name, spec))
    }
    fn version(mut self, version: &str) -> Self {
        self.0.spec.version = version.into();
        self
    }
    fn build(self) -> PostgresDB {
        self.0
    }
}

fn condition(db: &PostgresDB, type_: &str) -> Option<(String, String)> {
    let status = db.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

fn is_ready(db: &PostgresDB) -> bool {
    condition(db, "Ready").is_some_and(|(s, _)| s == "True")
        && condition(db, "Progressing").is_some_and(|(s, _)| s == "False")
}

#[tokio::test]
async fn a_database_becomes_ready_with_its_secrets_config_services_and_statefulset() {
    let cluster = Cluster::start().await;
    cluster.create(Db::named("orders").build()).await;
    let db = cluster.wait_for("orders", "Ready", is_ready).await;
    let status = db.status.expect("status");
    assert_eq!(status.phase, Some(shared::api::Phase::Ready));
    assert_eq!(status.current_version.as_deref(), Some("16.4"));
    assert_eq!(status.ready_replicas, 1);
    assert_eq!(
        status.credentials_secret.as_deref(),
        Some("orders-credentials")
    );
    assert_eq!(
        status.endpoint.map(|e| (e.host, e.port)),
        Some(("orders.default.svc".into(), 5432))
    );
    assert_eq!(status.observed_generation, db.metadata.generation);
    for name in ["orders-credentials", "orders-superuser"] {
        let secret = cluster
            .api::<Secret>()
            .get(name)
            .await
            .expect("the Secret exists");
        assert_eq!(secret.owner_references()[0].name, "orders");
    }
    cluster
        .api::<ConfigMap>()
        .get("orders-config")
        .await
        .expect("the ConfigMap exists");
    cluster
        .api::<Service>()
        .get("orders")
        .await
        .expect("the read-write Service exists");
    cluster
        .api::<Service>()
        .get("orders-headless")
        .await
        .expect("the headless Service exists");
    let sts = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("the StatefulSet exists");
    let image = sts
        .spec
        .and_then(|s| s.template.spec?.containers[0].image.clone());
    assert_eq!(image.as_deref(), Some("postgres:16.4"));
    let events = cluster
        .events_once("orders", |e| e.contains("DatabaseReady"))
        .await;
    assert!(events.iter().any(|e| e.contains("Created")), "{events:?}");
    assert!(
        events.iter().any(|e| e.contains("DatabaseReady")),
        "{events:?}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn at_rest_a_reconcile_reads_but_makes_no_writes() {
    let cluster = Cluster::start().await;
    cluster.create(Db::named("orders").build()).await;
    cluster.wait_for("orders", "Ready", is_ready).await;
    // Let the last status write and its watch events settle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counters = cluster.sandbox.counters();
    counters.reset();
    // An annotation added by someone else triggers a reconcile (the
    // StatefulSet is watched) without changing anything the operator owns.
    let touch = json!({"metadata": {"annotations": {"example.com/touched": "yes"}}});
    cluster
        .api::<StatefulSet>()
        .patch("orders", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .expect("patches");
    let deadline = tokio::time::Instant::now() + WAIT;
    while counters.get("get", "statefulsets") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconcile followed the change: {:?}",
            counters.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes: Vec<_> = counters
        .snapshot()
        .into_iter()
        .filter(|((verb, _), _)| sandbox::counters::WRITE_VERBS.contains(&verb.as_str()))
        .collect();
    assert_eq!(
        writes,
        [(("patch".to_string(), "statefulsets".to_string()), 1)],
        "only the test's own patch is a write"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_deleted_child_is_recreated_and_an_edited_one_is_put_back() {
    let cluster = Cluster::start().await;
    cluster.create(Db::named("orders").build()).await;
    cluster.wait_for("orders", "Ready", is_ready).await;

    let services = cluster.api::<Service>();
    let before = services.get("orders").await.expect("exists").uid();
    services
        .delete("orders", &DeleteParams::default())
        .await
        .expect("deletes");
    cluster
        .wait_for_object::<Service>("orders", "recreated", |s| {
            s.is_some_and(|s| s.uid() != before)
        })
        .await;

    let patch = json!({"data": {"postgresql.conf": "edited by hand\n"}});
    cluster
        .api::<ConfigMap>()
        .patch(
            "orders-config",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("edits");
    cluster
        .wait_for_object::<ConfigMap>("orders-config", "restored", |c| {
            c.and_then(|c| c.data.as_ref()?.get("postgresql.conf").cloned())
                .is_some_and(|conf| conf.contains("listen_addresses"))
        })
        .await;
    let events = cluster
        .events_once("orders", |e| e.contains("DriftRepaired"))
        .await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("DriftRepaired") && e.contains("ConfigMap/orders-config")),
        "{events:?}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn an_unsupported_version_is_refused_naming_the_field_and_nothing_is_created() {
    let cluster = Cluster::start().await;
    cluster
        .create(Db::named("legacy").version("12").build())
        .await;
    let db = cluster
        .wait_for("legacy", "refused", |db| {
            condition(db, "Ready").is_some_and(|(s, r)| s == "False" && r == "InvalidVersion")
        })
        .await;
    let status = db.status.expect("status");
    assert_eq!(status.phase, Some(shared::api::Phase::Invalid));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert!(
        ready.message.starts_with("spec.version:"),
        "{}",
        ready.message
    );
    assert!(
        cluster
            .api::<StatefulSet>()
            .get_opt("legacy")
            .await
            .expect("answers")
            .is_none()
    );
    assert!(
        cluster
            .api::<Secret>()
            .get_opt("legacy-credentials")
            .await
            .expect("answers")
            .is_none()
    );
    let events = cluster
        .events_once("legacy", |e| e.starts_with("Warning InvalidVersion"))
        .await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Warning InvalidVersion")),
        "{events:?}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_spec_the_schema_rejects_never_reaches_the_operator() {
    let cluster = Cluster::start().await;
    let error = cluster
        .databases()
        .create(
            &PostParams::default(),
            &Db::named("bad").version("sixteen").build(),
        )
        .await
        .expect_err("the API server validates the pattern");
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("spec.version")),
        "{error:?}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_storage_shrink_is_refused_and_the_volume_left_as_it_is() {
    let cluster = Cluster::start().await;
    cluster.create(Db::named("orders").build()).await;
    cluster.wait_for("orders", "Ready", is_ready).await;
    let sts_before = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("exists");
    let patch = json!({"spec": {"storage": {"size": "500Mi"}}});
    cluster
        .databases()
        .patch("orders", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the schema accepts it");
    let db = cluster
        .wait_for("orders", "refused", |db| {
            condition(db, "Ready").is_some_and(|(_, r)| r == "RefusedStorageShrink")
        })
        .await;
    assert_eq!(
        db.status.and_then(|s| s.phase),
        Some(shared::api::Phase::Invalid)
    );
    let sts_after = cluster
        .api::<StatefulSet>()
        .get("orders")
        .await
        .expect("exists");
    assert_eq!(
        sts_after.resource_version(),
        sts_before.resource_version(),
        "the StatefulSet was not touched"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_paused_database_is_not_repaired_until_it_is_resumed() {
    let cluster = Cluster::start().await;
    cluster.create(Db::named("orders").build()).await;
    cluster.wait_for("orders", "Ready", is_ready).await;
    let pause = json!({"spec": {"paused": true}});
    cluster
        .databases()
        .patch("orders", &PatchParams::default(), &Patch::Merge(&pause))
        .await
        .expect("pauses");
    cluster
        .wait_for("orders", "Paused", |db| {
            db.status.as_ref().and_then(|s| s.phase) == Some(shared::api::Phase::Paused)
        })
        .await;
    cluster
        .api::<Service>()
        .delete("orders", &DeleteParams::default())
        .await
        .expect("deletes");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        cluster
            .api::<Service>()
            .get_opt("orders")
            .await
            .expect("answers")
            .is_none(),
        "a paused database is left alone"
    );
    let resume = json!({"spec": {"paused": false}});
    cluster
        .databases()
        .patch("orders", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .expect("resumes");
    cluster
        .wait_for_object::<Service>("orders", "recreated", |s| s.is_some())
        .await;
    cluster.stop().await;
}

#[tokio::test]
async fn the_operator_refuses_to_start_when_the_crd_is_not_installed() {
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("the sandbox starts");
    let result = runner::run(
        level1_install::level(),
        sandbox.client(),
        RunOptions::default(),
        std::future::pending(),
    )
    .await;
    let message = result.expect_err("no CRD").to_string();
    assert!(
        message.contains("level1-install crd | kubectl apply -f -"),
        "{message}"
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn with_leader_election_a_second_replica_stands_by() {
    let cluster = Cluster::start().await;
    let election = |holder: &str| LeaderElection {
        namespace: "default".into(),
        lease_name: "pgdb-operator".into(),
        holder: holder.into(),
        ttl: Duration::from_secs(15),
    };
    let first = Readiness::default();
    let second = Readiness::default();
    let (stop_first, first_stopped) = oneshot::channel::<()>();
    let (stop_second, second_stopped) = oneshot::channel::<()>();
    let one = tokio::spawn(runner::run(
        level1_install::level(),
        cluster.client.clone(),
        RunOptions {
            leader_election: Some(election("one")),
            readiness: first.clone(),
            ..Default::default()
        },
        async move {
            let _ = first_stopped.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !first.get() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first replica never leads"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let two = tokio::spawn(runner::run(
        level1_install::level(),
        cluster.client.clone(),
        RunOptions {
            leader_election: Some(election("two")),
            readiness: second.clone(),
            ..Default::default()
        },
        async move {
            let _ = second_stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !second.get(),
        "the second replica must not act while the first leads"
    );
    let _ = stop_second.send(());
    let _ = stop_first.send(());
    assert!(matches!(
        tokio::time::timeout(WAIT, two).await,
        Ok(Ok(Ok(())))
    ));
    assert!(matches!(
        tokio::time::timeout(WAIT, one).await,
        Ok(Ok(Ok(())))
    ));
    cluster.stop().await;
}
