//! Compiling a module in a child process under a CPU-time limit
//! ([`ExecutorConfig::compiler`](super::ExecutorConfig::compiler)).
//!
//! Why: Cranelift's compile time grows faster than linearly with some shapes of code, and a
//! tenant chooses the code. Nested loops measured on the 2-core machine of BENCHMARKS.md: 100
//! deep compile in 0.09 s, 200 in 0.9 s, 250 in 2.4 s, 500 in over ten minutes (the module is
//! a few kilobytes). Wasmtime cannot interrupt a compile, and the compile runs before the
//! task's share or timeout apply, so in process such a module would hold a core of the agent
//! for hours, and killing its task would not stop it. In a child process it is stopped by the
//! kernel when it has used its limit (`RLIMIT_CPU`), and the task fails with a reason that
//! says so.
//!
//! The child (`tessera compile`, hidden, or any program that calls [`serve_compile`]) reads a
//! [`Request`] on its standard input (postcard), makes the executor's own engines from the same
//! [`ExecutorConfig`], compiles the module as the executor would in process (rewritten for
//! metering first) and writes the serialized code to a temporary file of the module cache;
//! the executor renames it into place and loads it as it loads any cached module, so a code
//! that does not load (an engine that differs) is found there and the module is compiled in
//! process instead.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{component, config, ExecutorConfig};

/// The program a compile runs in, and its CPU-time limit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompilerCommand {
    /// The program (the `tessera` binary, for the agent).
    pub program: PathBuf,
    /// Its arguments (`["compile"]` for the `tessera` binary).
    pub args: Vec<String>,
    /// CPU time a compile may use, over all of its threads (whole seconds; at least one).
    pub cpu_limit: Duration,
}

impl CompilerCommand {
    /// This executable's hidden `compile` subcommand (the `tessera` binary's).
    pub fn this_executable(cpu_limit: Duration) -> std::io::Result<Self> {
        Ok(CompilerCommand {
            program: std::env::current_exe()?,
            args: vec!["compile".to_owned()],
            cpu_limit,
        })
    }

    /// The limit in whole seconds, as `RLIMIT_CPU` counts it.
    fn limit_secs(&self) -> u64 {
        self.cpu_limit.as_secs_f64().ceil().max(1.0) as u64
    }

    /// How long a compile may take in wall time before it is killed: its CPU limit four
    /// times over, and at least a minute more than it (a loaded machine gives the compile a
    /// fraction of a core; a child stuck off the CPU would otherwise never end).
    fn wall_limit(&self) -> Duration {
        let cpu = Duration::from_secs(self.limit_secs());
        (cpu * 4).max(cpu + Duration::from_secs(60))
    }
}

/// What the executor asks of a compiling child, on its standard input (postcard).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Request {
    /// The executor's settings: the child makes the same engines from them.
    pub(super) config: ExecutorConfig,
    /// The module or component to compile.
    pub(super) wasm: PathBuf,
    /// Where to write its serialized code.
    pub(super) out: PathBuf,
}

/// Why a compile in a child gave no code.
#[derive(Debug)]
pub(super) enum ChildError {
    /// It used its CPU-time limit (or four times it in wall time) and was stopped.
    OverLimit(String),
    /// The module does not compile: the child's message.
    Invalid(String),
    /// The child could not be run, or ended without saying why.
    Failed(String),
}

/// Exit code of a child whose module does not compile (its message on standard error).
const EXIT_INVALID: i32 = 3;

/// Most of a child's standard error kept for a task's failure reason.
const MAX_MESSAGE: u64 = 4096;

/// Runs `cmd` on `request`, waiting for it on this (blocking) thread.
pub(super) fn compile_in_child(cmd: &CompilerCommand, request: &Request) -> Result<(), ChildError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        ChildError::Failed(format!("compiler {}: {what}: {e}", cmd.program.display()))
    };
    let err_path = request.out.with_extension("err");
    let err_file = std::fs::File::create(&err_path).map_err(|e| failed("stderr file", &e))?;
    let secs = cmd.limit_secs();
    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(err_file);
    // SAFETY: the closure runs in the child between fork and exec, and calls only
    // async-signal-safe functions (setrlimit, prctl) with valid arguments.
    unsafe {
        command.pre_exec(move || {
            // SIGXCPU at the limit, SIGKILL a second later if it is caught.
            let lim = libc::rlimit {
                rlim_cur: secs,
                rlim_max: secs + 1,
            };
            if libc::setrlimit(libc::RLIMIT_CPU, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The compile dies with the thread that waits for it (the executor's process).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let result = (|| {
        let mut child = command.spawn().map_err(|e| failed("cannot start", &e))?;
        let body = postcard::to_allocvec(request).map_err(|e| failed("request", &e))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            // A child that died at once is seen by its status below.
            let _ = stdin.write_all(&body);
        }
        let deadline = Instant::now() + cmd.wall_limit();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ChildError::OverLimit(format!(
                        "compiling it took more than {:?} of wall time (four times its CPU-time \
                         limit of {secs} s): stopped",
                        cmd.wall_limit()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(failed("wait", &e)),
            }
        };
        let message = read_message(&err_path);
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(()),
            (Some(EXIT_INVALID), _) => Err(ChildError::Invalid(message)),
            (_, Some(libc::SIGXCPU | libc::SIGKILL)) => Err(ChildError::OverLimit(format!(
                "compiling it took more than the compiler's CPU-time limit of {secs} s: stopped"
            ))),
            _ => Err(ChildError::Failed(format!(
                "compiler {} ended with {status}: {message}",
                cmd.program.display()
            ))),
        }
    })();
    let _ = std::fs::remove_file(&err_path);
    result
}

fn read_message(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_MESSAGE).read_to_string(&mut text);
    }
    text.trim().to_owned()
}

/// The compiling child's side (`tessera compile`): reads a request on standard input,
/// compiles, writes the code, and returns the process's exit code (0; 3 with a message on
/// standard error if the module does not compile; 1 if the request cannot be served).
pub fn serve_compile() -> i32 {
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("cannot read the request: {e}");
        return 1;
    }
    let request: Request = match postcard::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("malformed request: {e}");
            return 1;
        }
    };
    let (engine, module_engine, _) = match config::engines(&request.config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let bytes = match std::fs::read(&request.wasm) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read {}: {e}", request.wasm.display());
            return 1;
        }
    };
    let code = if component::is_component(&bytes) {
        engine
            .precompile_component(&bytes)
            .map_err(|e| format!("{e:#}"))
    } else {
        super::cache::module_code(&module_engine, request.config.metering, bytes).and_then(|b| {
            module_engine
                .precompile_module(&b)
                .map_err(|e| format!("{e:#}"))
        })
    };
    match code {
        Ok(code) => match std::fs::write(&request.out, code) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cannot write {}: {e}", request.out.display());
                1
            }
        },
        Err(message) => {
            eprintln!("{message}");
            EXIT_INVALID
        }
    }
}
