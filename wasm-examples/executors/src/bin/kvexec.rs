//! A key-value executor that shows why executors keep state between tasks.
//!
//! On its first task it loads its table: `/data/<name>/kv.txt` (lines `key=value`) of the
//! first data set it finds, or, without one, a generated table of [`GENERATED`] entries
//! (costly on purpose). Later tasks query the table from memory. Task data:
//! - `get:<key>`: finishes with the value in the update message (fails if absent);
//! - `count`: finishes with the number of entries;
//! - `wait`: stays running until a message `release` comes, then finishes;
//! - `ignore-kill`: stays running and never answers a kill;
//! - `alloc:<MiB>`: tries to allocate that much (fallibly): finished if it got it, else failed;
//! - `hog:<MiB>`: allocates that much infallibly (beyond the envelope, the executor dies);
//! - `flood:<n>`: sends `n` running updates, then finishes;
//! - `slices:<n>`: does its work in `n` slices of [`Executor::tick`], then finishes;
//! - `big:<bytes>`: sends a running update with a message of that many bytes: finished if the
//!   host took it, failed with the host's refusal otherwise;
//! - `stray`: updates a task that was never launched: finished with the host's refusal;
//! - `loop`: spins forever inside the launch (only the agent can stop it);
//! - `trap`: traps the whole executor;
//! - `exit`: the run loop returns (exit code 0).
//!
//! Messages are echoed back as `echo:<bytes>`; a kill answers with a killed update; shutdown
//! returns from the run loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tessera_executor_sdk::{export_executor, Context, Executor, Task, TaskState};

/// Entries of the generated table.
const GENERATED: u64 = 200_000;

#[derive(Default)]
struct KvExec {
    /// The loaded table and where it came from.
    table: Option<(HashMap<String, String>, String)>,
    /// Tasks waiting for a `release` message.
    waiting: Vec<String>,
    /// Tasks that ignore kills.
    stubborn: HashSet<String>,
    /// Tasks worked on in slices: id → slices left.
    sliced: BTreeMap<String, u64>,
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn load() -> (HashMap<String, String>, String) {
    if let Ok(dirs) = std::fs::read_dir("/data") {
        let mut names: Vec<_> = dirs.filter_map(|d| d.ok()).map(|d| d.path()).collect();
        names.sort();
        for dir in names {
            if let Ok(text) = std::fs::read_to_string(dir.join("kv.txt")) {
                let table = text
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                return (table, format!("data set {}", dir.display()));
            }
        }
    }
    let table = (0..GENERATED)
        .map(|i| (format!("k{i}"), format!("{:016x}", mix(i))))
        .collect();
    (table, "generated".to_owned())
}

fn report(ctx: &mut Context, id: &str, state: TaskState, msg: &str) {
    if let Err(e) = ctx.update(id, state, msg) {
        eprintln!("kvexec: update of {id} refused: {e}");
    }
}

impl Executor for KvExec {
    fn launch(&mut self, ctx: &mut Context, task: Task) {
        let id = task.id.clone();
        let data = String::from_utf8_lossy(&task.data).into_owned();
        if data == "trap" {
            core::arch::wasm32::unreachable();
        }
        if data == "exit" {
            report(ctx, &id, TaskState::Finished, "exiting");
            ctx.exit();
            return;
        }
        if data == "loop" {
            report(ctx, &id, TaskState::Running, "looping");
            let mut x = 1u64;
            loop {
                x = mix(x);
                std::hint::black_box(x);
            }
        }
        let (table, source) = self.table.get_or_insert_with(load);
        report(
            ctx,
            &id,
            TaskState::Running,
            &format!("table from {source}"),
        );
        if let Some(key) = data.strip_prefix("get:") {
            match table.get(key) {
                Some(v) => report(ctx, &id, TaskState::Finished, v),
                None => report(ctx, &id, TaskState::Failed, &format!("no key {key:?}")),
            }
        } else if data == "count" {
            let n = table.len().to_string();
            report(ctx, &id, TaskState::Finished, &n);
        } else if data == "wait" {
            self.waiting.push(id);
        } else if data == "ignore-kill" {
            self.stubborn.insert(id);
        } else if let Some(mib) = data.strip_prefix("alloc:") {
            let mib: usize = mib.parse().unwrap_or(0);
            let mut v: Vec<u8> = Vec::new();
            match v.try_reserve_exact(mib << 20) {
                Ok(()) => {
                    // Touch every page so the memory is really there.
                    v.resize(mib << 20, 1);
                    let msg = format!("allocated {mib} MiB");
                    report(ctx, &id, TaskState::Finished, &msg);
                }
                Err(e) => {
                    let msg = format!("cannot allocate {mib} MiB: {e}");
                    report(ctx, &id, TaskState::Failed, &msg);
                }
            }
        } else if let Some(mib) = data.strip_prefix("hog:") {
            let mib: usize = mib.parse().unwrap_or(0);
            let v = vec![1u8; mib << 20];
            let msg = format!("hogged {} MiB", std::hint::black_box(v).len() >> 20);
            report(ctx, &id, TaskState::Finished, &msg);
        } else if let Some(n) = data.strip_prefix("flood:") {
            let n: u64 = n.parse().unwrap_or(0);
            for i in 0..n {
                report(ctx, &id, TaskState::Running, &format!("flood {i}"));
            }
            report(ctx, &id, TaskState::Finished, "flooded");
        } else if let Some(n) = data.strip_prefix("big:") {
            let big = "x".repeat(n.parse().unwrap_or(0));
            match ctx.update(&id, TaskState::Running, &big) {
                Ok(()) => report(ctx, &id, TaskState::Finished, "big update taken"),
                Err(e) => report(ctx, &id, TaskState::Failed, &e),
            }
        } else if data == "stray" {
            match ctx.update("never-launched", TaskState::Finished, "") {
                Ok(()) => report(ctx, &id, TaskState::Failed, "stray update taken"),
                Err(e) => report(ctx, &id, TaskState::Finished, &e),
            }
        } else if let Some(n) = data.strip_prefix("slices:") {
            self.sliced.insert(id, n.parse().unwrap_or(1));
        } else {
            report(
                ctx,
                &id,
                TaskState::Failed,
                &format!("unknown query {data:?}"),
            );
        }
    }

    fn kill(&mut self, ctx: &mut Context, task_id: &str) {
        if self.stubborn.contains(task_id) {
            return;
        }
        self.waiting.retain(|t| t != task_id);
        self.sliced.remove(task_id);
        report(ctx, task_id, TaskState::Killed, "killed on request");
    }

    fn message(&mut self, ctx: &mut Context, data: Vec<u8>) {
        if data == b"release" {
            for id in std::mem::take(&mut self.waiting) {
                report(ctx, &id, TaskState::Finished, "released");
            }
        }
        let mut echo = b"echo:".to_vec();
        echo.extend_from_slice(&data);
        if let Err(e) = ctx.send_message(&echo) {
            eprintln!("kvexec: echo refused: {e}");
        }
    }

    fn shutdown(&mut self, _ctx: &mut Context) {
        eprintln!("kvexec: shutting down");
    }

    fn tick(&mut self, ctx: &mut Context) -> Option<Duration> {
        // One slice of work for each sliced task, then poll for events again.
        let ids: Vec<String> = self.sliced.keys().cloned().collect();
        for id in ids {
            let mut x = 0u64;
            for i in 0..100_000u64 {
                x = mix(x ^ i);
            }
            std::hint::black_box(x);
            let left = self.sliced.get_mut(&id).map(|n| {
                *n = n.saturating_sub(1);
                *n
            });
            if left == Some(0) {
                self.sliced.remove(&id);
                report(ctx, &id, TaskState::Finished, "sliced work done");
            }
        }
        if self.sliced.is_empty() {
            None
        } else {
            Some(Duration::ZERO)
        }
    }
}

export_executor!(KvExec);

fn main() {}
