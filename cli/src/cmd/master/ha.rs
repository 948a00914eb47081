//! `tessera master --etcd …`: one of several masters, elected and sharing the registry through
//! etcd (the `tessera-etcd` crate); the flags here map onto its options.

use anyhow::{bail, Context};
use clap::Args;
use master::ha::Coordinator;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Flags of a highly available master.
#[derive(Args, Debug)]
pub struct HaArgs {
    /// etcd client URLs (`http://127.0.0.1:2379,http://…`): run as one of several masters, the
    /// leader elected and the registry kept in etcd. Without it, a single master keeps its
    /// registry in `--work-dir`.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Key prefix of this cluster in etcd (default `/tessera/<cluster>`, the cluster named by
    /// the master's certificate): clusters sharing an etcd need distinct prefixes (a prefix
    /// holding another cluster's registry is refused).
    #[arg(long)]
    etcd_prefix: Option<String>,
    /// How long the leader's lease lasts without renewal (whole seconds): a dead leader is
    /// replaced about this long after it stopped renewing; a leader cut from etcd steps down
    /// before it expires. Below 2s, etcd needs a lower `--election-timeout`.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// The `host:port` peers are sent to while this master leads (default: `--listen`, which
    /// must then name a specific address).
    #[arg(long)]
    advertise: Option<String>,
    /// CA certificate (PEM) that signed etcd's server certificate (etcd over TLS).
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to etcd (with `--etcd-key`).
    #[arg(long, requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// Key of `--etcd-cert`.
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// etcd user (password from `$TESSERA_ETCD_PASSWORD`).
    #[arg(long)]
    etcd_user: Option<String>,
}

impl HaArgs {
    /// Whether the master runs as one of several.
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }

    /// Connects to etcd; returns the coordinator and the address to advertise.
    pub async fn coordinator(
        &self,
        listen: SocketAddr,
        cluster: &str,
        idle_timeout: Duration,
    ) -> anyhow::Result<(Arc<dyn Coordinator>, String)> {
        let advertise = match &self.advertise {
            Some(a) => a.clone(),
            None if listen.ip().is_unspecified() => bail!(
                "--listen {listen} is a wildcard address: give --advertise HOST:PORT, the \
                 address peers reach this master at"
            ),
            None => listen.to_string(),
        };
        if idle_timeout > self.lease_ttl {
            tracing::warn!(
                ?idle_timeout,
                lease_ttl = ?self.lease_ttl,
                "the QUIC idle timeout is longer than the lease: peers will notice a dead \
                 leader later than a successor is elected"
            );
        }
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let tls = match (&self.etcd_ca, &self.etcd_cert, &self.etcd_key) {
            (None, None, None) => None,
            (None, _, _) => bail!("--etcd-cert and --etcd-key need --etcd-ca (TLS to etcd)"),
            (Some(ca), cert, key) => Some(tessera_etcd::EtcdTls {
                ca_pem: read(ca)?,
                identity: match (cert, key) {
                    (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                    _ => None,
                },
            }),
        };
        let user = match &self.etcd_user {
            Some(u) => Some((
                u.clone(),
                std::env::var("TESSERA_ETCD_PASSWORD")
                    .context("--etcd-user needs the password in $TESSERA_ETCD_PASSWORD")?,
            )),
            None => None,
        };
        let mut opts = tessera_etcd::EtcdOptions::new(self.etcd.clone(), cluster);
        if let Some(prefix) = &self.etcd_prefix {
            opts.prefix = prefix.clone();
        }
        opts.lease_ttl = self.lease_ttl;
        opts.tls = tls;
        opts.user = user;
        let coordinator = tessera_etcd::EtcdCoordinator::connect(opts)
            .await
            .context("connecting to etcd")?;
        Ok((Arc::new(coordinator), advertise))
    }
}
