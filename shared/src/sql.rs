//! Speaking SQL to the database: the second way an operator reads the world.
//!
//! The Kubernetes API tells what runs; only PostgreSQL tells what it runs
//! (`SHOW server_version`) or whether a setting waits for a restart
//! (`pg_settings.pending_restart`). Capabilities ask such questions as data,
//! [`SqlProbe`]s answered before they decide, and ask for statements,
//! [`SqlAction`]s run after the objects are applied. The core connects, so
//! capabilities stay pure functions.
//!
//! How the operator reaches a pod's port 5432 ([`DatabaseAccess`]):
//! - inside a cluster, directly: the pod's IP (a Service's DNS name would
//!   reach any pod behind it; a check of one pod must reach that pod);
//! - outside one (a binary run against kind), pod IPs are not routable: the
//!   API server's port-forward, as `kubectl port-forward` does;
//! - on the sandbox both work: pod IPs are loopback addresses of this machine,
//!   and it serves port-forward.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::error::Error;

/// How long connecting, and each statement, may take.
pub const SQL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the operator waits for a statement's answer: the server's own
/// `statement_timeout` (`SQL_TIMEOUT`) plus as much again for a busy
/// server and the network. A frozen server enforces no timeout of its own,
/// and a connection to it would otherwise wait for ever.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2 * SQL_TIMEOUT.as_secs());

/// How the operator reaches a database pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DatabaseAccess {
    /// Direct inside a cluster, port-forward outside one.
    #[default]
    Auto,
    /// Connect to the pod's IP.
    Direct,
    /// Tunnel through the API server's pods/portforward.
    PortForward,
}

impl DatabaseAccess {
    /// The strategy `Auto` stands for here: direct when running in a pod
    /// (the kubelet sets `KUBERNETES_SERVICE_HOST`), port-forward otherwise.
    pub fn resolved(self) -> Self {
        match self {
            DatabaseAccess::Auto if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
                DatabaseAccess::Direct
            }
            DatabaseAccess::Auto => DatabaseAccess::PortForward,
            other => other,
        }
    }
}

/// Which server to talk to, and as whom.
#[derive(Clone, PartialEq, Eq)]
pub struct SqlTarget {
    /// The pod, in the database's namespace.
    pub pod: String,
    /// Its IP, for direct access.
    pub pod_ip: Option<String>,
    /// The server's port in the pod.
    pub port: u16,
    /// Role to log in as.
    pub user: String,
    /// Its password; never logged (see the `Debug` impl).
    pub password: String,
    /// Database to connect to.
    pub database: String,
}

impl fmt::Debug for SqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlTarget")
            .field("pod", &self.pod)
            .field("pod_ip", &self.pod_ip)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .finish()
    }
}

/// A question for a server, answered before the capabilities decide.
/// Every column of the statement must be text (cast with `::text`). The
/// statement is a constant: nothing from a spec is ever spliced into SQL
/// (sqlx accepts only `&'static str` without an explicit assertion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlProbe {
    /// Name the answer is found under in `Observed::sql` (see the `capability` module).
    pub name: String,
    /// Where to ask.
    pub target: SqlTarget,
    /// The query.
    pub statement: &'static str,
}

/// A statement run after the objects are applied (`SELECT pg_reload_conf()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlAction {
    /// Where to run it.
    pub target: SqlTarget,
    /// The statement, a constant like a probe's.
    pub statement: &'static str,
    /// CamelCase reason of the Event published when it ran.
    pub reason: String,
    /// The Event's message.
    pub message: String,
    /// Session settings made before the statement runs, as bound
    /// parameters of `set_config`: how a statement receives a value that is
    /// data (a password), read with `current_setting(name)`, never spliced
    /// into SQL text.
    pub settings: SessionSettings,
}

/// Custom session settings (`pgdb.backup_password`) given to a
/// [`SqlAction`]'s session before its statement runs. Their values are
/// never shown in logs (see the `Debug` impl).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SessionSettings(pub Vec<(&'static str, String)>);

impl fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}=<redacted>")))
            .finish()
    }
}

/// The rows of an answer, every value as text.
pub type Rows = Vec<Vec<Option<String>>>;

/// A probe's answer: its rows, or why there are none (the server is down,
/// refused the login, ...), which capabilities must treat as "unknown".
pub type SqlAnswer = Result<Rows, String>;

/// Connects to targets the configured way.
#[derive(Clone)]
pub struct Connector {
    client: Client,
    access: DatabaseAccess,
}

impl Connector {
    /// A connector using `access` (`Auto` is resolved here, once).
    pub fn new(client: Client, access: DatabaseAccess) -> Self {
        Self {
            client,
            access: access.resolved(),
        }
    }

    /// The strategy in use.
    pub fn access(&self) -> DatabaseAccess {
        self.access
    }

    /// Opens a connection to `target` in `namespace`.
    pub async fn connect(
        &self,
        namespace: &str,
        target: &SqlTarget,
    ) -> Result<PgConnection, Error> {
        let (host, port) = match self.access {
            DatabaseAccess::PortForward => {
                let port = self.forward(namespace, target).await?;
                ("127.0.0.1".to_string(), port)
            }
            _ => {
                let ip = target.pod_ip.clone().ok_or_else(|| Error::Sql {
                    what: format!("reach pod {}", target.pod),
                    source: "the pod has no IP yet".into(),
                })?;
                (ip, target.port)
            }
        };
        let options = PgConnectOptions::new()
            .host(&host)
            .port(port)
            .username(&target.user)
            .password(&target.password)
            .database(&target.database)
            .application_name("pgdb-operator")
            .options([("statement_timeout", "5s")]);
        tokio::time::timeout(SQL_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| Error::Sql {
                what: format!("connect to pod {}", target.pod),
                source: format!("no answer within {}s", SQL_TIMEOUT.as_secs()).into(),
            })?
            .map_err(|source| Error::Sql {
                what: format!("connect to pod {}", target.pod),
                source: Box::new(source),
            })
    }

    /// Opens a port-forward to the pod and a one-connection local listener
    /// in front of it (sqlx connects to host and port, not to a stream).
    async fn forward(&self, namespace: &str, target: &SqlTarget) -> Result<u16, Error> {
        let what = format!("port-forward to pod {}", target.pod);
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Sql {
            what: what.clone(),
            source,
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut forwarder =
            tokio::time::timeout(SQL_TIMEOUT, pods.portforward(&target.pod, &[target.port]))
                .await
                .map_err(|_| fail(format!("no answer within {}s", SQL_TIMEOUT.as_secs()).into()))?
                .map_err(|e| fail(Box::new(e)))?;
        let mut upstream = forwarder
            .take_stream(target.port)
            .ok_or_else(|| fail("the API server opened no stream".into()))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| fail(Box::new(e)))?;
        let port = listener.local_addr().map_err(|e| fail(Box::new(e)))?.port();
        tokio::spawn(async move {
            let accepted = tokio::time::timeout(SQL_TIMEOUT, listener.accept()).await;
            if let Ok(Ok((mut local, _))) = accepted {
                let _ = tokio::io::copy_bidirectional(&mut local, &mut upstream).await;
                let _ = local.shutdown().await;
            }
            drop(upstream);
            let _ = forwarder.join().await;
        });
        Ok(port)
    }

    /// Answers probes, connecting once per target; a failure becomes the
    /// answer of the probes it concerns, never an error of the reconcile.
    pub async fn answer(&self, namespace: &str, probes: &[SqlProbe]) -> Vec<(String, SqlAnswer)> {
        let mut answers = Vec::new();
        let mut targets: Vec<&SqlTarget> = Vec::new();
        for probe in probes {
            if !targets.contains(&&probe.target) {
                targets.push(&probe.target);
            }
        }
        for target in targets {
            let mine: Vec<&SqlProbe> = probes.iter().filter(|p| &p.target == target).collect();
            match self.connect(namespace, target).await {
                Ok(mut connection) => {
                    for probe in &mine {
                        let answer = query(&mut connection, probe.statement).await;
                        answers.push((probe.name.clone(), answer));
                    }
                    let _ = tokio::time::timeout(SQL_TIMEOUT, connection.close()).await;
                }
                Err(error) => {
                    tracing::debug!(pod = target.pod, %error, "database not reachable");
                    for probe in &mine {
                        answers.push((probe.name.clone(), Err(error.to_string())));
                    }
                }
            }
        }
        answers
    }

    /// Runs an action's statement.
    pub async fn run(&self, namespace: &str, action: &SqlAction) -> Result<(), Error> {
        let mut connection = self.connect(namespace, &action.target).await?;
        let mut outcome = Ok(Vec::new());
        for (name, value) in &action.settings.0 {
            let set = tokio::time::timeout(
                QUERY_TIMEOUT,
                sqlx::query("SELECT set_config($1, $2, false)")
                    .bind(*name)
                    .bind(value)
                    .execute(&mut connection),
            )
            .await;
            let failed = match set {
                Ok(Ok(_)) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!("no answer within {}s", QUERY_TIMEOUT.as_secs())),
            };
            if let Some(error) = failed {
                outcome = Err(format!("cannot set {name}: {error}"));
                break;
            }
        }
        if outcome.is_ok() {
            outcome = query(&mut connection, action.statement).await;
        }
        let _ = tokio::time::timeout(SQL_TIMEOUT, connection.close()).await;
        outcome.map(|_| ()).map_err(|message| Error::Sql {
            what: format!("run {:?} on pod {}", action.statement, action.target.pod),
            source: message.into(),
        })
    }
}

async fn query(connection: &mut PgConnection, statement: &'static str) -> SqlAnswer {
    let rows = tokio::time::timeout(
        QUERY_TIMEOUT,
        sqlx::raw_sql(statement).fetch_all(&mut *connection),
    )
    .await
    .map_err(|_| format!("no answer within {}s", QUERY_TIMEOUT.as_secs()))?
    .map_err(|e| e.to_string())?;
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<Option<String>, _>(i)
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect()
}

/// The first column of the first row of an answer, when there is one.
pub fn scalar(answer: Option<&SqlAnswer>) -> Option<&str> {
    answer?.as_ref().ok()?.first()?.first()?.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that completes the startup handshake and then answers
    /// nothing, as a server frozen after a connection was made.
    async fn silent_server() -> u16 {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("an address").port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("a client");
            let length = socket.read_u32().await.expect("a startup message");
            let mut rest = vec![0; length as usize - 4];
            socket.read_exact(&mut rest).await.expect("its body");
            // AuthenticationOk, then ReadyForQuery (idle).
            socket
                .write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I'])
                .await
                .expect("the handshake");
            let mut sink = vec![0; 1024];
            while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        port
    }

    #[tokio::test]
    async fn a_statement_a_connected_server_never_answers_fails_after_the_query_timeout() {
        let port = silent_server().await;
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
            .ssl_mode(sqlx::postgres::PgSslMode::Disable);
        let mut connection = PgConnection::connect_with(&options)
            .await
            .expect("the handshake completes");
        let answer = tokio::time::timeout(
            QUERY_TIMEOUT + Duration::from_secs(5),
            query(&mut connection, "SELECT 1"),
        )
        .await
        .expect("the query gives up on its own");
        assert_eq!(answer, Err("no answer within 10s".to_string()));
    }

    fn target() -> SqlTarget {
        SqlTarget {
            pod: "orders-0".into(),
            pod_ip: Some("10.0.0.7".into()),
            port: 5432,
            user: "postgres".into(),
            password: "s3cret-value".into(),
            database: "postgres".into(),
        }
    }

    #[test]
    fn a_target_never_shows_its_password_in_logs() {
        let shown = format!("{:?}", target());
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn auto_access_means_port_forward_outside_a_cluster() {
        // The test process does not run in a pod.
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            assert_eq!(DatabaseAccess::Auto.resolved(), DatabaseAccess::PortForward);
        }
        assert_eq!(DatabaseAccess::Direct.resolved(), DatabaseAccess::Direct);
    }

    #[test]
    fn a_scalar_is_the_first_value_of_the_first_row() {
        let answer: SqlAnswer = Ok(vec![vec![Some("16.4".into()), None]]);
        assert_eq!(scalar(Some(&answer)), Some("16.4"));
        assert_eq!(scalar(Some(&Err("down".into()))), None);
        assert_eq!(scalar(Some(&Ok(vec![]))), None);
        assert_eq!(scalar(None), None);
    }
}
