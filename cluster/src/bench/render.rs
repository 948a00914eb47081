//! The report as text: the machine, a latency table, the ratios, a throughput table.

use std::fmt::Write;

use super::{LaunchReport, Round, Stats};

/// Renders `r` as aligned tables.
pub(super) fn text(r: &LaunchReport) -> String {
    let mut o = String::new();
    let m = &r.machine;
    let p = &r.plan;
    let load = |l: &[f64; 3]| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]);
    let _ = writeln!(o, "Tessera launch benchmark ({} build)", m.build);
    let _ = writeln!(
        o,
        "  machine: {} cores, {}; load average {} at start, {} at end",
        m.cores,
        m.cpu_model,
        load(&m.load_start),
        load(&m.load_end)
    );
    let _ = writeln!(
        o,
        "  cluster: master + {} agents <4 cpus, 4 GiB> in-process, loopback QUIC + mTLS; hello \
         <0.1 cpus, 32 MiB>; allocation interval {} ms",
        p.agents,
        p.alloc_interval.as_millis()
    );
    let _ = writeln!(
        o,
        "  work dirs under {} ({}); {:.1} s in all, {:.1} s of it shutdown and removal",
        m.work_dir.display(),
        m.fs_type,
        r.total_s,
        r.cleanup_s
    );
    if m.build == "debug" {
        let _ = writeln!(
            o,
            "  note: a debug build; `cargo run --release -p tessera-cli -- bench` measures the \
             optimised code"
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  {:<44} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "n", "p50", "p99", "mean", "min", "max"
    );
    let l = &r.latency;
    for (name, s) in [
        ("tessera: first hello on each agent (cold)", &l.first_run),
        ("tessera: accept -> TASK_RUNNING", &l.accept_to_running),
        ("tessera: accept -> TASK_FINISHED", &l.accept_to_finished),
        ("tessera: waiting for a usable offer", &l.offer_wait),
        ("tessera: full cycle (offer wait + run)", &l.cycle),
        ("tessera: queued in throughput rounds", &l.queued),
        ("floor: wasmtime direct (instantiate+_start)", &l.floor),
        ("fork/exec: spawn + wait /bin/true", &l.fork_exec),
    ] {
        let _ = writeln!(o, "{}", row(name, s));
    }
    let _ = writeln!(o);
    let rt = &r.ratios;
    for (name, x) in [
        ("tessera / fork-exec", &rt.tessera_vs_fork_exec),
        ("tessera / floor", &rt.tessera_vs_floor),
        ("floor / fork-exec", &rt.floor_vs_fork_exec),
    ] {
        let _ = writeln!(
            o,
            "  ratio {name:<20} p50 {:.2}x  p99 {:.2}x  mean {:.2}x",
            x.p50, x.p99, x.mean
        );
    }
    let c = &r.cpu_ms_per_task;
    let _ = writeln!(
        o,
        "  CPU ms per task, sequential: tessera {:.3}, floor {:.3}, fork/exec {:.3}",
        c.tessera, c.floor, c.fork_exec
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  {:<18} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9}",
        format!("x{} tasks", p.throughput_tasks),
        "tessera/s",
        "true/s",
        "true x2/s",
        "floor x2/s",
        "cpu ms/t",
        "true ms/t",
        "x2 ms/t",
        "accepts",
        "in flight"
    );
    let t = &r.throughput;
    for (i, round) in t.rounds.iter().enumerate() {
        let _ = writeln!(o, "{}", round_row(&format!("round {}", i + 1), round));
    }
    let _ = writeln!(o, "{}", round_row("median", &t.median));
    let _ = writeln!(
        o,
        "  ratio tessera tasks/s: vs fork/exec {:.2}x, vs fork/exec x2 {:.2}x, vs floor x2 {:.2}x",
        t.vs_fork_exec_seq, t.vs_fork_exec_x2, t.vs_floor_x2
    );
    o
}

fn row(name: &str, s: &Stats) -> String {
    format!(
        "  {name:<44} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        s.n, s.p50_ms, s.p99_ms, s.mean_ms, s.min_ms, s.max_ms
    )
}

fn round_row(name: &str, r: &Round) -> String {
    format!(
        "  {name:<18} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>8} {:>9}",
        r.tessera_per_s,
        r.fork_exec_seq_per_s,
        r.fork_exec_x2_per_s,
        r.floor_x2_per_s,
        r.tessera_cpu_ms,
        r.fork_exec_seq_cpu_ms,
        r.fork_exec_x2_cpu_ms,
        r.accepts,
        r.max_in_flight
    )
}
