//! Connecting a test to a database the operator made, as a client would.
//!
//! On the sandbox a Service's ClusterIP is a loopback address of this
//! machine, so the test connects to it directly; on kind it would take a
//! port-forward, so these helpers answer `None` there and the scenarios
//! that need SQL report "not run".

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};

use crate::harness::{TestCluster, WAIT};

/// Whose credentials to log in with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The owner of the application database (`<name>-credentials`).
    Owner,
    /// `postgres`, to the `postgres` database (`<name>-superuser`).
    Superuser,
}

/// Connects to database `name` through its read-write Service. Waits for
/// the server to accept connections (a pod can be ready a moment before the
/// Service proxy notices). `None` when the Service has no reachable address.
pub async fn connect(
    cluster: &TestCluster,
    role: Role,
    name: &str,
) -> Option<tokio_postgres::Client> {
    connect_to(cluster, role, name, None).await
}

/// [`connect`], to database `dbname` instead of the role's own.
pub async fn connect_to(
    cluster: &TestCluster,
    role: Role,
    name: &str,
    dbname: Option<&str>,
) -> Option<tokio_postgres::Client> {
    cluster.sandbox_handle()?;
    let service = cluster.api::<Service>().get(name).await.ok()?;
    let host = service
        .spec?
        .cluster_ip
        .filter(|ip| ip.starts_with("127."))?;
    let mut config = login(cluster, role, name, dbname).await?;
    config.host(&host);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                return Some(client);
            }
            Err(error) if tokio::time::Instant::now() > deadline => {
                panic!("cannot connect to {name} at {host}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The role's login to database `name` (to `dbname` when given), without a
/// host: the caller says where to connect.
pub async fn login(
    cluster: &TestCluster,
    role: Role,
    name: &str,
    dbname: Option<&str>,
) -> Option<tokio_postgres::Config> {
    let secret_name = match role {
        Role::Owner => format!("{name}-credentials"),
        Role::Superuser => format!("{name}-superuser"),
    };
    let secret = cluster.api::<Secret>().get(&secret_name).await.ok()?;
    let data = secret.data?;
    let field = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let dbname = match (dbname, role) {
        (Some(dbname), _) => dbname.to_string(),
        (None, Role::Owner) => field("dbname")?,
        (None, Role::Superuser) => "postgres".to_string(),
    };
    let mut config = tokio_postgres::Config::new();
    config
        .port(5432)
        .user(field("username")?)
        .password(field("password")?)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(5));
    Some(config)
}
