//! Where everything lives under the prefix `P` (one prefix per cluster), so the layout is
//! written down once:
//!
//! | key | value |
//! |---|---|
//! | `P/leader` | `"{advertise} {run_id}"`, on the leader's lease |
//! | `P/meta/schema_version`, `P/meta/cluster`, `P/meta/writer` | u32 LE; the cluster name; `"{fence} {run_id}"` |
//! | `P/fw/{id}`, `P/agent/{id}` | `FrameworkRecord`, `AgentRecord` (postcard) |
//! | `P/task/{hex(task key)}`, `P/kill/…`, `P/ended/…` | `TaskRecord`; empty; `TaskStatus` |
//! | `P/rm_agent/{seq:016x}`, `P/rm_fw/{seq:016x}` | a removed id (lowest seq = oldest) |
//! | `P/journal/{fence:016x}/{batch:016x}/{chunk:04}`, `…/commit` | a chunk of a big batch; its commit marker |
//! | `P/blob/{hex digest}` | `BlobRecord` |

use master::registry::TaskRecord;
use proto::{AgentId, Digest, FrameworkId, TaskId};

/// The keys of one cluster's prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

/// The task part of a task's keys: hex of the postcard `(framework, task)`, as redb keys it.
pub fn task_suffix(framework_id: &FrameworkId, task_id: &TaskId) -> String {
    hex::encode(postcard::to_allocvec(&(framework_id, task_id)).expect("ids always encode"))
}

/// [`task_suffix`] of a record.
pub fn record_suffix(t: &TaskRecord) -> String {
    task_suffix(&t.framework_id, &t.info.task_id)
}

impl Keys {
    /// The layout under `prefix` (a trailing `/` is ignored).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// The prefix, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn k(&self, rest: &str) -> Vec<u8> {
        format!("{}/{rest}", self.prefix).into_bytes()
    }

    /// `P/` and the end of its range (`P0`): every key of the cluster.
    pub fn range(&self) -> (Vec<u8>, Vec<u8>) {
        (self.k(""), format!("{}0", self.prefix).into_bytes())
    }

    /// The key a part of the layout starts with (`fw/`, `task/`, `journal/`...), relative.
    pub fn strip<'a>(&self, key: &'a [u8]) -> Option<&'a [u8]> {
        key.strip_prefix(self.prefix.as_bytes())?.strip_prefix(b"/")
    }

    /// The leader key.
    pub fn leader(&self) -> Vec<u8> {
        self.k("leader")
    }
    /// The schema version.
    pub fn schema_version(&self) -> Vec<u8> {
        self.k("meta/schema_version")
    }
    /// The cluster name.
    pub fn cluster(&self) -> Vec<u8> {
        self.k("meta/cluster")
    }
    /// Who wrote last.
    pub fn writer(&self) -> Vec<u8> {
        self.k("meta/writer")
    }
    /// A framework.
    pub fn framework(&self, id: &FrameworkId) -> Vec<u8> {
        self.k(&format!("fw/{}", id.0))
    }
    /// An agent.
    pub fn agent(&self, id: &AgentId) -> Vec<u8> {
        self.k(&format!("agent/{}", id.0))
    }
    /// A task, by [`task_suffix`].
    pub fn task(&self, suffix: &str) -> Vec<u8> {
        self.k(&format!("task/{suffix}"))
    }
    /// A task's kill request.
    pub fn kill(&self, suffix: &str) -> Vec<u8> {
        self.k(&format!("kill/{suffix}"))
    }
    /// A task's terminal status.
    pub fn ended(&self, suffix: &str) -> Vec<u8> {
        self.k(&format!("ended/{suffix}"))
    }
    /// A removed agent's tombstone.
    pub fn rm_agent(&self, seq: u64) -> Vec<u8> {
        self.k(&format!("rm_agent/{seq:016x}"))
    }
    /// A removed framework's tombstone.
    pub fn rm_fw(&self, seq: u64) -> Vec<u8> {
        self.k(&format!("rm_fw/{seq:016x}"))
    }
    /// A blob record.
    pub fn blob(&self, digest: &Digest) -> Vec<u8> {
        self.k(&format!("blob/{}", digest.to_hex()))
    }
    /// Every blob record's key starts with this.
    pub fn blob_prefix(&self) -> Vec<u8> {
        self.k("blob/")
    }
    /// Every journal key starts with this.
    pub fn journal_prefix(&self) -> Vec<u8> {
        self.k("journal/")
    }
    /// A big batch's journal directory.
    pub fn journal_batch(&self, fence: u64, batch: u64) -> String {
        format!("{}/journal/{fence:016x}/{batch:016x}/", self.prefix)
    }
}
