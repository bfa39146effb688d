//! Connecting a test to a database the operator made, as a client would.
//!
//! Two routes, as a learner has them: on the sandbox a Service's ClusterIP
//! is a loopback address of this machine, so the test connects to it as a
//! client in the cluster would; on kind, where the cluster's addresses are
//! not routable from here, it opens a port-forward to a pod the Service
//! selects, as `kubectl port-forward svc/<name> 5432` does, and speaks the
//! PostgreSQL protocol over that stream.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::ListParams;

use crate::harness::TestCluster;

/// Whose credentials to log in with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The owner of the application database (`<name>-credentials`).
    Owner,
    /// `postgres`, to the `postgres` database (`<name>-superuser`).
    Superuser,
}

/// How a test reaches a database's Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The Service's ClusterIP where this machine routes to it (the
    /// sandbox's), else a port-forward.
    Auto,
    /// A port-forward to a ready pod the Service selects.
    PortForward,
}

/// Connects to database `name` through its read-write Service. Waits for
/// the server to accept connections (a pod can be ready a moment before the
/// Service proxy notices); panics, with the last attempt's error and the
/// cluster's diagnosis, when it does not within the cluster's budget. `None` when the credentials or the Service do not exist.
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
    connect_through(cluster, role, name, dbname, Route::Auto).await
}

/// [`connect_to`], by `route`.
pub async fn connect_through(
    cluster: &TestCluster,
    role: Role,
    name: &str,
    dbname: Option<&str>,
    route: Route,
) -> Option<tokio_postgres::Client> {
    let services = cluster.api::<Service>();
    let service = services.get(name).await.ok()?;
    let mut config = login(cluster, role, name, dbname).await?;
    let cluster_ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .filter(|ip| ip.starts_with("127.") && cluster.sandbox_handle().is_some());
    let direct = match (route, cluster_ip) {
        (Route::Auto, Some(ip)) => Some(ip),
        _ => None,
    };
    if let Some(ip) = &direct {
        config.host(ip);
    }
    let via = direct.as_deref().unwrap_or("a port-forward").to_string();
    let last_error = std::sync::Mutex::new(String::new());
    let connected = cluster
        .eventually(
            cluster.budget(),
            &format!("{name} accepts a connection through {via}"),
            || async {
                let attempt = match &direct {
                    Some(_) => config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map(|(client, connection)| {
                            tokio::spawn(connection);
                            client
                        })
                        .map_err(|e| e.to_string()),
                    // The Service as it is now: its selector changes (a fence).
                    None => match services.get(name).await {
                        Ok(service) => tokio::time::timeout(
                            Duration::from_secs(5),
                            through_port_forward(cluster, &service, &config),
                        )
                        .await
                        .unwrap_or_else(|_| Err("no answer within 5s".into())),
                        Err(error) => Err(error.to_string()),
                    },
                };
                Ok(match attempt {
                    Ok(client) => Some(client),
                    Err(error) => {
                        *last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
                        None
                    }
                })
            },
        )
        .await;
    match connected {
        Ok(client) => Some(client),
        Err(failed) => panic!(
            "cannot connect to {name}: {}\nthe last attempt: {}",
            failed,
            last_error.lock().unwrap_or_else(|e| e.into_inner())
        ),
    }
}

/// A session over a port-forward to the first ready pod the Service
/// selects (a fenced Service selects none).
async fn through_port_forward(
    cluster: &TestCluster,
    service: &Service,
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, String> {
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
        .ok_or("the Service selects no pods")?;
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = cluster.api::<Pod>();
    let listed = pods
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .map_err(|e| e.to_string())?;
    let ready = |pod: &Pod| {
        pod.metadata.deletion_timestamp.is_none()
            && pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let pod = listed
        .items
        .iter()
        .find(|p| ready(p))
        .ok_or("no ready pod behind the Service")?;
    let mut forwarder = pods
        .portforward(&pod.name_any(), &[5432])
        .await
        .map_err(|e| e.to_string())?;
    let stream = forwarder
        .take_stream(5432)
        .ok_or("the API server opened no stream")?;
    let (client, connection) = config
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
        let _ = forwarder.join().await;
    });
    Ok(client)
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
