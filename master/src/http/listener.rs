//! Serving the operator router: plain HTTP on loopback, or HTTPS with client certificates.
//!
//! Under TLS each connection's requests carry the [`Caller`] its certificate names (the chain
//! is checked against the cluster CA and its revocation lists by the handshake, exactly as for
//! QUIC peers), so handlers decide what that principal may see and do. On the plain listener
//! every request is [`Caller::Local`]: only the master's own machine reaches it.

use crate::acl::Caller;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client may take over its TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many HTTPS connections at once (each holds a task and a TLS session).
const MAX_TLS_CONNECTIONS: usize = 256;

/// Serves `router` as plain HTTP on `listener` (every request is [`Caller::Local`]) until the
/// task is dropped or aborted.
pub async fn serve(listener: TcpListener, router: Router) {
    let router = router.layer(axum::Extension(Caller::Local));
    if let Err(e) = axum::serve(listener, router).await {
        tracing::warn!(error = %e, "the HTTP server stopped");
    }
}

/// Serves `router` as HTTPS on `listener`: the TLS handshake requires a client certificate of
/// `cluster`'s CA; its identity becomes the requests' [`Caller`]. A certificate of another
/// cluster, or without exactly one identity, is refused at once.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: rustls::ServerConfig,
    cluster: String,
) {
    let mut tls = tls;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TLS_CONNECTIONS));
    let cluster = Arc::new(cluster);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "HTTPS connection limit reached; refused");
            continue;
        };
        let (acceptor, router, cluster) = (acceptor.clone(), router.clone(), cluster.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "HTTPS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "HTTPS handshake timed out");
                    return;
                }
            };
            let caller = match caller_of(tls.get_ref().1, &cluster) {
                Ok(c) => c,
                Err(why) => {
                    tracing::warn!(%remote, %why, "HTTPS client refused");
                    return;
                }
            };
            tracing::debug!(%remote, %caller, "HTTPS client");
            let service = TowerToHyperService::new(router.layer(axum::Extension(caller)));
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "HTTPS connection ended");
            }
        });
    }
}

/// The principal the verified client certificate names, if it is one of `cluster`'s.
fn caller_of(session: &rustls::ServerConnection, cluster: &str) -> Result<Caller, String> {
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no client certificate")?;
    let (theirs, id) = net::identity::of_certificate(leaf).map_err(|e| e.to_string())?;
    if theirs != cluster {
        return Err(format!(
            "a certificate of cluster {theirs:?}, not {cluster:?}"
        ));
    }
    Ok(Caller::Peer(id))
}
