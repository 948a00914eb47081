//! How a batch of [`RegistryOp`]s becomes etcd writes: a pure function, so its rules are
//! tested without etcd.
//!
//! 1. **Coalesce** the batch into an ordered `key → put | delete` map (a later op on a key
//!    wins): etcd refuses a txn that names a key twice.
//! 2. **Keep the embedded store's semantics** ([`MemRegistry`](master::registry::MemRegistry)
//!    is the reference): `PutTask` leaves a task's side keys alone, `RemoveTask` deletes all
//!    three, `KillRequested`/`EndTask` only mark a task that exists, `PutBlob` adds its owner to
//!    the record's sorted owners, tombstones are bounded. Whether a task or blob exists, and
//!    which tombstones are live, comes from a [`Mirror`] of the store that `load` builds: it is
//!    exact because the fenced leader is the only writer.
//! 3. **Shape** the writes ([`shape`]): one txn when they fit etcd's limits (the fast path, the
//!    normal case), else a redo journal: chunks, a commit marker (the commit point), then the
//!    final-state ops in txns that fit, then the journal is deleted. `load` replays a committed
//!    journal and ignores an uncommitted one, so a batch of any size is atomic.

use crate::keys::{record_suffix, task_suffix, Keys};
use master::registry::{BlobRecord, RegistryOp};
use proto::Digest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// etcd's default `--max-txn-ops`: the most operations in one txn's branch.
pub const MAX_TXN_OPS: usize = 128;
/// What one txn's keys and values may add up to: 1 MiB, leaving half a MiB of etcd's default
/// `--max-request-bytes` (1.5 MiB) for framing.
pub const MAX_TXN_BYTES: usize = 1 << 20;
/// The largest journal chunk (its encoded ops), well inside [`MAX_TXN_BYTES`].
pub const CHUNK_BYTES: usize = 768 << 10;
/// What a put or delete costs beyond its key and value, counted against [`MAX_TXN_BYTES`].
const OP_OVERHEAD: usize = 16;
/// The room the writer key (`P/meta/writer`) and the fence compare take in every txn.
const TXN_SLACK: usize = 1024;

/// One write to etcd: what a journal chunk holds and what a txn carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Sets a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
    /// Deletes a key (absent or not).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl KvOp {
    /// Its key.
    pub fn key(&self) -> &[u8] {
        match self {
            KvOp::Put { key, .. } | KvOp::Delete { key } => key,
        }
    }

    /// What it counts against [`MAX_TXN_BYTES`].
    pub fn cost(&self) -> usize {
        OP_OVERHEAD
            + match self {
                KvOp::Put { key, value } => key.len() + value.len(),
                KvOp::Delete { key } => key.len(),
            }
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("registry records always encode")
}

/// What this master knows of the store beyond the batch at hand, to keep the embedded store's
/// semantics without reading etcd on each write. Built by `load`, updated after each write that
/// succeeded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mirror {
    /// The tasks in the store, by [`task_suffix`].
    pub tasks: BTreeSet<String>,
    /// Live agent tombstones' sequence numbers, oldest first.
    pub rm_agents: VecDeque<u64>,
    /// Live framework tombstones' sequence numbers, oldest first.
    pub rm_fws: VecDeque<u64>,
    /// The next agent tombstone's sequence number.
    pub next_agent_seq: u64,
    /// The next framework tombstone's sequence number.
    pub next_fw_seq: u64,
    /// The blob records.
    pub blobs: BTreeMap<Digest, BlobRecord>,
}

/// The writes of one batch and the mirror's changes once they are durable.
#[derive(Debug)]
pub struct Plan {
    /// The coalesced writes: `Some(value)` puts, `None` deletes.
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    tasks: BTreeMap<String, bool>,
    blobs: BTreeMap<Digest, Option<BlobRecord>>,
    rm_agents: VecDeque<u64>,
    rm_fws: VecDeque<u64>,
    next_agent_seq: u64,
    next_fw_seq: u64,
}

impl Plan {
    /// The writes as ops, in key order, each key once.
    pub fn ops(&self) -> Vec<KvOp> {
        self.writes
            .iter()
            .map(|(k, v)| match v {
                Some(value) => KvOp::Put {
                    key: k.clone(),
                    value: value.clone(),
                },
                None => KvOp::Delete { key: k.clone() },
            })
            .collect()
    }
}

/// Appends a tombstone's seq, evicting (and deleting) the oldest past `kept`.
fn push_tombstone(
    writes: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    live: &mut VecDeque<u64>,
    next: &mut u64,
    kept: usize,
    key: impl Fn(u64) -> Vec<u8>,
    value: Vec<u8>,
) {
    let seq = *next;
    *next += 1;
    live.push_back(seq);
    writes.insert(key(seq), Some(value));
    while live.len() > kept {
        let old = live.pop_front().expect("non-empty");
        writes.insert(key(old), None);
    }
}

impl Mirror {
    /// Plans `batch` (applied in order) against the store this mirrors, keeping at most `kept`
    /// tombstones of each kind.
    pub fn plan(&self, keys: &Keys, batch: &[RegistryOp], kept: usize) -> Plan {
        let mut p = Plan {
            writes: BTreeMap::new(),
            tasks: BTreeMap::new(),
            blobs: BTreeMap::new(),
            rm_agents: self.rm_agents.clone(),
            rm_fws: self.rm_fws.clone(),
            next_agent_seq: self.next_agent_seq,
            next_fw_seq: self.next_fw_seq,
        };
        let task_exists = |p: &Plan, s: &String| {
            p.tasks
                .get(s)
                .copied()
                .unwrap_or_else(|| self.tasks.contains(s))
        };
        for op in batch {
            match op {
                RegistryOp::PutFramework(f) => {
                    p.writes.insert(keys.framework(&f.id), Some(encode(f)));
                }
                RegistryOp::RemoveFramework(id) => {
                    p.writes.insert(keys.framework(id), None);
                    push_tombstone(
                        &mut p.writes,
                        &mut p.rm_fws,
                        &mut p.next_fw_seq,
                        kept,
                        |s| keys.rm_fw(s),
                        encode(id),
                    );
                }
                RegistryOp::PutAgent(a) => {
                    p.writes.insert(keys.agent(&a.id), Some(encode(a)));
                }
                RegistryOp::RemoveAgent(id) => {
                    p.writes.insert(keys.agent(id), None);
                    push_tombstone(
                        &mut p.writes,
                        &mut p.rm_agents,
                        &mut p.next_agent_seq,
                        kept,
                        |s| keys.rm_agent(s),
                        encode(id),
                    );
                }
                RegistryOp::PutTask(t) => {
                    let s = record_suffix(t);
                    let stored = master::registry::TaskRecord {
                        kill_requested: false,
                        ended: None,
                        ..t.clone()
                    };
                    p.writes.insert(keys.task(&s), Some(encode(&stored)));
                    p.tasks.insert(s, true);
                }
                RegistryOp::RemoveTask {
                    framework_id,
                    task_id,
                } => {
                    let s = task_suffix(framework_id, task_id);
                    p.writes.insert(keys.task(&s), None);
                    p.writes.insert(keys.kill(&s), None);
                    p.writes.insert(keys.ended(&s), None);
                    p.tasks.insert(s, false);
                }
                RegistryOp::EndTask {
                    framework_id,
                    task_id,
                    status,
                } => {
                    let s = task_suffix(framework_id, task_id);
                    if task_exists(&p, &s) {
                        p.writes.insert(keys.ended(&s), Some(encode(status)));
                    }
                }
                RegistryOp::KillRequested {
                    framework_id,
                    task_id,
                } => {
                    let s = task_suffix(framework_id, task_id);
                    if task_exists(&p, &s) {
                        p.writes.insert(keys.kill(&s), Some(Vec::new()));
                    }
                }
                RegistryOp::PutBlob {
                    digest,
                    kind,
                    size,
                    owner,
                } => {
                    let mut rec = match p.blobs.get(digest) {
                        Some(r) => r.clone(),
                        None => self.blobs.get(digest).cloned(),
                    }
                    .unwrap_or_else(|| BlobRecord {
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
                    p.writes.insert(keys.blob(digest), Some(encode(&rec)));
                    p.blobs.insert(*digest, Some(rec));
                }
                RegistryOp::RemoveBlob(digest) => {
                    p.writes.insert(keys.blob(digest), None);
                    p.blobs.insert(*digest, None);
                }
            }
        }
        p
    }

    /// Takes in a plan whose writes are durable.
    pub fn commit(&mut self, plan: Plan) {
        for (s, exists) in plan.tasks {
            if exists {
                self.tasks.insert(s);
            } else {
                self.tasks.remove(&s);
            }
        }
        for (d, rec) in plan.blobs {
            match rec {
                Some(r) => self.blobs.insert(d, r),
                None => self.blobs.remove(&d),
            };
        }
        self.rm_agents = plan.rm_agents;
        self.rm_fws = plan.rm_fws;
        self.next_agent_seq = plan.next_agent_seq;
        self.next_fw_seq = plan.next_fw_seq;
    }
}

/// How a batch's writes reach etcd. Every txn named here also carries the fence compare and the
/// writer put (counted in by [`shape`]).
#[derive(Debug, PartialEq)]
pub enum Shape {
    /// Nothing to write.
    Empty,
    /// One txn.
    Fast(Vec<KvOp>),
    /// A redo journal: each chunk put in a txn of its own, then the commit marker, then the
    /// materializing txns, then the journal deleted.
    Journal {
        /// The encoded chunks (each a `Vec<KvOp>`), in order.
        chunks: Vec<Vec<u8>>,
        /// The final-state ops, in txns that fit.
        materialize: Vec<Vec<KvOp>>,
    },
}

/// Splits `ops` into groups of at most `max_ops` ops and [`MAX_TXN_BYTES`] less slack.
fn split(ops: &[KvOp], max_ops: usize) -> Vec<Vec<KvOp>> {
    let mut out: Vec<Vec<KvOp>> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let fits = out
            .last()
            .is_some_and(|g| g.len() < max_ops && bytes + op.cost() <= MAX_TXN_BYTES - TXN_SLACK);
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += op.cost();
        out.last_mut().expect("pushed").push(op.clone());
    }
    out
}

/// Chooses the fast path or the journal for `ops` (distinct keys).
pub fn shape(ops: Vec<KvOp>) -> Shape {
    if ops.is_empty() {
        return Shape::Empty;
    }
    let bytes: usize = ops.iter().map(KvOp::cost).sum();
    // +1: the writer put.
    if ops.len() < MAX_TXN_OPS && bytes <= MAX_TXN_BYTES - TXN_SLACK {
        return Shape::Fast(ops);
    }
    let mut chunks = Vec::new();
    let mut chunk: Vec<KvOp> = Vec::new();
    let mut size = 0;
    for op in &ops {
        if !chunk.is_empty() && size + op.cost() > CHUNK_BYTES {
            chunks.push(encode(&chunk));
            chunk.clear();
            size = 0;
        }
        size += op.cost();
        chunk.push(op.clone());
    }
    if !chunk.is_empty() {
        chunks.push(encode(&chunk));
    }
    // Materializing txns leave room for the writer put and the journal delete.
    Shape::Journal {
        chunks,
        materialize: split(&ops, MAX_TXN_OPS - 2),
    }
}
