//! The `tessera` binary itself: `run` prints the task's output and returns its exit code, `dev`
//! plays the worked example and exits 0, `cert` writes a usable CA.

use std::process::Command;

use crate::common::Reaper;

fn tessera() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.env("RUST_LOG", "error");
    c
}

#[test]
fn run_prints_output_and_passes_exit_codes_through() {
    let out = tessera()
        .args(["run", wasm_examples::HELLO_PATH, "--", "world"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Hello from Tessera!"), "{stdout}");
    assert!(stdout.contains("world"), "{stdout}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tessera()
        .args(["run", wasm_examples::HELLO_PATH, "--env", "EXIT_CODE=3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn run_reports_traps_and_timeouts_with_a_reason() {
    let out = tessera()
        .args(["run", wasm_examples::TRAP_PATH])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(134));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("trap"), "{stderr}");

    let out = tessera()
        .args(["run", wasm_examples::SPINNER_PATH, "--timeout", "300ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timeout"), "{stderr}");
}

#[test]
fn run_with_dir_gives_the_guest_that_directory_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "data from the host\n").unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    std::fs::write(dir.path().join("nested/more.txt"), "x").unwrap();
    let out = tessera()
        .args(["run", wasm_examples::FILES_PATH, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("data from the host"), "{stdout}");
    assert!(stdout.contains("ls: input.txt"), "{stdout}");
    assert!(stdout.contains("ls: nested"), "{stdout}");
    assert!(!stdout.contains("ALLOWED"), "{stdout}");
    assert!(stdout.matches("denied").count() >= 3, "{stdout}");
    // What the guest wrote is on the host once it ended (local mode writes back).
    assert_eq!(
        std::fs::read_to_string(dir.path().join("output.txt")).unwrap(),
        "written by the files guest\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sub/dir/file.txt")).unwrap(),
        "nested\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("input.txt")).unwrap(),
        "data from the host\n"
    );
}

#[test]
fn run_takes_a_wasi_0_2_command_component() {
    use wasm_examples::components::{P2CMD_PATH, P2MEMHOG_PATH};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "data from the host\n").unwrap();
    let out = tessera()
        .args(["run", P2CMD_PATH, "--env", "GREETING=hello", "--dir"])
        .arg(dir.path())
        .args(["--", "5", "/input.txt"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("p2cmd: argv=p2cmd 5 /input.txt\n"),
        "{stdout}"
    );
    assert!(stdout.contains("p2cmd: GREETING=hello\n"), "{stdout}");
    assert!(
        stdout.contains("cat /input.txt: data from the host\n"),
        "{stdout}"
    );
    assert!(stderr.contains("p2cmd: done"), "{stderr}");

    // A memory limit hit is exit code 137, as for a module.
    let out = tessera()
        .args(["run", P2MEMHOG_PATH, "--mem", "32MiB"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{stderr}");
    assert!(stderr.contains("memory limit"), "{stderr}");
}

#[test]
fn dev_plays_the_worked_example() {
    let out = tessera().arg("dev").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("offer master-O2 from agent1: <1 cpu, 1 GB>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK: the worked example ran as described"),
        "{stdout}"
    );
}

#[test]
fn cert_creates_a_ca_and_issues_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(tessera()
        .args(["cert", "ca", "--dir", d])
        .status()
        .unwrap()
        .success());
    assert!(tessera()
        .args(["cert", "issue", "master", "--dir", d])
        .status()
        .unwrap()
        .success());
    assert!(tessera()
        .args(["cert", "issue", "agent", "agent1", "--dir", d])
        .status()
        .unwrap()
        .success());
    let tls = net::tls::PeerTls::from_files(
        &dir.path().join("ca.pem"),
        &dir.path().join("agent1.pem"),
        &dir.path().join("agent1-key.pem"),
    )
    .unwrap();
    net::tls::client_config(&tls.ca_pem, &tls.identity, Default::default()).unwrap();
    assert!(!tessera()
        .args(["cert", "issue", "agent", "../x", "--dir", d])
        .status()
        .unwrap()
        .success());
    // A second CA would orphan every certificate of the first: refused, the first kept.
    let before = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let out = tessera().args(["cert", "ca", "--dir", d]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to replace"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), before);
    // Re-issuing over an existing pair is refused (the old one could no longer be revoked).
    let out = tessera()
        .args(["cert", "issue", "framework", "agent1", "--dir", d])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revoke and remove it first"),
        "{out:?}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("agent1-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "a key readable by others: {mode:o}");
    }
    // An unknown kind is a usage error.
    assert!(!tessera()
        .args(["cert", "issue", "admin", "x", "--dir", d])
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_deployment_of_separate_processes_runs_a_task() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let c = certs.to_str().unwrap();
    for args in [
        vec!["cert", "ca", "--dir", c],
        vec!["cert", "issue", "master", "--dir", c],
        vec!["cert", "issue", "agent", "worker1", "--dir", c],
        vec!["cert", "issue", "framework", "tessera-run", "--dir", c],
        vec!["cert", "issue", "framework", "fired", "--dir", c],
        vec!["cert", "revoke", "fired", "--dir", c],
    ] {
        assert!(tessera().args(&args).status().unwrap().success());
    }
    let ca = certs.join("ca.pem");
    let config = dir.path().join("master.toml");
    std::fs::write(
        &config,
        "allocator = \"drf\"\n[roles.analytics]\nweight = 2.0\nlimit = { cpus = 4, mem = \"4GiB\" }\n",
    )
    .unwrap();
    // A config file with a typo is refused with a clear error before anything starts.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[roles.analytics]\nwieght = 2.0\n").unwrap();
    let out = tessera()
        .args(["master", "--listen", "127.0.0.1:0", "--ca"])
        .arg(&ca)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wieght"),
        "{out:?}"
    );
    let mut master = Reaper(
        tessera()
            .args(["master", "--listen", "127.0.0.1:0", "--work-dir"])
            .arg(dir.path().join("master"))
            .arg("--config")
            .arg(&config)
            .arg("--ca")
            .arg(&ca)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(master.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    let _agent = Reaper(
        tessera()
            .args(["agent", "--master", &addr, "--hostname", "worker1"])
            .arg("--resources")
            // Disk, so that `tessera run`'s task is charged some and gets a sandbox, whose
            // files the agent keeps after it ends (checked below).
            .arg("cpus(analytics):1;mem(analytics):512MiB;cpus:1;mem:512MiB;disk:1GiB")
            .arg("--work-dir")
            .arg(dir.path().join("worker1"))
            .arg("--ca")
            .arg(&ca)
            .spawn()
            .unwrap(),
    );
    let out = tessera()
        .args(["run", wasm_examples::HELLO_PATH, "--master", &addr, "--ca"])
        .arg(&ca)
        .args(["--", "from", "a", "real", "cluster"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Hello from Tessera!"), "{stdout}");
    assert!(stdout.contains("real cluster"), "{stdout}");
    // A revoked certificate is refused in the TLS handshake (the master loaded certs/crl.pem).
    let out = tessera()
        .args(["run", wasm_examples::HELLO_PATH, "--master", &addr, "--ca"])
        .arg(&ca)
        .arg("--cert")
        .arg(certs.join("fired.pem"))
        .arg("--key")
        .arg(certs.join("fired-key.pem"))
        .output()
        .unwrap();
    // Refused by the master: its own exit code, not the task's, and no redialing.
    assert_eq!(out.status.code(), Some(76), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid peer certificate: Revoked"),
        "{stderr}"
    );
    // The agent kept the task's files (its sandbox and output).
    let tasks: Vec<_> = std::fs::read_dir(dir.path().join("worker1/frameworks"))
        .unwrap()
        .collect();
    assert_eq!(tasks.len(), 1);
    // SIGTERM (what systemd and Kubernetes send) stops the master in an orderly way.
    let pid = master.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = master.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the master ignored SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn run_awaits_a_quiet_task_across_many_idle_timeouts() {
    // A task that prints nothing for seconds, on links whose idle timeout is a fraction of
    // that: keep-alives hold the connections, and the run waits for the task's own end (here
    // its wall-clock limit) however quiet it is.
    let out = tessera()
        .args(["run", wasm_examples::SPINNER_PATH, "--timeout", "3s"])
        .args(["--quic-idle-timeout", "400ms", "--quic-keep-alive", "100ms"])
        .args(["--", "sleep"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("spinner: started"),
        "{out:?}"
    );
    // Timers that cannot work together are a usage error, before anything starts.
    let out = tessera()
        .args(["run", wasm_examples::HELLO_PATH])
        .args(["--quic-idle-timeout", "1s", "--quic-keep-alive", "800ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most half the idle timeout"),
        "{out:?}"
    );
}

/// A master and one agent `worker1` (1 cpu, 512 MiB) as separate processes, with certificates
/// for them and for `tessera run` under `dir/certs`.
struct Deployment {
    /// The cluster CA.
    ca: std::path::PathBuf,
    /// The master's address.
    addr: String,
    /// The agent's work directory.
    agent_dir: std::path::PathBuf,
    _master: Reaper,
    _agent: Reaper,
}

fn certs(dir: &std::path::Path) -> std::path::PathBuf {
    let certs = dir.join("certs");
    let c = certs.to_str().unwrap();
    for args in [
        vec!["cert", "ca", "--dir", c],
        vec!["cert", "issue", "master", "--dir", c],
        vec!["cert", "issue", "agent", "worker1", "--dir", c],
        vec!["cert", "issue", "framework", "tessera-run", "--dir", c],
    ] {
        assert!(tessera().args(&args).status().unwrap().success());
    }
    certs.join("ca.pem")
}

#[test]
fn an_agent_refuses_a_compile_memory_limit_it_could_not_apply() {
    // Without a CPU-time limit modules compile in the process that runs the guests, which
    // the memory limit cannot bound: an error at start, not a limit silently dropped.
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let out = tessera()
        .args([
            "agent",
            "--master",
            "127.0.0.1:9",
            "--cpus",
            "1",
            "--mem",
            "512MiB",
        ])
        .args([
            "--compile-cpu-limit",
            "none",
            "--compile-memory-limit",
            "1GiB",
        ])
        // No CA: were the pair not refused, the agent would stop at its certificates rather
        // than dial forever.
        .arg("--ca")
        .arg(dir.path().join("absent").join("ca.pem"))
        .arg("--work-dir")
        .arg(&work)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--compile-cpu-limit none"), "{stderr}");
    assert!(!work.exists(), "refused before anything was set up");
}

fn deploy(dir: &std::path::Path) -> Deployment {
    use std::io::BufRead;
    let ca = certs(dir);
    let mut master = Reaper(
        tessera()
            .args(["master", "--listen", "127.0.0.1:0", "--work-dir"])
            .arg(dir.join("master"))
            .args(["--allocation-interval", "200ms", "--ca"])
            .arg(&ca)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(master.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    let agent_dir = dir.join("worker1");
    let agent = Reaper(
        tessera()
            .args(["agent", "--master", &addr, "--hostname", "worker1"])
            .args(["--cpus", "1", "--mem", "512MiB", "--work-dir"])
            .arg(&agent_dir)
            .arg("--ca")
            .arg(&ca)
            .spawn()
            .unwrap(),
    );
    Deployment {
        ca,
        addr,
        agent_dir,
        _master: master,
        _agent: agent,
    }
}

/// Waits (up to a hang guard) for `child` to exit.
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "the process hangs");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits until the agent's spinner task has started (its output file says so).
fn wait_spinner_started(agent_dir: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let frameworks = agent_dir.join("frameworks");
    let started = || -> bool {
        let Ok(fws) = std::fs::read_dir(&frameworks) else {
            return false;
        };
        fws.flatten().any(|fw| {
            std::fs::read_to_string(fw.path().join("tasks/spinner/stdout"))
                .is_ok_and(|s| s.contains("spinner: started"))
        })
    };
    while !started() {
        assert!(std::time::Instant::now() < deadline, "the task never ran");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_second_signal_stops_waiting_for_a_master_that_is_gone() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut d = deploy(dir.path());
    let mut run = Reaper(
        tessera()
            .args([
                "run",
                wasm_examples::SPINNER_PATH,
                "--master",
                &d.addr,
                "--ca",
            ])
            .arg(&d.ca)
            .args(["--", "sleep"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_spinner_started(&d.agent_dir);
    // The master dies: the kill a first signal asks for cannot be delivered, and the run waits
    // for it; the second signal ends the wait.
    d._master.0.kill().unwrap();
    d._master.0.wait().unwrap();
    let pid = run.0.id().to_string();
    for _ in 0..2 {
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let status = wait_exit(&mut run.0);
    let mut stderr = String::new();
    run.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("second signal"), "{stderr}");
}

#[test]
fn ctrl_c_on_run_kills_the_remote_task_and_exits_130() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(dir.path());
    let mut run = Reaper(
        tessera()
            .args([
                "run",
                wasm_examples::SPINNER_PATH,
                "--master",
                &d.addr,
                "--ca",
            ])
            .arg(&d.ca)
            .args(["--", "sleep"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_spinner_started(&d.agent_dir);
    let pid = run.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_exit(&mut run.0);
    let mut stderr = String::new();
    run.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut stdout = String::new();
    run.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    // The master reported the task killed (the end every run now waits for), with its output.
    assert!(stderr.contains("interrupted; task TASK_KILLED"), "{stderr}");
    assert!(stdout.contains("spinner: started"), "{stdout}");
}

#[test]
fn an_unreachable_master_exits_69_after_the_connect_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs(dir.path());
    // A port nothing listens on.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = tessera()
        .args(["run", wasm_examples::HELLO_PATH, "--master", &addr, "--ca"])
        .arg(&ca)
        .args(["--connect-timeout", "2s", "--quic-idle-timeout", "1s"])
        .args(["--quic-keep-alive", "200ms"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("cannot reach the master"), "{stderr}");
}

/// The in-process `tessera run` flow ([`run_task`](tessera_cli::cmd::run::run_task)) against a
/// local cluster, its client link through a UDP proxy with `faults`: how long it took and how
/// the task ended.
async fn run_through(
    cluster: &cluster::LocalCluster,
    faults: cluster::proxy::Faults,
    seed: u64,
) -> (std::time::Duration, proto::TaskStatus) {
    run_through_tuned(cluster, faults, seed, Default::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_a_lossy_client_link_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cluster::LocalClusterConfig::default();
    cfg.master.allocation_interval = std::time::Duration::from_millis(200);
    let mut cluster = cluster::LocalCluster::start(cfg, dir.path()).await.unwrap();
    cluster
        .add_agent("node1", proto::Resources::new(2000, 1 << 30, 0))
        .unwrap();
    for seed in 0..10 {
        let (_, status) =
            run_through(&cluster, cluster::proxy::Faults::lossy(0.1), 100 + seed).await;
        assert_eq!(status.state, proto::TaskState::Finished, "{status:?}");
        assert!(
            status.stdout_tail.contains(&format!("run-{}", 100 + seed)),
            "{status:?}"
        );
    }
    cluster.shutdown().await;
}

/// p50 and p95 of `v`, in milliseconds.
fn percentiles(v: &mut [std::time::Duration]) -> (u128, u128) {
    v.sort();
    let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)].as_millis();
    (at(50), at(95))
}

/// A measurement, not a check (run with `--ignored --nocapture`): `tessera run`'s flow
/// ([`run_task`](tessera_cli::cmd::run::run_task)) on a loopback client link, on a clean one
/// with 200 ms RTT, and on one with 200 ms RTT and 10 % loss each way, `RUNS` runs each
/// (default 20), all in one process against one cluster (the master's default 1 s allocation
/// round, which a subscription brings forward), with the default QUIC timers (`INITIAL_RTT_MS`
/// overrides the client's assumed initial round trip). For each link also the phases, timed
/// one after the other: the QUIC handshake alone, the `Hello` on top of it, then the SDK's
/// flow (subscribe, upload, offer, task, teardown), to see where the time goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of several minutes"]
async fn measure_runs_over_a_slow_lossy_client_link() {
    use cluster::proxy::Faults;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster::LocalCluster::start(Default::default(), dir.path())
        .await
        .unwrap();
    cluster
        .add_agent("node1", proto::Resources::new(2000, 1 << 30, 0))
        .unwrap();
    let env = |k: &str, d: u64| -> u64 {
        std::env::var(k)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(d)
    };
    let runs = env("RUNS", 20);
    let mut tuning = net::tls::TransportTuning::default();
    if let Ok(ms) = std::env::var("INITIAL_RTT_MS") {
        tuning.initial_rtt = std::time::Duration::from_millis(ms.parse().unwrap());
    }
    let rtt200 = |drop| Faults {
        drop,
        delay: std::time::Duration::from_millis(100),
        ..Faults::default()
    };
    let labels = [
        "QUIC handshake",
        "Hello -> HelloAck",
        "SDK: handshake + Hello/Subscribe -> Subscribed",
        "SDK: upload -> BlobOk",
        "SDK: first offer",
        "SDK: accept -> terminal update",
        "SDK: teardown confirmed",
    ];
    let conditions = [
        ("loopback", Faults::default()),
        ("200ms RTT", rtt200(0.0)),
        ("200ms RTT, 10% loss", rtt200(0.1)),
    ];
    let mut p50s = Vec::new();
    for (name, faults) in conditions {
        let mut total = Vec::new();
        let mut phases = [(); 7].map(|_| Vec::new());
        for seed in 0..runs {
            let (took, status) = run_through_tuned(&cluster, faults, 1000 + seed, tuning).await;
            assert_eq!(status.state, proto::TaskState::Finished, "{status:?}");
            total.push(took);
            let p = phases_of_a_run(&cluster, faults, 5000 + seed, tuning).await;
            for (k, t) in p.into_iter().enumerate() {
                phases[k].push(t);
            }
        }
        let (p50, p95) = percentiles(&mut total);
        p50s.push(p50);
        println!("{name}: run_task p50 {p50} ms p95 {p95} ms");
        for (label, v) in labels.iter().zip(phases.iter_mut()) {
            let (p50, p95) = percentiles(v);
            println!("  {label}: p50 {p50} ms p95 {p95} ms");
        }
    }
    println!(
        "ratio p50 10% loss / clean at 200ms RTT: {:.2}; / loopback: {:.1}",
        p50s[2] as f64 / p50s[1].max(1) as f64,
        p50s[2] as f64 / p50s[0].max(1) as f64
    );
    cluster.shutdown().await;
}

/// [`run_through`] with the client's QUIC tuning given.
async fn run_through_tuned(
    cluster: &cluster::LocalCluster,
    faults: cluster::proxy::Faults,
    seed: u64,
    tuning: net::tls::TransportTuning,
) -> (std::time::Duration, proto::TaskStatus) {
    use tessera_cli::cmd::run::{run_task, Outcome, RunSpec};
    let proxy = cluster::proxy::UdpProxy::start(cluster.master_addr, faults, seed)
        .await
        .unwrap();
    let mut opts = cluster.scheduler_options("tessera-run", "*").unwrap();
    opts.masters = proxy.addr().into();
    opts.tuning = tuning;
    let spec = RunSpec {
        wasm: wasm_examples::HELLO.to_vec(),
        name: "hello".into(),
        args: vec![format!("run-{seed}")],
        env: vec![],
        resources: proto::Resources::new(500, 64 << 20, 0),
        timeout: None,
        dir: None,
    };
    let start = std::time::Instant::now();
    let outcome = run_task(opts, &spec, std::future::pending()).await;
    let took = start.elapsed();
    match outcome {
        Ok(Outcome::Ended(status)) => (took, status),
        other => panic!("run {seed}: {other:?}"),
    }
}

/// The duration of each phase of a run, one after the other (nothing overlapped): a bare QUIC
/// handshake, a `Hello` on a second connection, then through the SDK: subscribed, module
/// uploaded, first offer, terminal update, teardown confirmed.
async fn phases_of_a_run(
    cluster: &cluster::LocalCluster,
    faults: cluster::proxy::Faults,
    seed: u64,
    tuning: net::tls::TransportTuning,
) -> [std::time::Duration; 7] {
    let proxy = cluster::proxy::UdpProxy::start(cluster.master_addr, faults, seed)
        .await
        .unwrap();
    let mut opts = cluster.scheduler_options("tessera-run", "*").unwrap();
    opts.masters = proxy.addr().into();
    opts.tuning = tuning;
    let ep = net::link::client_endpoint(&opts.tls, tuning).unwrap();
    let t = std::time::Instant::now();
    let conn = ep
        .connect(proxy.addr(), net::tls::MASTER_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let handshake = t.elapsed();
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut send = net::MessageWriter::new(send);
    let mut recv = net::MessageReader::new(recv, proto::frame::DEFAULT_MAX_FRAME);
    let t = std::time::Instant::now();
    send.send(&proto::Message::Hello {
        version: proto::PROTOCOL_VERSION,
        role: proto::Role::Scheduler,
    })
    .await
    .unwrap();
    let ack = recv.recv().await.unwrap();
    assert!(
        matches!(ack, Some(proto::Message::HelloAck { .. })),
        "{ack:?}"
    );
    let hello = t.elapsed();
    conn.close(0u32.into(), b"done");
    let mut marks = [std::time::Duration::ZERO; 5];
    let start = std::time::Instant::now();
    let mut sched = sdk::Scheduler::connect(opts).await.unwrap();
    marks[0] = start.elapsed();
    let module = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    marks[1] = start.elapsed();
    let mut offered = false;
    loop {
        match sched.next_event().await.expect("open") {
            sdk::Event::Offers(offers) if !offered => {
                offered = true;
                marks[2] = start.elapsed();
                let offer = &offers[0];
                let task = sdk::TaskBuilder::new("hello", module)
                    .resources(proto::Resources::new(500, 64 << 20, 0))
                    .build(offer);
                sched
                    .accept(vec![offer.id.clone()], vec![task], Default::default())
                    .unwrap();
            }
            sdk::Event::Update(s) if s.state.is_terminal() => {
                assert_eq!(s.state, proto::TaskState::Finished, "{s:?}");
                break;
            }
            _ => {}
        }
    }
    marks[3] = start.elapsed();
    sched.teardown().await.unwrap();
    marks[4] = start.elapsed();
    let mut out = [handshake, hello, marks[0], ZERO, ZERO, ZERO, ZERO];
    for k in 1..5 {
        out[k + 2] = marks[k] - marks[k - 1];
    }
    out
}

const ZERO: std::time::Duration = std::time::Duration::ZERO;
