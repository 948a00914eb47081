//! The bench's scheduler: an SDK [`Scheduler`] plus the offers it holds, by agent. An agent's
//! offers are always accepted together, so its fragments (the leftover of an accept, the
//! resources of finished tasks) merge again.

use std::collections::BTreeMap;
use std::time::Duration;

use proto::{AgentId, Filters, Offer, OfferId, Resources, TaskInfo, TaskStatus};
use sdk::{Event, Scheduler};

use super::BenchError;

/// How long any single wait for a scheduler event may take before the run is abandoned.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Offers held, by agent.
#[derive(Default)]
pub(super) struct Pool {
    pub(super) by_agent: BTreeMap<AgentId, Vec<Offer>>,
    hostnames: BTreeMap<AgentId, String>,
}

impl Pool {
    fn add(&mut self, offers: Vec<Offer>) {
        for o in offers {
            self.hostnames
                .entry(o.agent_id.clone())
                .or_insert_with(|| o.hostname.clone());
            self.by_agent.entry(o.agent_id.clone()).or_default().push(o);
        }
    }

    fn rescind(&mut self, id: &OfferId) {
        for offers in self.by_agent.values_mut() {
            offers.retain(|o| o.id != *id);
        }
    }

    /// What `agent`'s held offers add up to.
    pub(super) fn available(&self, agent: &AgentId) -> Resources {
        self.by_agent
            .get(agent)
            .map(|v| v.iter().fold(Resources::ZERO, |t, o| t + o.resources))
            .unwrap_or_default()
    }

    fn take(&mut self, agent: &AgentId) -> Vec<Offer> {
        self.by_agent.remove(agent).unwrap_or_default()
    }

    /// How many tasks of `each` fit in `r`.
    pub(super) fn fit(r: Resources, each: Resources) -> usize {
        let by_cpu = r
            .cpus_milli
            .checked_div(each.cpus_milli)
            .unwrap_or(u64::MAX);
        let by_mem = r.mem.checked_div(each.mem).unwrap_or(u64::MAX);
        by_cpu.min(by_mem) as usize
    }
}

/// The scheduler plus the offers it holds.
pub(super) struct Driver {
    pub(super) sched: Scheduler,
    pub(super) pool: Pool,
}

impl Driver {
    /// Waits for the next event; offers and rescinds go to the pool, errors abort the run,
    /// task updates are returned.
    pub(super) async fn next_update(&mut self) -> Result<Option<TaskStatus>, BenchError> {
        let ev = tokio::time::timeout(EVENT_TIMEOUT, self.sched.next_event())
            .await
            .map_err(|_| BenchError::Scheduler(format!("no event within {EVENT_TIMEOUT:?}")))?
            .ok_or_else(|| BenchError::Scheduler("the scheduler closed".into()))?;
        self.on_event(ev)
    }

    /// An event that is already queued, if any.
    pub(super) async fn try_next(&mut self) -> Result<Option<Option<TaskStatus>>, BenchError> {
        // `timeout` polls the inner future before looking at the (already past) deadline.
        match tokio::time::timeout(Duration::ZERO, self.sched.next_event()).await {
            Ok(Some(ev)) => Ok(Some(self.on_event(ev)?)),
            Ok(None) => Err(BenchError::Scheduler("the scheduler closed".into())),
            Err(_) => Ok(None),
        }
    }

    fn on_event(&mut self, ev: Event) -> Result<Option<TaskStatus>, BenchError> {
        match ev {
            Event::Offers(offers) => self.pool.add(offers),
            Event::Rescind(id) => self.pool.rescind(&id),
            Event::Update(status) => return Ok(Some(status)),
            Event::Error(e) => return Err(BenchError::Scheduler(format!("master: {e}"))),
            Event::Disconnected(why) => {
                return Err(BenchError::Scheduler(format!("disconnected: {why}")))
            }
            Event::Subscribed { .. } | Event::Message { .. } | Event::ExecutorExited { .. } => {}
        }
        Ok(None)
    }

    /// Accepts all held offers of `agent` with `tasks`, leftover not filtered.
    pub(super) fn accept(
        &mut self,
        agent: &AgentId,
        tasks: Vec<TaskInfo>,
    ) -> Result<(), BenchError> {
        let ids = self.pool.take(agent).into_iter().map(|o| o.id).collect();
        self.sched
            .accept(
                ids,
                tasks,
                Filters {
                    refuse_seconds: 0.0,
                },
            )
            .map_err(|e| BenchError::Scheduler(e.to_string()))
    }

    /// Waits until offers from `n` agents are held; their ids sorted by hostname.
    pub(super) async fn wait_agents(&mut self, n: usize) -> Result<Vec<AgentId>, BenchError> {
        while self.pool.by_agent.len() < n {
            self.next_update().await?;
        }
        let mut ids: Vec<AgentId> = self.pool.by_agent.keys().cloned().collect();
        ids.sort_by_key(|a| self.pool.hostnames[a].clone());
        Ok(ids)
    }
}
