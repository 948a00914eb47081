//! A `burn` task (CPU-bound forever) launched at a share, waited for and killed, and the wait for
//! any launched task's outcome: the CPU-share tests' common steps (`cpu_share.rs`, `cpu_quota.rs`).

use std::path::Path;
use std::time::Duration;

use tessera_agent::executor::{
    ExecEvent, Executor, KillHandle, TaskOutcome, TaskSpec, Termination,
};
use tokio::sync::mpsc;

/// A launched `burn` task and its events.
pub struct Task {
    kill: KillHandle,
    events: mpsc::UnboundedReceiver<ExecEvent>,
}

/// Launches `burn` under `dir/name` at `cpus_milli`, with a sandbox if `sandbox`.
pub fn launch(exec: &Executor, dir: &Path, name: &str, cpus_milli: u64, sandbox: bool) -> Task {
    let spec = TaskSpec {
        sandbox,
        cpus_milli,
        ..TaskSpec::new(
            "burn",
            wasm_examples::BURN_PATH,
            vec![name.into()],
            dir.join(name),
        )
    };
    let (kill, events) = exec.launch_to_channel(spec);
    Task { kill, events }
}

impl Task {
    /// Waits for `Running` (at most `sanity`, a hang guard).
    pub async fn running(&mut self, sanity: Duration) {
        let ev = tokio::time::timeout(sanity, self.events.recv()).await;
        assert_eq!(ev.unwrap(), Some(ExecEvent::Running));
    }

    /// Kills the task and returns its outcome, which must be `Killed`.
    pub async fn stop(mut self, sanity: Duration) -> TaskOutcome {
        self.kill.kill();
        let o = finished(&mut self.events, sanity).await;
        assert_eq!(o.termination, Termination::Killed, "{o:?}");
        o
    }
}

/// The outcome a launched task's events end with (at most `sanity`, a hang guard).
pub async fn finished(
    events: &mut mpsc::UnboundedReceiver<ExecEvent>,
    sanity: Duration,
) -> TaskOutcome {
    loop {
        let ev = tokio::time::timeout(sanity, events.recv())
            .await
            .expect("task did not end in time")
            .expect("no Finished event");
        if let ExecEvent::Finished(o) = ev {
            return o;
        }
    }
}
