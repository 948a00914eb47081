//! The registry on a real etcd (a private one per test): the same batches applied to
//! `MemRegistry` and to the etcd registry read back equal; big batches go through the journal
//! and stay atomic; loads page at one revision; a prefix of another cluster or a newer schema
//! is refused.

mod common;

use common::*;
use master::ha::{Coordinator, HaError, Term};
use master::registry::{MemRegistry, Registry, RegistryError, RegistryOp, Snapshot};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use std::time::{Duration, Instant};
use tessera_etcd::testing::EtcdServer;
use tessera_etcd::{require_etcd, EtcdCoordinator, EtcdOptions};
use tokio::sync::watch;

fn opts(etcd: &EtcdServer, cluster: &str) -> EtcdOptions {
    let mut o = EtcdOptions::new(etcd.endpoints(), cluster);
    o.lease_ttl = Duration::from_secs(2);
    o
}

async fn lead(coord: &EtcdCoordinator) -> Term {
    let (tx, _rx) = watch::channel(None);
    coord
        .campaign("127.0.0.1:5050", &tx)
        .await
        .expect("elected")
}

fn cut(mut s: Snapshot, kept: usize) -> Snapshot {
    let n = s.removed_agents.len().saturating_sub(kept);
    s.removed_agents.drain(..n);
    let n = s.removed_frameworks.len().saturating_sub(kept);
    s.removed_frameworks.drain(..n);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_batches_as_the_memory_registry_read_back_equal() {
    require_etcd!();
    let etcd = EtcdServer::start().await.unwrap();
    let kept = 3;
    let coord = EtcdCoordinator::connect(opts(&etcd, "c1"))
        .await
        .unwrap()
        .with_removed_kept(kept);
    let mut term = lead(&coord).await;
    assert!(term.registry.load().await.unwrap().is_empty());
    let mut mem = MemRegistry::new();

    // Hand-picked batches, then random ones (from a fixed seed).
    let mut batches: Vec<Vec<RegistryOp>> = vec![
        vec![
            RegistryOp::PutFramework(framework(1, "a")),
            RegistryOp::PutAgent(agent(1, "h")),
            RegistryOp::PutTask(task(1, 1, 1)),
            RegistryOp::PutTask(task(1, 2, 1)),
            RegistryOp::KillRequested {
                framework_id: task(1, 1, 1).framework_id,
                task_id: task(1, 1, 1).info.task_id,
            },
            RegistryOp::EndTask {
                framework_id: task(1, 2, 1).framework_id,
                task_id: task(1, 2, 1).info.task_id,
                status: status(1, 2),
            },
            RegistryOp::PutBlob {
                digest: digest(1),
                kind: proto::BlobKind::Module,
                size: 5,
                owner: Some(owner(2)),
            },
        ],
        vec![RegistryOp::PutBlob {
            digest: digest(1),
            kind: proto::BlobKind::Module,
            size: 5,
            owner: Some(owner(0)),
        }],
        (0..6)
            .map(|n| RegistryOp::RemoveAgent(proto::AgentId(format!("gone{n}"))))
            .collect(),
    ];
    let mut runner = TestRunner::deterministic();
    let strat = proptest::collection::vec(arb_op(), 1..30);
    for _ in 0..40 {
        batches.push(strat.new_tree(&mut runner).unwrap().current());
    }
    let (mut t_etcd, mut t_mem) = (Duration::ZERO, Duration::ZERO);
    for b in &batches {
        let t = Instant::now();
        term.registry.apply(b).await.unwrap();
        t_etcd += t.elapsed();
        let t = Instant::now();
        Registry::apply(&mut mem, b).unwrap();
        t_mem += t.elapsed();
        assert_eq!(
            term.registry.load().await.unwrap(),
            cut(mem.snapshot(), kept)
        );
    }
    let n = batches.len() as u32;
    println!(
        "apply per batch ({n} batches of 1-30 ops): etcd {:?}, memory {:?} ({:.0}x)",
        t_etcd / n,
        t_mem / n,
        t_etcd.as_secs_f64() / t_mem.as_secs_f64().max(1e-9)
    );
    // The blobs are listed without leadership too.
    assert_eq!(coord.blobs().await.unwrap(), mem.snapshot().blobs);
    // A new term of another master reads the same.
    drop(term);
    let other = EtcdCoordinator::connect(opts(&etcd, "c1"))
        .await
        .unwrap()
        .with_removed_kept(kept);
    let mut term = lead(&other).await;
    assert_eq!(
        term.registry.load().await.unwrap(),
        cut(mem.snapshot(), kept)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_batches_are_atomic_and_loads_page_at_one_revision() {
    require_etcd!();
    let etcd = EtcdServer::start().await.unwrap();
    let coord = EtcdCoordinator::connect(opts(&etcd, "c1")).await.unwrap();
    let mut term = lead(&coord).await;
    let mut mem = MemRegistry::new();
    // 5,000 ops (and a third as many kill marks): the journal path.
    let batch = big_batch(5_000);
    let t = Instant::now();
    term.registry.apply(&batch).await.unwrap();
    println!(
        "a {}-op batch through the journal: {:?}",
        batch.len(),
        t.elapsed()
    );
    Registry::apply(&mut mem, &batch).unwrap();
    // 5,000 more tasks in batches of 100 (the fast path): 10,000 tasks in all.
    for chunk in 0..50u32 {
        let b: Vec<RegistryOp> = (0..100)
            .map(|i| RegistryOp::PutTask(task(2, chunk * 100 + i, 1)))
            .collect();
        term.registry.apply(&b).await.unwrap();
        Registry::apply(&mut mem, &b).unwrap();
    }
    let t = Instant::now();
    let got = term.registry.load().await.unwrap();
    println!("load of {} tasks: {:?}", got.tasks.len(), t.elapsed());
    assert_eq!(got.tasks.len(), 10_000);
    assert_eq!(got, mem.snapshot());
    // No journal is left behind.
    let mut c = coord.client().clone();
    let j = c
        .get(
            coord.keys().journal_prefix(),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(j.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_journal_is_replayed_and_an_uncommitted_one_ignored() {
    require_etcd!();
    let etcd = EtcdServer::start().await.unwrap();
    let coord = EtcdCoordinator::connect(opts(&etcd, "c1")).await.unwrap();
    let keys = coord.keys().clone();
    let mut c = coord.client().clone();
    // As left by a master that died mid-journal: one batch committed, one not.
    let put = |ops: Vec<tessera_etcd::registry::plan::KvOp>| postcard::to_allocvec(&ops).unwrap();
    let done = tessera_etcd::registry::plan::KvOp::Put {
        key: keys.agent(&proto::AgentId("m-A1".into())),
        value: postcard::to_allocvec(&agent(1, "h")).unwrap(),
    };
    let torn = tessera_etcd::registry::plan::KvOp::Put {
        key: keys.agent(&proto::AgentId("m-A2".into())),
        value: postcard::to_allocvec(&agent(2, "h")).unwrap(),
    };
    let d1 = keys.journal_batch(1, 0);
    let d2 = keys.journal_batch(1, 1);
    c.put(format!("{d1}0000"), put(vec![done]), None)
        .await
        .unwrap();
    c.put(format!("{d1}commit"), vec![], None).await.unwrap();
    c.put(format!("{d2}0000"), put(vec![torn]), None)
        .await
        .unwrap();
    let mut term = lead(&coord).await;
    let got = term.registry.load().await.unwrap();
    assert_eq!(got.agents, vec![agent(1, "h")]);
    let j = c
        .get(
            keys.journal_prefix(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert!(j.kvs().is_empty(), "journals are cleared");
    assert!(
        c.get(keys.agent(&proto::AgentId("m-A1".into())), None)
            .await
            .unwrap()
            .kvs()
            .len()
            == 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_prefix_or_a_newer_schema_is_refused() {
    require_etcd!();
    let etcd = EtcdServer::start().await.unwrap();
    let coord = EtcdCoordinator::connect(opts(&etcd, "c1")).await.unwrap();
    let mut term = lead(&coord).await;
    term.registry.load().await.unwrap(); // stamps the prefix
    drop(term);
    let mut o = opts(&etcd, "c2");
    o.prefix = "/tessera/c1".into();
    let e = EtcdCoordinator::connect(o).await.unwrap_err();
    assert!(matches!(e, HaError::Config(_)), "{e}");
    println!("another cluster: {e}");
    let mut c = coord.client().clone();
    c.put(
        coord.keys().schema_version(),
        99u32.to_le_bytes().to_vec(),
        None,
    )
    .await
    .unwrap();
    let e = EtcdCoordinator::connect(opts(&etcd, "c1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            HaError::Registry(RegistryError::NewerSchema { found: 99, .. })
        ),
        "{e}"
    );
    println!("newer schema: {e}");
    // A term already running sees it on load too.
    let mut term = lead(&coord).await;
    assert!(matches!(
        term.registry.load().await,
        Err(RegistryError::NewerSchema { .. })
    ));
}

#[tokio::test]
async fn bad_endpoints_and_tls_material_are_clear_errors() {
    let e = EtcdCoordinator::connect(EtcdOptions::new(vec!["http://127.0.0.1:1".into()], "c"))
        .await
        .unwrap_err();
    assert!(matches!(e, HaError::Unavailable(_)), "{e}");
    println!("unreachable: {e}");
    let e = EtcdCoordinator::connect(EtcdOptions::new(vec!["not a url".into()], "c"))
        .await
        .unwrap_err();
    println!("bad url: {e}");
    let e = EtcdCoordinator::connect(EtcdOptions::new(vec![], "c"))
        .await
        .unwrap_err();
    assert!(matches!(e, HaError::Config(_)), "{e}");
    let mut o = EtcdOptions::new(vec!["https://127.0.0.1:1".into()], "c");
    o.tls = Some(tessera_etcd::EtcdTls {
        ca_pem: "not a certificate".into(),
        identity: None,
    });
    let e = EtcdCoordinator::connect(o).await.unwrap_err();
    assert!(matches!(e, HaError::Config(_)), "{e}");
    println!("bad CA: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_and_password_auth() {
    require_etcd!();
    let ca = net::tls::ClusterCa::generate("etcd-test").unwrap();
    let server = ca.issue("etcd", &["localhost", "127.0.0.1"]).unwrap();
    let client = ca.issue("master", &[]).unwrap();
    let stranger = net::tls::ClusterCa::generate("other")
        .unwrap()
        .issue("master", &[])
        .unwrap();
    let etcd = EtcdServer::start_tls(tessera_etcd::testing::ServerTls {
        ca_pem: ca.cert_pem.clone(),
        cert_pem: server.cert_pem.clone(),
        key_pem: server.key_pem.clone(),
        client: (client.cert_pem.clone(), client.key_pem.clone()),
    })
    .await
    .unwrap();
    let tls = |id: &net::tls::Identity| {
        let mut o = opts(&etcd, "c1");
        o.tls = Some(tessera_etcd::EtcdTls {
            ca_pem: ca.cert_pem.clone(),
            identity: Some((id.cert_pem.clone(), id.key_pem.clone())),
        });
        o
    };
    // A certificate from another CA is refused (a clear error, no panic).
    let e = EtcdCoordinator::connect(tls(&stranger)).await.unwrap_err();
    println!("foreign client certificate: {e}");
    // Plain http to a TLS endpoint list is a configuration error.
    let mut o = tls(&client);
    o.endpoints = vec![format!("http://127.0.0.1:{}", etcd.client_port())];
    assert!(matches!(
        EtcdCoordinator::connect(o).await,
        Err(HaError::Config(_))
    ));
    let coord = EtcdCoordinator::connect(tls(&client)).await.unwrap();
    let mut term = lead(&coord).await;
    term.registry
        .apply(&[RegistryOp::PutAgent(agent(1, "h"))])
        .await
        .unwrap();
    drop(term);

    // Password auth on top: a root user, auth enabled; the wrong password is refused.
    let mut c = coord.client().clone();
    c.user_add("root", "pw", None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();
    let mut o = tls(&client);
    o.user = Some(("root".into(), "wrong".into()));
    let e = EtcdCoordinator::connect(o.clone()).await.unwrap_err();
    assert!(matches!(e, HaError::Config(_)), "{e}");
    println!("wrong password: {e}");
    o.user = Some(("root".into(), "pw".into()));
    let coord = EtcdCoordinator::connect(o).await.unwrap();
    let mut term = lead(&coord).await;
    assert_eq!(
        term.registry.load().await.unwrap().agents,
        vec![agent(1, "h")]
    );
}
