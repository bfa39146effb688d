//! A cluster to test against, and the operator running on it.
//!
//! By default each [`TestCluster`] is its own in-process sandbox; when
//! `PGDB_TEST_KUBECONFIG` names a kubeconfig (a kind cluster, say) the same
//! tests run there instead, each in a fresh namespace deleted afterwards.
//! The operator runs in-process from a level's library, or as the level's
//! real binary, as a learner runs it. Waits are bounded, and a wait that
//! times out panics with what was expected, the object's status and its
//! recent Events: this module is test infrastructure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt, Resource};
use sandbox::{Sandbox, SandboxConfig};
use serde::de::DeserializeOwned;
use shared::api::PostgresDB;
use shared::runner::{self, RunOptions};
use tokio::sync::oneshot;

use crate::levels::LevelId;

/// How long any wait lasts before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);
/// The field manager the harness applies with.
const MANAGER: &str = "pgdb-tests";

/// Why the harness could not set up a cluster.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The sandbox did not start.
    #[error("the sandbox did not start")]
    Sandbox(#[source] sandbox::Error),
    /// The kubeconfig in PGDB_TEST_KUBECONFIG could not be used.
    #[error("cannot use the kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An API call failed.
    #[error("failed to {action}")]
    Kube {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A file could not be written or a process started.
    #[error("failed to {action}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A manifest did not parse.
    #[error("manifest is not a PostgresDB")]
    Manifest(#[source] serde_yaml::Error),
}

fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> HarnessError {
    let action = action.into();
    move |source| HarnessError::Kube {
        action,
        source: Box::new(source),
    }
}

/// A cluster with the CRD installed and a namespace of the test's own.
pub struct TestCluster {
    sandbox: Option<Sandbox>,
    client: Client,
    namespace: String,
    kubeconfig: PathBuf,
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{:x}{:x}",
        std::process::id(),
        nanos % 0xfffff,
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

impl TestCluster {
    /// A sandbox, or the cluster named by `PGDB_TEST_KUBECONFIG`.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with(SandboxConfig::default()).await
    }

    /// A sandbox configured so, or the cluster named by `PGDB_TEST_KUBECONFIG`.
    pub async fn start_with(config: SandboxConfig) -> Result<Self, HarnessError> {
        match std::env::var_os("PGDB_TEST_KUBECONFIG") {
            Some(path) => Self::external(PathBuf::from(path)).await,
            None => Self::sandbox(config).await,
        }
    }

    /// A new in-process sandbox.
    pub async fn sandbox(config: SandboxConfig) -> Result<Self, HarnessError> {
        let sandbox = Sandbox::start(config)
            .await
            .map_err(HarnessError::Sandbox)?;
        let kubeconfig =
            std::env::temp_dir().join(format!("pgdb-sandbox-{}.kubeconfig", unique_suffix()));
        sandbox
            .write_kubeconfig(&kubeconfig)
            .map_err(HarnessError::Sandbox)?;
        let client = sandbox.client();
        Self::prepare(Some(sandbox), client, kubeconfig).await
    }

    async fn external(path: PathBuf) -> Result<Self, HarnessError> {
        let wrap = |source: Box<dyn std::error::Error + Send + Sync>| HarnessError::Kubeconfig {
            path: path.clone(),
            source,
        };
        let file = Kubeconfig::read_from(&path).map_err(|e| wrap(Box::new(e)))?;
        let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .map_err(|e| wrap(Box::new(e)))?;
        let client = Client::try_from(config).map_err(|e| wrap(Box::new(e)))?;
        Self::prepare(None, client, path).await
    }

    async fn prepare(
        sandbox: Option<Sandbox>,
        client: Client,
        kubeconfig: PathBuf,
    ) -> Result<Self, HarnessError> {
        install_crd(&client).await?;
        let namespace = format!("pgdb-test-{}", unique_suffix());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .map_err(kube_error(format!("create namespace {namespace}")))?;
        Ok(Self {
            sandbox,
            client,
            namespace,
            kubeconfig,
        })
    }

    /// The sandbox, when the cluster is one (fault injection, counters).
    pub fn sandbox_handle(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }

    /// A client for the cluster.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The test's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A kubeconfig file for other processes (the operator binary, kubectl).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// An API for a namespaced kind in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates a `PostgresDB` in the test's namespace.
    pub async fn create(&self, db: &PostgresDB) -> Result<PostgresDB, HarnessError> {
        self.api::<PostgresDB>()
            .create(&PostParams::default(), db)
            .await
            .map_err(kube_error("create the PostgresDB"))
    }

    /// Applies a `PostgresDB` manifest (YAML) in the test's namespace.
    pub async fn apply_manifest(&self, yaml: &str) -> Result<PostgresDB, HarnessError> {
        let mut db: PostgresDB = serde_yaml::from_str(yaml).map_err(HarnessError::Manifest)?;
        db.metadata.namespace = Some(self.namespace.clone());
        let name = db.metadata.name.clone().unwrap_or_default();
        self.api::<PostgresDB>()
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&db),
            )
            .await
            .map_err(kube_error(format!("apply PostgresDB {name}")))
    }

    /// Merge-patches a `PostgresDB`'s spec, as `kubectl patch --type merge` would.
    pub async fn patch_spec(
        &self,
        name: &str,
        spec: serde_json::Value,
    ) -> Result<PostgresDB, HarnessError> {
        let patch = serde_json::json!({ "spec": spec });
        self.api::<PostgresDB>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_error(format!("patch PostgresDB {name}")))
    }

    /// Starts `level` in-process, watching only the test's namespace. It
    /// connects as its binary does, with its own client and User-Agent.
    pub fn run_operator(&self, level: LevelId) -> Operator {
        let (stop, stopped) = oneshot::channel::<()>();
        let options = RunOptions {
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        };
        let kubeconfig = self.kubeconfig.clone();
        let task = tokio::spawn(async move {
            let agent = shared::cli::user_agent(level.name());
            let client = shared::cli::connect(Some(&kubeconfig), &agent).await?;
            runner::run(level.build(), client, options, async move {
                let _ = stopped.await;
            })
            .await
        });
        Operator::InProcess {
            stop: Some(stop),
            task,
        }
    }

    /// Starts `level`'s binary, as a learner runs it, watching only the
    /// test's namespace. Its output goes to a log file named in failures.
    pub fn run_binary(&self, level: LevelId) -> Result<Operator, HarnessError> {
        self.run_binary_with(level, &[])
    }

    /// [`TestCluster::run_binary`], with more command-line arguments.
    pub fn run_binary_with(
        &self,
        level: LevelId,
        extra: &[&str],
    ) -> Result<Operator, HarnessError> {
        let binary = level.binary();
        let log = std::env::temp_dir().join(format!("{}-{}.log", level.name(), unique_suffix()));
        let file = std::fs::File::create(&log).map_err(|source| HarnessError::Io {
            action: format!("create {}", log.display()),
            source,
        })?;
        let err = file.try_clone().map_err(|source| HarnessError::Io {
            action: "duplicate a file handle".into(),
            source,
        })?;
        let child = tokio::process::Command::new(&binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "--namespace",
                &self.namespace,
                "--health-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HarnessError::Io {
                action: format!(
                    "start {} (build it with `cargo build -p {}`)",
                    binary.display(),
                    level.name()
                ),
                source,
            })?;
        Ok(Operator::Process { child, log })
    }

    /// Waits until the database satisfies `check`; panics with its status
    /// and Events when it does not within [`WAIT`].
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&PostgresDB) -> bool,
    ) -> PostgresDB {
        let api = self.api::<PostgresDB>();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(db)) = api.get_opt(name).await
                && check(&db)
            {
                return db;
            }
            if tokio::time::Instant::now() > deadline {
                let status = api
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|d| d.status);
                panic!(
                    "timed out after {WAIT:?} waiting for PostgresDB {name} to be {what}\nstatus: {}\nrecent events:\n{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default(),
                    self.events(name).await.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the object of kind `K` named `name` satisfies `check`
    /// (`None` when absent); panics with the object and the database's
    /// Events when it does not within [`WAIT`].
    pub async fn wait_for_object<K>(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(Option<&K>) -> bool,
    ) -> Option<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let object = api.get_opt(name).await.ok().flatten();
            if check(object.as_ref()) {
                return object;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out after {WAIT:?} waiting for {} {name} to be {what}; it is {object:?}\nevents in the namespace:\n{}",
                    K::kind(&()),
                    self.all_events().await.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `Type Reason: note` of the Events about `name`, oldest first.
    pub async fn events(&self, name: &str) -> Vec<String> {
        self.event_list()
            .await
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(describe_event)
            .collect()
    }

    /// The first Event about `name` matching `check` to appear within
    /// `within` (Events are published after the writes they report).
    pub async fn event_within(
        &self,
        name: &str,
        within: Duration,
        check: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(found) = self.events(name).await.into_iter().find(|e| check(e)) {
                return Some(found);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn all_events(&self) -> Vec<String> {
        self.event_list()
            .await
            .into_iter()
            .map(describe_event)
            .collect()
    }

    async fn event_list(&self) -> Vec<Event> {
        let mut events = self
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events
    }

    /// Deletes the test's namespace and stops the sandbox.
    pub async fn finish(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::default())
            .await;
        if let Some(sandbox) = self.sandbox {
            sandbox.shutdown().await;
            let _ = std::fs::remove_file(&self.kubeconfig);
        }
    }
}

fn describe_event(event: Event) -> String {
    let series = event
        .series
        .map(|s| format!(" (x{})", s.count))
        .unwrap_or_default();
    format!(
        "{} {}: {}{series}",
        event.type_.unwrap_or_default(),
        event.reason.unwrap_or_default(),
        event.note.unwrap_or_default()
    )
}

/// Installs (or updates) the CRD with server-side apply and waits until it is served.
pub async fn install_crd(client: &Client) -> Result<(), HarnessError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = PostgresDB::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(kube_error("install the CRD"))?;
    let databases: Api<PostgresDB> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match databases.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(source) if tokio::time::Instant::now() > deadline => {
                return Err(kube_error("list postgresdbs after installing the CRD")(
                    source,
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// An operator the harness started.
pub enum Operator {
    /// Running in this process.
    InProcess {
        /// Stops it.
        stop: Option<oneshot::Sender<()>>,
        /// Its task.
        task: tokio::task::JoinHandle<Result<(), shared::Error>>,
    },
    /// Running as a child process.
    Process {
        /// The process.
        child: tokio::process::Child,
        /// Where its output goes.
        log: PathBuf,
    },
}

impl Operator {
    /// Stops the operator gracefully (SIGTERM for a process) and checks
    /// that it exited cleanly.
    pub async fn stop(self) {
        match self {
            Operator::InProcess { mut stop, task } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                match tokio::time::timeout(WAIT, task).await {
                    Ok(Ok(Ok(()))) => {}
                    other => panic!("the operator did not stop cleanly: {other:?}"),
                }
            }
            Operator::Process { mut child, log } => {
                if let Some(pid) = child.id() {
                    let _ = tokio::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                        .await;
                }
                let status = tokio::time::timeout(WAIT, child.wait()).await;
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    matches!(status, Ok(Ok(s)) if s.success()),
                    "the operator binary did not exit cleanly on SIGTERM: {status:?}\nits output ({}):\n{output}",
                    log.display()
                );
                let _ = std::fs::remove_file(&log);
            }
        }
    }

    /// Stops the operator abruptly, as a crash or a killed pod would.
    pub async fn kill(self) {
        match self {
            Operator::InProcess { task, .. } => {
                task.abort();
                let _ = task.await;
            }
            Operator::Process { mut child, log } => {
                let _ = child.kill().await;
                let _ = std::fs::remove_file(&log);
            }
        }
    }
}
