//! Share efficiency, with real wasmtime and real guests: a paced share must buy its fraction of
//! the guest's speed, i.e. the same work must cost about the same CPU time at 0.5 or 0.25 cpus
//! as unpaced, or at least as little as under a kernel CPU quota of the same share.
//! Slicing a guest every millisecond (run 1 ms, sleep 3 ms) cost it its caches at every wake-up
//! and up to 1.9× the CPU time; the pacer's bursts (its share of a 100 ms period in one go) are
//! what this test holds.
//!
//! The kernel's anchor, where the machine has a writable cgroup v1 cpu controller (root): the
//! same module under plain wasmtime (no fuel, no pacer) on a thread of its own that joins a
//! cgroup with a CFS quota of the share per 100 ms period. Without one, only the absolute bound
//! holds.
//!
//! 0.1 cpus is held only with kernel quotas for paced tasks (`ExecutorConfig::cpu_quota_cgroup`,
//! where the machine has the anchor's cgroup): the in-process pacer, which sleeps between
//! bursts, is preempted 2–4× as often as a throttled thread while it runs on a loaded machine,
//! and a memory-bound guest paid 1.1–1.45× the quota's CPU time at 0.1 (BENCHMARKS.md, "Share
//! efficiency"); on the 2-core CI machine, right after the workspace's build, bulkmem at 0.1
//! once cost 4.4–15 s of CPU through the pacer for work of 0.27 s unpaced. A milder form of
//! that state once took bulkmem at 0.25 to 0.500 against the quota's 0.560, each the best of
//! four rounds, and failed the comparison (bar 0.504): hence up to six rounds, and the
//! comparison within a round as well as best against best.
//!
//! Timing-sensitive, so it lives in its own test binary with a single test (nothing else of
//! this crate runs concurrently with it). Every check is a ratio of figures measured in this
//! run: CPU time of the same work paced and unpaced (and quota'd and not), and the achieved share
//! over the offered one; no durations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tessera_agent::executor::{
    ExecEvent, Executor, ExecutorConfig, TaskOutcome, TaskSpec, Termination,
};

/// Hang guard only (a 0.1-cpu run of bulkmem once took 47 s on a noisy host).
const SANITY: Duration = Duration::from_secs(180);

/// Work per CPU-second paced ÷ unpaced must be at least this at 0.25 cpus and more (1.0 = no
/// loss). Bursts measured 0.93–1.05 on a loaded 2-core machine (load average 9); the margin is
/// for such machines, where other processes evict the guest's caches whatever its share.
/// (Fine slicing measured 0.95–1.0 there too at these shares: the load hides its cost, which
/// the issue measured at 1.9× the CPU time on a quiet machine.)
const MIN_EFFICIENCY: f64 = 0.8;

/// A share short of [`MIN_EFFICIENCY`] still passes if its efficiency is at least this fraction
/// of the kernel quota's at the same share: best against best over the rounds, or within one
/// round (each efficiency from that round's own runs, the pacer's and the quota's run at a share
/// back to back), so a host whose state changes between rounds cannot pair the pacer's bad
/// minute with the quota's good one.
const OF_KERNEL: f64 = 0.9;

/// Shares below this are held only against the kernel's anchor (passed without one).
const ABSOLUTE_FROM_MILLI: u64 = 250;

/// Rounds of runs at most per guest. A round runs the guest unpaced and at each share; a share's
/// efficiency is the best (least) CPU time of its runs so far against the best unpaced one. A
/// further round runs only while some share fails its bound: the host's other
/// tenants make a memory-bound guest's CPU time for the same work vary up to 3x from one minute
/// to the next (unpaced too, and under a kernel CPU quota alike), while a pacer that really
/// loses efficiency (fine slicing) loses it in every round.
const MAX_ROUNDS: usize = 6;

/// Achieved share ÷ offered must stay below this: bursts must not buy more than the share.
/// A task runs its first burst at once (as a new group under a CFS quota does), so a run may
/// be one period's share ahead: the share is taken over its wall time and one [`PERIOD`].
const MAX_OVERSHOOT: f64 = 1.1;

/// The pacer's period (`executor::pacing`'s: its share of one is what a run may be ahead).
const PERIOD: Duration = Duration::from_millis(100);

/// Who paces the executor's tasks in a [`check`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pacing {
    /// The in-process pacer: no run may use more than its share (see [`MAX_OVERSHOOT`]).
    InProcess,
    /// The kernel, through a cgroup per task: the share is the kernel's business. Its CFS lets a
    /// group run past its quota by up to a bandwidth slice (5 ms) per CPU in a period, which
    /// over these runs of one to a few periods measured up to 1.4× at 0.5 cpus; `cpu_quota.rs` holds
    /// the share over longer windows.
    Kernel,
}

fn spec(dir: &Path, name: &str, wasm: &str, args: &[&str], cpus_milli: u64) -> TaskSpec {
    let mut argv = vec![name.to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    TaskSpec {
        sandbox: true,
        mem_bytes: 128 << 20,
        cpus_milli,
        ..TaskSpec::new(name, wasm, argv, dir.join(format!("{name}-{cpus_milli}")))
    }
}

async fn run(exec: &Executor, spec: TaskSpec) -> TaskOutcome {
    let (_kill, mut events) = exec.launch_to_channel(spec);
    loop {
        let ev = tokio::time::timeout(SANITY, events.recv())
            .await
            .expect("task did not end in time")
            .expect("no Finished event");
        if let ExecEvent::Finished(o) = ev {
            assert_eq!(o.termination, Termination::Exited(0), "{o:?}");
            return o;
        }
    }
}

/// Least CPU time of the work so far, per share (index 0: unpaced).
struct Best(Vec<Duration>);

impl Best {
    fn new(n: usize) -> Self {
        Best(vec![Duration::MAX; n])
    }

    /// Work per CPU-second at share `i` over unpaced.
    fn efficiency(&self, i: usize) -> f64 {
        self.0[0].as_secs_f64() / self.0[i].as_secs_f64()
    }
}

/// CPU times of one round's runs, per share (index 0: unpaced): the pacer's and the kernel's.
struct Round {
    pacer: Vec<Duration>,
    kernel: Vec<Duration>,
}

impl Round {
    /// Whether the pacer's efficiency at share `i` in this round is within [`OF_KERNEL`] of the
    /// kernel's in the same round.
    fn pacer_keeps_up(&self, i: usize) -> bool {
        let eff = |t: &[Duration]| t[0].as_secs_f64() / t[i].as_secs_f64();
        self.kernel.len() > i && eff(&self.pacer) >= OF_KERNEL * eff(&self.kernel)
    }
}

/// Whether share `i` (`milli`) holds its bound, given the pacer's and the kernel's best times
/// and every round's own.
fn holds(milli: u64, pacer: &Best, kernel: Option<&Best>, rounds: &[Round], i: usize) -> bool {
    let e = pacer.efficiency(i);
    let absolute = milli >= ABSOLUTE_FROM_MILLI && e >= MIN_EFFICIENCY;
    match kernel {
        Some(k) => {
            absolute
                || e >= OF_KERNEL * k.efficiency(i)
                || rounds.iter().any(|r| r.pacer_keeps_up(i))
        }
        None => absolute || milli < ABSOLUTE_FROM_MILLI,
    }
}

/// Runs the guest unpaced and at each share, interleaved, in rounds (two at least, see
/// [`MAX_ROUNDS`]), through the executor and, with an anchor, under the kernel's quota right
/// after it; checks
/// the CPU time the work took at each share against the unpaced one, and the share every paced
/// run achieved.
async fn check(
    exec: &Executor,
    anchor: Option<&KernelAnchor>,
    name: &str,
    wasm: &str,
    args: &[&str],
    paced: &[u64],
    pacing: Pacing,
) {
    exec.prepare(name, Path::new(wasm)).await.unwrap();
    let module = anchor.map(|a| a.compile(wasm));
    let dir = tempfile::tempdir().unwrap();
    let shares: Vec<u64> = std::iter::once(1000).chain(paced.iter().copied()).collect();
    let mut pacer = Best::new(shares.len());
    let mut kernel = anchor.map(|_| Best::new(shares.len()));
    let mut rounds = Vec::new();
    for round in 1..=MAX_ROUNDS {
        let mut this = Round {
            pacer: Vec::new(),
            kernel: Vec::new(),
        };
        for (i, &milli) in shares.iter().enumerate() {
            let o = run(exec, spec(dir.path(), name, wasm, args, milli)).await;
            pacer.0[i] = pacer.0[i].min(o.cpu_time);
            this.pacer.push(o.cpu_time);
            if let (Some(a), Some(m), Some(k)) = (anchor, &module, kernel.as_mut()) {
                let cpu = a.run(m, name, args, milli);
                k.0[i] = k.0[i].min(cpu);
                this.kernel.push(cpu);
            }
            if i > 0 {
                let offered = milli as f64 / 1000.0;
                let achieved = o.cpu_time.as_secs_f64() / o.wall.as_secs_f64();
                let ahead = o.cpu_time.as_secs_f64() / (o.wall + PERIOD).as_secs_f64();
                eprintln!(
                    "{name} round {round} at {offered:.2} cpus: CPU time {:.1} ms, achieved \
                     share {achieved:.3} over {:.0} ms",
                    o.cpu_time.as_secs_f64() * 1e3,
                    o.wall.as_secs_f64() * 1e3
                );
                assert!(
                    pacing == Pacing::Kernel || ahead <= offered * MAX_OVERSHOOT,
                    "{name} at {offered} cpus used {achieved:.3} of a core ({ahead:.3} over a \
                     period more)"
                );
            }
        }
        rounds.push(this);
        let all_hold = shares
            .iter()
            .enumerate()
            .skip(1)
            .all(|(i, &milli)| holds(milli, &pacer, kernel.as_ref(), &rounds, i));
        if round >= 2 && all_hold {
            break;
        }
    }
    for (i, &milli) in shares.iter().enumerate().skip(1) {
        let offered = milli as f64 / 1000.0;
        let e = pacer.efficiency(i);
        let k = kernel.as_ref().map_or("no kernel anchor".to_owned(), |k| {
            let keeps_up = rounds.iter().filter(|r| r.pacer_keeps_up(i)).count();
            format!(
                "kernel quota {:.3}; within {OF_KERNEL} of the quota's in {keeps_up} of {} \
                 rounds",
                k.efficiency(i),
                rounds.len()
            )
        });
        eprintln!(
            "{name} at {offered:.2} cpus: best CPU time {:.1} ms vs {:.1} ms unpaced \
             (efficiency {e:.3}; {k})",
            pacer.0[i].as_secs_f64() * 1e3,
            pacer.0[0].as_secs_f64() * 1e3
        );
        assert!(
            holds(milli, &pacer, kernel.as_ref(), &rounds, i),
            "{name} at {offered} cpus: work per CPU-second {e:.3} of unpaced ({k})"
        );
    }
}

/// The kernel's anchor (see the module documentation).
struct KernelAnchor {
    engine: wasmtime::Engine,
    /// The cgroup (v1 cpu controller) the quota'd runs' threads join.
    group: PathBuf,
}

impl KernelAnchor {
    /// The anchor, or `None` (said on stderr) where no cgroup can be made.
    fn new() -> Option<Self> {
        let group = Path::new("/sys/fs/cgroup/cpu")
            .join(format!("tessera-share-efficiency-{}", std::process::id()));
        let made = std::fs::create_dir(&group)
            .and_then(|()| std::fs::write(group.join("cpu.cfs_period_us"), "100000"));
        if let Err(e) = made {
            eprintln!(
                "no kernel anchor ({}: {e}): the absolute bound only",
                group.display()
            );
            let _ = std::fs::remove_dir(&group);
            return None;
        }
        Some(KernelAnchor {
            engine: wasmtime::Engine::default(),
            group,
        })
    }

    fn compile(&self, wasm: &str) -> wasmtime::Module {
        wasmtime::Module::from_file(&self.engine, wasm).unwrap()
    }

    /// CPU time of one run of `module` with `args`, under a quota of `milli` thousandths of a
    /// core per period (none for 1000), on a fresh thread that joins the group for it.
    fn run(&self, module: &wasmtime::Module, name: &str, args: &[&str], milli: u64) -> Duration {
        let quota = if milli >= 1000 {
            "-1".to_owned()
        } else {
            (milli * 100).to_string()
        };
        std::fs::write(self.group.join("cpu.cfs_quota_us"), quota).unwrap();
        let mut argv = vec![name.to_owned()];
        argv.extend(args.iter().map(|a| a.to_string()));
        std::thread::scope(|s| {
            s.spawn(|| {
                if milli < 1000 {
                    // SAFETY: gettid has no preconditions.
                    let tid = unsafe { libc::gettid() };
                    std::fs::write(self.group.join("tasks"), tid.to_string()).unwrap();
                }
                let t0 = thread_cpu_time();
                run_plain(&self.engine, module, &argv);
                thread_cpu_time().saturating_sub(t0)
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for KernelAnchor {
    fn drop(&mut self) {
        // Empty once its threads have ended.
        let _ = std::fs::remove_dir(&self.group);
    }
}

/// Runs a WASI preview-1 command under plain wasmtime, on this thread, to a zero exit.
fn run_plain(engine: &wasmtime::Engine, module: &wasmtime::Module, argv: &[String]) {
    use wasmtime_wasi::p1::WasiP1Ctx;
    let mut linker: wasmtime::Linker<WasiP1Ctx> = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).unwrap();
    let wasi = wasmtime_wasi::WasiCtxBuilder::new().args(argv).build_p1();
    let mut store = wasmtime::Store::new(engine, wasi);
    let instance = linker.instantiate(&mut store, module).unwrap();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap();
    if let Err(e) = start.call(&mut store, ()) {
        let code = e.downcast_ref::<wasmtime_wasi::I32Exit>().map(|x| x.0);
        assert_eq!(code, Some(0), "{e:?}");
    }
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) },
        0
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

const GUESTS: [(&str, &str, &[&str]); 2] = [
    ("arith", wasm_examples::ARITH_PATH, &["150"]),
    ("bulkmem", wasm_examples::BULKMEM_PATH, &["120", "16"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_shares_buy_their_fraction_of_the_guests_speed() {
    let exec = Executor::new(ExecutorConfig::default()).unwrap();
    let anchor = KernelAnchor::new();
    for (name, wasm, args) in GUESTS {
        let paced = [500, 250];
        check(
            &exec,
            anchor.as_ref(),
            name,
            wasm,
            args,
            &paced,
            Pacing::InProcess,
        )
        .await;
    }

    // With kernel quotas for paced tasks (`ExecutorConfig::cpu_quota_cgroup`), 0.1 cpus too:
    // the kernel throttles the task's own thread as it does the anchor's.
    let Some(anchor) = anchor else {
        return;
    };
    let parent = anchor.group.with_file_name(format!(
        "tessera-share-efficiency-quotas-{}",
        std::process::id()
    ));
    let exec = Executor::new(ExecutorConfig {
        cpu_quota_cgroup: Some(parent.clone()),
        ..ExecutorConfig::default()
    })
    .unwrap();
    for (name, wasm, args) in GUESTS {
        eprintln!("under kernel quotas:");
        let paced = [500, 250, 100];
        check(
            &exec,
            Some(&anchor),
            name,
            wasm,
            args,
            &paced,
            Pacing::Kernel,
        )
        .await;
    }
    drop(exec);
    // Empty once the tasks' threads that left their groups for it have ended.
    for _ in 0..1000 {
        if std::fs::remove_dir(&parent).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
