//! An embedded Kubernetes control plane for tests and for learning.
//!
//! [`Sandbox::start`] brings up, inside the current process, an API server
//! on `127.0.0.1` that speaks the Kubernetes REST protocol (discovery, CRUD,
//! watch, the four patch formats, subresources, CustomResourceDefinitions)
//! plus the controllers a cluster runs behind it (namespaces, garbage
//! collection, StatefulSets, Jobs, volume binding, endpoints, a scheduler
//! and a kubelet with a simulated pod runtime). kube-rs clients and kubectl talk to it as
//! to any cluster; tests can also inject faults and count requests.
//!
//! The modules follow the path of a request: [`server`] (HTTP) →
//! [`cluster`] (the write path) → [`store`] (storage and history), with
//! [`registry`], [`builtin`], [`schema`], [`patch`], [`apply`] and
//! [`selector`] supplying the rules, [`watch`] streaming changes, and
//! [`controllers`] plus [`runtime`] acting on them.

pub mod apply;
pub mod auth;
pub mod backoff;
pub mod builtin;
pub mod cluster;
pub mod controllers;
pub mod convert;
pub mod counters;
pub mod error;
pub mod exec;
pub mod faults;
pub mod fieldvalidation;
pub mod jsonpath;
pub mod lists;
pub mod meta;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod pgruntime;
pub mod portforward;
pub mod printers;
pub mod protobuf;
pub mod registry;
pub mod runtime;
pub mod scheduling;
pub mod schema;
pub mod selector;
pub mod server;
pub mod stats;
pub mod store;
pub mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch as tokio_watch;
use tokio::task::JoinHandle;

pub use backoff::BackOffConfig;
pub use counters::{Counters, RequestKind};
pub use error::{Error, Result};
pub use faults::Faults;
pub use pgruntime::{KillKind, PostgresConfig, PostgresRuntime};
pub use runtime::{
    ContainerReport, ContainerState, ExitRule, PodRuntime, SimulatedConfig, SimulatedRuntime,
    VolumeUsage,
};

use cluster::{Cluster, WriteOptions};

/// How to start a sandbox.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// The pod runtime; `None` uses the one `runtime_kind` names.
    pub runtime: Option<Arc<dyn PodRuntime>>,
    /// Which built-in runtime runs pods when `runtime` is `None`.
    pub runtime_kind: RuntimeKind,
    pub simulated: SimulatedConfig,
    /// Settings of the real-PostgreSQL runtime.
    pub postgres: PostgresConfig,
    /// How many changes watches can be resumed across (the watch cache size).
    pub watch_history: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Largest accepted request body (the real server's limit is 3 MiB).
    pub max_body_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            port: 0,
            runtime: None,
            // Tests expect the simulated runtime's instant pods unless they
            // ask for real processes; `pgdb-sandbox` defaults to `Auto`.
            runtime_kind: RuntimeKind::Simulated,
            simulated: SimulatedConfig::default(),
            postgres: PostgresConfig::default(),
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(1),
            max_body_bytes: 3 * 1024 * 1024,
        }
    }
}

/// Which built-in pod runtime a sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RuntimeKind {
    /// Real PostgreSQL when server binaries are installed, else simulated.
    #[default]
    Auto,
    /// Real PostgreSQL ([`PostgresRuntime`]); starting fails without binaries.
    Postgres,
    /// Nothing runs ([`SimulatedRuntime`]).
    Simulated,
}

/// A running control plane. Dropping it stops everything.
pub struct Sandbox {
    addr: SocketAddr,
    cluster: Arc<Cluster>,
    faults: Arc<Faults>,
    counters: Arc<Counters>,
    simulated: Option<Arc<SimulatedRuntime>>,
    postgres: Option<Arc<PostgresRuntime>>,
    runtime_description: String,
    client: kube::Client,
    shutdown: tokio_watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    https_addr: SocketAddr,
    https_server: Option<JoinHandle<()>>,
    controllers: controllers::Controllers,
}

/// Objects every cluster starts with.
fn bootstrap(c: &Cluster) -> Result<()> {
    let w = WriteOptions::manager("kube-apiserver");
    let ns_rt = c.rt("", "namespaces")?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        c.create(&ns_rt, "", json!({"metadata": {"name": ns}}), &w)?;
    }
    let node_rt = c.rt("", "nodes")?;
    let node = json!({
        "metadata": {"name": controllers::NODE_NAME, "labels": {"kubernetes.io/hostname": controllers::NODE_NAME, "kubernetes.io/os": "linux"}},
        "spec": {},
        "status": {
            "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": controllers::NODE_NAME}],
            "nodeInfo": {"kubeletVersion": format!("v1.{}.0-sandbox", registry::KUBE_MINOR), "containerRuntimeVersion": "sandbox://simulated", "operatingSystem": "linux", "architecture": "amd64"},
        },
    });
    c.create(&node_rt, "", node, &w)?;
    let svc_rt = c.rt("", "services")?;
    let svc = json!({"metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                     "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}});
    c.create(&svc_rt, "default", svc, &w)?;
    auth::policy::bootstrap(c)?;
    Ok(())
}

impl Sandbox {
    /// Starts the API server and controllers in this process.
    pub async fn start(config: SandboxConfig) -> Result<Sandbox> {
        let (runtime, simulated, postgres, runtime_description) = choose_runtime(&config)?;
        let cluster = Arc::new(Cluster::new(config.watch_history, runtime));
        cluster.runtime.attach(&cluster);
        bootstrap(&cluster)?;
        let faults = Arc::new(Faults::default());
        let counters = Arc::new(Counters::default());
        let state = Arc::new(server::AppState {
            cluster: cluster.clone(),
            faults: faults.clone(),
            counters: counters.clone(),
            bookmark_interval: config.bookmark_interval,
            max_body_bytes: config.max_body_bytes,
        });
        let bind = format!("127.0.0.1:{}", config.port);
        let listener = tokio::net::TcpListener::bind(&bind)
            .await
            .map_err(|source| Error::Bind {
                addr: bind.clone(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr: bind, source })?;
        let (shutdown, rx) = tokio_watch::channel(false);
        let mut server_rx = rx.clone();
        let app = server::router(state);
        // The HTTPS listener in-cluster clients use ([`auth::https`]).
        let https_bind = "127.0.0.1:0".to_string();
        let https_listener =
            tokio::net::TcpListener::bind(&https_bind)
                .await
                .map_err(|source| Error::Bind {
                    addr: https_bind.clone(),
                    source,
                })?;
        let https_addr = https_listener.local_addr().map_err(|source| Error::Bind {
            addr: https_bind,
            source,
        })?;
        cluster.auth.set_in_cluster_endpoint(https_addr);
        let tls = auth::https::server_config(&cluster.auth)?;
        let https_server = tokio::spawn(auth::https::serve(
            https_listener,
            tls,
            app.clone(),
            rx.clone(),
        ));
        let server = tokio::spawn(async move {
            let stop = async move {
                let _ = server_rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "sandbox API server stopped");
            }
        });
        let controllers = controllers::spawn_all(cluster.clone()).map_err(Error::Controllers)?;
        let mut kc = kube::Config::new(
            format!("http://{addr}")
                .parse()
                .map_err(|_| Error::internal("bad server URL"))?,
        );
        kc.default_namespace = "default".into();
        kc.auth_info.token = Some(cluster.auth.admin_token().to_string().into());
        let client = kube::Client::try_from(kc).map_err(Error::Client)?;
        Ok(Sandbox {
            addr,
            cluster,
            faults,
            counters,
            simulated,
            postgres,
            runtime_description,
            client,
            shutdown,
            server: Some(server),
            https_addr,
            https_server: Some(https_server),
            controllers,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`: the listener pods use, serving the
    /// certificate [`Sandbox::ca_pem`] signed.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.https_addr)
    }

    /// The CA certificate (PEM) the HTTPS listener's certificate chains to.
    pub fn ca_pem(&self) -> &str {
        self.cluster.auth.ca_pem()
    }

    /// The admin user's bearer token (`kubernetes-admin`, in
    /// `system:masters`): what the kubeconfig and [`Sandbox::client`] send.
    pub fn admin_token(&self) -> &str {
        self.cluster.auth.admin_token()
    }

    /// A kube-rs client for this sandbox (default namespace `default`),
    /// authenticated as the admin user.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kubeconfig pointing at this sandbox (context `sandbox`): the
    /// HTTPS listener, its CA, and the admin user's token. (client-go, so
    /// kubectl, sends credentials only over TLS: a kubeconfig naming the
    /// plain listener would make kubectl anonymous.)
    pub fn kubeconfig_yaml(&self) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem());
        let cfg = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "sandbox", "cluster": {"server": self.https_url(), "certificate-authority-data": ca}}],
            "users": [{"name": "sandbox", "user": {"token": self.admin_token()}}],
            "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox", "namespace": "default"}}],
            "current-context": "sandbox",
        });
        // Rendering a JSON value as YAML cannot fail.
        serde_yaml::to_string(&cfg).unwrap_or_default()
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.kubeconfig_yaml()).map_err(|source| Error::WriteKubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    /// Faults to inject (failing requests, delays, dropped watches).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Request counters by (verb, resource).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Makes every resourceVersion handed out so far too old to watch from
    /// and closes open watches, so watchers reconnect, get 410 and re-list.
    pub fn expire_resource_versions(&self) {
        self.cluster.store.expire_history();
        self.faults.drop_watches();
    }

    /// The simulated runtime, when the sandbox uses it.
    pub fn simulated_runtime(&self) -> Option<&SimulatedRuntime> {
        self.simulated.as_deref()
    }

    /// The real-PostgreSQL runtime, when the sandbox uses it (faults:
    /// kill, pause, unready, volume data).
    pub fn postgres_runtime(&self) -> Option<&PostgresRuntime> {
        self.postgres.as_deref()
    }

    /// One line saying which pod runtime runs pods, and why.
    pub fn runtime_description(&self) -> &str {
        &self.runtime_description
    }

    /// The address a name has for a pod in namespace `default`: a
    /// Service's ClusterIP for `svc`, `svc.ns`, `svc.ns.svc` or
    /// `svc.ns.svc.cluster.local`, a pod's IP for
    /// `host.subdomain.ns.svc`. With the real runtime the address is a
    /// loopback one this process can connect to.
    pub fn resolve(&self, host: &str) -> Option<std::net::IpAddr> {
        pgruntime::net::resolve(&self.cluster, host, "default")
    }

    /// The control plane behind the HTTP server (for white-box tests).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Stops the server and controllers and waits for the server to exit.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(https) = self.https_server.take() {
            https.abort();
        }
        if let Some(server) = self.server.take() {
            // Open keep-alive connections can hold graceful shutdown; do not wait forever.
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        self.faults.drop_watches();
        self.controllers.stop();
        // Real processes must not outlive the sandbox, even when a test
        // panics and only Drop runs.
        self.cluster.runtime.shutdown();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop();
        for s in [self.server.take(), self.https_server.take()]
            .into_iter()
            .flatten()
        {
            s.abort();
        }
    }
}

type ChosenRuntime = (
    Arc<dyn PodRuntime>,
    Option<Arc<SimulatedRuntime>>,
    Option<Arc<PostgresRuntime>>,
    String,
);

/// Builds the runtime a config asks for, with a line describing it.
fn choose_runtime(config: &SandboxConfig) -> Result<ChosenRuntime> {
    if let Some(r) = &config.runtime {
        return Ok((r.clone(), None, None, "pod runtime: custom".into()));
    }
    let real = match config.runtime_kind {
        RuntimeKind::Simulated => false,
        RuntimeKind::Postgres => true,
        RuntimeKind::Auto => PostgresRuntime::available(&config.postgres),
    };
    if real {
        let rt = Arc::new(PostgresRuntime::new(config.postgres.clone())?);
        let description = format!(
            "pod runtime: real PostgreSQL (servers from {} and {}; processes run as {}; work directory {})",
            config.postgres.binaries.debian.display(),
            config.postgres.binaries.cache.display(),
            rt.run_as()
                .unwrap_or_else(|| "nobody: no postgres user".into()),
            rt.work_dir().display()
        );
        return Ok((rt.clone(), None, Some(rt), description));
    }
    let description = match config.runtime_kind {
        RuntimeKind::Auto => format!(
            "pod runtime: simulated (no PostgreSQL server binaries in {} or {}; run scripts/install-postgres.sh for real ones)",
            config.postgres.binaries.debian.display(),
            config.postgres.binaries.cache.display()
        ),
        _ => "pod runtime: simulated".into(),
    };
    let sim = Arc::new(SimulatedRuntime::new(config.simulated.clone()));
    Ok((sim.clone(), Some(sim), None, description))
}
