//! Share efficiency, with real wasmtime and real guests: a paced share must buy its fraction of
//! the guest's speed, i.e. the same work must cost about the same CPU time at 0.5 or 0.25 cpus
//! as unpaced (a kernel CPU quota costs 1.0–1.12× at 0.25 on a quiet machine). Slicing a guest every millisecond (run
//! 1 ms, sleep 3 ms) cost it its caches at every wake-up and up to 1.9× the CPU time; the
//! pacer's bursts (its share of a 100 ms period in one go) are what this test holds.
//!
//! Timing-sensitive, so it lives in its own test binary with a single test (nothing else of
//! this crate runs concurrently with it). Every check is a ratio of figures measured in this
//! run: CPU time of the same work paced and unpaced, and the achieved share over the offered
//! one; no durations.
//!
//! 0.1 cpus is left to the bench (`agent/benches/executor.rs`), which sets it beside a kernel CPU
//! quota: at that share the host decides. bulkmem at 0.1 cost from 1.0x to 28x its unpaced CPU
//! time within ten minutes on the 2-core CI machine (a run of 47 s tripped the hang guard), with
//! arith and the shares held here unaffected.

use std::path::Path;
use std::time::Duration;

use tessera_agent::executor::{
    ExecEvent, Executor, ExecutorConfig, TaskOutcome, TaskSpec, Termination,
};
use tokio::sync::mpsc;

/// Hang guard only.
const SANITY: Duration = Duration::from_secs(60);

/// Work per CPU-second paced ÷ unpaced must be at least this at 0.25 cpus and more (1.0 = no
/// loss). Bursts measured 0.93–1.05 on a loaded 2-core machine (load average 9); the margin is
/// for such machines, where other processes evict the guest's caches whatever its share.
/// (Fine slicing measured 0.95–1.0 there too at these shares: the load hides its cost, which
/// the issue measured at 1.9× the CPU time on a quiet machine.)
const MIN_EFFICIENCY: f64 = 0.8;

/// Rounds of runs at most per guest. A round runs the guest unpaced and at each share; a share's
/// efficiency is the best (least) CPU time of its runs so far against the best unpaced one. A
/// further round runs only while some share is short of [`MIN_EFFICIENCY`]: the host's other
/// tenants make a memory-bound guest's CPU time for the same work vary up to 3x from one minute
/// to the next (unpaced too, and under a kernel CPU quota alike), while a pacer that really
/// loses efficiency (fine slicing) loses it in every round.
const MAX_ROUNDS: usize = 4;

/// Achieved share ÷ offered must stay below this: bursts must not buy more than the share.
/// (The first burst comes after a period's sleep, so a short run gets a little less.)
const MAX_OVERSHOOT: f64 = 1.1;

fn spec(dir: &Path, name: &str, wasm: &str, args: &[&str], cpus_milli: u64) -> TaskSpec {
    let mut argv = vec![name.to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    TaskSpec {
        datasets: Vec::new(),
        digest: name.into(),
        wasm_path: wasm.into(),
        args: argv,
        env: vec![],
        task_dir: dir.join(format!("{name}-{cpus_milli}")),
        mem_bytes: 128 << 20,
        cpus_milli,
        timeout: None,
        max_cpu: None,
        disk_bytes: 0,
        sandbox: true,
    }
}

async fn run(exec: &Executor, spec: TaskSpec) -> TaskOutcome {
    let (tx, mut events) = mpsc::unbounded_channel();
    let _kill = exec.launch(
        spec,
        Box::new(move |ev| {
            let _ = tx.send(ev);
        }),
    );
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

/// Runs the guest unpaced and at each share, interleaved, in rounds (two at least, see
/// [`MAX_ROUNDS`]); checks the CPU time the work took at each share against the unpaced one, and
/// the share every paced run achieved.
async fn check(exec: &Executor, name: &str, wasm: &str, args: &[&str], paced: &[u64]) {
    exec.prepare(name, Path::new(wasm)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shares: Vec<u64> = std::iter::once(1000).chain(paced.iter().copied()).collect();
    // Least CPU time per share so far.
    let mut best = vec![Duration::MAX; shares.len()];
    let efficiency = |best: &[Duration], i: usize| best[0].as_secs_f64() / best[i].as_secs_f64();
    for round in 1..=MAX_ROUNDS {
        for (i, &milli) in shares.iter().enumerate() {
            let o = run(exec, spec(dir.path(), name, wasm, args, milli)).await;
            best[i] = best[i].min(o.cpu_time);
            if i > 0 {
                let offered = milli as f64 / 1000.0;
                let achieved = o.cpu_time.as_secs_f64() / o.wall.as_secs_f64();
                eprintln!(
                    "{name} round {round} at {offered:.2} cpus: CPU time {:.1} ms, achieved \
                     share {achieved:.3} over {:.0} ms",
                    o.cpu_time.as_secs_f64() * 1e3,
                    o.wall.as_secs_f64() * 1e3
                );
                assert!(
                    achieved <= offered * MAX_OVERSHOOT,
                    "{name} at {offered} cpus used {achieved:.3} of a core"
                );
            }
        }
        let short = (1..shares.len()).any(|i| efficiency(&best, i) < MIN_EFFICIENCY);
        if round >= 2 && !short {
            break;
        }
    }
    for (i, &milli) in shares.iter().enumerate().skip(1) {
        let offered = milli as f64 / 1000.0;
        let e = efficiency(&best, i);
        eprintln!(
            "{name} at {offered:.2} cpus: best CPU time {:.1} ms vs {:.1} ms unpaced \
             (efficiency {e:.3})",
            best[i].as_secs_f64() * 1e3,
            best[0].as_secs_f64() * 1e3
        );
        assert!(
            e >= MIN_EFFICIENCY,
            "{name} at {offered} cpus: work per CPU-second {e:.3} of unpaced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_shares_buy_their_fraction_of_the_guests_speed() {
    let exec = Executor::new(ExecutorConfig::default()).unwrap();
    check(
        &exec,
        "arith",
        wasm_examples::ARITH_PATH,
        &["150"],
        &[500, 250],
    )
    .await;
    check(
        &exec,
        "bulkmem",
        wasm_examples::BULKMEM_PATH,
        &["120", "16"],
        &[500, 250],
    )
    .await;
}
