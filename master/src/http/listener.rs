//! Serving the operator router: plain HTTP on loopback, or HTTPS with client certificates.
//!
//! Under TLS each connection's requests carry the [`Caller`] its certificate names (the chain
//! is checked against the cluster CA and its revocation lists by the handshake, exactly as for
//! QUIC peers), so handlers decide what that principal may see and do. On the plain listener
//! every request is [`Caller::Local`]: only the master's own machine reaches it.
//!
//! Browsers complicate "only the master's own machine": any web page the operator opens may
//! send requests to `127.0.0.1` (and a browser presents its client certificate to an HTTPS
//! listener whatever page asks). So every request that changes something must carry
//! [`REQUEST_HEADER`], which a page of another origin cannot add without a CORS preflight the
//! master never grants, and is refused when the browser says it comes from another site; and
//! the plain listener answers only requests naming it by a loopback address or `localhost` in
//! `Host`, so a page that rebinds its own DNS name to 127.0.0.1 cannot read it either.

use crate::acl::Caller;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The header every request that changes something (`POST`) must carry; the CLI sends it.
pub const REQUEST_HEADER: &str = "x-tessera-request";

/// How long a client may take over its TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many HTTPS connections at once (each holds a task and a TLS session).
const MAX_TLS_CONNECTIONS: usize = 256;

/// Serves `router` as plain HTTP on `listener` (every request is [`Caller::Local`]) until the
/// task is dropped or aborted.
pub async fn serve(listener: TcpListener, router: Router) {
    let router = router
        .layer(axum::Extension(Caller::Local))
        .layer(axum::middleware::from_fn(guard_loopback));
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
            let router = router
                .layer(axum::Extension(caller))
                .layer(axum::middleware::from_fn(guard_writes));
            let service = TowerToHyperService::new(router);
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

/// The plain loopback listener's guard: a loopback `Host` only, then [`guard_writes`].
async fn guard_loopback(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !is_loopback_host(host) {
        return refuse(format!(
            "Host {host:?} is not a loopback address: this listener answers only its own machine"
        ));
    }
    guard_writes(req, next).await
}

/// Refuses a request that changes something unless it carries [`REQUEST_HEADER`] and the
/// browser, if any, says it comes from this origin.
async fn guard_writes(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !safe {
        let site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|h| h.to_str().ok());
        if !req.headers().contains_key(REQUEST_HEADER) {
            return refuse(format!(
                "a {} must carry the {REQUEST_HEADER} header (as the tessera CLI sends)",
                req.method()
            ));
        }
        if site.is_some_and(|s| s != "same-origin" && s != "none") {
            return refuse("a request from another site".to_owned());
        }
    }
    next.run(req).await
}

fn refuse(why: String) -> Response {
    super::kill::error_body(StatusCode::FORBIDDEN, why)
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn only_loopback_names_pass() {
        for ok in [
            "127.0.0.1:5051",
            "localhost:5051",
            "LOCALHOST",
            "[::1]:5051",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:5051",
            "10.0.0.1:5051",
            "",
            "[2001:db8::1]:80",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
