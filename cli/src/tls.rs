//! The `--ca`/`--cert`/`--key` arguments every deployed peer (master, agent, `tessera run`
//! against a cluster) takes, and loading them; and the `--quic-*` timers of its links.

use anyhow::Context;
use clap::Args;
use net::tls::{Congestion, PeerTls, TransportTuning};
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
    /// True when `--cert` was given (the operator commands then speak HTTPS even on loopback).
    pub fn cert_given(&self) -> bool {
        self.cert.is_some()
    }

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

/// The QUIC timers every deployed peer (master, agent, `tessera run`) can tune for its links:
/// the defaults hold at 10 % loss and 300 ms of round trip; longer or lossier links want a
/// longer idle timeout and an initial RTT near the real one.
#[derive(Args, Clone, Debug)]
pub struct QuicArgs {
    /// Close a connection after this long without a packet from the peer (that is how a dead
    /// peer is noticed). Both ends take the smaller of their two values.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    quic_idle_timeout: std::time::Duration,
    /// Send a keep-alive after this long without traffic: at most half the idle timeout.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    quic_keep_alive: std::time::Duration,
    /// The round-trip time assumed before one is measured (sets the handshake's first
    /// retransmission timer).
    #[arg(long, default_value = "333ms", value_parser = humantime::parse_duration)]
    quic_initial_rtt: std::time::Duration,
    /// Congestion controller: `bbr` (paces by measured bandwidth; holds up on links that
    /// lose packets at random) or `cubic` (loss-based).
    #[arg(long, default_value = "bbr", value_parser = parse_congestion)]
    quic_congestion: Congestion,
}

fn parse_congestion(s: &str) -> Result<Congestion, String> {
    match s {
        "bbr" => Ok(Congestion::Bbr),
        "cubic" => Ok(Congestion::Cubic),
        _ => Err(format!("{s:?}: expected bbr or cubic")),
    }
}

impl QuicArgs {
    /// The transport tuning these flags describe, checked for sense.
    pub fn tuning(&self) -> anyhow::Result<TransportTuning> {
        let t = TransportTuning {
            idle_timeout: self.quic_idle_timeout,
            keep_alive: self.quic_keep_alive,
            initial_rtt: self.quic_initial_rtt,
            congestion: self.quic_congestion,
        };
        t.validate().map_err(|e| anyhow::anyhow!("--quic-*: {e}"))?;
        Ok(t)
    }
}
