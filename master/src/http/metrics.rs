//! The master's Prometheus metrics: what only the driver sees (sends, writes, round times) is
//! recorded as it happens; what the core's books hold (tasks by state, connected peers, shares,
//! per-agent use) is set from a [`StateReport`] at each scrape.

use crate::core::StateReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proto::{FrameworkId, Message, TaskId, TaskState};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Instant;

/// Most launches waiting for their TASK_RUNNING that are timed (beyond, launches go untimed).
const TIMED_LAUNCHES: usize = 100_000;

/// A task-state label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// Mesos spelling (`TASK_RUNNING`).
    pub state: String,
}

/// A role label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    /// The role.
    pub role: String,
}

/// An agent label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    /// The agent id.
    pub agent: String,
    /// Its hostname.
    pub hostname: String,
}

/// A peer label: the principal of its certificate (`agent/a1`, `framework/team-a`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The principal.
    pub peer: String,
}

/// Every metric the master exports, registered once in its own [`Registry`].
pub struct Metrics {
    registry: Registry,
    /// RunTask messages sent to agents.
    pub launches: Counter,
    /// From RunTask sent to the first TASK_RUNNING heard (seconds).
    pub launch_latency: Histogram,
    /// Offers sent to frameworks.
    pub offers_sent: Counter,
    /// Offers declined by frameworks.
    pub offers_declined: Counter,
    /// Offers rescinded by the master.
    pub offers_rescinded: Counter,
    /// Duration of one timer pass of the core (the allocation round runs last in it).
    pub allocation_round: Histogram,
    /// Duration of one registry write (one transaction of a drained batch).
    pub registry_write: Histogram,
    tasks: Family<StateLabel, Gauge>,
    agents_connected: Gauge,
    frameworks_connected: Gauge,
    role_share: Family<RoleLabel, Gauge<f64, AtomicU64>>,
    agent_cpus_used: Family<AgentLabel, Gauge<f64, AtomicU64>>,
    agent_mem_used: Family<AgentLabel, Gauge>,
    path_rtt: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    path_lost: Family<PeerLabel, Gauge>,
    path_sent: Family<PeerLabel, Gauge>,
    path_cwnd: Family<PeerLabel, Gauge>,
    /// When each launch not yet running was sent (only the core's loop touches it).
    launched: Mutex<HashMap<(FrameworkId, TaskId), Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `tessera_master_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera_master");
        let launches = Counter::default();
        registry.register("launches", "Tasks sent to agents to run", launches.clone());
        let launch_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "launch_latency_seconds",
            "From RunTask sent to the first TASK_RUNNING the master hears",
            launch_latency.clone(),
        );
        let offers_sent = Counter::default();
        registry.register(
            "offers_sent",
            "Offers sent to frameworks",
            offers_sent.clone(),
        );
        let offers_declined = Counter::default();
        registry.register(
            "offers_declined",
            "Offers frameworks declined",
            offers_declined.clone(),
        );
        let offers_rescinded = Counter::default();
        registry.register(
            "offers_rescinded",
            "Offers the master rescinded",
            offers_rescinded.clone(),
        );
        let allocation_round = Histogram::new(exponential_buckets(0.00001, 2.0, 20));
        registry.register(
            "allocation_round_seconds",
            "One timer pass of the core (due timers, then the allocation round)",
            allocation_round.clone(),
        );
        let registry_write = Histogram::new(exponential_buckets(0.00001, 2.0, 20));
        registry.register(
            "registry_write_seconds",
            "One registry transaction",
            registry_write.clone(),
        );
        let tasks = Family::<StateLabel, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks the master knows (live and recently completed) by state",
            tasks.clone(),
        );
        let agents_connected = Gauge::default();
        registry.register(
            "agents_connected",
            "Agents with their control connection up",
            agents_connected.clone(),
        );
        let frameworks_connected = Gauge::default();
        registry.register(
            "frameworks_connected",
            "Frameworks with their scheduler connected",
            frameworks_connected.clone(),
        );
        let role_share = Family::<RoleLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "role_share",
            "A role's allocation as a dominant share of the cluster",
            role_share.clone(),
        );
        let agent_cpus_used = Family::<AgentLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "agent_cpus_used",
            "CPU cores held by an agent's live tasks",
            agent_cpus_used.clone(),
        );
        let agent_mem_used = Family::<AgentLabel, Gauge>::default();
        registry.register(
            "agent_mem_used_bytes",
            "Memory held by an agent's live tasks",
            agent_mem_used.clone(),
        );
        let path_rtt = Family::<PeerLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "peer_rtt_seconds",
            "Smoothed round-trip time of each peer's QUIC path (the worst of its connections)",
            path_rtt.clone(),
        );
        let path_lost = Family::<PeerLabel, Gauge>::default();
        registry.register(
            "peer_lost_packets",
            "Packets of each peer's open QUIC connections declared lost",
            path_lost.clone(),
        );
        let path_sent = Family::<PeerLabel, Gauge>::default();
        registry.register(
            "peer_sent_packets",
            "Packets sent on each peer's open QUIC connections",
            path_sent.clone(),
        );
        let path_cwnd = Family::<PeerLabel, Gauge>::default();
        registry.register(
            "peer_congestion_window_bytes",
            "Congestion window of each peer's QUIC path",
            path_cwnd.clone(),
        );
        Metrics {
            registry,
            launches,
            launch_latency,
            offers_sent,
            offers_declined,
            offers_rescinded,
            allocation_round,
            registry_write,
            tasks,
            agents_connected,
            frameworks_connected,
            role_share,
            agent_cpus_used,
            agent_mem_used,
            path_rtt,
            path_lost,
            path_sent,
            path_cwnd,
            launched: Mutex::new(HashMap::new()),
        }
    }

    /// Counts what the master sends: offers, rescinds, launches (whose clock starts here).
    pub fn sent(&self, msg: &Message, now: Instant) {
        match msg {
            Message::Offers { offers } => {
                self.offers_sent.inc_by(offers.len() as u64);
            }
            Message::Rescind { .. } => {
                self.offers_rescinded.inc();
            }
            Message::RunTask { framework_id, task } => {
                self.launches.inc();
                let mut launched = self.launched.lock().expect("never poisoned");
                if launched.len() < TIMED_LAUNCHES {
                    launched.insert((framework_id.clone(), task.task_id.clone()), now);
                }
            }
            _ => {}
        }
    }

    /// Counts what peers send: declines, and the first TASK_RUNNING of a timed launch.
    pub fn received(&self, msg: &Message, now: Instant) {
        match msg {
            Message::Decline { offer_ids, .. } => {
                self.offers_declined.inc_by(offer_ids.len() as u64);
            }
            Message::StatusUpdate { status }
                if status.state == TaskState::Running || status.state.is_terminal() =>
            {
                let key = (status.framework_id.clone(), status.task_id.clone());
                let sent = self.launched.lock().expect("never poisoned").remove(&key);
                if let (Some(sent), TaskState::Running) = (sent, status.state) {
                    self.launch_latency
                        .observe(now.saturating_duration_since(sent).as_secs_f64());
                }
            }
            _ => {}
        }
    }

    /// Sets the gauges that mirror the books from `report` (gone agents and roles disappear).
    pub fn observe(&self, report: &StateReport) {
        self.tasks.clear();
        for (state, n) in report.tasks_by_state() {
            self.tasks
                .get_or_create(&StateLabel {
                    state: state.to_owned(),
                })
                .set(n as i64);
        }
        self.agents_connected
            .set(report.agents.iter().filter(|a| a.connected).count() as i64);
        self.frameworks_connected
            .set(report.frameworks.iter().filter(|f| f.connected).count() as i64);
        self.role_share.clear();
        for r in &report.roles {
            self.role_share
                .get_or_create(&RoleLabel {
                    role: r.name.clone(),
                })
                .set(r.share);
        }
        self.agent_cpus_used.clear();
        self.agent_mem_used.clear();
        for a in &report.agents {
            let l = AgentLabel {
                agent: a.id.clone(),
                hostname: a.hostname.clone(),
            };
            self.agent_cpus_used.get_or_create(&l).set(a.used.cpus);
            self.agent_mem_used
                .get_or_create(&l)
                .set(a.used.mem_bytes as i64);
        }
    }

    /// Sets each open connection's QUIC path figures (a peer with several connections shows
    /// the sum of their packets and the worst RTT); closed ones disappear.
    pub fn observe_paths<'a>(&self, paths: impl Iterator<Item = (&'a str, quinn::PathStats)>) {
        let mut by_peer: HashMap<&str, (std::time::Duration, u64, u64, u64)> = HashMap::new();
        for (peer, p) in paths {
            let e = by_peer.entry(peer).or_default();
            e.0 = e.0.max(p.rtt);
            e.1 += p.lost_packets;
            e.2 += p.sent_packets;
            e.3 += p.cwnd;
        }
        self.path_rtt.clear();
        self.path_lost.clear();
        self.path_sent.clear();
        self.path_cwnd.clear();
        for (peer, (rtt, lost, sent, cwnd)) in by_peer {
            let l = PeerLabel {
                peer: peer.to_owned(),
            };
            self.path_rtt.get_or_create(&l).set(rtt.as_secs_f64());
            self.path_lost.get_or_create(&l).set(lost as i64);
            self.path_sent.get_or_create(&l).set(sent as i64);
            self.path_cwnd.get_or_create(&l).set(cwnd as i64);
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
