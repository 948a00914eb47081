//! Mutual TLS for every Tessera connection, and the cluster's certificate authority.
//!
//! The cluster has one CA. The master presents a certificate for [`MASTER_SERVER_NAME`]; every
//! agent and scheduler presents one signed by the same CA, and the master refuses any other
//! client during the TLS handshake, before a single frame is read. `tessera cert` uses
//! [`ClusterCa`] to create the CA and issue certificates; `tessera dev` makes an ephemeral one.

use proto::identity::{PeerId, PeerKind};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The DNS name the master's certificate carries and clients verify.
pub const MASTER_SERVER_NAME: &str = "tessera-master";

/// How long a peer certificate is valid unless told otherwise: one year.
pub const DEFAULT_PEER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far back a new certificate's validity starts, for clocks a little behind the CA's.
const BACKDATE: Duration = Duration::from_secs(300);

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

    /// Issues a certificate for `common_name` that states no identity, valid as a server for
    /// `dns_names` and as a client. The master refuses its holder: it exists to test that
    /// refusal; peers get [`ClusterCa::issue_peer`].
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

    /// Issues the master's certificate (server name [`MASTER_SERVER_NAME`] and `localhost`,
    /// identity `master/master`), valid for [`DEFAULT_PEER_VALIDITY`].
    pub fn issue_master(&self) -> Result<Identity, TlsError> {
        let id = PeerId::new(PeerKind::Master, "master").expect("a valid name");
        self.issue_peer(&id, DEFAULT_PEER_VALIDITY)
    }

    /// The cluster's name: the CA certificate's common name, and the trust domain of every
    /// identity URI it signs.
    pub fn cluster_name(&self) -> Result<String, TlsError> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| pem_err("CA certificate", e))?;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| pem_err("CA certificate", e))?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| pem_err("CA certificate", "no common name"))?;
        Ok(cn.to_owned())
    }

    /// Issues a certificate stating `id` (URI SAN `spiffe://<cluster>/<kind>/<name>`, common
    /// name `<name>`), valid from a few minutes ago for `validity`, usable as a client and,
    /// for the master, as the server [`MASTER_SERVER_NAME`].
    pub fn issue_peer(&self, id: &PeerId, validity: Duration) -> Result<Identity, TlsError> {
        let cluster = self.cluster_name()?;
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let dns: Vec<String> = if id.kind == PeerKind::Master {
            vec![MASTER_SERVER_NAME.to_owned(), "localhost".to_owned()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(dns)?;
        params
            .subject_alt_names
            .push(SanType::URI(id.uri(&cluster).try_into()?));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, id.name.as_str());
        params.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
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

    /// A revocation list (PEM) naming the certificates with these serial numbers, signed by the
    /// CA; `number` must grow with each new list.
    pub fn revocation_list(&self, serials: &[Vec<u8>], number: u64) -> Result<String, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - BACKDATE,
            next_update: now + DEFAULT_PEER_VALIDITY,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: now - BACKDATE,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&issuer)?.pem()?)
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

/// QUIC transport settings shared by both ends: keep-alives, how long silence lasts before a
/// peer is considered gone, and the round-trip time assumed before one is measured.
///
/// The defaults hold on a link with 10 % loss and 300 ms of round trip: the idle timeout
/// spans several keep-alives (five are sent in it, so losing a few in a row is survived), and
/// quinn's loss detection adapts to the measured RTT after the first exchange. Links much
/// slower than that (satellite, intercontinental with loss) want a longer idle timeout and an
/// `initial_rtt` near the real one, so the handshake's first retransmissions are not premature.
#[derive(Clone, Copy, Debug)]
pub struct TransportTuning {
    /// A connection with no traffic for this long is closed (that is how a dead peer is noticed).
    pub idle_timeout: Duration,
    /// Keep-alive interval, well under `idle_timeout`.
    pub keep_alive: Duration,
    /// The round-trip time assumed until one is measured (quinn's `initial_rtt`, 333 ms by
    /// default as RFC 9002 recommends): it sets the handshake's first retransmission timer.
    pub initial_rtt: Duration,
    /// The congestion controller pacing what this peer sends.
    pub congestion: Congestion,
}

/// Which congestion controller paces a peer's sending.
///
/// Cubic (quinn's default) reads every lost packet as congestion and halves its window, so on
/// a link that loses packets at random (wireless, a bad uplink) a transfer of a few dozen
/// packets crawls; BBR paces by the measured bandwidth and round trip and barely notices
/// random loss. Tessera's transfers (modules, files, control messages) are small and its
/// links few, so BBR's gentler sharing with other flows costs little. quinn 0.11 calls its
/// BBR experimental: `Cubic` is the way back if it misbehaves (`--quic-congestion cubic`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Congestion {
    /// Loss-based (RFC 9438).
    Cubic,
    /// Model-based: bandwidth and round trip.
    #[default]
    Bbr,
}

impl Default for TransportTuning {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            initial_rtt: Duration::from_millis(333),
            congestion: Congestion::default(),
        }
    }
}

impl TransportTuning {
    /// Checks that the timers make sense together: keep-alives must come well inside the idle
    /// timeout (at least two per timeout), or a quiet but live connection is dropped.
    pub fn validate(&self) -> Result<(), String> {
        if self.idle_timeout.is_zero() || self.keep_alive.is_zero() || self.initial_rtt.is_zero() {
            return Err("QUIC timers must be positive".into());
        }
        if self.keep_alive * 2 > self.idle_timeout {
            return Err(format!(
                "the keep-alive interval ({:?}) must be at most half the idle timeout ({:?})",
                self.keep_alive, self.idle_timeout
            ));
        }
        Ok(())
    }
}

/// Streams a client may open on the master at once: the control stream and blob transfers.
/// Each costs the master a task and a buffer, so a peer gets a few dozen, not hundreds.
pub const SERVER_MAX_STREAMS: u32 = 64;

fn transport(t: TransportTuning, bidi: u32, uni: u32) -> Arc<quinn::TransportConfig> {
    let mut cfg = quinn::TransportConfig::default();
    cfg.max_idle_timeout(t.idle_timeout.try_into().ok());
    cfg.keep_alive_interval(Some(t.keep_alive));
    cfg.initial_rtt(t.initial_rtt);
    match t.congestion {
        Congestion::Cubic => {
            cfg.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
        }
        Congestion::Bbr => {
            cfg.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
        }
    };
    cfg.max_concurrent_bidi_streams(bidi.into());
    cfg.max_concurrent_uni_streams(uni.into());
    Arc::new(cfg)
}

/// The master's QUIC server configuration: presents `identity`, requires a client certificate
/// signed by `ca_pem`.
pub fn server_config(
    ca_pem: &str,
    identity: &Identity,
    tuning: TransportTuning,
) -> Result<quinn::ServerConfig, TlsError> {
    server_config_with_crls(ca_pem, identity, &[], tuning)
}

/// [`server_config`] that also refuses client certificates named in any of the revocation
/// lists `crls` (PEM, signed by the CA).
pub fn server_config_with_crls(
    ca_pem: &str,
    identity: &Identity,
    crls: &[String],
    tuning: TransportTuning,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls_server_config(ca_pem, identity, crls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport(tuning, SERVER_MAX_STREAMS, 0));
    Ok(cfg)
}

/// The TLS 1.3 server side every master listener shares (QUIC, and HTTPS for operators):
/// presents `identity`, requires a client certificate signed by `ca_pem` and not named in
/// `crls`. No ALPN: each transport sets its own.
pub fn rustls_server_config(
    ca_pem: &str,
    identity: &Identity,
    crls: &[String],
) -> Result<rustls::ServerConfig, TlsError> {
    let (certs, key) = identity.der()?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca_pem)?),
        provider(),
    )
    .with_crls(crl_ders(crls)?)
    .build()
    .map_err(|e| TlsError::Verifier(e.to_string()))?;
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?)
}

/// The TLS 1.3 client side every peer shares (QUIC, and HTTPS to the master's operator
/// surface): trusts only `ca_pem` (minus `crls`), presents `identity`. Connect with the server
/// name [`MASTER_SERVER_NAME`], which every master certificate carries.
pub fn rustls_client_config(
    ca_pem: &str,
    identity: &Identity,
    crls: &[String],
) -> Result<rustls::ClientConfig, TlsError> {
    let (certs, key) = identity.der()?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(ca_pem)?),
        provider(),
    )
    .with_crls(crl_ders(crls)?)
    .build()
    .map_err(|e| TlsError::Verifier(e.to_string()))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(certs, key)?)
}

fn crl_ders(
    crls: &[String],
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsError> {
    crls.iter()
        .map(|pem| {
            rustls::pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| pem_err("revocation list", e))
        })
        .collect()
}

/// A peer's QUIC client configuration: trusts only `ca_pem`, presents `identity`.
pub fn client_config(
    ca_pem: &str,
    identity: &Identity,
    tuning: TransportTuning,
) -> Result<quinn::ClientConfig, TlsError> {
    client_config_with_crls(ca_pem, identity, &[], tuning)
}

/// [`client_config`] that also refuses a server certificate named in any of `crls`.
pub fn client_config_with_crls(
    ca_pem: &str,
    identity: &Identity,
    crls: &[String],
    tuning: TransportTuning,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls_client_config(ca_pem, identity, crls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport(tuning, 256, 16));
    Ok(cfg)
}

/// Everything a peer needs to speak TLS in a cluster: the CA to trust, its own identity and the
/// revocation lists in force.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// This peer's certificate and key.
    pub identity: Identity,
    /// Revocation lists (PEM): a master certificate they name is refused.
    pub crls: Vec<String>,
}

impl PeerTls {
    /// Reads the three PEM files a deployed peer is given (no revocation list).
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            ca_pem: read(ca)?,
            identity: Identity::from_files(cert, key)?,
            crls: Vec::new(),
        })
    }

    /// Adds the revocation list at `path`.
    pub fn with_crl_file(mut self, path: &Path) -> Result<Self, TlsError> {
        self.crls.push(read(path)?);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_timers_are_checked_together() {
        assert!(TransportTuning::default().validate().is_ok());
        let ms = Duration::from_millis;
        let t = |idle, keep, rtt| TransportTuning {
            idle_timeout: ms(idle),
            keep_alive: ms(keep),
            initial_rtt: ms(rtt),
            congestion: Congestion::Cubic,
        };
        assert!(t(1000, 500, 100).validate().is_ok());
        let err = t(1000, 600, 100).validate().unwrap_err();
        assert!(err.contains("at most half"), "{err}");
        assert!(t(1000, 100, 0).validate().is_err());
        // A long link's timers are usable as a transport configuration.
        let _ = transport(t(60_000, 5_000, 1_500), 4, 4);
    }

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

    #[test]
    fn issued_certificates_state_their_identity() {
        let ca = ClusterCa::generate("prod").unwrap();
        assert_eq!(ca.cluster_name().unwrap(), "prod");
        for kind in PeerKind::ALL {
            let id = PeerId::new(kind, "node-7").unwrap();
            let cert = ca.issue_peer(&id, DEFAULT_PEER_VALIDITY).unwrap();
            let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
            let (cluster, got) = crate::identity::of_certificate(&der).unwrap();
            assert_eq!((cluster.as_str(), got), ("prod", id));
        }
        // Valid from a few minutes ago for the validity asked, not from 1975 to 4096.
        use x509_parser::prelude::{FromDer, X509Certificate};
        let id = PeerId::new(PeerKind::Agent, "short").unwrap();
        let cert = ca.issue_peer(&id, Duration::from_secs(86_400)).unwrap();
        let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
        let (_, x509) = X509Certificate::from_der(&der).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (from, to) = (
            x509.validity().not_before.timestamp(),
            x509.validity().not_after.timestamp(),
        );
        assert!(from <= now && now - from <= 600, "{from} {now}");
        assert!((to - (now + 86_400)).abs() <= 60, "{to} {now}");
        // The old anonymous certificates carry no identity at all.
        let anonymous = ca.issue("x", &[]).unwrap();
        let der = CertificateDer::from_pem_slice(anonymous.cert_pem.as_bytes()).unwrap();
        assert!(matches!(
            crate::identity::of_certificate(&der),
            Err(crate::identity::PeerIdError::Count(0))
        ));
    }

    /// Over real QUIC on loopback: the server reads the client's identity from its certificate,
    /// and a certificate on the revocation list is refused in the handshake.
    #[tokio::test]
    async fn the_server_reads_identities_and_refuses_revoked_certificates() {
        let ca = ClusterCa::generate("prod").unwrap();
        let master = ca.issue_master().unwrap();
        let good = ca
            .issue_peer(
                &PeerId::new(PeerKind::Agent, "a1").unwrap(),
                DEFAULT_PEER_VALIDITY,
            )
            .unwrap();
        let revoked = ca
            .issue_peer(
                &PeerId::new(PeerKind::Agent, "a2").unwrap(),
                DEFAULT_PEER_VALIDITY,
            )
            .unwrap();
        let serial = crate::identity::serial_of_pem(&revoked.cert_pem).unwrap();
        let crl = ca.revocation_list(&[serial], 1).unwrap();
        let tuning = TransportTuning::default();
        let server_cfg =
            server_config_with_crls(&ca.cert_pem, &master, std::slice::from_ref(&crl), tuning)
                .unwrap();
        let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(incoming) = server.accept().await {
                match incoming.await {
                    Ok(conn) => {
                        seen.push(crate::identity::of_connection(&conn).unwrap().1);
                        break;
                    }
                    Err(_) => continue,
                }
            }
            seen
        });
        let dial = |id: &Identity| {
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(client_config(&ca.cert_pem, id, tuning).unwrap());
            async move {
                // In TLS 1.3 the server judges the client's certificate after the client
                // considers itself connected: its verdict is how the connection closes.
                match ep.connect(addr, MASTER_SERVER_NAME).unwrap().await {
                    Ok(conn) => conn.closed().await,
                    Err(e) => e,
                }
            }
        };
        let refused = tokio::time::timeout(Duration::from_secs(5), dial(&revoked))
            .await
            .expect("the server must close a revoked peer's connection");
        assert!(
            matches!(
                refused,
                quinn::ConnectionError::TransportError(_)
                    | quinn::ConnectionError::ConnectionClosed(_)
            ),
            "a revoked certificate must fail the handshake: {refused:?}"
        );
        let good_dial = tokio::spawn(dial(&good));
        let seen = accepting.await.unwrap();
        good_dial.abort();
        assert_eq!(seen, vec![PeerId::new(PeerKind::Agent, "a1").unwrap()]);
    }
}
