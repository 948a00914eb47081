//! A framework running many short jobs (the `hello` guest echoing its job name) through master
//! failures, and the checks that nothing was lost or repeated.
//!
//! Each job is launched as `{prefix}job-J-aN` (attempt N). A launch a master never heard of (an
//! accept lost with a dead master, or sent to a new one with the old one's offers) comes back
//! TASK_DROPPED (invalid offers) or TASK_LOST ("unknown task", from reconciliation) without an
//! agent's uuid, and the job is launched again under a new attempt: a master persists a task
//! before it sends it to an agent, so a task it does not know never ran, and [`JobRun::verify`]
//! checks that such an attempt indeed never produced an update from an agent.

use proto::{Filters, FrameworkId, Reason, Resources, TaskId, TaskState, TaskStatus};
use sdk::{Event, Scheduler, TaskBuilder};
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// What the scheduler knows of one job.
#[derive(Default)]
struct Job {
    /// Attempt ids launched, oldest first.
    attempts: Vec<TaskId>,
    /// True while its latest attempt is launched and not known to have failed to launch.
    launched: bool,
    done: bool,
}

/// One framework's jobs and everything it saw.
pub struct JobRun {
    prefix: String,
    module: proto::Digest,
    per_task: Resources,
    jobs: Vec<Job>,
    pending: VecDeque<usize>,
    /// Everything seen, per task id, in order.
    seen: BTreeMap<TaskId, Vec<TaskStatus>>,
    uuids: BTreeMap<String, usize>,
    started: Instant,
    /// Jobs finished so far.
    pub finished: usize,
    /// The framework id of each `Subscribed`, in order.
    pub subscriptions: Vec<FrameworkId>,
    /// Launches retried because the master never heard of them.
    pub relaunched: usize,
    /// Each master run whose offers came, with when its first offer arrived (offer ids start
    /// with the id of the master run, and of the term, that made them).
    pub offer_runs: Vec<(String, Instant)>,
}

impl JobRun {
    /// `n` jobs of `module`, each in `per_task`, with task ids starting with `prefix`.
    pub fn new(prefix: &str, n: usize, module: proto::Digest, per_task: Resources) -> Self {
        Self {
            prefix: prefix.to_owned(),
            module,
            per_task,
            jobs: (0..n).map(|_| Job::default()).collect(),
            pending: (0..n).collect(),
            seen: BTreeMap::new(),
            uuids: BTreeMap::new(),
            started: Instant::now(),
            finished: 0,
            subscriptions: Vec::new(),
            relaunched: 0,
            offer_runs: Vec::new(),
        }
    }

    /// Whether every job has finished.
    pub fn done(&self) -> bool {
        self.finished == self.jobs.len()
    }

    /// A few jobs not done, with what was seen of their latest attempt (for a hang report).
    pub fn stuck(&self) -> String {
        let stuck: Vec<_> = self
            .jobs
            .iter()
            .filter(|j| !j.done)
            .take(5)
            .map(|j| {
                let id = j.attempts.last();
                (id.cloned(), id.and_then(|id| self.seen.get(id)).cloned())
            })
            .collect();
        format!(
            "{}/{} jobs finished; some not done: {stuck:?}",
            self.finished,
            self.jobs.len()
        )
    }

    /// The job and attempt of a task id `{prefix}job-J-aN`.
    fn parse(&self, id: &TaskId) -> (usize, usize) {
        let rest = id.0.strip_prefix(&self.prefix).unwrap();
        let rest = rest.strip_prefix("job-").unwrap();
        let (j, a) = rest.split_once("-a").unwrap();
        (j.parse().unwrap(), a.parse().unwrap())
    }

    /// Acts on one event: launches pending jobs on offers, records updates, reconciles after a
    /// re-subscription.
    pub fn handle(&mut self, sched: &Scheduler, event: Event) {
        match event {
            Event::Subscribed { framework_id } => {
                self.subscriptions.push(framework_id);
                if self.subscriptions.len() > 1 {
                    // Re-subscribed to another master run: ask about every launch not known to
                    // have ended. One it does not know was never sent to an agent.
                    let ids: Vec<TaskId> = self
                        .jobs
                        .iter()
                        .filter(|j| j.launched && !j.done)
                        .map(|j| j.attempts.last().unwrap().clone())
                        .collect();
                    sched.reconcile(ids).unwrap();
                }
            }
            Event::Offers(offers) => {
                if let Some(o) = offers.first() {
                    let run = o.id.0.split('-').next().unwrap_or_default().to_owned();
                    if !self.offer_runs.iter().any(|(r, _)| *r == run) {
                        self.offer_runs.push((run, Instant::now()));
                    }
                }
                for offer in offers {
                    let mut left = offer.resources;
                    let mut tasks = Vec::new();
                    while left.contains(&self.per_task) {
                        let Some(j) = self.pending.pop_front() else {
                            break;
                        };
                        let id = format!("{}job-{j}-a{}", self.prefix, self.jobs[j].attempts.len());
                        tasks.push(
                            TaskBuilder::new(&id, self.module)
                                .resources(self.per_task)
                                .args([format!("job-{j}")])
                                .build(&offer),
                        );
                        self.jobs[j].attempts.push(TaskId(id));
                        self.jobs[j].launched = true;
                        left -= self.per_task;
                    }
                    let filters = Filters {
                        refuse_seconds: if tasks.is_empty() { 1.0 } else { 0.0 },
                    };
                    if tasks.is_empty() {
                        sched.decline(vec![offer.id.clone()], filters).unwrap();
                    } else {
                        sched
                            .accept(vec![offer.id.clone()], tasks, filters)
                            .unwrap();
                    }
                }
            }
            Event::Update(status) => {
                if let Some(u) = &status.uuid {
                    *self.uuids.entry(u.0.clone()).or_default() += 1;
                }
                let (j, attempt) = self.parse(&status.task_id);
                self.seen
                    .entry(status.task_id.clone())
                    .or_default()
                    .push(status.clone());
                let latest = attempt + 1 == self.jobs[j].attempts.len();
                let never_launched = status.uuid.is_none()
                    && ((status.state == TaskState::Dropped
                        && status.reason == Some(Reason::InvalidOffers))
                        || (status.state == TaskState::Lost && status.message == "unknown task"));
                assert!(
                    status.state != TaskState::Error,
                    "refused launch: {status:?}"
                );
                if never_launched {
                    if latest && self.jobs[j].launched && !self.jobs[j].done {
                        self.jobs[j].launched = false;
                        self.pending.push_back(j);
                        self.relaunched += 1;
                    }
                    return;
                }
                if status.uuid.is_some() && status.state.is_terminal() && !self.jobs[j].done {
                    self.jobs[j].done = true;
                    self.finished += 1;
                    if self.finished.is_multiple_of(100) {
                        println!(
                            "{}: {} jobs finished at {:.1} s",
                            self.prefix,
                            self.finished,
                            self.started.elapsed().as_secs_f64()
                        );
                    }
                }
            }
            Event::Error(e) => println!("{}: master error: {e}", self.prefix),
            _ => {}
        }
    }

    /// Checks that every job ran exactly once: exactly one attempt has updates from an agent,
    /// with exactly one terminal update, FINISHED, carrying the job's own output; the other
    /// attempts never reached an agent; nothing that ran was reported LOST; every update
    /// reached the scheduler's code once. Returns how many attempts never ran.
    pub fn verify(&self) -> usize {
        let mut never_ran = 0;
        for (j, job) in self.jobs.iter().enumerate() {
            let mut ran = Vec::new();
            for id in &job.attempts {
                let updates = self.seen.get(id).map(Vec::as_slice).unwrap_or_default();
                let from_agent: Vec<_> = updates.iter().filter(|s| s.uuid.is_some()).collect();
                assert!(
                    updates.iter().all(|s| !matches!(
                        s.state,
                        TaskState::Gone | TaskState::Failed | TaskState::Error
                    )),
                    "{id}: {updates:?}"
                );
                if from_agent.is_empty() {
                    // Never reached an agent: the masters said so (dropped or unknown).
                    assert!(
                        !updates.is_empty()
                            && updates
                                .iter()
                                .all(|s| matches!(s.state, TaskState::Dropped | TaskState::Lost)),
                        "{id}: {updates:?}"
                    );
                    never_ran += 1;
                    continue;
                }
                ran.push(id.clone());
                let terminal: Vec<_> = from_agent
                    .iter()
                    .filter(|s| s.state.is_terminal())
                    .collect();
                assert_eq!(terminal.len(), 1, "{id}: {updates:?}");
                assert_eq!(terminal[0].state, TaskState::Finished, "{id}: {updates:?}");
                assert!(
                    terminal[0]
                        .stdout_tail
                        .contains(&format!("Hello from Tessera! job-{j}")),
                    "{id}: {:?}",
                    terminal[0].stdout_tail
                );
                let running = from_agent
                    .iter()
                    .filter(|s| s.state == TaskState::Running)
                    .count();
                assert!(running <= 1, "{id} ran {running} times: {updates:?}");
                assert!(
                    updates.iter().all(|s| s.state != TaskState::Lost),
                    "{id}: {updates:?}"
                );
            }
            assert_eq!(ran.len(), 1, "job {j} ran as {ran:?}");
        }
        // The SDK drops repeats by uuid: each update reached the scheduler's code once.
        assert!(self.uuids.values().all(|n| *n == 1));
        // The framework kept its id across every re-subscription.
        assert!(
            self.subscriptions.windows(2).all(|w| w[0] == w[1]),
            "{:?}",
            self.subscriptions
        );
        never_ran
    }
}
