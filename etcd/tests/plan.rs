//! The plan without etcd: batches applied through the plan to a map that stands for etcd
//! read back equal to `MemRegistry`; every txn fits etcd's limits; a journal cut at any step
//! reads back as all of its batch or none.

mod common;

use common::*;
use master::registry::{MemRegistry, Registry, RegistryOp, REMOVED_IDS_KEPT};
use proptest::prelude::*;
use proto::AgentId;
use tessera_etcd::keys::Keys;
use tessera_etcd::registry::decode::decode;
use tessera_etcd::registry::plan::Mirror;

fn keys() -> Keys {
    Keys::new("/tessera/test")
}

fn cut<T>(v: &mut Vec<T>, kept: usize) {
    let n = v.len().saturating_sub(kept);
    v.drain(..n);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn plan_applied_to_a_model_equals_the_memory_registry(
        batches in proptest::collection::vec(proptest::collection::vec(arb_op(), 0..40), 1..12),
        kept in 1..6usize,
    ) {
        // A small tombstone bound exercises eviction; the memory store's bound is fixed, so
        // its tombstones are cut to the same length for the comparison.
        let keys = keys();
        let mut model = Model::default();
        let mut mirror = Mirror::default();
        let mut mem = MemRegistry::new();
        for b in &batches {
            model.apply(&keys, &mut mirror, b, kept);
            mem.apply(b).unwrap();
            let d = decode(&keys, model.kv.clone()).unwrap();
            let mut want = mem.snapshot();
            cut(&mut want.removed_agents, kept);
            cut(&mut want.removed_frameworks, kept);
            prop_assert_eq!(&d.snapshot, &want);
            prop_assert_eq!(&d.mirror, &mirror);
            prop_assert!(d.journal_keys.is_empty());
        }
    }
}

#[test]
fn tombstones_are_bounded_like_the_memory_registry() {
    let keys = keys();
    let mut model = Model::default();
    let mut mirror = Mirror::default();
    let mut mem = MemRegistry::new();
    let batch: Vec<RegistryOp> = (0..REMOVED_IDS_KEPT as u32 + 5)
        .map(|n| RegistryOp::RemoveAgent(AgentId(format!("a{n}"))))
        .collect();
    assert!(model.apply(&keys, &mut mirror, &batch, REMOVED_IDS_KEPT));
    mem.apply(&batch).unwrap();
    let more = vec![RegistryOp::RemoveAgent(AgentId("last".into()))];
    model.apply(&keys, &mut mirror, &more, REMOVED_IDS_KEPT);
    mem.apply(&more).unwrap();
    let d = decode(&keys, model.kv.clone()).unwrap();
    assert_eq!(d.snapshot, mem.snapshot());
    assert_eq!(d.snapshot.removed_agents.len(), REMOVED_IDS_KEPT);
}

#[test]
fn a_journal_cut_at_any_step_reads_back_as_all_or_nothing() {
    let keys = keys();
    let mut model = Model::default();
    let mut mirror = Mirror::default();
    let mut mem = MemRegistry::new();
    let first = vec![
        RegistryOp::PutTask(task(1, 1, 1)),
        RegistryOp::PutAgent(agent(1, "h")),
    ];
    model.apply(&keys, &mut mirror, &first, REMOVED_IDS_KEPT);
    mem.apply(&first).unwrap();
    let before = mem.snapshot();
    let mut batch = big_batch(5_000);
    batch.push(RegistryOp::RemoveTask {
        framework_id: task(1, 1, 1).framework_id,
        task_id: task(1, 1, 1).info.task_id,
    });
    batch.push(RegistryOp::RemoveAgent(AgentId("m-A1".into())));
    model.record = true;
    assert!(
        model.apply(&keys, &mut mirror, &batch, REMOVED_IDS_KEPT),
        "takes the journal"
    );
    mem.apply(&batch).unwrap();
    let after = mem.snapshot();
    assert!(model.steps.len() > 4, "{} steps", model.steps.len());
    let mut seen_after = false;
    for (i, kv) in model.steps.iter().enumerate() {
        let d = decode(&keys, kv.clone()).unwrap();
        if d.snapshot == after {
            seen_after = true;
        } else {
            assert!(!seen_after, "step {i}: the batch came undone");
            assert_eq!(d.snapshot, before, "step {i}: part of the batch is visible");
        }
    }
    assert!(seen_after);
    assert!(model
        .steps
        .last()
        .unwrap()
        .keys()
        .all(|k| !k.starts_with(&keys.journal_prefix())));
}
