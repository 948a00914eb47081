//! Compiling a module in a child process under a CPU-time and a memory limit
//! ([`ExecutorConfig::compiler`](super::ExecutorConfig::compiler)).
//!
//! Why: Cranelift's compile time grows faster than linearly with some shapes of code, and a
//! tenant chooses the code. Nested loops measured on the 2-core machine of BENCHMARKS.md: 100
//! deep compile in 0.09 s, 200 in 1.2 s, 250 in 2.7 s, and 500 (12 KB of wasm) ran for more
//! than twelve minutes of CPU without finishing. Wasmtime cannot interrupt a compile, and the compile runs before the
//! task's share or timeout apply, so in process such a module would hold a core of the agent
//! for hours, and killing its task would not stop it. In a child process it is stopped by the
//! kernel when it has used its limit (`RLIMIT_CPU`), and the task fails with a reason that
//! says so. Its memory is bounded too (`RLIMIT_DATA`: its heap, thread stacks and other
//! private writable mappings, not the pool's reserved address space): a module that makes
//! Cranelift allocate without bound fails its own compile, instead of waking the kernel's OOM
//! killer on the agent's machine, which could pick the agent or another tenant's task. At most
//! [`MAX_CHILDREN`] compile at once, each on at most [`CHILD_THREADS`] threads, so that
//! compiles hold at most `MAX_CHILDREN ×` the limit together, and what a module needs of the
//! limit does not depend on the machine's core count.
//!
//! The child (`tessera compile`, hidden, or any program that calls [`serve_compile`]) reads a
//! [`Request`] on its standard input (postcard), makes the executor's own engines from the same
//! [`ExecutorConfig`] (or the threaded modules' engine), checks that their compatibility hash is
//! the executor's, compiles the module as the executor would in process (rewritten for metering
//! first) and writes the serialized code to a temporary file of the module cache, which the
//! executor loads and then renames into place. There is no fallback to compiling in process:
//! a child that cannot run, or whose engine differs, fails the task with the reason, so that
//! the limit cannot be stepped around.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{component, config, threads, ExecError, ExecutorConfig};

/// The program a compile runs in, and its limits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompilerCommand {
    /// The program (the `tessera` binary, for the agent).
    pub program: PathBuf,
    /// Its arguments (`["compile"]` for the `tessera` binary).
    pub args: Vec<String>,
    /// CPU time a compile may use, over all of its threads (whole seconds; at least one).
    pub cpu_limit: Duration,
    /// Bytes of heap, thread stacks and other private writable mappings the compiling process
    /// may hold (`RLIMIT_DATA`; the program's own start takes about 8 MiB of it, the example
    /// modules 96–160 MiB to compile); `u64::MAX`: no limit.
    pub memory_limit: u64,
}

impl CompilerCommand {
    /// This executable's hidden `compile` subcommand (the `tessera` binary's; a test binary
    /// is not one).
    pub fn this_executable(cpu_limit: Duration, memory_limit: u64) -> std::io::Result<Self> {
        Ok(CompilerCommand {
            program: std::env::current_exe()?,
            args: vec!["compile".to_owned()],
            cpu_limit,
            memory_limit,
        })
    }

    /// The memory limit in whole MiB, for messages.
    fn limit_mib(&self) -> u64 {
        self.memory_limit.div_ceil(1 << 20)
    }

    /// The limit in whole seconds, as `RLIMIT_CPU` counts it.
    fn limit_secs(&self) -> u64 {
        self.cpu_limit.as_secs_f64().ceil().max(1.0) as u64
    }

    /// How long a compile may take in wall time before it is killed: four times its CPU
    /// limit, and at least a minute more than it (a loaded machine gives the compile a
    /// fraction of a core; a child stuck off the CPU would otherwise never end). Its temporary
    /// files live as long (`blob_gc::stale_after`).
    pub fn wall_limit(&self) -> Duration {
        let cpu = Duration::from_secs(self.limit_secs());
        (cpu * 4).max(cpu + Duration::from_secs(60))
    }
}

/// What the executor asks of a compiling child, on its standard input (postcard).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Request {
    /// The executor's settings: the child makes the same engines from them.
    pub(super) config: ExecutorConfig,
    /// A threaded (WASI threads) module, for the threaded modules' engine.
    pub(super) threads: bool,
    /// The compatibility hash of the engines that will load the code ([`compat_hash`]).
    pub(super) compat: u64,
    /// The module or component to compile.
    pub(super) wasm: PathBuf,
    /// Where to write its serialized code.
    pub(super) out: PathBuf,
}

/// A hash of the compatibility of `engines`' compiled code (and of the metering pass's
/// version, which changes a module's code): equal in the executor and the child only if code
/// compiled by one loads in the other.
pub(super) fn compat_hash(engines: &[&wasmtime::Engine], rewrite: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for e in engines {
        e.precompile_compatibility_hash().hash(&mut h);
    }
    if rewrite {
        super::meter::VERSION.hash(&mut h);
    }
    h.finish()
}

/// Why a compile in a child gave no code.
#[derive(Debug)]
pub(super) enum ChildError {
    /// It used its CPU-time or its memory limit and was stopped.
    OverLimit(String),
    /// The module does not compile: the child's message.
    Invalid(String),
    /// The child could not be run, its engine differs, or it ended without code for another
    /// reason (killed, out of time on a loaded machine): not the module's fault for certain.
    Failed(String),
    /// No task waits for the compile any more: it was stopped.
    Cancelled,
}

/// The error of a compile of `digest` stopped because no task waits for it any more.
pub(super) fn stopped(digest: &str) -> ExecError {
    ExecError::Join(format!(
        "the compile of {digest} was stopped: no task waits for it"
    ))
}

/// Digests whose compile used its CPU-time or memory limit, with the reason, refused at once
/// after (at most [`MAX_REFUSED`], per executor).
#[derive(Debug, Default)]
pub(super) struct Refusals(Mutex<HashMap<String, String>>);

/// Most digests remembered as refused for their compile's limits (per executor, so per
/// runtime process): past it the list starts again empty, and a tenant that sends more
/// distinct modules than this pays a compile's limit again for each.
const MAX_REFUSED: usize = 4096;

impl Refusals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The refusal of `digest`, if it was refused.
    pub(super) fn check(&self, digest: &str) -> Result<(), ExecError> {
        match self.lock().get(digest) {
            Some(message) => Err(ExecError::CompileRefused {
                digest: digest.to_owned(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The error of a compile of `digest` in a child; one that used its CPU-time or memory
    /// limit is remembered.
    pub(super) fn error(&self, digest: &str, e: ChildError) -> ExecError {
        let digest = digest.to_owned();
        match e {
            ChildError::Invalid(message) => ExecError::Compile { digest, message },
            ChildError::Failed(message) => {
                tracing::warn!(digest, "cannot compile in a child process: {message}");
                ExecError::CompileRefused { digest, message }
            }
            ChildError::Cancelled => {
                tracing::info!(digest, "compile stopped: no task waits for it any more");
                stopped(&digest)
            }
            ChildError::OverLimit(message) => {
                tracing::warn!(digest, "{message}");
                let mut refused = self.lock();
                if refused.len() >= MAX_REFUSED {
                    refused.clear();
                }
                refused.insert(digest.clone(), message.clone());
                ExecError::CompileRefused { digest, message }
            }
        }
    }
}

/// Exit code of a child whose module does not compile (its message on standard error).
const EXIT_INVALID: i32 = 3;

/// Exit code of a child whose engines differ from the executor's.
const EXIT_MISMATCH: i32 = 4;

/// Exit code of a child whose compile failed an allocation that wasmtime handles (it returns
/// an error rather than aborting): over the memory limit too.
const EXIT_OVER_MEMORY: i32 = 5;

/// Most compiles in child processes at once, per process (so per runtime process): with each
/// one's memory limit, what compiles hold together is bounded. More wait for a turn; their
/// wall-time limit starts with their child.
pub const MAX_CHILDREN: usize = 2;

/// Threads a child compiles on (wasmtime compiles a module's functions in parallel, on rayon's
/// threads): a compile's time is not any task's share, so it takes two cores at most, and the
/// memory it needs (each thread holds a function's compile and its stack) is the same on every
/// machine.
pub const CHILD_THREADS: usize = 2;

/// The turns of [`MAX_CHILDREN`], given in the order they were asked for (a ticket each), so
/// that a tenant's many new modules cannot keep another's waiting behind ones asked for later.
struct Turns {
    state: Mutex<TurnState>,
    changed: std::sync::Condvar,
}

/// Tickets handed out, turns given, children running, and the tickets whose holders stopped
/// waiting (skipped when their turn comes).
struct TurnState {
    tickets: u64,
    given: u64,
    running: usize,
    abandoned: std::collections::BTreeSet<u64>,
}

impl TurnState {
    /// Passes the turns of tickets that no longer wait.
    fn skip_abandoned(&mut self) {
        while self.abandoned.remove(&self.given) {
            self.given += 1;
        }
    }
}

/// A turn to run a child, given back when dropped.
struct Turn<'a>(&'a Turns);

impl Turns {
    const fn new() -> Self {
        Turns {
            state: Mutex::new(TurnState {
                tickets: 0,
                given: 0,
                running: 0,
                abandoned: std::collections::BTreeSet::new(),
            }),
            changed: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TurnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (on this blocking thread) until every turn asked for before is given and fewer
    /// than `max` children run, and takes a turn; `None` if `cancel` is raised first (its
    /// ticket is then passed over).
    fn take(&self, max: usize, cancel: &AtomicBool) -> Option<Turn<'_>> {
        let mut s = self.lock();
        let ticket = s.tickets;
        s.tickets += 1;
        while s.given != ticket || s.running >= max {
            if cancel.load(Ordering::Relaxed) {
                s.abandoned.insert(ticket);
                s.skip_abandoned();
                drop(s);
                self.changed.notify_all();
                return None;
            }
            s = self
                .changed
                .wait_timeout(s, TURN_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.given += 1;
        s.skip_abandoned();
        s.running += 1;
        drop(s);
        // The next ticket may go too, if a turn is free.
        self.changed.notify_all();
        Some(Turn(self))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.changed.notify_all();
    }
}

/// This process's turns.
static TURNS: Turns = Turns::new();

/// How often a compile waiting for its child looks whether it ended or was cancelled.
const CHILD_POLL: Duration = Duration::from_millis(5);

/// How often a compile waiting for its turn looks whether it was cancelled (it is woken at
/// once when a turn is given back): rarely, for many may wait.
const TURN_POLL: Duration = Duration::from_millis(100);

/// Most of a child's standard error kept for a task's failure reason: its start and its end
/// (where Rust's allocation-failure line is, [`allocation_failed`]), half of this each.
const MAX_MESSAGE: u64 = 4096;

/// Compiles in a child process under `cmd`'s limit into `request.out` (a temporary file),
/// hands that file to `load`, and removes what is left of it: what the disk cache and the
/// threaded modules share. Blocking: waits for the child on this thread.
pub(super) fn compile_in_child<T>(
    cmd: &CompilerCommand,
    request: &Request,
    cancel: &AtomicBool,
    load: impl FnOnce(&Path) -> Result<T, ChildError>,
) -> Result<T, ChildError> {
    let turn = TURNS
        .take(MAX_CHILDREN, cancel)
        .ok_or(ChildError::Cancelled)?;
    if cancel.load(Ordering::Relaxed) {
        // Cancelled as the turn came: no child for nothing.
        return Err(ChildError::Cancelled);
    }
    let result = run_compiler(cmd, request, cancel);
    drop(turn);
    let result = result.and_then(|()| load(&request.out));
    let _ = std::fs::remove_file(&request.out);
    result
}

/// Runs `cmd` on `request`, waiting for it on this (blocking) thread.
fn run_compiler(
    cmd: &CompilerCommand,
    request: &Request,
    cancel: &AtomicBool,
) -> Result<(), ChildError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        ChildError::Failed(format!("compiler {}: {what}: {e}", cmd.program.display()))
    };
    let mut err_path = request.out.clone().into_os_string();
    err_path.push(".err");
    let err_path = PathBuf::from(err_path);
    let err_file = std::fs::File::create(&err_path).map_err(|e| failed("stderr file", &e))?;
    // No `pre_exec`: the standard library then starts the child with `posix_spawn`, not a
    // `fork` of this process and its guests' memory. The limits are set on the child before
    // it is sent its request (it waits for it on stdin), and it ties its life to ours itself.
    let spawned = Command::new(&cmd.program)
        .args(&cmd.args)
        // Nothing of the agent's environment: what the child's allocator, thread pool and
        // error reports do under its limits is set here. Notably no `RUST_BACKTRACE`: a
        // backtrace being captured as an allocation failed at the limit held the lock that
        // Rust's handler of the failure then waited on, and the child hung.
        .env_clear()
        .envs(std::env::var_os("LD_LIBRARY_PATH").map(|v| ("LD_LIBRARY_PATH", v)))
        // mimalloc (the `tessera` binary's allocator) otherwise commits a 1 GiB arena at start
        // and each thread's segments (after its first) whole, all of which `RLIMIT_DATA`
        // counts: committed as needed, the limit counts what the compile has committed.
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
        .env("MIMALLOC_EAGER_COMMIT", "0")
        .env("RAYON_NUM_THREADS", CHILD_THREADS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn();
    let result = match spawned {
        Ok(mut child) => {
            let r = limit_and_wait(cmd, request, &mut child, &err_path, cancel);
            if r.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
            r
        }
        Err(e) => Err(failed("cannot start", &e)),
    };
    let _ = std::fs::remove_file(&err_path);
    result
}

fn limit_and_wait(
    cmd: &CompilerCommand,
    request: &Request,
    child: &mut std::process::Child,
    err_path: &Path,
    cancel: &AtomicBool,
) -> Result<(), ChildError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        ChildError::Failed(format!("compiler {}: {what}: {e}", cmd.program.display()))
    };
    let secs = cmd.limit_secs();
    let pid = child.id() as libc::pid_t;
    // SIGXCPU at the CPU limit (SIGKILL a second later if it were caught); allocations
    // that fail past the memory limit (Rust's handler then aborts); no core file.
    for (resource, cur, max) in [
        (libc::RLIMIT_CPU, secs, secs + 1),
        (libc::RLIMIT_DATA, cmd.memory_limit, cmd.memory_limit),
        (libc::RLIMIT_CORE, 0, 0),
    ] {
        let lim = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: `lim` is a valid rlimit; the old value is not asked for.
        if unsafe { libc::prlimit(pid, resource, &lim, std::ptr::null_mut()) } != 0 {
            return Err(failed("cannot limit it", &std::io::Error::last_os_error()));
        }
    }
    let body = postcard::to_allocvec(request).map_err(|e| failed("request", &e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A child that died at once is seen by its status below.
        let _ = stdin.write_all(&body);
    }
    let deadline = Instant::now() + cmd.wall_limit();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                return Err(ChildError::Failed(format!(
                    "the compile did not end within {:?} of wall time (its CPU-time limit is \
                     {secs} s; is the machine overloaded?): stopped",
                    cmd.wall_limit()
                )));
            }
            Ok(None) if cancel.load(Ordering::Relaxed) => return Err(ChildError::Cancelled),
            Ok(None) => std::thread::sleep(CHILD_POLL),
            Err(e) => return Err(failed("wait", &e)),
        }
    };
    outcome(cmd, status, read_message(err_path))
}

/// What a child's end means for its module: its exit status, and `message`, what it wrote on
/// standard error. Only a stop by `RLIMIT_CPU` (SIGXCPU), or an abort on an allocation that
/// `RLIMIT_DATA` refused, is the module's fault for certain.
fn outcome(
    cmd: &CompilerCommand,
    status: std::process::ExitStatus,
    message: String,
) -> Result<(), ChildError> {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(EXIT_INVALID), _) => Err(ChildError::Invalid(message)),
        (Some(EXIT_MISMATCH), _) => Err(ChildError::Failed(format!(
            "compiler {} makes code for another engine than the executor's (a binary other \
             than the agent's?): {message}",
            cmd.program.display()
        ))),
        (_, Some(libc::SIGXCPU)) => Err(ChildError::OverLimit(format!(
            "compiling it took more than the agent's CPU-time limit of {} s for a compile \
             (`--compile-cpu-limit`): stopped",
            cmd.limit_secs()
        ))),
        (Some(EXIT_OVER_MEMORY), _) => Err(over_memory(cmd)),
        (_, Some(libc::SIGABRT)) if allocation_failed(&message) => Err(over_memory(cmd)),
        _ => Err(ChildError::Failed(format!(
            "compiler {} ended with {status}: {message}",
            cmd.program.display()
        ))),
    }
}

/// The refusal of a compile that needed more than `cmd`'s memory limit.
fn over_memory(cmd: &CompilerCommand) -> ChildError {
    ChildError::OverLimit(format!(
        "compiling it needed more than the agent's memory limit of {} MiB for a compile \
         (`--compile-memory-limit`): stopped",
        cmd.limit_mib()
    ))
}

/// Whether `message` holds the line Rust's allocation-error handler prints before it aborts
/// (`memory allocation of N bytes failed`), wherever it is among the child's output.
fn allocation_failed(message: &str) -> bool {
    message.lines().any(|l| {
        l.trim()
            .strip_prefix("memory allocation of ")
            .and_then(|l| l.strip_suffix(" bytes failed"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// What stands for the middle of a long message.
const ELISION: &str = "\n[...]\n";

/// The child's standard error, written to `path`: whole if it fits [`MAX_MESSAGE`], else its
/// start and its end (each cut at a character boundary) with what lay between elided.
fn read_message(path: &Path) -> String {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    if len <= MAX_MESSAGE {
        return super::output::read_tail(path, MAX_MESSAGE as usize)
            .trim()
            .to_owned();
    }
    let half = MAX_MESSAGE / 2;
    let mut start = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(half).read_to_end(&mut start);
    }
    // Drop a character cut at the end of the start (`read_tail` does so at the end's start).
    if let Err(e) = std::str::from_utf8(&start) {
        if e.error_len().is_none() {
            start.truncate(e.valid_up_to());
        }
    }
    let end = super::output::read_tail(path, half as usize);
    format!("{}{ELISION}{end}", String::from_utf8_lossy(&start))
        .trim()
        .to_owned()
}

/// The compiling child's side (`tessera compile`): reads a request on standard input,
/// compiles, writes the code, and returns the process's exit code: 0; 3 with a message on
/// standard error if the module does not compile; 4 if its engines are not the executor's; 5
/// if wasmtime ran out of memory (the limit; an allocation Rust handles aborts instead); 1 if
/// the request cannot be served.
pub fn serve_compile() -> i32 {
    // SAFETY: prctl with these arguments only sets this process's parent-death signal. The
    // child then dies with the thread that started it, which waits for it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
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
    match compile(&request) {
        Ok(code) => match std::fs::write(&request.out, code) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cannot write {}: {e}", request.out.display());
                1
            }
        },
        Err((code, message)) => {
            eprintln!("{message}");
            code
        }
    }
}

/// The child's compile: its code, or an exit code and a message.
fn compile(request: &Request) -> Result<Vec<u8>, (i32, String)> {
    let fail = |e: String| (1, e);
    let bytes = std::fs::read(&request.wasm)
        .map_err(|e| fail(format!("cannot read {}: {e}", request.wasm.display())))?;
    let invalid = |e: wasmtime::Error| {
        let code = if e.is::<wasmtime::OutOfMemory>() {
            EXIT_OVER_MEMORY
        } else {
            EXIT_INVALID
        };
        (code, format!("{e:#}"))
    };
    let mismatch = || {
        (
            EXIT_MISMATCH,
            "this program's engines are not the executor's".to_owned(),
        )
    };
    if request.threads {
        let engine = threads::engine().map_err(|e| fail(e.to_string()))?;
        if compat_hash(&[&engine], false) != request.compat {
            return Err(mismatch());
        }
        return engine.precompile_module(&bytes).map_err(invalid);
    }
    // The engines without the pool first (no address space to reserve); the pool's only if
    // the code would differ without it.
    let rewrite = request.config.metering == super::Metering::Rewrite;
    let unpooled = ExecutorConfig {
        pooling: None,
        ..request.config.clone()
    };
    let mut found = None;
    for cfg in [&unpooled, &request.config] {
        let (engine, module_engine, _) = config::engines(cfg).map_err(|e| fail(e.to_string()))?;
        if compat_hash(&[&engine, &module_engine], rewrite) == request.compat {
            found = Some((engine, module_engine));
            break;
        }
    }
    let (engine, module_engine) = found.ok_or_else(mismatch)?;
    if component::is_component(&bytes) {
        engine.precompile_component(&bytes).map_err(invalid)
    } else {
        let code = super::cache::module_code(&module_engine, request.config.metering, bytes)
            .map_err(|e| (EXIT_INVALID, e))?;
        module_engine.precompile_module(&code).map_err(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::ExitStatus;

    #[test]
    fn a_long_message_keeps_its_start_and_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr");
        std::fs::write(&path, "error: short\n").unwrap();
        assert_eq!(read_message(&path), "error: short");
        // MAX_MESSAGE bytes fit whole; one more is cut.
        let full = "x".repeat(MAX_MESSAGE as usize);
        std::fs::write(&path, &full).unwrap();
        assert_eq!(read_message(&path), full);
        std::fs::write(&path, format!("{full}y")).unwrap();
        assert!(read_message(&path).contains("[...]"));
        // Output before the abort pushes Rust's line past the first MAX_MESSAGE bytes: it is
        // still found, so the compile is still taken as over its memory limit.
        let filler = "warning: something the child printed first\n".repeat(500);
        let text = format!("first line\n{filler}memory allocation of 4096 bytes failed\n");
        std::fs::write(&path, &text).unwrap();
        let message = read_message(&path);
        assert!(message.len() <= MAX_MESSAGE as usize + ELISION.len());
        assert!(message.starts_with("first line"), "{message}");
        assert!(allocation_failed(&message), "{message}");
        // Cuts inside characters drop them rather than show replacement characters.
        std::fs::write(&path, "é".repeat(MAX_MESSAGE as usize)).unwrap();
        let message = read_message(&path);
        assert!(!message.contains('\u{fffd}'));
        assert!(message.len() <= MAX_MESSAGE as usize + ELISION.len());
        assert!(read_message(&dir.path().join("missing")).is_empty());
    }

    /// A cancel flag never raised.
    static NEVER: AtomicBool = AtomicBool::new(false);

    fn cmd() -> CompilerCommand {
        CompilerCommand {
            program: PathBuf::from("/bin/tessera"),
            args: vec!["compile".into()],
            cpu_limit: Duration::from_millis(1500),
            memory_limit: 100 << 20,
        }
    }

    /// A wait status as the kernel reports it: an exit code, or a signal.
    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }
    fn killed(signal: i32) -> ExitStatus {
        ExitStatus::from_raw(signal)
    }

    #[test]
    fn a_childs_end_says_whose_fault_it_was() {
        let m = || "unexpected end-of-file".to_owned();
        assert!(outcome(&cmd(), exited(0), m()).is_ok());
        assert!(matches!(
            outcome(&cmd(), exited(EXIT_INVALID), m()),
            Err(ChildError::Invalid(e)) if e == "unexpected end-of-file"
        ));
        // The limit is whole seconds, rounded up, as RLIMIT_CPU counts it.
        assert!(matches!(
            outcome(&cmd(), killed(libc::SIGXCPU), String::new()),
            Err(ChildError::OverLimit(e)) if e.contains("limit of 2 s")
        ));
        // An allocation refused past the memory limit: Rust's handler says so, then aborts
        // (whatever came before on standard error); or wasmtime returned its error.
        for (status, message) in [
            (
                killed(libc::SIGABRT),
                "memory allocation of 67108864 bytes failed",
            ),
            (
                killed(libc::SIGABRT),
                "mimalloc: warning: cannot commit\nmemory allocation of 8 bytes failed\n",
            ),
            (exited(EXIT_OVER_MEMORY), "out of memory"),
        ] {
            assert!(
                matches!(
                    outcome(&cmd(), status, message.to_owned()),
                    Err(ChildError::OverLimit(e)) if e.contains("memory limit of 100 MiB")
                ),
                "{message}"
            );
        }
        for other in [
            "memory allocation of",
            "memory allocation of x bytes failed",
        ] {
            assert!(!allocation_failed(other), "{other}");
        }
        // Not the module's fault for certain: another engine, another signal (an abort for
        // another reason too), another code.
        for status in [
            exited(EXIT_MISMATCH),
            killed(libc::SIGKILL),
            killed(libc::SIGABRT),
            exited(1),
        ] {
            assert!(
                matches!(outcome(&cmd(), status, m()), Err(ChildError::Failed(_))),
                "{status}"
            );
        }
    }

    #[test]
    fn only_a_compile_over_its_limit_is_refused_again() {
        let r = Refusals::default();
        let e = r.error("a", ChildError::Invalid("bad".into()));
        assert!(matches!(e, ExecError::Compile { .. }), "{e}");
        let e = r.error("b", ChildError::Failed("killed".into()));
        assert!(matches!(e, ExecError::CompileRefused { .. }), "{e}");
        assert!(r.check("a").is_ok() && r.check("b").is_ok());
        let e = r.error("c", ChildError::OverLimit("over".into()));
        assert!(matches!(e, ExecError::CompileRefused { .. }), "{e}");
        assert!(matches!(
            r.check("c"),
            Err(ExecError::CompileRefused { message, .. }) if message == "over"
        ));
    }

    /// At most `MAX_CHILDREN` turns at once: a third waits until one is given back, and
    /// waiting turns are given in the order they were asked for.
    #[test]
    fn children_take_turns_in_order() {
        let turns = std::sync::Arc::new(Turns::new());
        let (a, b) = (turns.take(2, &NEVER), turns.take(2, &NEVER));
        let (tx, rx) = std::sync::mpsc::channel();
        let waiters: Vec<_> = (0..3u64)
            .map(|i| {
                let (mine, tx) = (turns.clone(), tx.clone());
                let t = std::thread::spawn(move || {
                    let turn = mine.take(2, &NEVER);
                    tx.send(i).unwrap();
                    drop(turn);
                });
                // Each asks for its turn before the next one does.
                while turns.lock().tickets < 3 + i {
                    std::thread::yield_now();
                }
                t
            })
            .collect();
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "a third turn at once"
        );
        // One turn free at a time (`b` is held): each waiter's comes from the last one's end.
        drop(a);
        let order: Vec<_> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(60)))
            .collect();
        assert_eq!(order, [Ok(0), Ok(1), Ok(2)], "in the order asked for");
        drop(b);
        for t in waiters {
            t.join().unwrap();
        }
        assert_eq!(turns.lock().running, 0);
    }

    /// A compile cancelled while it waits for its turn leaves the line: the turns after it
    /// are given as if it had never asked.
    #[test]
    fn a_cancelled_wait_passes_its_turn_on() {
        let turns = std::sync::Arc::new(Turns::new());
        let held = turns.take(1, &NEVER);
        let cancel = std::sync::Arc::new(AtomicBool::new(false));
        let cancelled = {
            let (turns, cancel) = (turns.clone(), cancel.clone());
            std::thread::spawn(move || turns.take(1, &cancel).is_none())
        };
        while turns.lock().tickets < 2 {
            std::thread::yield_now();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let next = {
            let turns = turns.clone();
            std::thread::spawn(move || {
                let turn = turns.take(1, &NEVER);
                tx.send(turn.is_some()).unwrap();
            })
        };
        while turns.lock().tickets < 3 {
            std::thread::yield_now();
        }
        cancel.store(true, Ordering::Relaxed);
        assert!(
            cancelled.join().unwrap(),
            "the cancelled wait ends without a turn"
        );
        drop(held);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)),
            Ok(true),
            "the next in line gets the turn"
        );
        next.join().unwrap();
        let s = turns.lock();
        assert_eq!((s.given, s.running, s.abandoned.len()), (3, 0, 0));
    }

    #[test]
    fn the_refused_list_starts_again_past_its_bound() {
        let r = Refusals::default();
        for i in 0..MAX_REFUSED {
            r.error(&format!("d{i}"), ChildError::OverLimit("over".into()));
        }
        assert!(r.check("d0").is_err());
        r.error("one-more", ChildError::OverLimit("over".into()));
        assert!(r.check("d0").is_ok() && r.check("one-more").is_err());
    }

    #[test]
    fn the_wall_limit_is_four_times_the_cpu_limit_and_a_minute_more_at_least() {
        let at = |secs| CompilerCommand {
            cpu_limit: Duration::from_secs(secs),
            ..cmd()
        };
        assert_eq!(at(1).wall_limit(), Duration::from_secs(61));
        assert_eq!(at(300).wall_limit(), Duration::from_secs(1200));
    }
}
