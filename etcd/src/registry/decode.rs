//! From the keys read at one revision to a [`Snapshot`] (a pure function, tested without
//! etcd): committed journals are replayed over the keys first, uncommitted ones ignored, side
//! keys of tasks that do not exist dropped, and every list sorted as the embedded store sorts
//! it. Also yields the [`Mirror`] that later writes are planned against.

use super::plan::{KvOp, Mirror};
use crate::keys::Keys;
use master::registry::{
    AgentRecord, BlobRecord, FrameworkRecord, RegistryError, Snapshot, TaskRecord,
};
use proto::{AgentId, FrameworkId, TaskStatus};
use std::collections::BTreeMap;

/// What a load found.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The registry.
    pub snapshot: Snapshot,
    /// What writes are planned against.
    pub mirror: Mirror,
    /// Every journal key found (to delete once committed journals are materialized).
    pub journal_keys: Vec<Vec<u8>>,
    /// The final-state ops of the committed journals replayed (to materialize).
    pub replayed: Vec<KvOp>,
    /// `P/meta/schema_version`, if stamped.
    pub schema_version: Option<u32>,
    /// `P/meta/cluster`, if stamped.
    pub cluster: Option<String>,
}

/// One big batch's journal: its chunks by index, and whether it was committed.
type Journal = (BTreeMap<String, Vec<u8>>, bool);

fn corrupt(table: &'static str) -> impl FnOnce(postcard::Error) -> RegistryError {
    move |source| RegistryError::Corrupt { table, source }
}

fn seq_of(rest: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(rest).ok()?, 16).ok()
}

/// Decodes everything under `keys`' prefix (`kvs`: full key → value).
pub fn decode(keys: &Keys, mut kvs: BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Decoded, RegistryError> {
    let mut out = Decoded::default();

    // Journals: (fence, batch) → (chunks by index, committed).
    let jp = keys.journal_prefix();
    let mut journals: BTreeMap<(String, String), Journal> = BTreeMap::new();
    let jkeys: Vec<Vec<u8>> = kvs
        .range(jp.clone()..)
        .take_while(|(k, _)| k.starts_with(&jp))
        .map(|(k, _)| k.clone())
        .collect();
    for k in jkeys {
        let v = kvs.remove(&k).expect("listed");
        let rest = String::from_utf8_lossy(&k[jp.len()..]).into_owned();
        let parts: Vec<&str> = rest.split('/').collect();
        if let [fence, batch, last] = parts[..] {
            let e = journals
                .entry((fence.to_owned(), batch.to_owned()))
                .or_default();
            if last == "commit" {
                e.1 = true;
            } else {
                e.0.insert(last.to_owned(), v);
            }
        }
        out.journal_keys.push(k);
    }
    for ((_, _), (chunks, committed)) in journals {
        if !committed {
            continue;
        }
        for chunk in chunks.values() {
            let ops: Vec<KvOp> = postcard::from_bytes(chunk).map_err(corrupt("journal"))?;
            for op in ops {
                match &op {
                    KvOp::Put { key, value } => {
                        kvs.insert(key.clone(), value.clone());
                    }
                    KvOp::Delete { key } => {
                        kvs.remove(key);
                    }
                }
                out.replayed.push(op);
            }
        }
    }

    let mut tasks: BTreeMap<String, TaskRecord> = BTreeMap::new();
    let mut kills = Vec::new();
    let mut ended: Vec<(String, TaskStatus)> = Vec::new();
    let mut rm_agents: Vec<(u64, AgentId)> = Vec::new();
    let mut rm_fws: Vec<(u64, FrameworkId)> = Vec::new();
    for (k, v) in &kvs {
        let Some(rel) = keys.strip(k) else { continue };
        let (table, rest) = match rel.iter().position(|b| *b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (rel, &[][..]),
        };
        let rest_str = || String::from_utf8_lossy(rest).into_owned();
        match table {
            b"meta" if rest == b"schema_version" => {
                let b: [u8; 4] = v.as_slice().try_into().map_err(|_| RegistryError::Store {
                    what: "read schema version",
                    source: format!("{} bytes, not 4", v.len()).into(),
                })?;
                out.schema_version = Some(u32::from_le_bytes(b));
            }
            b"meta" if rest == b"cluster" => {
                out.cluster = Some(String::from_utf8_lossy(v).into_owned());
            }
            b"fw" => out
                .snapshot
                .frameworks
                .push(postcard::from_bytes::<FrameworkRecord>(v).map_err(corrupt("fw"))?),
            b"agent" => out
                .snapshot
                .agents
                .push(postcard::from_bytes::<AgentRecord>(v).map_err(corrupt("agent"))?),
            b"task" => {
                let t: TaskRecord = postcard::from_bytes(v).map_err(corrupt("task"))?;
                tasks.insert(rest_str(), t);
            }
            b"kill" => kills.push(rest_str()),
            b"ended" => ended.push((
                rest_str(),
                postcard::from_bytes(v).map_err(corrupt("ended"))?,
            )),
            b"rm_agent" => {
                if let Some(seq) = seq_of(rest) {
                    rm_agents.push((seq, postcard::from_bytes(v).map_err(corrupt("rm_agent"))?));
                }
            }
            b"rm_fw" => {
                if let Some(seq) = seq_of(rest) {
                    rm_fws.push((seq, postcard::from_bytes(v).map_err(corrupt("rm_fw"))?));
                }
            }
            b"blob" => {
                let b: BlobRecord = postcard::from_bytes(v).map_err(corrupt("blob"))?;
                out.mirror.blobs.insert(b.digest, b.clone());
                out.snapshot.blobs.push(b);
            }
            // The leader key, the writer, and anything a newer layout added.
            _ => {}
        }
    }
    // Side keys of tasks that do not exist are orphans: dropped.
    for s in kills {
        if let Some(t) = tasks.get_mut(&s) {
            t.kill_requested = true;
        }
    }
    for (s, st) in ended {
        if let Some(t) = tasks.get_mut(&s) {
            t.ended = Some(st);
        }
    }
    out.mirror.tasks = tasks.keys().cloned().collect();
    let mut tasks: Vec<TaskRecord> = tasks.into_values().collect();
    tasks.sort_by(|a, b| {
        (&a.framework_id, &a.info.task_id).cmp(&(&b.framework_id, &b.info.task_id))
    });
    out.snapshot.tasks = tasks;
    out.snapshot.frameworks.sort_by(|a, b| a.id.cmp(&b.id));
    out.snapshot.agents.sort_by(|a, b| a.id.cmp(&b.id));
    out.snapshot.blobs.sort_by_key(|a| a.digest);
    rm_agents.sort_by_key(|(s, _)| *s);
    rm_fws.sort_by_key(|(s, _)| *s);
    out.mirror.next_agent_seq = rm_agents.last().map_or(0, |(s, _)| s + 1);
    out.mirror.next_fw_seq = rm_fws.last().map_or(0, |(s, _)| s + 1);
    out.mirror.rm_agents = rm_agents.iter().map(|(s, _)| *s).collect();
    out.mirror.rm_fws = rm_fws.iter().map(|(s, _)| *s).collect();
    out.snapshot.removed_agents = rm_agents.into_iter().map(|(_, id)| id).collect();
    out.snapshot.removed_frameworks = rm_fws.into_iter().map(|(_, id)| id).collect();
    Ok(out)
}
