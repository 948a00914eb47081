//! One private etcd member on reserved loopback ports with a temporary data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the test etcd could not be run.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No etcd binary.
    #[error("no etcd binary: install etcd-server or set $TESSERA_ETCD")]
    NoBinary,
    /// It could not be started or did not become ready.
    #[error("etcd did not start: {0}")]
    Start(String),
    /// I/O around it failed.
    #[error("etcd harness: {0}")]
    Io(#[from] std::io::Error),
}

/// TLS for a test etcd's client port (PEM text): its certificate, the CA clients must
/// present certificates from, and a client identity the harness probes it with.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The CA that signed both certificates.
    pub ca_pem: String,
    /// etcd's certificate (valid for 127.0.0.1).
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
    /// A client certificate and key from the same CA.
    pub client: (String, String),
}

/// A private etcd: killed, reaped and its directory removed on drop.
pub struct EtcdServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    tls: Option<ServerTls>,
}

fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TESSERA_ETCD") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl EtcdServer {
    /// True when an etcd binary is found.
    pub fn available() -> bool {
        binary().is_some()
    }

    /// Starts one etcd member and waits (up to 10 s) until it answers a read.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with(None).await
    }

    /// Starts one etcd member serving clients over TLS and requiring client certificates
    /// (`--client-cert-auth`).
    pub async fn start_tls(tls: ServerTls) -> Result<Self, HarnessError> {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<ServerTls>) -> Result<Self, HarnessError> {
        let bin = binary().ok_or(HarnessError::NoBinary)?;
        let mut last = String::new();
        // A free port may be taken between probing and binding: try a few.
        for _ in 0..3 {
            let mut s = Self {
                bin: bin.clone(),
                client_port: super::reserved_port()?,
                peer_port: super::reserved_port()?,
                child: None,
                tls: tls.clone(),
                dir: tempfile::Builder::new().prefix("tessera-etcd").tempdir()?,
            };
            match s.spawn_and_wait().await {
                Ok(()) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
        }
        Err(HarnessError::Start(last))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    async fn spawn_and_wait(&mut self) -> Result<(), HarnessError> {
        let c = self.endpoints().remove(0);
        let p = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(&self.bin);
        if let Some(tls) = &self.tls {
            let d = self.dir.path();
            std::fs::write(d.join("ca.pem"), &tls.ca_pem)?;
            std::fs::write(d.join("server.pem"), &tls.cert_pem)?;
            std::fs::write(d.join("server.key"), &tls.key_pem)?;
            cmd.arg("--cert-file")
                .arg(d.join("server.pem"))
                .arg("--key-file")
                .arg(d.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(d.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "n1", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args([
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
            ])
            .args(["--initial-cluster", &format!("n1={p}")])
            .args(["--initial-cluster-state", "new"])
            .args([
                "--initial-cluster-token",
                &format!("tessera-{}-{}", std::process::id(), self.client_port),
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(HarnessError::Start(format!(
                    "etcd exited ({status}); log tail:\n{}",
                    log_tail(&self.log_path())
                )));
            }
            if self.ready().await {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(10) {
                self.kill();
                return Err(HarnessError::Start(format!(
                    "not ready after 10 s; log tail:\n{}",
                    log_tail(&self.log_path())
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ready(&self) -> bool {
        let eps = self.endpoints();
        let opts = self.tls.as_ref().map(|t| {
            etcd_client::ConnectOptions::new().with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(&t.ca_pem))
                    .identity(etcd_client::Identity::from_pem(&t.client.0, &t.client.1)),
            )
        });
        let probe = async {
            let mut c = etcd_client::Client::connect(&eps, opts).await.ok()?;
            c.get("probe", None).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Some(_))
        )
    }

    /// Its client URL (one).
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        vec![format!("{scheme}://127.0.0.1:{}", self.client_port)]
    }

    /// Its client port (for a [`TcpProxy`](super::TcpProxy) in front of it).
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// Kills it (SIGKILL) and reaps it; its data stays for [`EtcdServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// Pauses it (SIGSTOP): connections stay open, nothing answers.
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// Resumes it (SIGCONT).
    pub fn cont(&self) {
        self.signal("-CONT");
    }

    /// Kills it if running and starts it again on the same data directory and ports.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.spawn_and_wait().await
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.cont();
        self.kill();
    }
}
