//! `tessera cert`: creates a cluster CA and issues the certificates peers present to each other.

use anyhow::{bail, Context};
use clap::Subcommand;
use net::tls::ClusterCa;
use std::path::{Path, PathBuf};

/// The `tessera cert` subcommands.
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Create a new cluster CA (ca.pem, ca-key.pem) in DIR.
    Ca {
        /// Output directory.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Issue a certificate (NAME.pem, NAME-key.pem) signed by the CA in DIR.
    Issue {
        /// Peer name: "master" for the master, any name for agents and frameworks.
        name: String,
        /// Directory holding the CA, where the certificate is written.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

/// Writes the CA or the certificate.
pub fn execute(command: CertCommand) -> anyhow::Result<i32> {
    match command {
        CertCommand::Ca { dir } => {
            std::fs::create_dir_all(&dir)?;
            let ca = ClusterCa::generate("tessera-cluster-ca")?;
            write_private(&dir.join("ca.pem"), &ca.cert_pem, false)?;
            write_private(&dir.join("ca-key.pem"), &ca.key_pem, true)?;
            println!(
                "wrote {0}/ca.pem and {0}/ca-key.pem (keep the key off the cluster)",
                dir.display()
            );
        }
        CertCommand::Issue { name, dir } => {
            if !proto::ids::is_safe_id(&name) {
                bail!("{name:?} is not a valid peer name (letters, digits, . _ -)");
            }
            let ca = ClusterCa::from_files(&dir.join("ca.pem"), &dir.join("ca-key.pem"))?;
            let id = if name == "master" {
                ca.issue_master()?
            } else {
                ca.issue(&name, &[])?
            };
            write_private(&dir.join(format!("{name}.pem")), &id.cert_pem, false)?;
            write_private(&dir.join(format!("{name}-key.pem")), &id.key_pem, true)?;
            println!("wrote {0}/{name}.pem and {0}/{name}-key.pem", dir.display());
        }
    }
    Ok(0)
}

/// Writes `contents` to `path`, readable by the owner only when `secret`.
fn write_private(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
