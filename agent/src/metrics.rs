//! The agent's Prometheus metrics (`tessera_agent_*`), served on the agent's own loopback
//! `/metrics` and, through the master, at `/agents/{id}/metrics`.
//!
//! Everything is counted in the agent process from what it already receives: launches from the
//! core's `Launch` actions, ends (final state, limit hits, pacing time, output bytes) from the
//! runtime's `Finished` events, whose outcome carries how long the pacer held the guest back
//! (`cpu_paused`), and module cache hits, misses and compile times from the answer to each
//! `prepare` (which the runtime protocol carries, see `runtime::PrepareInfo`). So nothing needs
//! scraping from the runtime process, and counters survive neither an agent restart (as usual
//! for Prometheus counters) nor double counting of replayed events (they are counted where the
//! core applies them).

use crate::executor::{TaskOutcome, Termination};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proto::TaskState;
use std::sync::atomic::AtomicU64;

/// A task-state label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// Mesos spelling (`TASK_FINISHED`).
    pub state: String,
}

/// A limit-kind label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// `memory`, `cpu`, `disk` or `timeout`.
    pub kind: String,
}

/// A stream label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    /// `stdout` or `stderr`.
    pub stream: String,
}

/// Every metric the agent exports, registered once in its own [`Registry`].
pub struct AgentMetrics {
    registry: Registry,
    /// Guests started for one-shot tasks.
    pub launches: Counter,
    /// Tasks whose guest runs now (set at each render from the core).
    pub tasks_running: Gauge,
    /// Tasks ended, by final state.
    pub tasks_ended: Family<StateLabel, Counter>,
    /// Tasks stopped by a limit, by kind.
    pub limit_hits: Family<LimitLabel, Counter>,
    /// Seconds the pacer held guests back for being ahead of their CPU share.
    pub throttled_seconds: Counter<f64, AtomicU64>,
    /// Module prepares answered from the compiled-module cache (memory or disk).
    pub cache_hits: Counter,
    /// Module prepares that compiled, or waited for a compile of the same module.
    pub cache_misses: Counter,
    /// How long a compiling prepare took.
    pub compile_seconds: Histogram,
    /// Bytes guests wrote to their output files (counted at each task's end).
    pub output_bytes: Family<StreamLabel, Counter>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// Registers every metric under the `tessera_agent_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera_agent");
        let launches = Counter::default();
        registry.register(
            "launches",
            "Guests started for one-shot tasks",
            launches.clone(),
        );
        let tasks_running = Gauge::default();
        registry.register(
            "tasks_running",
            "Tasks whose guest runs now",
            tasks_running.clone(),
        );
        let tasks_ended = Family::<StateLabel, Counter>::default();
        registry.register(
            "tasks_ended",
            "Tasks ended, by final state",
            tasks_ended.clone(),
        );
        let limit_hits = Family::<LimitLabel, Counter>::default();
        registry.register(
            "limit_hits",
            "Tasks stopped by a limit (memory, cpu budget, disk, timeout)",
            limit_hits.clone(),
        );
        let throttled_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "pacing_throttled_seconds",
            "Seconds the pacer held guests back for being ahead of their CPU share",
            throttled_seconds.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "module_cache_hits",
            "Module prepares answered from the compiled-module cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "module_cache_misses",
            "Module prepares that had to compile (or wait for a compile of the same module)",
            cache_misses.clone(),
        );
        let compile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "module_compile_seconds",
            "How long a compiling prepare took",
            compile_seconds.clone(),
        );
        let output_bytes = Family::<StreamLabel, Counter>::default();
        registry.register(
            "output_bytes",
            "Bytes guests wrote to stdout and stderr (counted at each task's end)",
            output_bytes.clone(),
        );
        for kind in ["memory", "cpu", "disk", "timeout"] {
            let _ = limit_hits.get_or_create(&LimitLabel { kind: kind.into() });
        }
        AgentMetrics {
            registry,
            launches,
            tasks_running,
            tasks_ended,
            limit_hits,
            throttled_seconds,
            cache_hits,
            cache_misses,
            compile_seconds,
            output_bytes,
        }
    }

    /// Counts a one-shot task's end: its final state, the limit that stopped it, and how long
    /// the pacer held it back.
    pub fn task_ended(&self, state: TaskState, outcome: &TaskOutcome) {
        self.tasks_ended
            .get_or_create(&StateLabel {
                state: state.name().to_owned(),
            })
            .inc();
        let kind = match outcome.termination {
            Termination::MemoryLimit(_) => Some("memory"),
            Termination::CpuLimit(_) => Some("cpu"),
            Termination::DiskLimit(_) => Some("disk"),
            Termination::Timeout => Some("timeout"),
            _ => None,
        };
        if let Some(kind) = kind {
            self.limit_hits
                .get_or_create(&LimitLabel { kind: kind.into() })
                .inc();
        }
        self.throttled_seconds
            .inc_by(outcome.cpu_paused.as_secs_f64());
    }

    /// Counts bytes written to one output stream.
    pub fn output(&self, stream: &str, bytes: u64) {
        self.output_bytes
            .get_or_create(&StreamLabel {
                stream: stream.to_owned(),
            })
            .inc_by(bytes);
    }

    /// Counts one prepare: a cache hit, or a compile that took `secs`.
    pub fn prepared(&self, cached: bool, secs: f64) {
        if cached {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
            self.compile_seconds.observe(secs);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ends_count_states_limits_and_pacing() {
        let m = AgentMetrics::new();
        let outcome = TaskOutcome {
            termination: Termination::MemoryLimit("grow denied".into()),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            fuel_consumed: 0,
            wall: Duration::from_secs(1),
            cpu_paused: Duration::from_millis(250),
            cpu_time: Duration::ZERO,
        };
        m.task_ended(TaskState::Failed, &outcome);
        m.prepared(false, 0.5);
        m.prepared(true, 0.0);
        m.output("stdout", 12);
        let text = m.encode();
        assert!(text.contains("tessera_agent_tasks_ended_total{state=\"TASK_FAILED\"} 1"));
        assert!(text.contains("tessera_agent_limit_hits_total{kind=\"memory\"} 1"));
        assert!(text.contains("tessera_agent_limit_hits_total{kind=\"disk\"} 0"));
        assert!(text.contains("tessera_agent_pacing_throttled_seconds_total 0.25"));
        assert!(text.contains("tessera_agent_module_cache_hits_total 1"));
        assert!(text.contains("tessera_agent_module_cache_misses_total 1"));
        assert!(text.contains("tessera_agent_output_bytes_total{stream=\"stdout\"} 12"));
    }
}
