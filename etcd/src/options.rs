//! How to reach etcd: endpoints, TLS, user, prefix and lease TTL, the settings the master's
//! `--etcd*` and `--lease-ttl` flags fill in.

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use master::ha::HaError;
use std::time::Duration;

/// TLS to etcd: the CA that signed etcd's certificate and, when etcd asks for client
/// certificates (`--client-cert-auth`), this master's certificate and key (all PEM text).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// The CA certificate(s) etcd's server certificate chains to.
    pub ca_pem: String,
    /// The client certificate and its private key.
    pub identity: Option<(String, String)>,
}

/// Where the masters of one cluster meet in etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// etcd's client URLs (`http://host:2379`, `https://...` with [`EtcdOptions::tls`]).
    pub endpoints: Vec<String>,
    /// The key prefix of this cluster (`/tessera/<cluster>`): one per cluster.
    pub prefix: String,
    /// The leader's lease TTL: how long after the leader's last renewal another may win.
    /// Whole seconds (etcd's unit), at least 1 (etcd raises a lease below its minimum, about
    /// 1.5 × its election timeout).
    pub lease_ttl: Duration,
    /// TLS, if etcd's client URLs are https.
    pub tls: Option<EtcdTls>,
    /// etcd user and password, if etcd's auth is enabled.
    pub user: Option<(String, String)>,
    /// The cluster's name, stamped under the prefix: a master of another cluster is refused.
    pub cluster: String,
}

impl EtcdOptions {
    /// Options for `endpoints` and `cluster`, with the prefix `/tessera/<cluster>`, a 3 s
    /// lease, no TLS and no user.
    pub fn new(endpoints: Vec<String>, cluster: &str) -> Self {
        Self {
            endpoints,
            prefix: format!("/tessera/{cluster}"),
            lease_ttl: Duration::from_secs(3),
            tls: None,
            user: None,
            cluster: cluster.to_owned(),
        }
    }

    /// The TTL in whole seconds, as etcd grants it.
    pub(crate) fn ttl_secs(&self) -> i64 {
        self.lease_ttl.as_secs().max(1) as i64
    }

    /// Connects (lazily: the first call reaches etcd) after checking the settings.
    pub(crate) async fn client(&self) -> Result<Client, HaError> {
        if self.endpoints.is_empty() {
            return Err(HaError::Config("no etcd endpoint given".into()));
        }
        if !self.prefix.starts_with('/') || self.prefix.trim_end_matches('/').is_empty() {
            return Err(HaError::Config(format!(
                "etcd prefix {:?} must start with / and name the cluster (e.g. /tessera/prod)",
                self.prefix
            )));
        }
        if self.lease_ttl < Duration::from_secs(1) || self.lease_ttl.subsec_nanos() != 0 {
            return Err(HaError::Config(format!(
                "lease TTL {:?} must be whole seconds, at least 1 s",
                self.lease_ttl
            )));
        }
        let mut co = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some(tls) = &self.tls {
            if !tls.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(HaError::Config(
                    "the etcd CA file holds no PEM certificate".into(),
                ));
            }
            if let Some((cert, key)) = &tls.identity {
                if !cert.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(HaError::Config(
                        "the etcd client certificate file holds no PEM certificate".into(),
                    ));
                }
                if !key.contains("PRIVATE KEY-----") {
                    return Err(HaError::Config(
                        "the etcd client key file holds no PEM private key".into(),
                    ));
                }
            }
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(Identity::from_pem(cert, key));
            }
            co = co.with_tls(t);
            if let Some(e) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(HaError::Config(format!(
                    "etcd endpoint {e} is http:// but TLS is configured: use https://"
                )));
            }
        }
        if let Some((user, password)) = &self.user {
            co = co.with_user(user, password);
        }
        let eps = self.endpoints.clone();
        // With a user, connecting authenticates (a call to etcd): bounded like any call.
        match tokio::time::timeout(Duration::from_secs(10), Client::connect(&eps, Some(co))).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(
                e @ (etcd_client::Error::InvalidArgs(_)
                | etcd_client::Error::InvalidUri(_)
                | etcd_client::Error::TransportError(_)),
            )) => Err(HaError::Config(format!("etcd endpoints {eps:?}: {e}"))),
            Ok(Err(e)) if is_auth_error(&e) => Err(HaError::Config(format!(
                "etcd at {eps:?} refused the user: {e}"
            ))),
            Ok(Err(e)) => Err(HaError::Unavailable(format!(
                "cannot connect to etcd at {eps:?}: {e}"
            ))),
            Err(_) => Err(HaError::Unavailable(format!(
                "cannot connect to etcd at {eps:?}: timed out"
            ))),
        }
    }
}

/// A refusal of the configured user (wrong password, no such user): retrying cannot help.
fn is_auth_error(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.message().contains("authentication failed") || s.message().contains("permission denied"))
}
