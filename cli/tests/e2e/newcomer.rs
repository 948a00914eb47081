//! What a newcomer meets on the command line, with the real binary: usage errors at parse time,
//! one clear line per error, no logs of the embedded cluster and no colour codes in
//! `tessera run`'s redirected stderr, `-v` showing the task's states, `tessera examples`, JSON
//! logs for daemons, `--master` by DNS name, and a warning when no offer can fit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::Reaper;

/// The binary with no `RUST_LOG` of the caller's: the defaults are what is tested.
fn tessera() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.env_remove("RUST_LOG");
    c
}

/// The non-empty lines of a process's stderr.
fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn zero_cpus_or_memory_is_a_usage_error() {
    for args in [["--cpus", "0"], ["--mem", "0"], ["--mem", "0MiB"]] {
        let out = tessera()
            .arg("run")
            .args(args)
            .arg(wasm_examples::HELLO_PATH)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("must be more than 0"), "{stderr}");
    }
}

#[test]
fn a_redirected_run_shows_the_guest_stderr_only_without_colour() {
    let out = tessera()
        .args(["run", wasm_examples::HELLO_PATH, "--", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The guest's own line, and nothing of the embedded master or agent.
    assert_eq!(stderr, "hello: this line goes to stderr\n");
    assert!(!out.stderr.contains(&0x1b), "ANSI codes: {stderr:?}");
}

#[test]
fn verbose_run_shows_the_task_states_as_they_happen() {
    let out = tessera()
        .args(["run", "-v", wasm_examples::HELLO_PATH])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let running = stderr.find("task update: TASK_RUNNING").expect(&stderr);
    let finished = stderr.find("task update: TASK_FINISHED").expect(&stderr);
    assert!(running < finished, "{stderr}");
    assert!(!stderr.contains("tessera_master"), "{stderr}");
    assert!(!out.stderr.contains(&0x1b), "ANSI codes: {stderr:?}");
}

#[test]
fn errors_are_one_line_in_words() {
    let dir = tempfile::tempdir().unwrap();
    // An invalid module: refused (exit 76) in one line saying why.
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, "garbage\n").unwrap();
    let out = tessera().arg("run").arg(&bad).output().unwrap();
    let err = lines(&out.stderr);
    assert_eq!(out.status.code(), Some(76), "{err:?}");
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].starts_with("tessera: "), "{err:?}");
    assert!(err[0].contains("not a valid WebAssembly module"), "{err:?}");
    // A missing --dir names the path.
    let missing = dir.path().join("no-such-dir");
    let out = tessera()
        .arg("run")
        .arg("--dir")
        .arg(&missing)
        .arg(wasm_examples::HELLO_PATH)
        .output()
        .unwrap();
    let err = lines(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains(missing.to_str().unwrap()), "{err:?}");
    // A symlink under --dir is skipped, and said so.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("input.txt"), "data").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", shared.join("link")).unwrap();
    let out = tessera()
        .arg("run")
        .arg("--dir")
        .arg(&shared)
        .arg(wasm_examples::HELLO_PATH)
        .output()
        .unwrap();
    let err = lines(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err:?}");
    assert!(
        err.iter()
            .any(|l| l.contains("skipping") && l.contains(&*shared.join("link").to_string_lossy())),
        "{err:?}"
    );
    // A trap: the reason once, in words, no Debug forms.
    let out = tessera()
        .args(["run", wasm_examples::TRAP_PATH])
        .output()
        .unwrap();
    let err = lines(&out.stderr);
    assert_eq!(out.status.code(), Some(134), "{err:?}");
    let last = err.last().unwrap();
    assert!(
        last.starts_with("tessera: task TASK_FAILED (trap: "),
        "{err:?}"
    );
    assert!(!last.contains("Some("), "{err:?}");
    assert_eq!(last.matches("TASK_FAILED").count(), 1, "{err:?}");
}

#[test]
fn examples_are_listed_and_written_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera()
        .args(["examples", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), wasm_examples::ALL.len(), "{stdout}");
    for (name, bytes) in wasm_examples::ALL {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name}: {stdout}"
        );
        let written = std::fs::read(dir.path().join(format!("{name}.wasm"))).unwrap();
        assert_eq!(&written, bytes, "{name}");
    }
    // What was written runs.
    let out = tessera()
        .arg("run")
        .arg(dir.path().join("hello.wasm"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello from Tessera!"));
}

/// Issues a CA and the master's, `worker1`'s and `tessera-run`'s certificates under `dir/certs`
/// and returns the CA's path.
fn issue_certs(dir: &std::path::Path) -> std::path::PathBuf {
    let certs = dir.join("certs");
    let c = certs.to_str().unwrap();
    for args in [
        vec!["cert", "ca", "--dir", c],
        vec!["cert", "issue", "master", "--dir", c],
        vec!["cert", "issue", "agent", "worker1", "--dir", c],
        vec!["cert", "issue", "framework", "tessera-run", "--dir", c],
    ] {
        assert!(tessera()
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success());
    }
    certs.join("ca.pem")
}

/// A daemon whose stderr was closed (its log reader went away) keeps serving.
#[test]
fn a_master_outlives_its_closed_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let ca = issue_certs(dir.path());
    let mut master = Reaper(
        tessera()
            .args(["master", "--listen", "127.0.0.1:0", "--work-dir"])
            .arg(dir.path().join("master"))
            .arg("--ca")
            .arg(&ca)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(master.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    drop(master.0.stderr.take());
    let _agent = Reaper(
        tessera()
            .args(["agent", "--master", &addr, "--hostname", "worker1"])
            .args(["--resources", "cpus:1;mem:512MiB"])
            .arg("--work-dir")
            .arg(dir.path().join("worker1"))
            .arg("--ca")
            .arg(&ca)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = tessera()
        .args(["run", wasm_examples::HELLO_PATH, "--master", &addr, "--ca"])
        .arg(&ca)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(master.0.try_wait().unwrap().is_none());
}

/// A deployment of separate processes with JSON logs, reached by `localhost:PORT`: the
/// daemons' stderr lines are JSON objects, a task runs by DNS name, and a request no offer can
/// fit is warned about while it waits.
#[test]
fn json_logs_dns_names_and_a_warning_when_nothing_fits() {
    let dir = tempfile::tempdir().unwrap();
    let ca = issue_certs(dir.path());
    let mut master = Reaper(
        tessera()
            .args(["--log-format", "json", "master", "--listen", "127.0.0.1:0"])
            .arg("--work-dir")
            .arg(dir.path().join("master"))
            .arg("--ca")
            .arg(&ca)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(master.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    let port = addr.rsplit(':').next().unwrap();
    // The master's first log line is a JSON object with a level and fields.
    let mut log = String::new();
    let mut logs = BufReader::new(master.0.stderr.take().unwrap());
    logs.read_line(&mut log).unwrap();
    // Read on, so the master never writes into a closed pipe; every line is JSON.
    let drain = std::thread::spawn(move || {
        logs.lines()
            .map_while(Result::ok)
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
            .collect::<Vec<_>>()
    });
    let json: serde_json::Value = serde_json::from_str(&log).expect(&log);
    assert_eq!(json["level"], "INFO", "{log}");
    assert!(json["fields"].is_object(), "{log}");

    let local = format!("localhost:{port}");
    let _agent = Reaper(
        tessera()
            .args(["agent", "--master", &local, "--hostname", "worker1"])
            .args(["--resources", "cpus:1;mem:512MiB"])
            .arg("--work-dir")
            .arg(dir.path().join("worker1"))
            .arg("--ca")
            .arg(&ca)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = tessera()
        .args(["run", wasm_examples::HELLO_PATH, "--master", &local, "--ca"])
        .arg(&ca)
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

    // Eight CPUs on a one-CPU agent: a warning naming the largest offer, while it waits.
    let mut big = Reaper(
        tessera()
            .args(["run", "--cpus", "8", wasm_examples::HELLO_PATH])
            .args(["--master", &local, "--ca"])
            .arg(&ca)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut warning = String::new();
    BufReader::new(big.0.stderr.take().unwrap())
        .read_line(&mut warning)
        .unwrap();
    assert!(warning.contains("no offer can fit"), "{warning}");
    assert!(warning.contains("8 cpus"), "{warning}");
    assert!(warning.contains("1 cpu"), "{warning}");
    assert!(big.0.try_wait().unwrap().is_none(), "it still waits");
    drop(big);
    drop(_agent);
    drop(master);
    let not_json = drain.join().unwrap();
    assert!(not_json.is_empty(), "{not_json:?}");
}

#[test]
fn a_local_run_shows_output_while_the_task_runs() {
    let mut run = Reaper(
        tessera()
            .args(["run", wasm_examples::SPINNER_PATH, "--", "sleep"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(run.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("spinner: started"), "{line:?}");
    // The task never ends by itself: the line came while it ran.
    assert!(run.0.try_wait().unwrap().is_none());
    let pid = run.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(run.0.wait().unwrap().code(), Some(130));
}
