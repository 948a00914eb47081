//! One executor instance's run: store setup (WASI 0.2 context with the sandbox and data sets,
//! capped output, the envelope's memory limiter, fuel yields), `run` under the envelope's CPU
//! pacing, raced against `kill` and the disk cap, and its classification into a
//! [`Termination`] (shared with one-shot tasks, see `executor::run::guest_error`).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use wasmtime::Store;
use wasmtime_wasi::FsPerms;

use super::bindings::Executor as ExecutorWorld;
use super::host::{Delivery, HostSide, InstanceState, Notify};
use super::{InstanceEvent, InstanceSpec};
use crate::executor::limiter::MemLimiter;
use crate::executor::output::{read_tail, CappedOutput};
use crate::executor::pacing::{Pacer, PERIOD};
use crate::executor::run::{
    disk_limit, guest_error, killed, preopen_datasets, supervise, EndGuard, Ended,
};
use crate::executor::{Inner, TaskOutcome, Termination};
use crate::workdir::TaskDir;

/// Fuel of an instance: effectively unlimited (executors have no CPU-time budget); fuel only
/// sets the yield interval and counts work.
const UNLIMITED_FUEL: u64 = u64::MAX / 2;

/// What the handle shares with the running instance.
pub(super) struct Parts {
    /// Events from the handle.
    pub(super) events: mpsc::UnboundedReceiver<Delivery>,
    /// Message bytes queued in `events`.
    pub(super) queued_bytes: Arc<AtomicU64>,
    /// The envelope's CPU share, followed by the pacer.
    pub(super) cpus_milli: Arc<AtomicU64>,
    /// The envelope's memory cap, read by the limiter at every growth.
    pub(super) mem_bytes: Arc<AtomicU64>,
    /// Set by [`InstanceHandle::kill`](super::InstanceHandle::kill).
    pub(super) kill: watch::Receiver<bool>,
}

/// The guard of an instance's `Started` and `Exited`.
pub(super) type ExitGuard = EndGuard<InstanceEvent>;

impl ExitGuard {
    /// Guards the notifications of one instance.
    pub(super) fn for_instance(notify: Notify) -> Self {
        EndGuard::new(
            notify,
            || InstanceEvent::Started,
            InstanceEvent::Exited,
            "instance",
        )
    }
}

impl Inner {
    /// Runs one instance to its end; `Started` goes out through `guard` right before `run` is
    /// called, the outcome is returned for the caller to send as `Exited`.
    pub(super) async fn run_instance(
        &self,
        spec: InstanceSpec,
        parts: Parts,
        notify: Notify,
        guard: &mut ExitGuard,
    ) -> TaskOutcome {
        let Parts {
            events,
            queued_bytes,
            cpus_milli,
            mem_bytes,
            mut kill,
        } = parts;
        let dir = TaskDir::new(&spec.dir);
        let (stdout_path, stderr_path) = (dir.stdout(), dir.stderr());
        let tail_bytes = self.cfg.tail_bytes;
        let mut pacer = Pacer::shared(cpus_milli, self.fuel_rate, PERIOD);
        let side = HostSide {
            limiter: MemLimiter::shared(mem_bytes),
            events,
            queued_bytes,
            notify,
        };
        let setup = tokio::select! {
            biased;
            () = killed(&mut kill) => Err(Termination::Killed),
            r = self.setup_instance(&spec, side, pacer.interval()) => r,
        };
        let finish = |termination, fuel_consumed, wall, paused, cpu| TaskOutcome {
            termination,
            stdout_tail: read_tail(&stdout_path, tail_bytes),
            stderr_tail: read_tail(&stderr_path, tail_bytes),
            fuel_consumed,
            wall,
            cpu_paused: paused,
            cpu_time: cpu,
        };
        let (mut store, world) = match setup {
            Ok(s) => s,
            Err(t) => return finish(t, 0, Duration::ZERO, Duration::ZERO, Duration::ZERO),
        };
        let sandbox = dir.sandbox();
        let disk_cap = match spec.disk_bytes {
            0 => self.cfg.default_disk_cap,
            n => n,
        };
        tracing::debug!(digest = %spec.digest, dir = %spec.dir.display(), "executor instance started");
        guard.started();
        let started = Instant::now();
        pacer.start();
        let ended = supervise(
            pacer.run(world.call_run(&mut store)),
            &mut kill,
            None,
            Some(&sandbox),
            disk_cap,
            self.cfg.disk_check_interval,
        )
        .await;
        let wall = started.elapsed();
        let fuel_consumed = store
            .get_fuel()
            .map(|left| UNLIMITED_FUEL.saturating_sub(left))
            .unwrap_or(0);
        let mut run_error = None;
        let termination = match ended {
            Ended::Killed => Termination::Killed,
            Ended::Disk(used) => disk_limit(used, disk_cap),
            // Instances have no wall-clock limit.
            Ended::Timeout => Termination::Timeout,
            Ended::Returned(Ok(Ok(()))) => Termination::Exited(0),
            Ended::Returned(Ok(Err(msg))) => {
                run_error = Some(msg);
                Termination::Exited(1)
            }
            Ended::Returned(Err(e)) => guest_error(&e, &store.data().limiter),
        };
        tracing::debug!(
            digest = %spec.digest,
            ?termination,
            wall_ms = wall.as_millis() as u64,
            "executor instance ended"
        );
        // Close the output files before reading the tails.
        drop(store);
        let mut outcome = finish(
            termination,
            fuel_consumed,
            wall,
            pacer.paused(),
            pacer.cpu_time(),
        );
        if let Some(msg) = run_error {
            let line = format!("[tessera: executor run returned an error: {msg}]\n");
            if !outcome.stderr_tail.is_empty() && !outcome.stderr_tail.ends_with('\n') {
                outcome.stderr_tail.push('\n');
            }
            outcome.stderr_tail.push_str(&line);
            // Keep the tail within its size, dropping the oldest characters.
            let excess = outcome
                .stderr_tail
                .len()
                .saturating_sub(tail_bytes.max(line.len()));
            if excess > 0 {
                let cut = (excess..=outcome.stderr_tail.len())
                    .find(|&i| outcome.stderr_tail.is_char_boundary(i))
                    .unwrap_or(0);
                outcome.stderr_tail.drain(..cut);
            }
        }
        outcome
    }

    /// Builds the store and instance; errors are the instance's termination.
    async fn setup_instance(
        &self,
        spec: &InstanceSpec,
        side: HostSide,
        yield_interval: u64,
    ) -> Result<(Store<InstanceState>, ExecutorWorld), Termination> {
        let pre = self
            .components
            .prepared(&self.modules, &spec.digest, &spec.wasm_path)
            .await
            .map_err(Termination::StartFailed)?;
        let io_err = |what: &std::path::Path, e: std::io::Error| {
            Termination::StartFailed(format!("cannot set up {}: {e}", what.display()))
        };
        let dir = TaskDir::new(&spec.dir);
        let sandbox = dir.sandbox();
        tokio::fs::create_dir_all(&sandbox)
            .await
            .map_err(|e| io_err(&sandbox, e))?;
        let cap = self.cfg.output_cap;
        let (stdout_path, stderr_path) = (dir.stdout(), dir.stderr());
        let stdout =
            CappedOutput::create(&stdout_path, cap).map_err(|e| io_err(&stdout_path, e))?;
        let stderr =
            CappedOutput::create(&stderr_path, cap).map_err(|e| io_err(&stderr_path, e))?;

        let mut builder = super::super::run::task_wasi(&spec.args, &spec.env, stdout, stderr);
        let preopen_err = |what: &std::path::Path, e: wasmtime::Error| {
            Termination::StartFailed(format!("cannot preopen {}: {e:#}", what.display()))
        };
        builder
            .preopened_dir(&sandbox, "/", FsPerms::ReadWrite)
            .map_err(|e| preopen_err(&sandbox, e))?;
        // Data sets read-only at /data/<name>, exactly as for one-shot tasks.
        preopen_datasets(&mut builder, &sandbox, &spec.datasets)
            .map_err(Termination::StartFailed)?;
        let state = InstanceState::new(builder.build(), side);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let store_err =
            |e: wasmtime::Error| Termination::StartFailed(format!("store setup: {e:#}"));
        store.set_fuel(UNLIMITED_FUEL).map_err(store_err)?;
        store
            .fuel_async_yield_interval(Some(yield_interval))
            .map_err(store_err)?;
        match pre.instantiate_async(&mut store).await {
            Ok(world) => Ok((store, world)),
            Err(e) => Err(match store.data().limiter.denied() {
                Some(denied) => {
                    Termination::MemoryLimit(format!("{denied} (instantiation failed: {e:#})"))
                }
                None => Termination::StartFailed(format!("instantiation failed: {e:#}")),
            }),
        }
    }
}
