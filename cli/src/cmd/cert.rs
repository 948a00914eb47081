//! `tessera cert`: creates a cluster CA, issues the certificates that state each peer's
//! identity, and revokes them.
//!
//! Files in DIR (default `certs/`): `ca.pem`, `ca-key.pem` (keep it off the cluster),
//! `NAME.pem` / `NAME-key.pem` per peer, `revoked.txt` (one hex serial per line, with the name)
//! and `crl.pem`, the signed revocation list peers load when it exists.

use anyhow::{bail, Context};
use clap::Subcommand;
use net::tls::{ClusterCa, DEFAULT_PEER_VALIDITY};
use proto::identity::{PeerId, PeerKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `tessera cert` subcommands.
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Create a new cluster CA (ca.pem, ca-key.pem) in DIR; refuses to replace an existing one.
    Ca {
        /// Output directory.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The cluster's name: the trust domain of every identity the CA signs.
        #[arg(long, default_value = "tessera")]
        cluster: String,
    },
    /// Issue a certificate stating KIND/NAME (NAME.pem, NAME-key.pem) signed by the CA in DIR.
    Issue {
        /// master, agent, framework (a framework principal) or operator.
        #[arg(value_parser = parse_kind)]
        kind: PeerKind,
        /// The peer's name (an agent's name, a framework principal); "master" for the master.
        name: Option<String>,
        /// Directory holding the CA, where the certificate is written.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// How long the certificate is valid.
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        validity: Duration,
    },
    /// Revoke NAME's certificate: adds it to DIR/revoked.txt and rewrites DIR/crl.pem, which the
    /// master and peers load at start.
    Revoke {
        /// The name the certificate was issued for (NAME.pem in DIR).
        name: String,
        /// Directory holding the CA and the certificate.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

fn parse_kind(s: &str) -> Result<PeerKind, String> {
    PeerKind::parse(s)
        .ok_or_else(|| format!("{s:?} is not a kind: master, agent, framework or operator"))
}

/// Writes the CA, a certificate or the revocation list.
pub fn execute(command: CertCommand) -> anyhow::Result<i32> {
    match command {
        CertCommand::Ca { dir, cluster } => {
            if !proto::ids::is_safe_id(&cluster) {
                bail!("{cluster:?} is not a valid cluster name (letters, digits, . _ -)");
            }
            for file in ["ca.pem", "ca-key.pem"] {
                let path = dir.join(file);
                if path.exists() {
                    bail!(
                        "{} exists: refusing to replace the cluster CA (every certificate it \
                         issued would stop working); remove it first to start a new cluster",
                        path.display()
                    );
                }
            }
            std::fs::create_dir_all(&dir)?;
            let ca = ClusterCa::generate(&cluster)?;
            write_new(&dir.join("ca.pem"), &ca.cert_pem, false)?;
            write_new(&dir.join("ca-key.pem"), &ca.key_pem, true)?;
            println!(
                "wrote {0}/ca.pem and {0}/ca-key.pem for cluster {cluster} (keep the key off the \
                 cluster)",
                dir.display()
            );
        }
        CertCommand::Issue {
            kind,
            name,
            dir,
            validity,
        } => {
            let name = match (kind, name) {
                (_, Some(name)) => name,
                (PeerKind::Master, None) => "master".to_owned(),
                (_, None) => bail!("name the {kind}: tessera cert issue {kind} NAME"),
            };
            let id = PeerId::new(kind, &name)?;
            let ca = ClusterCa::from_files(&dir.join("ca.pem"), &dir.join("ca-key.pem"))?;
            let cert = ca.issue_peer(&id, validity)?;
            // Never over an existing pair: the old certificate would stay valid but could no
            // longer be named to `revoke`. Revoke and remove it first to re-issue.
            write_new(&dir.join(format!("{name}.pem")), &cert.cert_pem, false)?;
            write_new(&dir.join(format!("{name}-key.pem")), &cert.key_pem, true)?;
            let days = validity.as_secs() / 86_400;
            println!(
                "wrote {0}/{name}.pem and {0}/{name}-key.pem ({id}, valid {days} days)",
                dir.display()
            );
            if validity > DEFAULT_PEER_VALIDITY * 5 {
                eprintln!("warning: a validity of more than five years is hard to take back");
            }
        }
        CertCommand::Revoke { name, dir } => {
            let cert = dir.join(format!("{name}.pem"));
            let pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("reading {}", cert.display()))?;
            let serial = net::identity::serial_of_pem(&pem)?;
            let list = dir.join("revoked.txt");
            let mut lines: Vec<String> = match std::fs::read_to_string(&list) {
                Ok(text) => text.lines().map(str::to_owned).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e).with_context(|| format!("reading {}", list.display())),
            };
            let hex = hex_of(&serial);
            if !lines
                .iter()
                .any(|l| l.split(' ').next() == Some(hex.as_str()))
            {
                lines.push(format!("{hex} {name}"));
            }
            let serials = lines
                .iter()
                .filter_map(|l| l.split(' ').next())
                .map(serial_of_hex)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let ca = ClusterCa::from_files(&dir.join("ca.pem"), &dir.join("ca-key.pem"))?;
            let crl = ca.revocation_list(&serials, unix_seconds())?;
            write_public(&list, &(lines.join("\n") + "\n"))?;
            write_public(&dir.join("crl.pem"), &crl)?;
            println!(
                "revoked {name} (serial {hex}); wrote {0}/crl.pem with {1} revoked \
                 certificate(s): copy it to the master and the peers and restart them",
                dir.display(),
                serials.len()
            );
        }
    }
    Ok(0)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serial_of_hex(hex: &str) -> anyhow::Result<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        bail!("bad serial {hex:?} in revoked.txt");
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).context("bad serial in revoked.txt"))
        .collect()
}

/// The CRL number: it must grow with every new list.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Writes `contents` to a new file at `path`, never replacing one; a `secret` is created
/// readable by its owner only (from the start, not chmod'ed after).
fn write_new(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (it exists? revoke and remove it first to re-issue)",
                path.display()
            )
        })?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// Replaces the public file at `path` (the revocation list and its index).
fn write_public(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}
