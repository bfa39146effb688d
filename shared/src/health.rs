//! `/healthz` and `/readyz`, the probes a Deployment points at, and
//! `/metrics` for a level that serves metrics (Level 4 and above).
//!
//! Liveness says the process is serving; readiness says the replica can
//! do its part: the controller is running, or, with leader election, the
//! replica has reached the API server and stands by for the Lease (as
//! controller-runtime's readiness does not depend on leadership: a
//! Deployment whose standby were never ready could not finish a rolling
//! update). `/metrics` answers on
//! every replica, leader or not: a standby's process series and zero
//! counters say it is there. It encodes what is in memory
//! ([`crate::metrics`]); it never calls the API server or a database.
//! Levels without metrics answer 404 there, as for any unknown path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::error::Error;
use crate::metrics::Metrics;

/// A yes-or-no the runner sets and others read: [`Readiness`] for the
/// health server, [`Leadership`] for whoever needs to know which replica
/// acts.
#[derive(Clone, Debug, Default)]
pub struct Flag(Arc<AtomicBool>);

impl Flag {
    /// Sets the flag.
    pub fn set(&self, value: bool) {
        self.0.store(value, Ordering::SeqCst);
    }

    /// Reads the flag.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether the replica is ready: its controller runs, or it stands by for
/// the Lease (see the module's docs).
pub type Readiness = Flag;

/// Whether the replica acts: its controller runs (it holds the Lease, or
/// runs without leader election).
pub type Leadership = Flag;

/// The routes of the health server; `/metrics` too when the level serves
/// metrics (see the `metrics` module).
pub fn router(readiness: Readiness, metrics: Option<Arc<Metrics>>) -> Router {
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(readiness): State<Readiness>| async move {
                if readiness.get() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(readiness);
    match metrics {
        Some(metrics) => routes.route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics.encode() {
                        Ok(text) => (
                            StatusCode::OK,
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        ),
                        Err(_) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; charset=utf-8",
                            )],
                            "failed to encode the metrics".to_string(),
                        ),
                    }
                }
            }),
        ),
        None => routes,
    }
}

/// Binds the health server; serving starts when the returned future is
/// polled. Returns the bound address (useful with port 0) and that future.
pub async fn bind(
    address: SocketAddr,
    readiness: Readiness,
    metrics: Option<Arc<Metrics>>,
) -> Result<(SocketAddr, impl Future<Output = ()>), Error> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Health {
            address: address.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Health {
        address: address.to_string(),
        source,
    })?;
    if metrics.is_some() {
        tracing::info!(address = %local, "serving /healthz, /readyz and /metrics");
    } else {
        tracing::info!(address = %local, "serving /healthz and /readyz");
    }
    Ok((local, async move {
        if let Err(error) = axum::serve(listener, router(readiness, metrics)).await {
            tracing::error!(%error, "health server stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn response(address: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connects");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("writes");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("reads");
        response
    }

    async fn status_line(address: SocketAddr, path: &str) -> String {
        let response = response(address, path).await;
        response.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics_only_when_the_level_has_them() {
        let metrics = Arc::new(Metrics::new(None));
        metrics.operator.reconciled("level4-insights", 0.1, None);
        let (address, serve) = bind(
            ([127, 0, 0, 1], 0).into(),
            Readiness::default(),
            Some(metrics),
        )
        .await
        .expect("binds");
        tokio::spawn(serve);
        let text = response(address, "/metrics").await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{text}"
        );
        assert!(
            text.contains("pgdb_operator_reconciles_total{level=\"level4-insights\"} 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        let (address, serve) = bind(([127, 0, 0, 1], 0).into(), Readiness::default(), None)
            .await
            .expect("binds");
        tokio::spawn(serve);
        assert_eq!(
            status_line(address, "/metrics").await,
            "HTTP/1.1 404 Not Found"
        );
    }

    #[tokio::test]
    async fn healthz_is_ok_and_readyz_follows_the_controller() {
        let readiness = Readiness::default();
        let (address, serve) = bind(([127, 0, 0, 1], 0).into(), readiness.clone(), None)
            .await
            .expect("binds");
        tokio::spawn(serve);
        assert_eq!(status_line(address, "/healthz").await, "HTTP/1.1 200 OK");
        assert_eq!(
            status_line(address, "/readyz").await,
            "HTTP/1.1 503 Service Unavailable"
        );
        readiness.set(true);
        assert_eq!(status_line(address, "/readyz").await, "HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn a_taken_port_is_reported_with_the_flag_that_moves_it() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let address = taken.local_addr().expect("address");
        let Err(error) = bind(address, Readiness::default(), None).await else {
            panic!("a second bind of {address} succeeded");
        };
        let message = error.to_string();
        assert!(message.contains(&address.to_string()), "{message}");
        assert!(message.contains("--health-addr 127.0.0.1:0"), "{message}");
    }
}
