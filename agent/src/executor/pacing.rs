//! CPU shares: calibration of fuel per core-second, and the pacer that holds
//! a task to its offered share of a core.
//!
//! Metering is fuel alone (no epoch interruption): every store yields to
//! tokio after each [`fuel_yield_interval`] of fuel (about 1 ms of one
//! core), by `Store::fuel_async_yield_interval`; a module metered by
//! rewriting yields from its `tick` import once a millisecond has passed
//! (`tick.rs`), reading the task's CPU time from a [`TaskClock`] this pacer
//! publishes. [`Pacer::poll`] wraps the
//! guest's `call_async` future, reads the thread's CPU clock around every
//! poll (the guest runs on the polling thread, inside the poll), and tells a
//! fuel yield (the future wakes itself before returning `Pending`) from a
//! wait on I/O (woken later by someone else). At each fuel yield the CPU
//! time used since the last one is paid from a token bucket refilled at
//! `cpus` core-seconds per second of wall time. A task starts with a burst in
//! hand, and one that overdraws is put
//! to sleep until its bucket holds a burst again: it then runs its share of a
//! [`PERIOD`] (100 ms, as the kernel's CFS bandwidth control) in one go
//! (still yielding to tokio every ~1 ms, without sleeping) and sleeps off the
//! rest of the period. Slicing it finer (run 1 ms, sleep 3 ms at 0.25 cpus)
//! cost a memory-bound guest its caches at every wake-up: it needed up to
//! 1.9–2.4× the CPU time for the same work (see BENCHMARKS.md, "Share
//! efficiency"). Pacing by the CPU clock rather than by fuel
//! makes "0.5 cpus" half a core whatever the guest's instruction mix (fuel
//! counts instructions, whose cost varies by about 2x between guests); fuel
//! still sets the yield interval and the CPU-time budget. Kills and timeouts
//! are `select!`ed against the paced future, so they take effect at the next
//! yield, within about a millisecond even in `loop {}`.
//!
//! A WASI preview-1 task is one thread: a share above one cpu buys no more
//! than one core, and tasks of 1 cpu or more are not paced at all.
//!
//! An executor instance's share moves with its envelope: [`Pacer::shared`] reads the share from
//! an atomic at every yield (about once a millisecond) and every 10 ms of a wait between
//! bursts, and re-derives its rate and burst when it changed;
//! a one-shot task's pacer has no shared share and pays nothing for the feature.
//!
//! With kernel quotas (`quota.rs`), a one-shot task's pacer carries a [`Handoff`]: the first
//! time the task overdraws (it is CPU-bound, not idle or waiting on I/O), the pacer says so
//! through it, and the executor moves the task to a thread of its own under a CFS quota of its
//! share; from then on the kernel paces it and the pacer only counts its CPU time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Instance, Module, Store};

/// Calibration workload: a xorshift generator updating a 2 KiB table in
/// linear memory (arithmetic, shifts, loads and stores, a branch), close to
/// the instruction mix of ordinary compiled code. The agent loads its binary,
/// [`CALIBRATION_WASM`]; this text is what that binary was assembled from.
#[cfg_attr(not(test), allow(dead_code))]
const CALIBRATION_WAT: &str = r#"
(module
  (memory 1)
  (func (export "run") (param $n i64) (result i64)
    (local $x i64) (local $i i32)
    (local.set $x (i64.const 0x1E3779B97F4A7C15))
    (block $done
      (loop $l
        (br_if $done (i64.eqz (local.get $n)))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
        (local.set $i (i32.shl (i32.wrap_i64 (i64.and (local.get $x) (i64.const 255))) (i32.const 3)))
        (i64.store (local.get $i)
          (i64.rotl (i64.add (i64.load (local.get $i)) (local.get $x)) (i64.const 5)))
        (local.set $n (i64.sub (local.get $n) (i64.const 1)))
        (br $l)))
    (local.get $x)))
"#;

/// [`CALIBRATION_WAT`] assembled (a test checks it is): the agent takes no WAT parser (the
/// `wat` crate and its `wast` parser, 6 s of the first build's CPU) for one small module.
#[rustfmt::skip]
const CALIBRATION_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x06, 0x01, 0x60, 0x01, 0x7e, 0x01, 0x7e,
    0x03, 0x02, 0x01, 0x00, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x07, 0x01, 0x03, 0x72, 0x75, 0x6e,
    0x00, 0x00, 0x0a, 0x64, 0x01, 0x62, 0x02, 0x01, 0x7e, 0x01, 0x7f, 0x42, 0x95, 0xf8, 0xa9, 0xfa,
    0x97, 0xb7, 0xde, 0x9b, 0x1e, 0x21, 0x01, 0x02, 0x40, 0x03, 0x40, 0x20, 0x00, 0x50, 0x0d, 0x01,
    0x20, 0x01, 0x20, 0x01, 0x42, 0x0d, 0x86, 0x85, 0x21, 0x01, 0x20, 0x01, 0x20, 0x01, 0x42, 0x07,
    0x88, 0x85, 0x21, 0x01, 0x20, 0x01, 0x20, 0x01, 0x42, 0x11, 0x86, 0x85, 0x21, 0x01, 0x20, 0x01,
    0x42, 0xff, 0x01, 0x83, 0xa7, 0x41, 0x03, 0x74, 0x21, 0x02, 0x20, 0x02, 0x20, 0x02, 0x29, 0x03,
    0x00, 0x20, 0x01, 0x7c, 0x42, 0x05, 0x89, 0x37, 0x03, 0x00, 0x20, 0x00, 0x42, 0x01, 0x7d, 0x21,
    0x00, 0x0c, 0x00, 0x0b, 0x0b, 0x20, 0x01, 0x0b, 0x00, 0x21, 0x04, 0x6e, 0x61, 0x6d, 0x65, 0x02,
    0x0c, 0x01, 0x00, 0x03, 0x00, 0x01, 0x6e, 0x01, 0x01, 0x78, 0x02, 0x01, 0x69, 0x03, 0x0c, 0x01,
    0x00, 0x02, 0x00, 0x04, 0x64, 0x6f, 0x6e, 0x65, 0x01, 0x01, 0x6c,
];

/// CPU time of each calibration sample.
const SAMPLE: Duration = Duration::from_millis(60);

/// Fuel between two yields of a task: about 1 ms of one core.
pub(crate) fn fuel_yield_interval(fuel_per_core_second: u64) -> u64 {
    (fuel_per_core_second / 1000).clamp(10_000, 10_000_000)
}

/// CPU time consumed by the calling thread (what pacing and threaded tasks' shares are
/// measured on).
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Measures how much fuel one core burns per second of CPU time with this
/// engine's code generation: runs the calibration loop for a few samples of
/// [`SAMPLE`] CPU time each (about 250 ms in all) on a thread of its own,
/// timed by that thread's CPU clock so that other load on the machine does
/// not distort it, and keeps the fastest sample. The result is cached for
/// the process (the engine configuration is fixed).
pub(crate) fn calibrated_fuel_rate(engine: &Engine) -> Result<u64, String> {
    // Held during calibration, so that executors created concurrently
    // calibrate once rather than all at the same time.
    static RATE: Mutex<Option<u64>> = Mutex::new(None);
    let mut rate = RATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = *rate {
        return Ok(r);
    }
    let engine = engine.clone();
    let r = std::thread::Builder::new()
        .name("tessera-calibrate".into())
        .spawn(move || calibrate(&engine))
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "calibration thread panicked".to_owned())??;
    tracing::info!(fuel_per_core_second = r, "calibrated the fuel rate");
    *rate = Some(r);
    Ok(r)
}

fn calibrate(engine: &Engine) -> Result<u64, String> {
    let err = |e: wasmtime::Error| format!("calibration: {e:#}");
    let module = Module::new(engine, CALIBRATION_WASM).map_err(err)?;
    let mut store = Store::new(engine, ());
    store.set_fuel(u64::MAX / 2).map_err(err)?;
    let instance = Instance::new(&mut store, &module, &[]).map_err(err)?;
    let run = instance
        .get_typed_func::<i64, i64>(&mut store, "run")
        .map_err(err)?;
    let sample = |n: i64, store: &mut Store<()>| -> Result<(u64, Duration), String> {
        let fuel0 = store.get_fuel().map_err(err)?;
        let t0 = thread_cpu_time();
        run.call(&mut *store, n).map_err(err)?;
        let cpu = thread_cpu_time().saturating_sub(t0);
        let fuel = fuel0 - store.get_fuel().map_err(err)?;
        Ok((fuel, cpu))
    };
    // Warm up and size the samples.
    let mut n: i64 = 1 << 16;
    loop {
        let (_, cpu) = sample(n, &mut store)?;
        if cpu >= Duration::from_millis(5) || n >= 1 << 40 {
            let scale = SAMPLE.as_secs_f64() / cpu.as_secs_f64().max(1e-6);
            n = ((n as f64) * scale).max(1.0) as i64;
            break;
        }
        n *= 4;
    }
    let mut best = 0f64;
    for _ in 0..4 {
        let (fuel, cpu) = sample(n, &mut store)?;
        best = best.max(fuel as f64 / cpu.as_secs_f64().max(1e-6));
    }
    if best < 1e6 {
        return Err(format!("calibration: implausible rate {best} fuel/s"));
    }
    Ok(best as u64)
}

/// Records whether the wrapped future woke itself during a poll (a fuel
/// yield) and forwards every wake to the task's real waker.
struct WakeFlag {
    woken: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl WakeFlag {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if let Some(w) = self.lock().as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Between a one-shot task's pacer and the executor that can move the task under a kernel
/// quota (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    /// The task overdrew its share: it is CPU-bound, and is due to move.
    wanted: AtomicBool,
    /// The task runs under its kernel quota: the pacer no longer paces.
    moved: AtomicBool,
    /// The move failed: the task stays paced in process, and is not offered again.
    refused: AtomicBool,
}

impl Handoff {
    /// Whether the task is due to move.
    pub(crate) fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
            && !self.moved.load(Ordering::Acquire)
            && !self.refused.load(Ordering::Acquire)
    }

    /// The task now runs under its kernel quota (before its next poll).
    pub(crate) fn moved(&self) {
        self.moved.store(true, Ordering::Release);
    }

    /// The task could not move; its pacer goes on pacing it.
    pub(crate) fn refused(&self) {
        self.refused.store(true, Ordering::Release);
    }

    fn kernel_paced(&self) -> bool {
        self.moved.load(Ordering::Acquire)
    }

    fn overdrawn(&self) {
        self.wanted.store(true, Ordering::Release);
    }
}

/// Holds one task to its CPU share (see the module documentation).
pub(crate) struct Pacer {
    /// Core-seconds of CPU per second of wall time this task may use; `None`: unpaced.
    rate: Option<f64>,
    /// Fuel burnt between two yields.
    interval: u64,
    /// Token bucket, in CPU-seconds the task may still use (negative: in debt).
    tokens: f64,
    /// Tokens an overdrawn task sleeps for: with what it earns while running, it then runs
    /// its share of a period in one go (see [`Pacer::rate_and_burst`]).
    burst: f64,
    /// Most tokens a task may save up while idle.
    cap: f64,
    /// CPU time used since the last payment.
    unpaid: Duration,
    /// CPU time used in all.
    cpu: Duration,
    last: Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    flag: Arc<WakeFlag>,
    waker: Waker,
    /// Total time paused for being ahead of budget.
    paused: Duration,
    /// The share to follow, if it can change, with the value last applied.
    shared: Option<(Arc<AtomicU64>, u64)>,
    /// The pacing period (see [`Pacer::new`]).
    period: Duration,
    /// Where the task can move under a kernel quota, if it can.
    handoff: Option<Arc<Handoff>>,
    /// Where the task's CPU time is published for its own host calls, if they need it.
    clock: Option<Arc<TaskClock>>,
}

/// A task's CPU time as its pacer counts it, readable from inside one of its polls: the `tick`
/// of a module metered by rewriting (`tick.rs`) yields once about a millisecond of CPU time
/// has passed and stops the guest at its CPU-time budget by it.
#[derive(Debug, Default)]
pub(crate) struct TaskClock {
    /// CPU time of the polls that have ended, in nanoseconds.
    ended: AtomicU64,
    /// The polling thread's CPU clock when the current poll began, in nanoseconds.
    poll_start: AtomicU64,
    /// When the current poll began, in nanoseconds since [`TaskClock::wall`]'s origin.
    poll_wall: AtomicU64,
}

impl TaskClock {
    /// Nanoseconds since a process-wide origin: a cheap clock (no system call, unlike a CPU
    /// clock) for deciding when to yield.
    pub(crate) fn wall() -> u64 {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    /// When the current poll began ([`TaskClock::wall`]'s units).
    pub(crate) fn poll_began(&self) -> u64 {
        self.poll_wall.load(Ordering::Relaxed)
    }

    /// The task's CPU time so far. Called on the polling thread, inside a poll.
    pub(crate) fn now(&self) -> Duration {
        let ended = Duration::from_nanos(self.ended.load(Ordering::Relaxed));
        let start = Duration::from_nanos(self.poll_start.load(Ordering::Relaxed));
        ended + thread_cpu_time().saturating_sub(start)
    }
}

/// The pacing period: a task that has used its share sleeps until it may run its share of a
/// period (`cpus` × `PERIOD` of CPU time) in one burst, as CFS bandwidth control does with
/// its default 100 ms period. Longer periods keep a paced guest's caches warm between
/// wake-ups; shorter ones make its waits shorter. Kills and timeouts cut waits short.
pub(crate) const PERIOD: Duration = Duration::from_millis(100);

/// Longest single sleep of a pacer whose share can change (an executor's envelope): it looks
/// at the share again after each, so that a grown share takes effect within this even in the
/// middle of a wait between bursts. One-shot tasks sleep off a wait at once.
const SHARED_RECHECK: Duration = Duration::from_millis(10);

/// Fewest tokens a paced task may save up while idle.
const MIN_CAP: Duration = Duration::from_millis(2);

impl Pacer {
    /// A pacer for a task offered `cpus_milli` thousandths of a core, on an
    /// agent whose cores burn `fuel_per_core_second`, running its share of each `period` in
    /// one burst.
    pub(crate) fn new(cpus_milli: u64, fuel_per_core_second: u64, period: Duration) -> Self {
        let interval = fuel_yield_interval(fuel_per_core_second);
        let (rate, burst, cap) = Self::rate_and_burst(cpus_milli, period);
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        Pacer {
            rate,
            interval,
            tokens: 0.0,
            burst,
            cap,
            unpaid: Duration::ZERO,
            cpu: Duration::ZERO,
            last: Instant::now(),
            sleep: None,
            waker: Waker::from(flag.clone()),
            flag,
            paused: Duration::ZERO,
            shared: None,
            period,
            handoff: None,
            clock: None,
        }
    }

    /// This pacer publishes the task's CPU time to `clock` around every poll.
    pub(crate) fn with_clock(mut self, clock: Arc<TaskClock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// This pacer reports the task's first overdraft to `handoff`, and stops pacing once the
    /// task has moved under its kernel quota.
    pub(crate) fn with_handoff(mut self, handoff: Option<Arc<Handoff>>) -> Self {
        self.handoff = handoff;
        self
    }

    /// A pacer following the share in `cpus_milli` as it changes (an executor's envelope).
    pub(crate) fn shared(
        cpus_milli: Arc<AtomicU64>,
        fuel_per_core_second: u64,
        period: Duration,
    ) -> Self {
        let now = cpus_milli.load(Ordering::Relaxed);
        let mut p = Self::new(now, fuel_per_core_second, period);
        p.shared = Some((cpus_milli, now));
        p
    }

    /// The rate (`None`: unpaced), the burst and the most tokens saved up, for a share and a
    /// period. The burst is the tokens a task waits for when overdrawn: `cpus` × (1 − `cpus`)
    /// × the period, so that with what it earns while it runs it runs `cpus` × the period and
    /// sleeps the rest: one run and one sleep per period, whatever the share (0.25 cpus: run
    /// 25 ms, sleep 75 ms; 0.9 cpus: run 90 ms, sleep 10 ms). The cap is two bursts: a burst's
    /// tokens are refilled while the task sleeps and more are earned while it runs, which a
    /// cap of one burst would throw away.
    fn rate_and_burst(cpus_milli: u64, period: Duration) -> (Option<f64>, f64, f64) {
        let rate = (cpus_milli < 1000).then(|| cpus_milli.max(1) as f64 / 1000.0);
        let burst = rate.map_or(0.0, |r| r * (1.0 - r) * period.as_secs_f64());
        let cap = rate.map_or(0.0, |_| (2.0 * burst).max(MIN_CAP.as_secs_f64()));
        (rate, burst, cap)
    }

    /// Applies a changed shared share (cheap when unchanged: one atomic load).
    fn follow_share(&mut self) {
        let Some((share, applied)) = &mut self.shared else {
            return;
        };
        let now = share.load(Ordering::Relaxed);
        if now != *applied {
            *applied = now;
            let (rate, burst, cap) = Self::rate_and_burst(now, self.period);
            self.rate = rate;
            self.burst = burst;
            self.cap = cap;
            self.tokens = self.tokens.min(cap);
        }
    }

    /// Fuel between two yields (to configure the store with).
    pub(crate) fn interval(&self) -> u64 {
        self.interval
    }

    /// Time the task spent paused for being ahead of its share.
    pub(crate) fn paused(&self) -> Duration {
        self.paused
    }

    /// CPU time the guest has used (its thread's CPU clock, summed over polls).
    pub(crate) fn cpu_time(&self) -> Duration {
        self.cpu
    }

    /// Restarts the budget clock (call right before the guest starts), with a burst in hand: a
    /// new task runs its share of a first period at once and then sleeps off the rest, as a new
    /// group under a CFS quota does. Starting with none made it sleep most of a period first,
    /// which cost a run of a second or two 3–7 % of its speed at its share.
    pub(crate) fn start(&mut self) {
        self.last = Instant::now();
        self.tokens = self.burst;
    }

    /// Runs `fut` (the guest's `call_async`) at this pacer's rate.
    pub(crate) async fn run<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| self.poll(fut.as_mut(), cx)).await
    }

    fn poll<F: Future>(&mut self, fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        while let Some(s) = self.sleep.as_mut() {
            if s.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
            self.recheck(cx);
        }
        {
            let mut w = self.flag.lock();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        self.flag.woken.store(false, Ordering::SeqCst);
        let mut inner_cx = Context::from_waker(&self.waker);
        let t0 = thread_cpu_time();
        if let Some(c) = &self.clock {
            c.poll_start.store(t0.as_nanos() as u64, Ordering::Relaxed);
            c.poll_wall.store(TaskClock::wall(), Ordering::Relaxed);
        }
        let r = fut.poll(&mut inner_cx);
        let used = thread_cpu_time().saturating_sub(t0);
        self.unpaid += used;
        self.cpu += used;
        if let Some(c) = &self.clock {
            c.ended.store(self.cpu.as_nanos() as u64, Ordering::Relaxed);
        }
        if r.is_pending() && self.flag.woken.swap(false, Ordering::SeqCst) {
            self.yielded(cx);
        }
        r
    }

    /// A fuel yield: pay for the CPU time used since the last one; overdrawn, sleep until the
    /// bucket holds a whole burst.
    fn yielded(&mut self, cx: &mut Context<'_>) {
        self.follow_share();
        let unpaid = std::mem::take(&mut self.unpaid);
        let Some(rate) = self.rate else { return };
        if self.handoff.as_ref().is_some_and(|h| h.kernel_paced()) {
            return;
        }
        let now = Instant::now();
        let earned = rate * now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + earned).min(self.cap) - unpaid.as_secs_f64();
        if self.tokens < 0.0 {
            // The debt is slept off wherever the task runs next: the kernel's quota starts
            // from a settled account.
            self.sleep_for((self.burst - self.tokens) / rate, cx);
            if let Some(h) = &self.handoff {
                h.overdrawn();
            }
        }
    }

    /// After one sleep of a pacer whose share can change: follows the share, earns the time
    /// slept, and sleeps again while the bucket is short of a burst at the share now.
    fn recheck(&mut self, cx: &mut Context<'_>) {
        if self.shared.is_none() {
            return;
        }
        self.follow_share();
        let Some(rate) = self.rate else { return };
        let now = Instant::now();
        let earned = rate * now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + earned).min(self.cap);
        // Short of a burst by more than a microsecond's worth of tokens.
        if self.burst - self.tokens > rate * 1e-6 {
            self.sleep_for((self.burst - self.tokens) / rate, cx);
        }
    }

    /// Sleeps `secs` (at most [`SHARED_RECHECK`] at a time if the share can change).
    fn sleep_for(&mut self, secs: f64, cx: &mut Context<'_>) {
        let mut pause = Duration::from_secs_f64(secs.max(0.0));
        if self.shared.is_some() {
            pause = pause.min(SHARED_RECHECK);
        }
        self.paused += pause;
        let mut s = Box::pin(tokio::time::sleep(pause));
        // Registers the task's waker with the timer.
        if s.as_mut().poll(cx).is_pending() {
            self.sleep = Some(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(100);

    #[test]
    fn calibration_binary_is_its_text_assembled() {
        let assembled = wat::parse_str(CALIBRATION_WAT).expect("the calibration text parses");
        assert_eq!(
            CALIBRATION_WASM, assembled,
            "CALIBRATION_WASM should be {assembled:?}"
        );
    }

    #[test]
    fn interval_is_about_a_millisecond() {
        assert_eq!(fuel_yield_interval(2_000_000_000), 2_000_000);
        assert_eq!(fuel_yield_interval(1_000), 10_000);
        assert_eq!(fuel_yield_interval(u64::MAX), 10_000_000);
    }

    #[test]
    fn shares_of_a_core_or_more_are_not_paced() {
        assert!(Pacer::new(1000, 1_000_000_000, P).rate.is_none());
        assert!(Pacer::new(4000, 1_000_000_000, P).rate.is_none());
        let p = Pacer::new(250, 1_000_000_000, P);
        assert_eq!(p.rate, Some(0.25));
        // A zero share is treated as the smallest one, never as unlimited.
        assert_eq!(Pacer::new(0, 1_000_000_000, P).rate, Some(0.001));
    }

    #[test]
    fn a_paced_task_runs_its_share_of_a_period_in_one_burst() {
        let (rate, burst, cap) = Pacer::rate_and_burst(250, P);
        assert_eq!(rate, Some(0.25));
        // 25 ms run per 100 ms period: 18.75 ms of tokens waited for, 6.25 ms earned running.
        assert!((burst - 0.01875).abs() < 1e-12, "{burst}");
        assert!((cap - 0.0375).abs() < 1e-12, "{cap}");
        // Unpaced: no burst, no savings.
        assert_eq!(Pacer::rate_and_burst(1000, P), (None, 0.0, 0.0));
        // A tiny share still saves up enough to run a yield or two.
        let (_, burst, cap) = Pacer::rate_and_burst(1, P);
        assert!(burst < 0.001 && cap >= MIN_CAP.as_secs_f64());
    }

    /// The first overdraft is slept off and reported to the handoff; once the task has moved
    /// under its kernel quota, the pacer no longer puts it to sleep.
    #[tokio::test]
    async fn a_handoff_hears_of_the_first_overdraft_and_pacing_stops_once_moved() {
        let handoff = Arc::new(Handoff::default());
        let mut p = Pacer::new(100, 1_000_000_000, P).with_handoff(Some(handoff.clone()));
        let mut cx = Context::from_waker(Waker::noop());
        p.start();
        assert!(!handoff.wanted());
        // The first burst (9 ms at 0.1 cpus of a 100 ms period, with what it earns) is free.
        p.unpaid = Duration::from_millis(5);
        p.yielded(&mut cx);
        assert!(p.sleep.is_none(), "a new task runs its first burst at once");
        assert!(!handoff.wanted());
        p.unpaid = Duration::from_millis(5);
        p.yielded(&mut cx);
        assert!(p.sleep.is_some(), "an overdraft is slept off");
        assert!(handoff.wanted(), "and reported");
        let paused = p.paused();

        handoff.moved();
        assert!(!handoff.wanted());
        p.sleep = None;
        p.unpaid = Duration::from_millis(50);
        p.yielded(&mut cx);
        assert!(p.sleep.is_none(), "the kernel paces a moved task");
        assert_eq!(p.paused(), paused);

        // A refused move leaves the pacer pacing, and is not asked for again.
        let refused = Arc::new(Handoff::default());
        let mut p = Pacer::new(100, 1_000_000_000, P).with_handoff(Some(refused.clone()));
        p.start();
        refused.refused();
        p.unpaid = Duration::from_millis(15);
        p.yielded(&mut cx);
        assert!(p.sleep.is_some());
        assert!(!refused.wanted());
    }

    #[test]
    fn a_shared_share_is_followed() {
        let share = Arc::new(AtomicU64::new(250));
        let mut p = Pacer::shared(share.clone(), 1_000_000_000, P);
        assert_eq!(p.rate, Some(0.25));
        share.store(2000, Ordering::Relaxed);
        p.follow_share();
        assert!(p.rate.is_none());
        share.store(500, Ordering::Relaxed);
        p.follow_share();
        assert_eq!(p.rate, Some(0.5));
        assert!(p.cap > 0.0);
    }
}
