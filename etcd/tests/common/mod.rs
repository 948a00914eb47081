//! Records, random batches and a model of etcd shared by the tests.
#![allow(dead_code)]

use master::registry::{AgentRecord, FrameworkRecord, RegistryOp, TaskRecord};
use proptest::prelude::*;
use proto::identity::{PeerId, PeerKind};
use proto::{
    AgentId, AgentInfo, BlobKind, Digest, FrameworkId, FrameworkInfo, Resources, TaskId, TaskInfo,
    TaskState, TaskStatus,
};
use std::collections::BTreeMap;
use tessera_etcd::keys::Keys;
use tessera_etcd::registry::plan::{shape, KvOp, Mirror, Shape, MAX_TXN_BYTES, MAX_TXN_OPS};

pub fn framework(n: u32, name: &str) -> FrameworkRecord {
    FrameworkRecord {
        id: FrameworkId(format!("m-F{n}")),
        info: FrameworkInfo {
            name: name.into(),
            role: "*".into(),
            principal: "p".into(),
            id: Some(FrameworkId(format!("m-F{n}"))),
            failover_timeout_ms: 60_000,
            priority: 0,
        },
        principal: PeerId::new(PeerKind::Framework, "p").unwrap(),
    }
}

pub fn agent(n: u32, host: &str) -> AgentRecord {
    AgentRecord {
        id: AgentId(format!("m-A{n}")),
        info: AgentInfo {
            hostname: host.into(),
            resources: Resources::new(4000, 4 << 30, 0),
            reservations: vec![],
            attributes: vec![("rack".into(), "r1".into())],
            datasets: vec![],
        },
        owner: format!("agent{n}"),
    }
}

pub fn task(f: u32, t: u32, a: u32) -> TaskRecord {
    TaskRecord {
        framework_id: FrameworkId(format!("m-F{f}")),
        info: TaskInfo {
            task_id: TaskId(format!("t{t}")),
            name: format!("t{t}"),
            agent_id: AgentId(format!("m-A{a}")),
            resources: Resources::new(100, 1 << 20, 0),
            module: Digest::of(b"module"),
            args: vec!["a".into()],
            env: vec![],
            files: vec![],
            timeout_ms: Some(1000),
            max_cpu_ms: None,
            datasets: vec![],
            executor: None,
            data: vec![7; 64],
        },
        kill_requested: false,
        ended: None,
    }
}

pub fn status(f: u32, t: u32) -> TaskStatus {
    TaskStatus {
        task_id: TaskId(format!("t{t}")),
        framework_id: FrameworkId(format!("m-F{f}")),
        agent_id: None,
        state: TaskState::Finished,
        reason: None,
        message: "done".into(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        uuid: None,
    }
}

pub fn digest(n: u8) -> Digest {
    Digest([n; 32])
}

pub fn owner(n: u8) -> String {
    format!("p{n}")
}

/// One random op over a small universe of ids, so ops meet each other.
pub fn arb_op() -> impl Strategy<Value = RegistryOp> {
    prop_oneof![
        (0..4u32, 0..3u8)
            .prop_map(|(n, v)| RegistryOp::PutFramework(framework(n, &format!("v{v}")))),
        (0..4u32).prop_map(|n| RegistryOp::RemoveFramework(FrameworkId(format!("m-F{n}")))),
        (0..4u32, 0..3u8).prop_map(|(n, v)| RegistryOp::PutAgent(agent(n, &format!("h{v}")))),
        (0..4u32).prop_map(|n| RegistryOp::RemoveAgent(AgentId(format!("m-A{n}")))),
        (0..3u32, 0..6u32, 0..4u32).prop_map(|(f, t, a)| RegistryOp::PutTask(task(f, t, a))),
        (0..3u32, 0..6u32).prop_map(|(f, t)| RegistryOp::RemoveTask {
            framework_id: FrameworkId(format!("m-F{f}")),
            task_id: TaskId(format!("t{t}")),
        }),
        (0..3u32, 0..6u32).prop_map(|(f, t)| RegistryOp::EndTask {
            framework_id: FrameworkId(format!("m-F{f}")),
            task_id: TaskId(format!("t{t}")),
            status: status(f, t),
        }),
        (0..3u32, 0..6u32).prop_map(|(f, t)| RegistryOp::KillRequested {
            framework_id: FrameworkId(format!("m-F{f}")),
            task_id: TaskId(format!("t{t}")),
        }),
        (0..4u8, proptest::option::of(0..3u8)).prop_map(|(d, o)| RegistryOp::PutBlob {
            digest: digest(d),
            kind: BlobKind::Module,
            size: 10 + d as u64,
            owner: o.map(owner),
        }),
        (0..4u8).prop_map(|d| RegistryOp::RemoveBlob(digest(d))),
    ]
}

/// Many ops touching many keys: takes the journal path.
pub fn big_batch(n: u32) -> Vec<RegistryOp> {
    let mut b = vec![
        RegistryOp::PutFramework(framework(1, "big")),
        RegistryOp::PutAgent(agent(1, "big")),
    ];
    for t in 0..n {
        b.push(RegistryOp::PutTask(task(1, 1000 + t, 1)));
        if t % 3 == 0 {
            b.push(RegistryOp::KillRequested {
                framework_id: FrameworkId("m-F1".into()),
                task_id: TaskId(format!("t{}", 1000 + t)),
            });
        }
    }
    b
}

/// etcd as a map, written txn by txn the way the registry writes it; checks every txn against
/// etcd's limits (+1 op and the writer key's bytes for the writer put).
#[derive(Default)]
pub struct Model {
    pub kv: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The state after each txn, when recording.
    pub steps: Vec<BTreeMap<Vec<u8>, Vec<u8>>>,
    pub record: bool,
    pub txns: usize,
    pub next_batch: u64,
}

impl Model {
    fn txn(&mut self, ops: &[KvOp]) {
        assert!(
            ops.len() < MAX_TXN_OPS, // and the writer put
            "{} ops in a txn",
            ops.len() + 1
        );
        let bytes: usize = ops.iter().map(KvOp::cost).sum();
        assert!(bytes + 64 <= MAX_TXN_BYTES, "{bytes} bytes in a txn");
        let mut seen = std::collections::BTreeSet::new();
        for op in ops {
            assert!(seen.insert(op.key().to_vec()), "duplicate key in a txn");
            match op {
                KvOp::Put { key, value } => {
                    self.kv.insert(key.clone(), value.clone());
                }
                KvOp::Delete { key } => {
                    self.kv.remove(key);
                }
            }
        }
        self.txns += 1;
        if self.record {
            self.steps.push(self.kv.clone());
        }
    }

    /// Applies a batch as the registry does; returns true if it took the journal.
    pub fn apply(
        &mut self,
        keys: &Keys,
        mirror: &mut Mirror,
        batch: &[RegistryOp],
        kept: usize,
    ) -> bool {
        let plan = mirror.plan(keys, batch, kept);
        let journal = match shape(plan.ops()) {
            Shape::Empty => false,
            Shape::Fast(ops) => {
                self.txn(&ops);
                false
            }
            Shape::Journal {
                chunks,
                materialize,
            } => {
                let dir = keys.journal_batch(1, self.next_batch);
                self.next_batch += 1;
                for (i, c) in chunks.into_iter().enumerate() {
                    self.txn(&[KvOp::Put {
                        key: format!("{dir}{i:04}").into_bytes(),
                        value: c,
                    }]);
                }
                self.txn(&[KvOp::Put {
                    key: format!("{dir}commit").into_bytes(),
                    value: vec![],
                }]);
                for g in materialize {
                    self.txn(&g);
                }
                let dir = dir.into_bytes();
                self.kv.retain(|k, _| !k.starts_with(&dir));
                if self.record {
                    self.steps.push(self.kv.clone());
                }
                true
            }
        };
        mirror.commit(plan);
        journal
    }
}
