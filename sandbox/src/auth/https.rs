//! The HTTPS listener: the same API as the plain-HTTP one, served with the
//! sandbox's serving certificate, for clients that verify the server as
//! in-cluster clients do (`ca.crt` from the ServiceAccount volume).
//!
//! kube-apiserver only serves HTTPS; the sandbox keeps its plain-HTTP
//! listener for the kubeconfig it writes (tests and learners' tools) and
//! adds this one for pods. Connections speak HTTP/1.1 (ALPN `http/1.1`)
//! with upgrades, so exec and port-forward (websocket and SPDY) work here
//! as on the plain listener.

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::Authority;
use crate::error::{Error, Result};

/// The TLS configuration of the listener: the serving certificate, then
/// the CA that signed it, as a chain.
pub fn server_config(authority: &Authority) -> Result<rustls::ServerConfig> {
    let certs = authority.serving();
    let chain = vec![
        CertificateDer::from(certs.serving_cert_der.clone()),
        CertificateDer::from(certs.ca_der.clone()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.serving_key_der.clone()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Credentials {
            action: "choose TLS versions",
            source: Box::new(e),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Credentials {
            action: "load the serving certificate",
            source: Box::new(e),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `app` over TLS on `listener` until `stop` turns true; open
/// connections end with the task.
pub async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        // Reap finished connections so the set stays as big as the open ones.
        while connections.try_join_next().is_some() {}
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "HTTPS listener failed to accept a connection");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTPS connection ended with an error");
            }
        });
    }
}
