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
    /// A certificate revocation list (default: `crl.pem` beside the CA, when it exists).
    #[arg(long)]
    crl: Option<PathBuf>,
}

impl TlsArgs {
    /// Loads the files; a missing `--cert`/`--key` defaults to `NAME.pem`/`NAME-key.pem`
    /// beside the CA, as `tessera cert issue KIND NAME` writes them, and a missing `--crl` to
    /// `crl.pem` there when `tessera cert revoke` has written one.
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
        let tls = PeerTls::from_files(&self.ca, &cert, &key).with_context(|| {
            format!(
                "loading TLS files (CA {}, cert {}, key {}); create them with `tessera cert`",
                self.ca.display(),
                cert.display(),
                key.display()
            )
        })?;
        let crl = match &self.crl {
            Some(path) => Some(path.clone()),
            None => Some(dir.join("crl.pem")).filter(|p| p.exists()),
        };
        match crl {
            Some(path) => tls
                .with_crl_file(&path)
                .with_context(|| format!("loading the revocation list {}", path.display())),
            None => Ok(tls),
        }
    }
}
