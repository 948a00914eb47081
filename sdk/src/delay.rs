//! Delay scheduling for data locality, as a sans-IO helper a scheduler runs between its offers
//! and its calls.
//!
//! A framework often knows constraints the cluster manager does not: the classic one is data
//! locality, where a task runs faster on a machine holding its input. Delay scheduling
//! (Zaharia et al., EuroSys 2010; the Mesos paper, NSDI 2011) meets it by declining: a *job*
//! whose next tasks' data lives elsewhere skips the offer, and only once the job has waited
//! longer than a configured wait since it last launched a local task does it take any offer.
//! Because tasks are short and offers keep coming, a short wait buys almost perfect locality.
//!
//! ```text
//! app ──▶ submit(job, task) ──────┐
//!                                 ├─ DelayScheduler (pure: no clock, no I/O) ──▶ Answer per offer:
//! app ──▶ answer(offer, now) ─────┘                                              Accept{tasks, refuse}
//!                                                                                | Decline{refuse}
//! app ◀── take_revive(): true once after new work arrived while offers were refused
//! ```
//!
//! Every offer gets an answer at once ([`DelayScheduler::answer`] returns one for each), so the
//! framework never sits on resources it will not use: an offer it skips is declined with a
//! short refuse filter ([`DelayConfig::refuse`], e.g. 1 s) and comes back soon, maybe to a
//! framework that can use it meanwhile. With nothing pending the filter is
//! [`DelayConfig::idle_refuse`], and [`DelayScheduler::take_revive`] tells the framework to
//! revive (clear its filters) when new tasks arrive.
//!
//! # Levels
//! Two locality levels: *node-local* (the offer matches the task's [`Preference`]) and *any*.
//! Rack-local is a natural third: a job that has waited `wait` may go rack-local (an offer whose
//! `rack` attribute matches one of its preferred agents'), and only after a second wait any
//! node; it needs the preferred agents' attributes, which a scheduler learns from offers.
//!
//! # The job's wait
//! As in the paper, the wait belongs to the job, not the task: a job's clock starts when an
//! offer first finds it with pending tasks but none local to the offer, and is cleared each
//! time the job launches a node-local task. Once the clock passes [`DelayConfig::wait`] the job
//! may launch on any agent, and stays so until it launches a local task again. With a wait of
//! zero every offer is taken at once (plain greedy packing).
//!
//! # Packing
//! Jobs are served in the order they were first submitted; within an offer each job places
//! first its tasks local to the offer, then (if its wait is over, or for tasks with no
//! preference) its others, in submission order, as long as their resources fit in what is left
//! of the offer.
//!
//! # Example
//! ```
//! use proto::{AgentId, FrameworkId, Offer, OfferId, Resources};
//! use std::time::{Duration, Instant};
//! use tessera_sdk::delay::{Answer, DelayConfig, DelayScheduler, Preference};
//!
//! let mut ds = DelayScheduler::new(DelayConfig { wait: Duration::from_secs(1), ..Default::default() });
//! let now = Instant::now();
//! ds.submit("job1", "t1", Resources::new(1000, 1 << 30, 0), Preference::datasets(["block-7"]), ());
//! let offer = |host: &str, sets: &[&str]| Offer {
//!     id: OfferId::from(host), framework_id: FrameworkId::from("F"), agent_id: AgentId::from(host),
//!     hostname: host.into(), resources: Resources::new(4000, 8 << 30, 0), reserved_for: None,
//!     attributes: vec![], datasets: sets.iter().map(|s| s.to_string()).collect(),
//! };
//! // An agent without block-7: declined while the job waits.
//! assert!(matches!(ds.answer(&offer("a1", &[]), now), Answer::Decline { .. }));
//! // One holding it: taken at once.
//! let Answer::Accept { tasks, .. } = ds.answer(&offer("a2", &["block-7"]), now) else { panic!() };
//! assert!(tasks[0].local);
//! ```

use proto::{Filters, Offer, OfferId, Resources};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// The knobs of delay scheduling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DelayConfig {
    /// How long a job waits for an offer local to its tasks before taking any offer (the
    /// paper's D). Zero disables delay scheduling.
    pub wait: Duration,
    /// The refuse filter of an offer skipped or not used up while tasks are pending: short,
    /// so the agent comes back soon (Mesos's `refuse_seconds`).
    pub refuse: Duration,
    /// The refuse filter of an offer declined with nothing pending (a revive clears it when
    /// work arrives).
    pub idle_refuse: Duration,
}

impl Default for DelayConfig {
    /// A 1 s wait, 1 s refusals while busy, 30 s while idle.
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(1),
            refuse: Duration::from_secs(1),
            idle_refuse: Duration::from_secs(30),
        }
    }
}

/// Where a task would rather run.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Preference {
    /// Anywhere: such a task is never delayed.
    #[default]
    Anywhere,
    /// On an agent holding all these data sets (its input, as advertised in
    /// [`Offer::datasets`]).
    Datasets(BTreeSet<String>),
    /// On an agent with this attribute (key, value) (e.g. a GPU model, a zone).
    Attribute(String, String),
}

impl Preference {
    /// Prefer agents holding all of `names`.
    pub fn datasets<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Preference::Datasets(names.into_iter().map(Into::into).collect())
    }

    /// True when `offer`'s agent is one this preference wants (always for
    /// [`Preference::Anywhere`]).
    pub fn is_met_by(&self, offer: &Offer) -> bool {
        match self {
            Preference::Anywhere => true,
            Preference::Datasets(names) => names.iter().all(|n| offer.datasets.contains(n)),
            Preference::Attribute(k, v) => {
                offer.attributes.iter().any(|(ok, ov)| ok == k && ov == v)
            }
        }
    }
}

/// A task waiting for an offer, with the application's own description of it (`T`).
#[derive(Clone, Debug)]
struct Pending<T> {
    id: String,
    resources: Resources,
    preference: Preference,
    payload: T,
}

/// A job: its pending tasks in submission order and its locality wait.
#[derive(Debug)]
struct Job<T> {
    tasks: VecDeque<Pending<T>>,
    /// When an offer first found the job without a task local to it, since it last launched
    /// a local task: the start of its wait.
    skipped_since: Option<Instant>,
}

/// A task the helper placed on an offer.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed<T> {
    /// Its job.
    pub job: String,
    /// The id it was submitted under.
    pub id: String,
    /// The resources it takes from the offer.
    pub resources: Resources,
    /// True when the offer's agent meets the task's preference (node-local).
    pub local: bool,
    /// What the application submitted with it.
    pub payload: T,
}

/// What to do with one offer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer<T> {
    /// Accept the offer with these tasks (build each `TaskInfo` on the offer); the rest of the
    /// offer is declined with `filters`.
    Accept {
        /// The offer.
        offer_id: OfferId,
        /// Tasks to launch on it, in order.
        tasks: Vec<Placed<T>>,
        /// Filters for the unused rest.
        filters: Filters,
    },
    /// Decline the offer with `filters`.
    Decline {
        /// The offer.
        offer_id: OfferId,
        /// How long not to see the agent again.
        filters: Filters,
    },
}

/// Counters of what the helper decided, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DelayStats {
    /// Tasks placed on an agent meeting their preference (or with none).
    pub local: u64,
    /// Tasks with a preference placed elsewhere after their job's wait.
    pub non_local: u64,
    /// Offers declined whole.
    pub declined: u64,
}

/// The delay scheduler: pending tasks grouped by job, answering offers. See the
/// [module docs](self).
#[derive(Debug)]
pub struct DelayScheduler<T> {
    cfg: DelayConfig,
    /// Jobs with pending tasks, by name.
    jobs: BTreeMap<String, Job<T>>,
    /// Job names in order of first submission (the serving order).
    order: VecDeque<String>,
    /// An offer was declined or partly refused since the last revive: filters may hide agents.
    refused_since_revive: bool,
    /// New work arrived after a refusal: the framework should revive.
    revive: bool,
    stats: DelayStats,
}

impl<T> DelayScheduler<T> {
    /// An empty scheduler with `cfg`.
    pub fn new(cfg: DelayConfig) -> Self {
        Self {
            cfg,
            jobs: BTreeMap::new(),
            order: VecDeque::new(),
            refused_since_revive: false,
            revive: false,
            stats: DelayStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DelayConfig {
        &self.cfg
    }

    /// Queues task `id` of `job`, needing `resources`, preferring `preference`; `payload` comes
    /// back in the [`Placed`] task. No clock is needed: a job's wait starts when an offer
    /// first skips it.
    pub fn submit(
        &mut self,
        job: &str,
        id: &str,
        resources: Resources,
        preference: Preference,
        payload: T,
    ) {
        let entry = self.jobs.entry(job.to_owned()).or_insert_with(|| {
            self.order.push_back(job.to_owned());
            Job {
                tasks: VecDeque::new(),
                skipped_since: None,
            }
        });
        entry.tasks.push_back(Pending {
            id: id.to_owned(),
            resources,
            preference,
            payload,
        });
        if self.refused_since_revive {
            self.revive = true;
        }
    }

    /// True once (then false) after tasks arrived while earlier offers had been refused with
    /// filters: the framework should call `revive` so that it sees every agent again.
    pub fn take_revive(&mut self) -> bool {
        let r = self.revive;
        if r {
            self.revive = false;
            self.refused_since_revive = false;
        }
        r
    }

    /// Number of tasks waiting.
    pub fn pending(&self) -> usize {
        self.jobs.values().map(|j| j.tasks.len()).sum()
    }

    /// True when no task is waiting.
    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty()
    }

    /// What was decided so far.
    pub fn stats(&self) -> DelayStats {
        self.stats
    }

    /// The earliest moment a waiting job's wait runs out (when a scheduler that suppressed
    /// offers should revive), if any job is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter_map(|j| j.skipped_since)
            .min()
            .map(|t| t + self.cfg.wait)
    }

    /// Decides what to do with `offer` at `now`: which pending tasks to launch on it, or to
    /// decline it. Every offer gets an answer; none is kept.
    pub fn answer(&mut self, offer: &Offer, now: Instant) -> Answer<T> {
        let mut left = offer.resources;
        let mut placed = Vec::new();
        for name in &self.order {
            let job = self.jobs.get_mut(name).expect("ordered jobs exist");
            // Node-local (and preference-free) tasks first.
            let mut launched_local = false;
            let mut i = 0;
            while i < job.tasks.len() {
                let t = &job.tasks[i];
                if t.preference.is_met_by(offer) && left.contains(&t.resources) {
                    let t = job.tasks.remove(i).expect("index in range");
                    left -= t.resources;
                    launched_local |= t.preference != Preference::Anywhere;
                    self.stats.local += 1;
                    placed.push(place(name, t, true));
                } else {
                    i += 1;
                }
            }
            if launched_local {
                // A local launch restarts the job's wait.
                job.skipped_since = None;
            }
            if !job.tasks.iter().any(|t| !t.preference.is_met_by(offer)) {
                continue;
            }
            if !self.cfg.wait.is_zero() {
                if launched_local {
                    continue;
                }
                // The job has tasks but none for this agent: its wait runs from now (or on).
                let since = *job.skipped_since.get_or_insert(now);
                if now.saturating_duration_since(since) < self.cfg.wait {
                    continue;
                }
            }
            // The wait is over: place the job's other tasks anywhere.
            let mut i = 0;
            while i < job.tasks.len() {
                if left.contains(&job.tasks[i].resources) {
                    let t = job.tasks.remove(i).expect("index in range");
                    left -= t.resources;
                    self.stats.non_local += 1;
                    placed.push(place(name, t, false));
                } else {
                    i += 1;
                }
            }
        }
        self.jobs.retain(|_, j| !j.tasks.is_empty());
        let jobs = &self.jobs;
        self.order.retain(|n| jobs.contains_key(n));
        let refuse = if self.jobs.is_empty() {
            self.cfg.idle_refuse
        } else {
            self.cfg.refuse
        };
        self.refused_since_revive = true;
        let filters = Filters {
            refuse_seconds: refuse.as_secs_f64(),
        };
        if placed.is_empty() {
            self.stats.declined += 1;
            Answer::Decline {
                offer_id: offer.id.clone(),
                filters,
            }
        } else {
            Answer::Accept {
                offer_id: offer.id.clone(),
                tasks: placed,
                filters,
            }
        }
    }
}

fn place<T>(job: &str, t: Pending<T>, local: bool) -> Placed<T> {
    Placed {
        job: job.to_owned(),
        id: t.id,
        resources: t.resources,
        local,
        payload: t.payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{AgentId, FrameworkId};

    fn offer(host: &str, sets: &[&str], cpus: u64) -> Offer {
        Offer {
            id: OfferId::from(format!("o-{host}").as_str()),
            framework_id: FrameworkId::from("F"),
            agent_id: AgentId::from(host),
            hostname: host.into(),
            resources: Resources::new(cpus * 1000, 8 << 30, 0),
            reserved_for: None,
            attributes: vec![("rack".into(), format!("rack-{host}"))],
            datasets: sets.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn one_cpu() -> Resources {
        Resources::new(1000, 1 << 30, 0)
    }

    fn ds(wait_ms: u64) -> DelayScheduler<u32> {
        DelayScheduler::new(DelayConfig {
            wait: Duration::from_millis(wait_ms),
            refuse: Duration::from_secs(1),
            idle_refuse: Duration::from_secs(30),
        })
    }

    fn ids(a: &Answer<u32>) -> Vec<(String, bool)> {
        match a {
            Answer::Accept { tasks, .. } => tasks.iter().map(|t| (t.id.clone(), t.local)).collect(),
            Answer::Decline { .. } => vec![],
        }
    }

    #[test]
    fn a_local_offer_is_taken_at_once() {
        let t0 = Instant::now();
        let mut s = ds(1000);
        s.submit("j", "t1", one_cpu(), Preference::datasets(["b1"]), 1);
        let a = s.answer(&offer("h1", &["b1", "b2"], 4), t0);
        assert_eq!(ids(&a), vec![("t1".to_string(), true)]);
        assert!(s.is_idle());
        assert_eq!(s.stats().local, 1);
    }

    #[test]
    fn a_non_local_offer_is_declined_until_the_wait_passes_then_taken() {
        let t0 = Instant::now();
        let mut s = ds(1000);
        s.submit("j", "t1", one_cpu(), Preference::datasets(["b1"]), 1);
        let far = offer("h2", &["b9"], 4);
        let a = s.answer(&far, t0);
        let Answer::Decline { filters, .. } = a else {
            panic!("kept a non-local offer: {a:?}")
        };
        assert_eq!(filters.refuse_seconds, 1.0);
        assert!(matches!(
            s.answer(&far, t0 + Duration::from_millis(999)),
            Answer::Decline { .. }
        ));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(1)));
        let a = s.answer(&far, t0 + Duration::from_millis(1000));
        assert_eq!(ids(&a), vec![("t1".to_string(), false)]);
        assert_eq!(s.stats().non_local, 1);
        assert_eq!(s.stats().declined, 2);
    }

    #[test]
    fn the_wait_belongs_to_the_job_and_a_local_launch_restarts_it() {
        let t0 = Instant::now();
        let mut s = ds(1000);
        for (t, b) in [("t1", "b1"), ("t2", "b2"), ("t3", "b3")] {
            s.submit("j", t, one_cpu(), Preference::datasets([b]), 0);
        }
        // Skipped at t0, so the clock runs from t0 ...
        assert!(matches!(
            s.answer(&offer("x", &[], 1), t0),
            Answer::Decline { .. }
        ));
        // ... a local launch at 0.8 s resets it ...
        let t1 = t0 + Duration::from_millis(800);
        assert_eq!(
            ids(&s.answer(&offer("h1", &["b1"], 1), t1)),
            vec![("t1".into(), true)]
        );
        // ... so at 1.2 s a non-local offer is still declined (skipped anew from 1.2 s).
        let t2 = t0 + Duration::from_millis(1200);
        assert!(matches!(
            s.answer(&offer("x", &[], 1), t2),
            Answer::Decline { .. }
        ));
        // 1 s after that skip, it goes anywhere; then stays "any" for its remaining task.
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(
            ids(&s.answer(&offer("x", &[], 1), t3)),
            vec![("t2".into(), false)]
        );
        assert_eq!(
            ids(&s.answer(&offer("y", &[], 1), t3)),
            vec![("t3".into(), false)]
        );
    }

    #[test]
    fn with_wait_zero_any_offer_is_taken() {
        let t0 = Instant::now();
        let mut s = ds(0);
        s.submit("j", "t1", one_cpu(), Preference::datasets(["b1"]), 0);
        s.submit(
            "j",
            "t2",
            one_cpu(),
            Preference::Attribute("gpu".into(), "a100".into()),
            0,
        );
        let a = s.answer(&offer("h9", &[], 4), t0);
        assert_eq!(
            ids(&a),
            vec![("t1".to_string(), false), ("t2".to_string(), false)]
        );
    }

    #[test]
    fn packing_respects_resources_and_prefers_local_tasks() {
        let t0 = Instant::now();
        let mut s = ds(0);
        for i in 0..5 {
            s.submit(
                "j",
                &format!("t{i}"),
                one_cpu(),
                Preference::datasets([format!("b{i}")]),
                i,
            );
        }
        // 3 cpus: t3 is local and goes first, then two others fill the offer.
        let a = s.answer(&offer("h", &["b3"], 3), t0);
        assert_eq!(
            ids(&a),
            vec![
                ("t3".into(), true),
                ("t0".into(), false),
                ("t1".into(), false)
            ]
        );
        assert_eq!(s.pending(), 2);
        // An offer too small for any task is declined.
        let mut tiny = offer("h", &[], 0);
        tiny.resources = Resources::new(500, 8 << 30, 0);
        assert!(matches!(s.answer(&tiny, t0), Answer::Decline { .. }));
        let mut total = Resources::ZERO;
        if let Answer::Accept { tasks, .. } = s.answer(&offer("h", &[], 8), t0) {
            for t in &tasks {
                total += t.resources;
            }
            assert_eq!(tasks.len(), 2);
        }
        assert!(Resources::new(8000, 8 << 30, 0).contains(&total));
    }

    #[test]
    fn preferences_by_attribute_and_none() {
        let t0 = Instant::now();
        let mut s = ds(5000);
        s.submit(
            "j",
            "r",
            one_cpu(),
            Preference::Attribute("rack".into(), "rack-h2".into()),
            0,
        );
        s.submit("k", "free", one_cpu(), Preference::Anywhere, 0);
        // h1 is not rack-h2: only the free task goes there.
        assert_eq!(
            ids(&s.answer(&offer("h1", &[], 4), t0)),
            vec![("free".into(), true)]
        );
        assert_eq!(
            ids(&s.answer(&offer("h2", &[], 4), t0)),
            vec![("r".into(), true)]
        );
    }

    #[test]
    fn every_offer_is_answered_and_idle_declines_ask_for_a_revive_on_new_work() {
        let t0 = Instant::now();
        let mut s = ds(1000);
        let mut t = t0;
        // A mix of offers with and without work: each gets exactly one answer naming it.
        for i in 0..50u32 {
            if i % 7 == 0 {
                s.submit(
                    "j",
                    &format!("t{i}"),
                    one_cpu(),
                    Preference::datasets([format!("b{}", i % 3)]),
                    i,
                );
            }
            let o = offer(&format!("h{i}"), &[&format!("b{}", i % 5)], 2);
            let id = match s.answer(&o, t) {
                Answer::Accept { offer_id, .. } | Answer::Decline { offer_id, .. } => offer_id,
            };
            assert_eq!(id, o.id);
            t += Duration::from_millis(300);
        }
        // Drain, then an idle decline carries the long filter.
        while !s.is_idle() {
            s.answer(&offer("any", &[], 8), t + Duration::from_secs(10));
        }
        let Answer::Decline { filters, .. } = s.answer(&offer("h", &[], 8), t) else {
            panic!()
        };
        assert_eq!(filters.refuse_seconds, 30.0);
        s.take_revive();
        s.answer(&offer("h", &[], 8), t);
        s.submit("j2", "n", one_cpu(), Preference::Anywhere, 0);
        assert!(s.take_revive());
        assert!(!s.take_revive());
    }
}
