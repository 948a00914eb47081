//! The master's defences: mutual TLS refuses peers of another CA, and a peer that sends garbage,
//! an oversized frame or the wrong protocol version loses its own connection and nothing else.

use cluster::Rng as XorShift;
use master::driver::close_code;
use net::tls::{ClusterCa, PeerTls, MASTER_SERVER_NAME};
use proto::frame::DEFAULT_MAX_FRAME;
use proto::identity::PeerKind;
use proto::{Filters, Message, Role, TaskState, PROTOCOL_VERSION};
use sdk::{Event, Scheduler, TaskBuilder};
use std::collections::BTreeSet;
use std::time::Duration;
use tessera_tests::*;

/// A raw QUIC connection to the master with valid cluster certificates (TLS done, nothing sent).
async fn raw_conn(cluster: &LocalCluster) -> (quinn::Endpoint, quinn::Connection) {
    raw_conn_as(cluster, PeerKind::Framework).await
}

/// [`raw_conn`] with a certificate of `kind`.
async fn raw_conn_as(
    cluster: &LocalCluster,
    kind: PeerKind,
) -> (quinn::Endpoint, quinn::Connection) {
    let tls = cluster.peer_tls(kind, "raw-peer").unwrap();
    let endpoint = net::link::client_endpoint(&tls, cluster.config.tuning).unwrap();
    let conn = endpoint
        .connect(cluster.master_addr, MASTER_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    (endpoint, conn)
}

/// A raw connection past the `Hello` handshake as `role`.
async fn raw_link(
    cluster: &LocalCluster,
    role: Role,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let kind = match role {
        Role::Agent => PeerKind::Agent,
        Role::Scheduler => PeerKind::Framework,
        Role::Standby => PeerKind::Master,
    };
    let (ep, conn) = raw_conn_as(cluster, kind).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        role,
    };
    net::codec::write_one(&mut send, &hello).await.unwrap();
    let ack = net::codec::read_one(&mut recv, DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    assert!(matches!(ack, Some(Message::HelloAck { .. })), "{ack:?}");
    (ep, conn, send, recv)
}

/// Waits (a few seconds at most) for the master to close `conn`; returns the close reason after
/// checking its application error code.
async fn closed_with(conn: &quinn::Connection, code: u32) -> String {
    let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the master did not close the connection");
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(code),
                "closed with {reason:?}"
            );
            reason
        }
        other => panic!("expected an application close, got {other}"),
    }
}

/// Writes `bytes` on a fresh stream of `conn` (write errors ignored: the master may already have
/// shut the connection). The stream is returned unfinished, to be kept open: the master must act
/// on what it read, not on the end of the stream.
async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) -> quinn::SendStream {
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    send
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_another_ca_are_refused() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let foreign = ClusterCa::generate("some-other-ca").unwrap();

    // A scheduler with a certificate of another CA (trusting the real one).
    let mut opts = cluster.scheduler_options("intruder", "*").unwrap();
    opts.tls = PeerTls {
        ca_pem: cluster.ca.cert_pem.clone(),
        identity: foreign.issue("intruder", &[]).unwrap(),
        crls: vec![],
    };
    opts.subscribe_timeout = Duration::from_secs(3);
    let refused = tokio::time::timeout(Duration::from_secs(10), Scheduler::connect(opts))
        .await
        .expect("connect hung");
    let err = refused.err().expect("a foreign certificate was accepted");
    tracing::info!(error = %err, "foreign scheduler refused");
    assert!(err.to_string().contains("certificate"), "{err}");

    // A scheduler entirely of another CA (it cannot verify the master either).
    let mut opts = cluster.scheduler_options("stranger", "*").unwrap();
    opts.tls = PeerTls {
        ca_pem: foreign.cert_pem.clone(),
        identity: foreign.issue("stranger", &[]).unwrap(),
        crls: vec![],
    };
    opts.subscribe_timeout = Duration::from_secs(3);
    let refused = tokio::time::timeout(Duration::from_secs(10), Scheduler::connect(opts))
        .await
        .expect("connect hung");
    assert!(refused.is_err(), "a foreign CA's scheduler got in");

    // An agent with a foreign certificate never registers; a legitimate one does.
    let mut rogue = cluster.agent_options("rogue", res(4.0, 4.0), None).unwrap();
    rogue.tls.identity = foreign.issue("rogue", &[]).unwrap();
    cluster.spawn_agent(rogue);
    cluster.add_agent("legit", res(1.0, 1.0)).unwrap();
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let events = events_for(&mut sched, Duration::from_secs(2)).await;
    let hosts: BTreeSet<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Offers(o) => Some(o.iter().map(|o| o.hostname.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["legit".to_owned()]),
        "offers came from {hosts:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_peers_lose_only_their_own_connection() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "agent1", res(1.0, 1.0)).await;
    // A well-behaved framework, subscribed throughout.
    let mut witness = Scheduler::connect(cluster.scheduler_options("witness", "*").unwrap())
        .await
        .unwrap();
    let held = offer_from(&mut witness, "agent1").await;

    // Garbage instead of a Hello: a frame that does not decode...
    let (_ep, conn) = raw_conn(&cluster).await;
    let mut garbage = vec![0, 0, 0, 8];
    garbage.extend_from_slice(&[0xff; 8]);
    let _stream = send_raw(&conn, &garbage).await;
    let why = closed_with(&conn, close_code::PROTOCOL).await;
    assert!(why.contains("malformed"), "{why}");
    // ...and a length prefix far over the limit.
    let (_ep, conn) = raw_conn(&cluster).await;
    let _stream = send_raw(&conn, b"\xde\xad\xbe\xefGET / HTTP/1.1\r\n\r\n").await;
    let why = closed_with(&conn, close_code::PROTOCOL).await;
    assert!(why.contains("exceeds"), "{why}");

    // A valid Hello, then a frame announcing 100 MiB.
    let (_ep, conn, mut send, _recv) = raw_link(&cluster, Role::Scheduler).await;
    send.write_all(&(100u32 << 20).to_be_bytes()).await.unwrap();
    let why = closed_with(&conn, close_code::PROTOCOL).await;
    assert!(why.contains("exceeds"), "{why}");

    // A valid Hello, then a frame of the right length that does not decode.
    let (_ep, conn, mut send, _recv) = raw_link(&cluster, Role::Agent).await;
    let mut rng = XorShift::new(42);
    let body: Vec<u8> = (0..64).map(|_| 0x80 | rng.next_u64() as u8).collect();
    send.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    send.write_all(&body).await.unwrap();
    let why = closed_with(&conn, close_code::PROTOCOL).await;
    assert!(why.contains("malformed"), "{why}");

    // A well-formed message the role may not send.
    let (_ep, conn, mut send, _recv) = raw_link(&cluster, Role::Scheduler).await;
    let register = Message::Register {
        executors: Vec::new(),
        agent_id: None,
        info: proto::AgentInfo {
            datasets: Vec::new(),
            reservations: vec![],
            hostname: "impostor".into(),
            resources: res(64.0, 64.0),
            attributes: vec![],
        },
        running: vec![],
    };
    net::codec::write_one(&mut send, &register).await.unwrap();
    let why = closed_with(&conn, close_code::PROTOCOL).await;
    assert!(why.contains("protocol violation"), "{why}");

    // The wrong protocol version: an Error saying so, then a close with the version code.
    let (_ep, conn) = raw_conn(&cluster).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Message::Hello {
        version: PROTOCOL_VERSION + 98,
        role: Role::Scheduler,
    };
    net::codec::write_one(&mut send, &hello).await.unwrap();
    let answer = net::codec::read_one(&mut recv, DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    match answer {
        Some(Message::Error { message }) => {
            let wanted = format!("protocol version {}", PROTOCOL_VERSION + 98);
            assert!(message.contains(&wanted), "{message}")
        }
        other => panic!("expected an Error, got {other:?}"),
    }
    let why = closed_with(&conn, close_code::VERSION).await;
    assert!(why.contains("version"), "{why}");

    // Raw UDP garbage at the master's port: empty, tiny, and packet-sized datagrams, some
    // dressed as QUIC long-header packets.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..64usize {
        let len = [0, 1, 7, 40, 1200, 1350, 1500][i % 7];
        let mut dgram: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if i % 2 == 0 && len > 5 {
            dgram[0] = 0xc0 | (dgram[0] & 0x0f);
            dgram[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        udp.send_to(&dgram, cluster.master_addr).unwrap();
    }

    // After all that the cluster works: the witness was never disconnected, and a new
    // framework subscribes and runs a task.
    let events = events_for(&mut witness, Duration::from_millis(200)).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Disconnected(_) | Event::Rescind(_))),
        "{events:?}"
    );
    witness
        .decline(
            vec![held.id.clone()],
            Filters {
                refuse_seconds: 60.0,
            },
        )
        .unwrap();
    let mut fresh = Scheduler::connect(cluster.scheduler_options("fresh", "*").unwrap())
        .await
        .unwrap();
    let hello = fresh.upload_module(wasm_examples::HELLO).await.unwrap();
    let offer = offer_from(&mut fresh, "agent1").await;
    let task = TaskBuilder::new("hello", hello).build(&offer);
    fresh
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    let done = wait_terminal(&mut fresh, "hello").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    assert!(done.stdout_tail.contains("Hello from Tessera!"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_and_slots_come_back() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_config();
    cfg.max_connections = 2;
    let cluster = LocalCluster::start(cfg, dir.path()).await.unwrap();
    let first = Scheduler::connect(cluster.scheduler_options("one", "*").unwrap())
        .await
        .unwrap();
    let second = Scheduler::connect(cluster.scheduler_options("two", "*").unwrap())
        .await
        .unwrap();
    let third = Scheduler::connect(cluster.scheduler_options("three", "*").unwrap()).await;
    assert!(third.is_err(), "a third connection must be refused");
    drop(first);
    // The slot frees once the master has seen the connection close.
    let mut again = None;
    for _ in 0..50 {
        if let Ok(s) = Scheduler::connect(cluster.scheduler_options("four", "*").unwrap()).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "a freed slot is usable again");
    drop(second);
    cluster.shutdown().await;
}

/// Reads the one `Error` the master answers a refused `Hello` with.
async fn refused_hello(cluster: &LocalCluster, kind: PeerKind, role: Role) -> String {
    let (_ep, conn) = raw_conn_as(cluster, kind).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        role,
    };
    net::codec::write_one(&mut send, &hello).await.unwrap();
    let answer = net::codec::read_one(&mut recv, DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    let why = closed_with(&conn, close_code::FORBIDDEN).await;
    match answer {
        Some(Message::Error { message }) => assert_eq!(message, why),
        other => panic!("expected an Error, got {other:?}"),
    }
    why
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_grants_only_its_own_kind() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let why = refused_hello(&cluster, PeerKind::Framework, Role::Agent).await;
    assert!(
        why.contains("framework certificate (framework/raw-peer) may not register as an agent"),
        "{why}"
    );
    let why = refused_hello(&cluster, PeerKind::Agent, Role::Scheduler).await;
    assert!(
        why.contains("agent certificate (agent/raw-peer) may not subscribe a framework"),
        "{why}"
    );

    // A certificate of the cluster's own CA that states no identity is refused before Hello.
    let anonymous = PeerTls {
        ca_pem: cluster.ca.cert_pem.clone(),
        identity: cluster.ca.issue("anonymous", &[]).unwrap(),
        crls: vec![],
    };
    let ep = net::link::client_endpoint(&anonymous, cluster.config.tuning).unwrap();
    // The master closes it right after the TLS handshake: the client sees that either while
    // connecting or just after.
    let why = match ep
        .connect(cluster.master_addr, MASTER_SERVER_NAME)
        .unwrap()
        .await
    {
        Ok(conn) => closed_with(&conn, close_code::FORBIDDEN).await,
        Err(quinn::ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(close_code::FORBIDDEN)
            );
            String::from_utf8_lossy(&close.reason).into_owned()
        }
        Err(other) => panic!("expected an application close, got {other}"),
    };
    assert!(why.contains("spiffe:// identities"), "{why}");

    // Through the SDK, the refusal is the error a scheduler gets.
    let opts = cluster.scheduler_options("fw", "*").unwrap();
    let mut as_agent = opts.clone();
    as_agent.tls = cluster.peer_tls(PeerKind::Agent, "fw").unwrap();
    as_agent.subscribe_timeout = Duration::from_secs(3);
    let err = Scheduler::connect(as_agent).await.err().expect("refused");
    assert!(
        err.to_string().contains("may not subscribe a framework"),
        "{err}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_belongs_to_its_principal() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "node1", res(4.0, 4.0)).await;
    let mut alice = Scheduler::connect(cluster.scheduler_options("alice", "*").unwrap())
        .await
        .unwrap();
    let alice_id = alice.framework_id().clone();
    let offer = offer_from(&mut alice, "node1").await;
    let spinner = run_spinner(&mut alice, &offer, "alice-task", res(1.0, 0.25)).await;

    // Alice holds the rest of node1 in an offer.
    alice.revive().unwrap();
    let alices = wait_for(&mut alice, Duration::from_secs(10), |e| match e {
        Event::Offers(o) => o.first().cloned(),
        _ => None,
    })
    .await;

    // Mallory, another principal, cannot subscribe under Alice's id.
    let mut opts = cluster.scheduler_options("mallory", "*").unwrap();
    opts.framework.id = Some(alice_id.clone());
    opts.subscribe_timeout = Duration::from_secs(3);
    let err = Scheduler::connect(opts).await.err().expect("refused");
    assert!(
        err.to_string().contains("belongs to another principal"),
        "{err}"
    );

    // Under her own framework she can neither accept Alice's offers nor kill Alice's tasks.
    let mut mallory = Scheduler::connect(cluster.scheduler_options("mallory", "*").unwrap())
        .await
        .unwrap();
    assert_ne!(mallory.framework_id(), &alice_id);
    let stolen = TaskBuilder::new("stolen", spinner).build(&alices);
    mallory
        .accept(vec![alices.id.clone()], vec![stolen], Filters::default())
        .unwrap();
    mallory.kill(proto::TaskId::from("alice-task")).unwrap();
    let errors: Vec<String> = events_for(&mut mallory, Duration::from_secs(2))
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::Error(m) => Some(m),
            _ => None,
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|m| m.contains("is not an offer to framework")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|m| m.contains("unknown task alice-task")),
        "{errors:?}"
    );
    // Alice's task runs on, hers to kill.
    alice.kill(proto::TaskId::from("alice-task")).unwrap();
    let end = wait_terminal(&mut alice, "alice-task").await;
    assert_eq!(end.state, TaskState::Killed);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_belong_to_their_certificates() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "node1", res(4.0, 4.0)).await;
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let offer = offer_from(&mut sched, "node1").await;
    run_spinner(&mut sched, &offer, "t1", res(1.0, 0.25)).await;
    let agent_info = proto::AgentInfo {
        datasets: Vec::new(),
        reservations: vec![],
        hostname: "impostor".into(),
        resources: res(64.0, 64.0),
        attributes: vec![],
    };

    // Another agent certificate registering with node1's id is refused; node1 stays.
    let (_ep, conn, mut send, _recv) = raw_link(&cluster, Role::Agent).await;
    let register = Message::Register {
        executors: Vec::new(),
        agent_id: Some(offer.agent_id.clone()),
        info: agent_info.clone(),
        running: vec![],
    };
    net::codec::write_one(&mut send, &register).await.unwrap();
    let why = closed_with(&conn, close_code::PROTOCOL).await;
    assert!(why.contains("belongs to agent \"node1\""), "{why}");

    // An agent reporting a task the master placed elsewhere gets an error; nothing is forwarded.
    let (_ep, conn, send, recv) = raw_link(&cluster, Role::Agent).await;
    let mut send = net::MessageWriter::new(send);
    let mut recv = net::MessageReader::new(recv, DEFAULT_MAX_FRAME);
    let register = Message::Register {
        executors: Vec::new(),
        agent_id: None,
        info: agent_info,
        running: vec![],
    };
    send.send(&register).await.unwrap();
    assert!(matches!(
        recv.recv().await.unwrap(),
        Some(Message::Registered { .. })
    ));
    let forged = proto::TaskStatus {
        task_id: proto::TaskId::from("t1"),
        framework_id: sched.framework_id().clone(),
        agent_id: None,
        state: TaskState::Finished,
        reason: None,
        message: "forged".into(),
        stdout_tail: "all is well".into(),
        stderr_tail: String::new(),
        uuid: Some(proto::UpdateId("forged".into())),
    };
    send.send(&Message::StatusUpdate { status: forged })
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match recv.recv().await.unwrap() {
                Some(Message::Error { message }) => return message,
                Some(_) => continue,
                None => panic!("closed without an answer"),
            }
        }
    })
    .await
    .expect("no answer to a forged update");
    assert!(answer.contains("was not placed on agent"), "{answer}");
    drop(conn);
    let seen = events_for(&mut sched, Duration::from_secs(1)).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::Update(s) if s.task_id.as_str() == "t1" && s.state == TaskState::Finished)),
        "{seen:?}"
    );
    sched.kill(proto::TaskId::from("t1")).unwrap();
    assert_eq!(
        wait_terminal(&mut sched, "t1").await.state,
        TaskState::Killed
    );
    cluster.shutdown().await;
}

/// A raw scheduler connection of framework principal `name`, past `Hello`.
async fn raw_framework(cluster: &LocalCluster, name: &str) -> (quinn::Endpoint, quinn::Connection) {
    let tls = cluster.peer_tls(PeerKind::Framework, name).unwrap();
    let ep = net::link::client_endpoint(&tls, cluster.config.tuning).unwrap();
    let link = net::link::Link::connect(&ep, cluster.master_addr, Role::Scheduler)
        .await
        .unwrap();
    let conn = link.conn.clone();
    std::mem::forget(link); // keep the control stream open for the test's life
    (ep, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_belong_to_their_uploaders() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let (_ea, alice) = raw_framework(&cluster, "alice").await;
    let digest = net::link::upload_blob(&alice, proto::BlobKind::File, b"alice's secret")
        .await
        .unwrap();
    let dest = dir.path().join("fetched");
    // Alice may fetch her blob back.
    net::link::fetch_blob(&alice, digest, &dest, 1 << 20)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"alice's secret");
    // Mallory may not, and the refusal is the same as for a blob that does not exist.
    let (_em, mallory) = raw_framework(&cluster, "mallory").await;
    let theirs = net::link::fetch_blob(&mallory, digest, &dest, 1 << 20).await;
    let missing = net::link::fetch_blob(&mallory, proto::Digest::of(b"none"), &dest, 1 << 20).await;
    let text = |r: Result<u64, net::link::LinkError>| r.expect_err("refused").to_string();
    let (theirs, missing) = (text(theirs), text(missing));
    assert!(theirs.starts_with("blob refused: unknown blob"), "{theirs}");
    assert_eq!(
        theirs.replace(&format!("{digest:?}"), "D"),
        missing.replace(&format!("{:?}", proto::Digest::of(b"none")), "D")
    );
    // Uploading the same bytes still sends them all and gives Mallory her own copy.
    net::link::upload_blob(&mallory, proto::BlobKind::File, b"alice's secret")
        .await
        .unwrap();
    net::link::fetch_blob(&mallory, digest, &dest, 1 << 20)
        .await
        .unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_the_acls_forbid_is_refused() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_config();
    config.master.acls = master::config::parse(
        "[[acls.register_frameworks]]\nprincipals = [\"analytics-team\"]\nroles = [\"analytics\"]\n",
    )
    .unwrap()
    .acls;
    let cluster = LocalCluster::start(config, dir.path()).await.unwrap();
    let mut opts = cluster.scheduler_options("web-team", "analytics").unwrap();
    opts.subscribe_timeout = Duration::from_secs(3);
    let err = Scheduler::connect(opts).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("principal web-team may not register frameworks in role \"analytics\""),
        "{err}"
    );
    let ok = Scheduler::connect(
        cluster
            .scheduler_options("analytics-team", "analytics")
            .unwrap(),
    )
    .await;
    assert!(ok.is_ok());
    cluster.shutdown().await;
}
