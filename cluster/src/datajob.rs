//! A data-local job on a real cluster: a scheduler that runs one task per input block, placing
//! tasks with the SDK's delay-scheduling helper ([`sdk::delay`]) over the agents' data sets.
//! It is the worked example of delay scheduling: `tessera dev` shows it and the end-to-end
//! tests measure it.
//!
//! Each task runs the `readblock` guest on its block. On an agent holding the block's data set
//! the task asks for it ([`sdk::TaskBuilder::dataset`]) and reads `/data/NAME/FILE`, read-only
//! and in place; elsewhere it gets the block as an uploaded task file at `/block` (a remote
//! read: the bytes travel through the master). Locality is counted from the agent each task's
//! status says it ran on, against the data sets that agent advertised in its offers.

use proto::{AgentId, Digest, Resources, TaskState, TaskStatus};
use sdk::delay::{Answer, DelayConfig, DelayScheduler, Preference};
use sdk::{Event, Scheduler, SdkError, TaskBuilder};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Why a data job could not finish.
#[derive(Debug, thiserror::Error)]
pub enum DataJobError {
    /// A call to the master failed.
    #[error("scheduler: {0}")]
    Sdk(#[from] SdkError),
    /// The job did not finish in time.
    #[error("the job did not finish within {0:?} ({1} of {2} tasks ended)")]
    Timeout(Duration, usize, usize),
    /// The scheduler's connection closed.
    #[error("the scheduler closed")]
    Closed,
}

/// One task of a data job: the block it reads.
#[derive(Clone, Debug)]
pub struct BlockTask {
    /// The task's id.
    pub id: String,
    /// The data set holding the block.
    pub dataset: String,
    /// The block's file inside the data set.
    pub file: String,
    /// The block's bytes uploaded as a file, for a run away from the data set.
    pub remote_copy: Digest,
}

/// How one task ran.
#[derive(Clone, Debug)]
pub struct TaskRun {
    /// The task's id.
    pub id: String,
    /// The hostname of the agent it ran on.
    pub hostname: String,
    /// True when that agent holds the task's data set.
    pub local: bool,
    /// Its final status.
    pub status: TaskStatus,
}

/// The outcome of a data job.
#[derive(Clone, Debug)]
pub struct DataJobReport {
    /// Every task, in id order.
    pub runs: Vec<TaskRun>,
    /// How long the job took, from submission to its last task's end.
    pub elapsed: Duration,
}

impl DataJobReport {
    /// How many tasks ran on an agent holding their data.
    pub fn local(&self) -> usize {
        self.runs.iter().filter(|r| r.local).count()
    }

    /// The share of tasks that ran on an agent holding their data.
    pub fn locality(&self) -> f64 {
        if self.runs.is_empty() {
            return 0.0;
        }
        self.local() as f64 / self.runs.len() as f64
    }
}

/// Runs `tasks` as job `job` with the `readblock` guest `module` (uploaded) in `per_task` each,
/// placing them by delay scheduling with `cfg`, until every task ended or `within` passed.
/// Offers are answered as they come (never kept); the tasks' updates are consumed.
pub async fn run_data_job(
    sched: &mut Scheduler,
    module: Digest,
    job: &str,
    tasks: Vec<BlockTask>,
    per_task: Resources,
    cfg: DelayConfig,
    within: Duration,
) -> Result<DataJobReport, DataJobError> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    let total = tasks.len();
    let mut helper: DelayScheduler<BlockTask> = DelayScheduler::new(cfg);
    let by_id: BTreeMap<String, BlockTask> =
        tasks.iter().map(|t| (t.id.clone(), t.clone())).collect();
    for t in tasks {
        let pref = Preference::datasets([t.dataset.clone()]);
        helper.submit(job, &t.id.clone(), per_task, pref, t);
    }
    if helper.take_revive() {
        sched.revive()?;
    }
    // What each agent holds and is called, learnt from its offers.
    let mut agents: BTreeMap<AgentId, (String, Vec<String>)> = BTreeMap::new();
    let mut ended: BTreeMap<String, TaskStatus> = BTreeMap::new();
    while ended.len() < total {
        let event = match tokio::time::timeout_at(deadline, sched.next_event()).await {
            Err(_) => return Err(DataJobError::Timeout(within, ended.len(), total)),
            Ok(None) => return Err(DataJobError::Closed),
            Ok(Some(e)) => e,
        };
        match event {
            Event::Offers(offers) => {
                for offer in offers {
                    agents.insert(
                        offer.agent_id.clone(),
                        (offer.hostname.clone(), offer.datasets.clone()),
                    );
                    match helper.answer(&offer, Instant::now()) {
                        Answer::Decline { offer_id, filters } => {
                            sched.decline(vec![offer_id], filters)?;
                        }
                        Answer::Accept {
                            offer_id,
                            tasks,
                            filters,
                        } => {
                            let infos = tasks
                                .into_iter()
                                .map(|t| {
                                    let b = &t.payload;
                                    let builder =
                                        TaskBuilder::new(&t.id, module).resources(t.resources);
                                    if t.local {
                                        builder
                                            .dataset(&b.dataset)
                                            .args([format!("/data/{}/{}", b.dataset, b.file)])
                                    } else {
                                        builder.file("block", b.remote_copy).args(["/block"])
                                    }
                                    .build(&offer)
                                })
                                .collect();
                            sched.accept(vec![offer_id], infos, filters)?;
                        }
                    }
                }
            }
            Event::Update(s) if s.state.is_terminal() && by_id.contains_key(s.task_id.as_str()) => {
                ended.insert(s.task_id.as_str().to_owned(), s);
            }
            _ => {}
        }
    }
    let elapsed = start.elapsed();
    let runs = ended
        .into_iter()
        .map(|(id, status)| {
            let (hostname, held) = status
                .agent_id
                .as_ref()
                .and_then(|a| agents.get(a))
                .cloned()
                .unwrap_or_default();
            TaskRun {
                local: held.contains(&by_id[&id].dataset),
                id,
                hostname,
                status,
            }
        })
        .collect();
    Ok(DataJobReport { runs, elapsed })
}

/// True when a `readblock` task finished and printed the block it read.
pub fn read_ok(run: &TaskRun) -> bool {
    run.status.state == TaskState::Finished && run.status.stdout_tail.contains(" bytes, ")
}
