//! One private etcd member on free loopback ports with a temporary data directory.

use std::net::TcpListener;
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

/// A private etcd: killed, reaped and its directory removed on drop.
pub struct EtcdServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
        let bin = binary().ok_or(HarnessError::NoBinary)?;
        let mut last = String::new();
        // A free port may be taken between probing and binding: try a few.
        for _ in 0..3 {
            let mut s = Self {
                bin: bin.clone(),
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
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
        let c = format!("http://127.0.0.1:{}", self.client_port);
        let p = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.bin)
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
        let probe = async {
            let mut c = etcd_client::Client::connect(&eps, None).await.ok()?;
            c.get("probe", None).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Some(_))
        )
    }

    /// Its client URL (one).
    pub fn endpoints(&self) -> Vec<String> {
        vec![format!("http://127.0.0.1:{}", self.client_port)]
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
