//! The client of the master's operator HTTP surface, for `tessera agents`, `frameworks`,
//! `tasks`, `logs`, `kill` and `top`.
//!
//! The commands take the masters' addresses as agents and `tessera run` do (`--master
//! host:5050[,..]`); the HTTP surface is at the same host, port + 1 (the master's default
//! `--http-listen`), unless `--http host:port` names it. On a loopback address without
//! `--cert` the client speaks plain HTTP (the master's default listener); otherwise HTTPS with
//! the cluster CA and a client certificate (`--cert`/`--key`, default `operator.pem` beside
//! the CA), whose principal decides what the master shows and allows. A standby master
//! answers 503: the next address is tried.

use crate::tls::TlsArgs;
use anyhow::{bail, Context};
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the master is and who asks.
#[derive(Args, Clone, Debug)]
pub struct ApiArgs {
    /// The masters (`host:port[,host:port..]`, their QUIC addresses as agents are given them):
    /// their HTTP surface is asked at the same host, port + 1.
    #[arg(long, default_value = "127.0.0.1:5050", value_delimiter = ',')]
    master: Vec<String>,
    /// The master's HTTP address (`host:port`), when not at `--master`'s port + 1.
    #[arg(long)]
    http: Option<String>,
    /// Speak HTTPS with a client certificate even to a loopback address.
    #[arg(long)]
    tls: bool,
    #[command(flatten)]
    certs: TlsArgs,
}

/// An answer of the master.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, or the master's error message (`{"error": ..}`) as an error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        if !self.status.is_success() {
            bail!("{}", self.error());
        }
        serde_json::from_slice(&self.body).context("the master's answer is not the JSON expected")
    }

    /// The master's words for a failed request.
    pub fn error(&self) -> String {
        #[derive(serde::Deserialize)]
        struct E {
            error: Option<String>,
            status: Option<String>,
        }
        let words = match serde_json::from_slice::<E>(&self.body) {
            Ok(E { error: Some(e), .. }) => e,
            Ok(E {
                status: Some(s), ..
            }) => s,
            _ => String::from_utf8_lossy(&self.body).trim().to_owned(),
        };
        let status = self.status;
        match status {
            StatusCode::FORBIDDEN => format!("not allowed: {words}"),
            _ => format!("{status}: {words}"),
        }
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A client of the masters' HTTP surface.
pub struct Api {
    /// HTTP addresses to try, in order.
    targets: Vec<String>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Api {
    /// The client `args` describe (certificates loaded now, so a missing file is said at once).
    pub fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let targets: Vec<String> = match &args.http {
            Some(h) => vec![h.clone()],
            None => args
                .master
                .iter()
                .map(|m| http_of(m))
                .collect::<anyhow::Result<_>>()?,
        };
        let loopback = targets.iter().all(|t| is_loopback(t));
        let tls = if args.tls || args.certs.cert_given() || !loopback {
            let peer = args.certs.load("operator")?;
            let cfg = net::tls::rustls_client_config(&peer.ca_pem, &peer.identity, &peer.crls)?;
            let mut cfg = cfg;
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
        } else {
            None
        };
        Ok(Self { targets, tls })
    }

    /// The HTTP surface of the masters at these QUIC addresses (port + 1), for `tessera run
    /// --master` to follow its task's output with the run's own certificate (`certs`, default
    /// `default_cert` beside the CA): HTTPS with it when `tls` or when a master is not on
    /// loopback, else plain HTTP (a loopback master's default listener).
    pub fn for_run(
        masters: &[String],
        certs: &TlsArgs,
        default_cert: &str,
        tls: bool,
    ) -> anyhow::Result<Self> {
        let targets: Vec<String> = masters
            .iter()
            .map(|m| http_of(m))
            .collect::<anyhow::Result<_>>()?;
        let tls = if tls || !targets.iter().all(|t| is_loopback(t)) {
            let peer = certs.load(default_cert)?;
            let mut cfg = net::tls::rustls_client_config(&peer.ca_pem, &peer.identity, &peer.crls)?;
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
        } else {
            None
        };
        Ok(Self { targets, tls })
    }

    /// `GET path` from the first master that leads.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(Method::GET, path).await
    }

    /// `POST path` (no body) to the first master that leads.
    pub async fn post(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(Method::POST, path).await
    }

    async fn request(&self, method: Method, path: &str) -> anyhow::Result<Answer> {
        let mut last = None;
        for target in &self.targets {
            let once = tokio::time::timeout(
                REQUEST_TIMEOUT,
                self.request_one(target, method.clone(), path),
            );
            match once.await {
                Ok(Ok(a)) if a.status == StatusCode::SERVICE_UNAVAILABLE => {
                    last = Some(anyhow::anyhow!("{target}: {}", a.error()));
                }
                Ok(Ok(a)) => return Ok(a),
                Ok(Err(e)) => last = Some(e.context(format!("asking the master at {target}"))),
                Err(_) => {
                    last = Some(anyhow::anyhow!(
                        "{target}: no answer within {REQUEST_TIMEOUT:?}"
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no master address given")))
    }

    async fn request_one(
        &self,
        target: &str,
        method: Method,
        path: &str,
    ) -> anyhow::Result<Answer> {
        let addr = resolve(target).await?;
        let tcp = TcpStream::connect(addr).await.with_context(|| {
            format!("connecting to {addr} (is the master's HTTP surface there? see --http)")
        })?;
        tcp.set_nodelay(true)?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, target)
            .header(master::http::listener::REQUEST_HEADER, "tessera-cli")
            .body(Empty::<Bytes>::new())?;
        let response = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(net::tls::MASTER_SERVER_NAME)
                    .expect("a valid server name");
                let stream = tls.connect(name, tcp).await.context(
                    "TLS handshake with the master (right CA? a certificate it accepts?)",
                )?;
                send(TokioIo::new(stream), req).await?
            }
            None => send(TokioIo::new(tcp), req).await?,
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

async fn send<S>(
    io: TokioIo<S>,
    req: Request<Empty<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

/// The HTTP address of the master at QUIC address `master`: same host, port + 1.
fn http_of(master: &str) -> anyhow::Result<String> {
    let (host, port) = master
        .rsplit_once(':')
        .with_context(|| format!("--master {master}: expected host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--master {master}: bad port"))?;
    let http = port
        .checked_add(1)
        .with_context(|| format!("--master {master}: no port + 1; give --http"))?;
    Ok(format!("{host}:{http}"))
}

fn is_loopback(target: &str) -> bool {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("resolving {target}"))?
        .next()
        .with_context(|| format!("{target} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_surface_is_at_port_plus_one_and_loopback_is_recognised() {
        assert_eq!(http_of("10.0.0.1:5050").unwrap(), "10.0.0.1:5051");
        assert_eq!(
            http_of("master.example:7000").unwrap(),
            "master.example:7001"
        );
        assert!(http_of("nohost").is_err());
        assert!(http_of("h:65535").is_err());
        assert!(
            is_loopback("127.0.0.1:5051")
                && is_loopback("localhost:1")
                && is_loopback("[::1]:5051")
        );
        assert!(!is_loopback("10.0.0.1:5051") && !is_loopback("example.org:80"));
    }
}
