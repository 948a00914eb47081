//! Several masters in this process sharing one coordinator (the in-memory one: elections and a
//! registry fenced to the current term, as etcd gives them; `cli/tests/e2e/master_failover.rs`
//! runs the same on a real etcd with real processes). Real QUIC, real agents and wasmtime.
//!
//! What is checked: a standby sends peers to the leader; agents and schedulers given every
//! master reach the leader; a standby mirrors the leader's blobs; when the leader is deposed it
//! stops serving (its peers are closed with NOT_LEADER and find the new leader), the new leader
//! recovers the registry (the framework keeps its id, its earlier upload still launches, its
//! running task stays its own), and the deposed master becomes a standby that names the new one.

use master::allocator::drf::Drf;
use master::driver::{MasterOptions, MasterServer};
use master::ha::memory::MemCoordinator;
use net::link::{Link, LinkError};
use net::masters::MasterSet;
use net::tls::{ClusterCa, PeerTls, DEFAULT_PEER_VALIDITY};
use proto::identity::{PeerId, PeerKind};
use proto::{AgentInfo, Role, TaskState};
use sdk::{Event, Scheduler, SchedulerOptions, TaskBuilder};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tessera_tests::{fast_config, res, wait_all, wait_for, wait_state};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One master of the group.
struct RunningMaster {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<()>,
}

/// Starts master `name` of the group sharing `coordinator`.
fn start_master(
    ca: &ClusterCa,
    coordinator: &MemCoordinator,
    dir: &Path,
    name: &str,
) -> RunningMaster {
    let cfg = fast_config();
    let mut opts = MasterOptions::new(
        (Ipv4Addr::LOCALHOST, 0).into(),
        ca.cert_pem.clone(),
        ca.issue_master().unwrap(),
        dir.join(name),
    );
    opts.config = cfg.master.clone();
    opts.config.run_id = name.to_owned();
    opts.tuning = cfg.tuning;
    // Bound first: the advertised address is the one it got.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    opts.listen = addr;
    let server = MasterServer::bind_shared(
        opts,
        Box::new(Drf::new()),
        Arc::new(coordinator.clone()),
        addr.to_string(),
    )
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("master failed");
    });
    RunningMaster {
        addr,
        stop: Some(stop),
        join,
    }
}

fn peer_tls(ca: &ClusterCa, kind: PeerKind, name: &str) -> PeerTls {
    PeerTls {
        ca_pem: ca.cert_pem.clone(),
        identity: ca
            .issue_peer(&PeerId::new(kind, name).unwrap(), DEFAULT_PEER_VALIDITY)
            .unwrap(),
        crls: Vec::new(),
    }
}

async fn leader_is(coordinator: &MemCoordinator, addr: SocketAddr) {
    for _ in 0..200 {
        if coordinator.leader().map(|(_, a)| a) == Some(addr.to_string()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} was not elected: {:?}", coordinator.leader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_follow_the_leader_across_a_deposition() {
    tessera_tests::trace();
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("tessera-ha-test").unwrap();
    let coordinator = MemCoordinator::new();
    let a = start_master(&ca, &coordinator, dir.path(), "ma");
    leader_is(&coordinator, a.addr).await;
    let b = start_master(&ca, &coordinator, dir.path(), "mb");

    // The standby answers a Hello with the leader's address.
    let probe = net::link::client_endpoint(
        &peer_tls(&ca, PeerKind::Framework, "probe"),
        Default::default(),
    )
    .unwrap();
    let refused = loop {
        match Link::connect(&probe, b.addr, Role::Scheduler).await {
            Err(LinkError::NotLeader { leader: Some(l) }) => break l,
            Err(LinkError::NotLeader { leader: None }) => {
                // It has not heard who leads yet.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("a standby must send peers to the leader: {:?}", other.err()),
        }
    };
    assert_eq!(refused, a.addr.to_string());

    // Peers given the standby first still reach the leader.
    let masters = MasterSet::new([b.addr.to_string(), a.addr.to_string()]).unwrap();
    let cfg = fast_config();
    let mut agent_opts = agent::driver::AgentOptions::for_masters(
        masters.clone(),
        peer_tls(&ca, PeerKind::Agent, "worker"),
        dir.path().join("worker"),
        AgentInfo {
            datasets: Vec::new(),
            reservations: vec![],
            hostname: "worker".into(),
            resources: res(4.0, 1.0),
            attributes: vec![],
        },
    );
    agent_opts.tuning = cfg.tuning;
    agent_opts.status_retry = cfg.status_retry;
    agent_opts.max_backoff = Duration::from_millis(300);
    let (agent_stop, agent_stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(async move {
        agent::driver::run(agent_opts, async {
            let _ = agent_stopped.await;
        })
        .await
        .expect("agent failed");
    });
    let mut opts =
        SchedulerOptions::for_masters(masters, peer_tls(&ca, PeerKind::Framework, "fw"), "fw", "*");
    opts.tuning = cfg.tuning;
    opts.max_backoff = Duration::from_millis(300);
    let mut sched = Scheduler::connect(opts).await.expect("subscribed");
    let framework = sched.framework_id().clone();
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let spinner = sched.upload_module(wasm_examples::SPINNER).await.unwrap();
    let offer = wait_for(&mut sched, Duration::from_secs(10), |e| match e {
        Event::Offers(o) => o.first().cloned(),
        _ => None,
    })
    .await;
    assert!(offer.id.0.starts_with("mat1-"), "{:?}", offer.id);
    let tasks = vec![
        TaskBuilder::new("before", hello)
            .resources(res(0.5, 0.0625))
            .build(&offer),
        TaskBuilder::new("spinning", spinner)
            .resources(res(0.5, 0.0625))
            .build(&offer),
    ];
    sched
        .accept(vec![offer.id.clone()], tasks, Default::default())
        .unwrap();
    wait_all(
        &mut sched,
        &[
            ("before", TaskState::Finished),
            ("spinning", TaskState::Running),
        ],
    )
    .await;

    // The standby mirrors both blobs from the leader.
    for digest in [hello, spinner] {
        let copy = dir.path().join("mb/blobs").join(digest.to_hex());
        for _ in 0..200 {
            if copy.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(copy.exists(), "{} was not mirrored", digest.to_hex());
    }

    // The leader's term ends (as when its lease expires): it stops serving, the standby takes
    // over, and every peer finds it.
    coordinator.depose();
    leader_is(&coordinator, b.addr).await;
    let offer = wait_for(&mut sched, Duration::from_secs(20), |e| match e {
        Event::Offers(o) => o.iter().find(|o| o.id.0.starts_with("mbt")).cloned(),
        _ => None,
    })
    .await;
    assert_eq!(
        sched.framework_id(),
        &framework,
        "the framework keeps its id"
    );
    // Its upload from before the failover still launches on the new leader.
    let task = TaskBuilder::new("after", hello)
        .resources(res(0.5, 0.0625))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Default::default())
        .unwrap();
    let status = wait_for(&mut sched, Duration::from_secs(30), |e| match e {
        Event::Update(s) if s.task_id.as_str() == "after" && s.state.is_terminal() => {
            Some(s.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(status.state, TaskState::Finished, "{status:?}");
    // The task running across the failover is still the framework's: it can kill it.
    sched.kill("spinning".into()).unwrap();
    wait_state(&mut sched, "spinning", TaskState::Killed).await;

    // The deposed master campaigns again as a standby that names the new leader.
    let named = loop {
        match Link::connect(&probe, a.addr, Role::Scheduler).await {
            Err(LinkError::NotLeader { leader: Some(l) }) => break l,
            Err(LinkError::NotLeader { leader: None }) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("the deposed master must be a standby: {:?}", other.err()),
        }
    };
    assert_eq!(named, b.addr.to_string());

    drop(sched);
    let _ = agent_stop.send(());
    let _ = agent.await;
    for mut m in [a, b] {
        let _ = m.stop.take().map(|s| s.send(()));
        let _ = m.join.await;
    }
}
