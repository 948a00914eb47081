//! Reading a peer's identity from its verified certificate.
//!
//! TLS has already checked the chain to the cluster CA (and the revocation list) when these
//! functions run; they only read what the CA wrote: the one `spiffe://<cluster>/<kind>/<name>`
//! URI subject alternative name. A certificate without exactly one such name has no identity
//! and its holder is refused.

use proto::identity::{IdentityError, PeerId, SCHEME};
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a connection or certificate yields no identity.
#[derive(Debug, thiserror::Error)]
pub enum PeerIdError {
    /// The peer presented no certificate (cannot happen with the master's verifier).
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The certificate could not be parsed.
    #[error("unreadable certificate: {0}")]
    Unreadable(String),
    /// No `spiffe://` URI name, or more than one.
    #[error("the certificate carries {0} spiffe:// identities, not exactly one (issue it with `tessera cert issue KIND NAME`)")]
    Count(usize),
    /// The URI is not a valid identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The cluster name and identity written in a DER certificate.
pub fn of_certificate(der: &[u8]) -> Result<(String, PeerId), PeerIdError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PeerIdError::Unreadable(e.to_string()))?;
    let uris: Vec<&str> = match cert
        .subject_alternative_name()
        .map_err(|e| PeerIdError::Unreadable(e.to_string()))?
    {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) if u.starts_with(SCHEME) => Some(*u),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    match uris.as_slice() {
        [one] => Ok(PeerId::from_uri(one)?),
        other => Err(PeerIdError::Count(other.len())),
    }
}

/// The cluster name and identity of the peer at the other end of `conn`, from the leaf of the
/// certificate chain it presented during the handshake.
pub fn of_connection(conn: &quinn::Connection) -> Result<(String, PeerId), PeerIdError> {
    let any = conn.peer_identity().ok_or(PeerIdError::NoCertificate)?;
    let chain = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| PeerIdError::NoCertificate)?;
    let leaf = chain.first().ok_or(PeerIdError::NoCertificate)?;
    of_certificate(leaf)
}

/// The serial number of a PEM certificate (what a revocation list names).
pub fn serial_of_pem(pem: &str) -> Result<Vec<u8>, PeerIdError> {
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PeerIdError::Unreadable(e.to_string()))?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| PeerIdError::Unreadable(e.to_string()))?;
    Ok(cert.raw_serial().to_vec())
}
