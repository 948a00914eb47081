//! The `--ca`/`--cert`/`--key` arguments every deployed peer (master, agent, `tessera run`
//! against a cluster) takes, and loading them.

use anyhow::Context;
use clap::Args;
use net::tls::PeerTls;
use std::path::{Path, PathBuf};

/// The three PEM files a deployed peer is given.
#[derive(Args, Clone, Debug)]
pub struct TlsArgs {
    /// The cluster CA certificate.
    #[arg(long, default_value = "certs/ca.pem")]
    ca: PathBuf,
    /// This peer's certificate.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// This peer's private key.
    #[arg(long)]
    key: Option<PathBuf>,
}

impl TlsArgs {
    /// Loads the files; a missing `--cert`/`--key` defaults to `NAME.pem`/`NAME-key.pem`
    /// beside the CA, as `tessera cert issue NAME` writes them.
    pub fn load(&self, default_name: &str) -> anyhow::Result<PeerTls> {
        let dir = self.ca.parent().unwrap_or(Path::new("."));
        let cert = self
            .cert
            .clone()
            .unwrap_or_else(|| dir.join(format!("{default_name}.pem")));
        let key = self
            .key
            .clone()
            .unwrap_or_else(|| dir.join(format!("{default_name}-key.pem")));
        PeerTls::from_files(&self.ca, &cert, &key).with_context(|| {
            format!(
                "loading TLS files (CA {}, cert {}, key {}); create them with `tessera cert`",
                self.ca.display(),
                cert.display(),
                key.display()
            )
        })
    }
}
