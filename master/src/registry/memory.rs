//! An in-memory [`Registry`], for unit tests and the virtual-time simulator: clones share one
//! store, so a test keeps a handle while the "crashed" master's copy is dropped, and a new core
//! is recovered from what it held, without any I/O.

use super::BlobRecord;
use super::REMOVED_IDS_KEPT;
use super::{
    AgentRecord, FrameworkRecord, Registry, RegistryError, RegistryOp, Snapshot, TaskRecord,
};
use proto::{AgentId, Digest, FrameworkId, TaskId, TaskStatus};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct MemState {
    frameworks: BTreeMap<FrameworkId, FrameworkRecord>,
    agents: BTreeMap<AgentId, AgentRecord>,
    tasks: BTreeMap<(FrameworkId, TaskId), TaskRecord>,
    kills: BTreeSet<(FrameworkId, TaskId)>,
    ended: BTreeMap<(FrameworkId, TaskId), TaskStatus>,
    removed_agents: VecDeque<AgentId>,
    removed_frameworks: VecDeque<FrameworkId>,
    blobs: BTreeMap<Digest, BlobRecord>,
    batches: u64,
}

/// Appends a tombstone, evicting the oldest past [`REMOVED_IDS_KEPT`].
fn push_bounded<T>(q: &mut VecDeque<T>, v: T) {
    q.push_back(v);
    while q.len() > REMOVED_IDS_KEPT {
        q.pop_front();
    }
}

/// A registry in memory; cheap to clone, and every clone sees the same store.
#[derive(Clone, Debug, Default)]
pub struct MemRegistry(Arc<Mutex<MemState>>);

impl MemRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// What it holds now (infallible, unlike [`Registry::load`] in general).
    pub fn snapshot(&self) -> Snapshot {
        let s = self.0.lock().expect("poisoned");
        Snapshot {
            frameworks: s.frameworks.values().cloned().collect(),
            agents: s.agents.values().cloned().collect(),
            tasks: s
                .tasks
                .iter()
                .map(|(k, t)| TaskRecord {
                    kill_requested: s.kills.contains(k),
                    ended: s.ended.get(k).cloned(),
                    ..t.clone()
                })
                .collect(),
            removed_agents: s.removed_agents.iter().cloned().collect(),
            removed_frameworks: s.removed_frameworks.iter().cloned().collect(),
            blobs: s.blobs.values().cloned().collect(),
        }
    }

    /// How many batches were applied (for tests counting writes).
    pub fn batches(&self) -> u64 {
        self.0.lock().expect("poisoned").batches
    }
}

impl Registry for MemRegistry {
    fn load(&self) -> Result<Snapshot, RegistryError> {
        Ok(self.snapshot())
    }

    fn apply(&mut self, batch: &[RegistryOp]) -> Result<(), RegistryError> {
        let mut s = self.0.lock().expect("poisoned");
        s.batches += 1;
        for op in batch {
            match op {
                RegistryOp::PutFramework(f) => {
                    s.frameworks.insert(f.id.clone(), f.clone());
                }
                RegistryOp::RemoveFramework(id) => {
                    s.frameworks.remove(id);
                    push_bounded(&mut s.removed_frameworks, id.clone());
                }
                RegistryOp::PutAgent(a) => {
                    s.agents.insert(a.id.clone(), a.clone());
                }
                RegistryOp::RemoveAgent(id) => {
                    s.agents.remove(id);
                    push_bounded(&mut s.removed_agents, id.clone());
                }
                RegistryOp::PutTask(t) => {
                    let key = (t.framework_id.clone(), t.info.task_id.clone());
                    s.tasks.insert(
                        key,
                        TaskRecord {
                            kill_requested: false,
                            ended: None,
                            ..t.clone()
                        },
                    );
                }
                RegistryOp::RemoveTask {
                    framework_id,
                    task_id,
                } => {
                    let key = (framework_id.clone(), task_id.clone());
                    s.tasks.remove(&key);
                    s.kills.remove(&key);
                    s.ended.remove(&key);
                }
                RegistryOp::EndTask {
                    framework_id,
                    task_id,
                    status,
                } => {
                    let key = (framework_id.clone(), task_id.clone());
                    if s.tasks.contains_key(&key) {
                        s.ended.insert(key, status.clone());
                    }
                }
                RegistryOp::KillRequested {
                    framework_id,
                    task_id,
                } => {
                    let key = (framework_id.clone(), task_id.clone());
                    if s.tasks.contains_key(&key) {
                        s.kills.insert(key);
                    }
                }
                RegistryOp::PutBlob {
                    digest,
                    kind,
                    size,
                    owner,
                } => {
                    let rec = s.blobs.entry(*digest).or_insert_with(|| BlobRecord {
                        digest: *digest,
                        kind: *kind,
                        size: *size,
                        owners: Vec::new(),
                    });
                    if let Some(owner) = owner {
                        if let Err(at) = rec.owners.binary_search(owner) {
                            rec.owners.insert(at, owner.clone());
                        }
                    }
                }
                RegistryOp::RemoveBlob(digest) => {
                    s.blobs.remove(digest);
                }
            }
        }
        Ok(())
    }
}
