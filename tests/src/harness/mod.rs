//! A cluster to test against, and the operator running on it.
//!
//! By default each [`TestCluster`] is its own in-process sandbox; when
//! `PGDB_TEST_KUBECONFIG` names a kubeconfig (a kind cluster, say) the same
//! tests run there instead, each in a fresh namespace deleted afterwards.
//! The operator runs in-process from a level's library, or as the level's
//! real binary, as a learner runs it. Waits are bounded ([`wait`]), and a
//! wait that times out fails with what was expected, the database's status
//! and the namespace's recent Events: this module is test infrastructure.
//!
//! Clusters are rationed: at most [`concurrent_clusters`] exist at once in
//! a test process, so that a wait's budget, which starts once its cluster
//! exists, holds on a two-core machine however many tests run.

pub mod in_cluster;
pub mod logs;
mod operator;
pub mod prometheus;
pub mod s3;
mod wait;

pub use operator::Operator;
pub use wait::{Failed, OrFail, Writes, ensure, eventually};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt, Resource};
use sandbox::{PostgresConfig, RuntimeKind, Sandbox, SandboxConfig};
use shared::api::PostgresDB;
use shared::backup::PostgresDBBackup;
use shared::runner::{self, RunOptions};
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};

use crate::levels::LevelId;

/// How long a wait lasts before the test fails, unless the test sizes its
/// cluster's budget to its work ([`TestCluster::with_budget`]).
pub const WAIT: Duration = Duration::from_secs(30);

/// How many clusters may exist at once in a test process:
/// `PGDB_TEST_CLUSTERS`, else two per core. Each runs an operator and
/// usually real PostgreSQL servers; more at once on two cores and the
/// budgets no longer measure the work.
pub fn concurrent_clusters() -> usize {
    std::env::var("PGDB_TEST_CLUSTERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            2 * std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
}

/// The clusters' ration (a tokio semaphore works across the runtimes of
/// several `#[tokio::test]`s).
fn cluster_permits() -> &'static Semaphore {
    static PERMITS: std::sync::OnceLock<Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(concurrent_clusters()))
}
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
    /// The CRD was installed but not served in time.
    #[error("the CRD was not served ({waited}); listing PostgresDBs last failed with: {last}")]
    CrdNotServed {
        /// The wait that timed out.
        waited: Failed,
        /// The last listing's error.
        last: String,
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
    budget: Duration,
    /// Whether [`TestCluster::run_operator`] deploys the level in the
    /// cluster ([`in_cluster`]) instead of running it in-process.
    in_cluster: bool,
    _permit: SemaphorePermit<'static>,
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
        let permit = take_permit().await;
        let sandbox = Sandbox::start(config)
            .await
            .map_err(HarnessError::Sandbox)?;
        let kubeconfig =
            std::env::temp_dir().join(format!("pgdb-sandbox-{}.kubeconfig", unique_suffix()));
        sandbox
            .write_kubeconfig(&kubeconfig)
            .map_err(HarnessError::Sandbox)?;
        let client = sandbox.client();
        Self::prepare(Some(sandbox), client, kubeconfig, permit).await
    }

    async fn external(path: PathBuf) -> Result<Self, HarnessError> {
        let permit = take_permit().await;
        let wrap = |source: Box<dyn std::error::Error + Send + Sync>| HarnessError::Kubeconfig {
            path: path.clone(),
            source,
        };
        let file = Kubeconfig::read_from(&path).map_err(|e| wrap(Box::new(e)))?;
        let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .map_err(|e| wrap(Box::new(e)))?;
        let client = Client::try_from(config).map_err(|e| wrap(Box::new(e)))?;
        Self::prepare(None, client, path, permit).await
    }

    async fn prepare(
        sandbox: Option<Sandbox>,
        client: Client,
        kubeconfig: PathBuf,
        permit: SemaphorePermit<'static>,
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
            budget: WAIT,
            in_cluster: false,
            _permit: permit,
        })
    }

    /// A sandbox whose pods run real PostgreSQL 15, with `budget` for its
    /// waits: the fixture of the real-server suite tests. Panics with the
    /// error's chain when the sandbox does not start.
    pub async fn real_postgres_15(budget: Duration) -> Self {
        match Self::sandbox(real_postgres(&[15])).await {
            Ok(cluster) => cluster.with_budget(budget),
            Err(error) => panic!("{}", shared::reconcile::error_chain(&error)),
        }
    }

    /// The same cluster, whose waits last `budget` (sized to the test's work).
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The same cluster, on which [`TestCluster::run_operator`] deploys
    /// the level as users do (`kubectl apply -k deploy/overlays/<crate>`):
    /// two replicas under their ServiceAccount, RBAC enforced. The
    /// sandbox's pods must run real processes (the real runtime).
    pub fn operators_in_cluster(mut self) -> Self {
        self.in_cluster = true;
        self
    }

    /// Whether operators run in the cluster ([`TestCluster::operators_in_cluster`]).
    pub fn runs_operators_in_cluster(&self) -> bool {
        self.in_cluster
    }

    /// How long a wait on this cluster lasts before the test fails.
    pub fn budget(&self) -> Duration {
        self.budget
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

    /// The `PostgresDB` `name`, `None` when absent. Read by listing the
    /// namespace, never by a GET: in the sandbox's request counts a GET of
    /// a `PostgresDB` is a reconcile beginning ([`TestCluster::settle`]).
    pub async fn database(&self, name: &str) -> Result<Option<PostgresDB>, Failed> {
        let list = self
            .api::<PostgresDB>()
            .list(&ListParams::default())
            .await
            .or_fail(format!("list PostgresDBs to read {name}"))?;
        Ok(list
            .items
            .into_iter()
            .find(|db| db.metadata.name.as_deref() == Some(name)))
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

    /// Starts `level` in-process, watching only the test's namespace (or,
    /// on a cluster whose operators run in it, deploys it there). It
    /// connects as its binary does, with its own client and User-Agent,
    /// and signs its Events with an instance name of its own
    /// ([`Operator::instance`]), so a test can tell two operators' Events apart.
    pub fn run_operator(&self, level: LevelId) -> Operator {
        self.run_operator_with(level, RunOptions::default())
    }

    /// [`TestCluster::run_operator`], with `options` (metrics, a shorter
    /// `metrics_interval`); their namespace and instance are the harness's.
    pub fn run_operator_with(&self, level: LevelId, options: RunOptions) -> Operator {
        if self.in_cluster {
            let kubeconfig = self.kubeconfig.clone();
            return Operator::InCluster {
                applied: tokio::spawn(async move {
                    in_cluster::apply_overlay(&kubeconfig, level).await
                }),
                client: self.client.clone(),
            };
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let instance = format!("{}-{}", level.name(), unique_suffix());
        let options = RunOptions {
            namespace: Some(self.namespace.clone()),
            instance: Some(instance.clone()),
            ..options
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
            instance,
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
        self.run_binary_env(level, extra, &[])
    }

    /// [`TestCluster::run_binary_with`], with environment variables set
    /// for the process (`RUST_LOG`, say).
    pub fn run_binary_env(
        &self,
        level: LevelId,
        extra: &[&str],
        env: &[(&str, &str)],
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
            .args(["--namespace", &self.namespace])
            // A port of its own unless the test names one.
            .args(
                (!extra.contains(&"--health-addr"))
                    .then_some(["--health-addr", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .args(extra)
            // Under capture, at trace level unless the test says otherwise.
            .envs(
                (logs::capturing() && !env.iter().any(|(k, _)| *k == "RUST_LOG"))
                    .then_some(("RUST_LOG", logs::BINARY_FILTER)),
            )
            .envs(env.iter().copied())
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

/// A sandbox configuration whose pods run real PostgreSQL, after checking
/// that the servers of `majors` are installed. A missing server fails the
/// test (never a silent pass) with how to install it.
pub fn real_postgres(majors: &[u32]) -> SandboxConfig {
    let postgres = PostgresConfig::default();
    for &major in majors {
        if let Err(missing) = postgres.binaries.server(major) {
            panic!(
                "this test runs real PostgreSQL {major} and {missing}; install it with \
                 `scripts/install-postgres.sh {major}` (PostgreSQL 15 and the client tools \
                 come from Debian's packages: run it as root, or \
                 `sudo apt-get install postgresql-15 postgresql-client-15`)"
            );
        }
    }
    SandboxConfig {
        runtime_kind: RuntimeKind::Postgres,
        postgres,
        ..Default::default()
    }
}

async fn take_permit() -> SemaphorePermit<'static> {
    // The semaphore is never closed.
    match cluster_permits().acquire().await {
        Ok(permit) => permit,
        Err(closed) => panic!("the clusters' ration was closed: {closed}"),
    }
}

/// Installs (or updates) the CRDs of deploy/base/crd.yaml (`PostgresDB` and
/// `PostgresDBBackup`) with server-side apply and waits until both are served.
pub async fn install_crd(client: &Client) -> Result<(), HarnessError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [PostgresDB::crd(), PostgresDBBackup::crd()] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(kube_error(format!("install the CRD {name}")))?;
    }
    let databases: Api<PostgresDB> = Api::all(client.clone());
    let backups: Api<PostgresDBBackup> = Api::all(client.clone());
    let last_error = std::sync::Mutex::new(String::new());
    eventually(WAIT, "the CRDs are served", || async {
        let listed = match databases.list(&ListParams::default().limit(1)).await {
            Ok(_) => backups
                .list(&ListParams::default().limit(1))
                .await
                .map(|_| ()),
            Err(error) => Err(error),
        };
        Ok(match listed {
            Ok(()) => Some(()),
            Err(error) => {
                *last_error.lock().unwrap_or_else(|e| e.into_inner()) = error.to_string();
                None
            }
        })
    })
    .await
    .map_err(|failed| HarnessError::CrdNotServed {
        waited: failed,
        last: last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    })
}
