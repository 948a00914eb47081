//! Mutual TLS for every Tessera connection, and the cluster's certificate authority.
//!
//! The cluster has one CA. The master presents a certificate for [`MASTER_SERVER_NAME`]; every
//! agent and scheduler presents one signed by the same CA, and the master refuses any other
//! client during the TLS handshake, before a single frame is read. `tessera cert` uses
//! [`ClusterCa`] to create the CA and issue certificates; `tessera dev` makes an ephemeral one.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The DNS name the master's certificate carries and clients verify.
pub const MASTER_SERVER_NAME: &str = "tessera-master";

/// ALPN protocol id of Tessera's QUIC connections.
pub const ALPN: &[u8] = b"tessera/1";

/// What can go wrong setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating or signing a certificate failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A PEM file could not be read or parsed.
    #[error("reading {what}: {message}")]
    Pem {
        /// Which file.
        what: String,
        /// Why.
        message: String,
    },
    /// The client-certificate verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// QUIC refused the crypto configuration.
    #[error("quic crypto: {0}")]
    Quic(String),
}

/// A certificate chain and its private key, in PEM.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PEM).
    pub key_pem: String,
}

impl Identity {
    /// Reads a certificate and key from PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    fn der(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err("certificate", e))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| pem_err("private key", e))?;
        Ok((certs, key))
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Pem {
        what: path.display().to_string(),
        message: e.to_string(),
    })
}

fn pem_err(what: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// The cluster's certificate authority: signs the master's, agents' and schedulers' certificates.
pub struct ClusterCa {
    /// The CA certificate (PEM), handed to every peer as its trust root.
    pub cert_pem: String,
    /// The CA key (PEM): keep it off the cluster's machines.
    pub key_pem: String,
}

impl ClusterCa {
    /// Generates a new CA.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "Tessera");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads a CA from its PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    /// Issues a certificate for `common_name`, valid as a server for `dns_names` and as a
    /// client.
    pub fn issue(&self, common_name: &str, dns_names: &[&str]) -> Result<Identity, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let names: Vec<String> = dns_names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues the master's certificate (server name [`MASTER_SERVER_NAME`] and `localhost`).
    pub fn issue_master(&self) -> Result<Identity, TlsError> {
        self.issue("tessera-master", &[MASTER_SERVER_NAME, "localhost"])
    }
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| pem_err("CA certificate", e))?;
        store.add(cert)?;
    }
    if store.is_empty() {
        return Err(pem_err("CA certificate", "no certificate found"));
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// QUIC transport settings shared by both ends: keep-alives, and how long silence lasts before a
/// peer is considered gone.
#[derive(Clone, Copy, Debug)]
pub struct TransportTuning {
    /// A connection with no traffic for this long is closed (that is how a dead peer is noticed).
    pub idle_timeout: Duration,
    /// Keep-alive interval, well under `idle_timeout`.
    pub keep_alive: Duration,
}

impl Default for TransportTuning {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
        }
    }
}

fn transport(t: TransportTuning) -> Arc<quinn::TransportConfig> {
    let mut cfg = quinn::TransportConfig::default();
    cfg.max_idle_timeout(t.idle_timeout.try_into().ok());
    cfg.keep_alive_interval(Some(t.keep_alive));
    cfg.max_concurrent_bidi_streams(256u32.into());
    cfg.max_concurrent_uni_streams(16u32.into());
    Arc::new(cfg)
}

/// The master's QUIC server configuration: presents `identity`, requires a client certificate
/// signed by `ca_pem`.
pub fn server_config(
    ca_pem: &str,
    identity: &Identity,
    tuning: TransportTuning,
) -> Result<quinn::ServerConfig, TlsError> {
    let (certs, key) = identity.der()?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca_pem)?),
        provider(),
    )
    .build()
    .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport(tuning));
    Ok(cfg)
}

/// A peer's QUIC client configuration: trusts only `ca_pem`, presents `identity`.
pub fn client_config(
    ca_pem: &str,
    identity: &Identity,
    tuning: TransportTuning,
) -> Result<quinn::ClientConfig, TlsError> {
    let (certs, key) = identity.der()?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport(tuning));
    Ok(cfg)
}

/// Everything a peer needs to speak TLS in a cluster: the CA to trust and its own identity.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// This peer's certificate and key.
    pub identity: Identity,
}

impl PeerTls {
    /// Reads the three PEM files a deployed peer is given.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            ca_pem: read(ca)?,
            identity: Identity::from_files(cert, key)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_issues_usable_configs() {
        let ca = ClusterCa::generate("test-ca").unwrap();
        let master = ca.issue_master().unwrap();
        let agent = ca.issue("agent-1", &[]).unwrap();
        server_config(&ca.cert_pem, &master, TransportTuning::default()).unwrap();
        client_config(&ca.cert_pem, &agent, TransportTuning::default()).unwrap();
        assert!(matches!(
            client_config("not a pem", &agent, TransportTuning::default()),
            Err(TlsError::Pem { .. })
        ));
    }
}
