//! What the real-process tests share: the `tessera` binary, a reaper for its processes,
//! certificates, a free port, and a master or agent started with short QUIC timers.

pub mod jobs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Short QUIC timers for masters and agents, so peers notice a dead one quickly (their
/// defaults: 10 s idle timeout, 2 s keep-alive).
pub const IDLE: &str = "3s";
/// See [`IDLE`].
pub const KEEP_ALIVE: &str = "1s";

/// The binary under test.
pub fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

/// Kills a child process when dropped, so a failing test leaves nothing running.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA in `dir/certs` with certificates for the master, these agents and these frameworks.
pub fn certs(dir: &Path, agents: &[&str], frameworks: &[&str]) -> PathBuf {
    let certs = dir.join("certs");
    let c = certs.to_str().unwrap();
    let mut calls = vec![
        vec!["cert", "ca", "--dir", c],
        vec!["cert", "issue", "master", "--dir", c],
    ];
    calls.extend(
        agents
            .iter()
            .map(|a| vec!["cert", "issue", "agent", a, "--dir", c]),
    );
    calls.extend(
        frameworks
            .iter()
            .map(|f| vec!["cert", "issue", "framework", f, "--dir", c]),
    );
    for args in calls {
        assert!(tessera().args(&args).status().unwrap().success());
    }
    certs
}

/// A loopback port for a master, one no other socket is given while it restarts.
pub fn reserved_port() -> u16 {
    tessera_etcd::testing::reserved_port().unwrap()
}

/// Field `n` of `/proc/<pid>/stat`, numbered as `proc(5)` numbers them (3: the state, 4: the
/// parent's pid, 6: the session id).
pub fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(n - 3).map(str::to_owned)
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_field(pid, 3).is_some_and(|state| state != "Z" && state != "X")
}

/// A master on `addr` with its work directory `dir/master`, logging to `log`.
pub fn start_master(dir: &Path, certs: &Path, addr: &str, log: &Path) -> Reaper {
    start_master_with(dir, certs, addr, log, &[])
}

/// [`start_master`] with more arguments.
pub fn start_master_with(
    dir: &Path,
    certs: &Path,
    addr: &str,
    log: &Path,
    extra: &[&str],
) -> Reaper {
    Reaper(
        tessera()
            .args(["master", "--listen", addr])
            .args(extra)
            .arg("--work-dir")
            .arg(dir.join("master"))
            .args(["--allocation-interval", "100ms"])
            .args(["--quic-idle-timeout", IDLE, "--quic-keep-alive", KEEP_ALIVE])
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Agent `name` of `<cpus, 512 MiB, 1 GiB disk>` with its work directory `dir/name`, logging
/// to `dir/name.log`; `masters` is one address or several (`a:5050,b:5050`).
pub fn start_agent(dir: &Path, certs: &Path, masters: &str, name: &str, cpus: &str) -> Reaper {
    start_agent_timed(dir, certs, masters, name, cpus, IDLE, KEEP_ALIVE)
}

/// [`start_agent`] with its own QUIC idle timeout and keep-alive.
pub fn start_agent_timed(
    dir: &Path,
    certs: &Path,
    masters: &str,
    name: &str,
    cpus: &str,
    idle: &str,
    keep_alive: &str,
) -> Reaper {
    Reaper(
        tessera()
            .args(["agent", "--master", masters, "--hostname", name])
            .args(["--cpus", cpus, "--mem", "512MiB", "--disk", "1GiB"])
            .args(["--quic-idle-timeout", idle, "--quic-keep-alive", keep_alive])
            .arg("--work-dir")
            .arg(dir.join(name))
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join(format!("{name}.pem")))
            .arg("--key")
            .arg(certs.join(format!("{name}-key.pem")))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap(),
    )
}
