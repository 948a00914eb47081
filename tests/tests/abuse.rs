//! A tenant abusing the master costs itself, not the cluster: stalled uploads, a reconcile of
//! 500,000 ids and a connection full of announced 1 MiB frames each leave a normal `hello`
//! running as usual and the master's memory bounded. Loopback only, bounded in count and time.

use net::tls::MASTER_SERVER_NAME;
use proto::identity::PeerKind;
use proto::{BlobKind, Digest, Filters, Message, Role, TaskState, PROTOCOL_VERSION};
use sdk::{Event, Scheduler, TaskBuilder};
use std::time::{Duration, Instant};
use tessera_tests::*;

/// A connection past `Hello` with a framework certificate of `name`.
async fn attacker(cluster: &LocalCluster, name: &str) -> (quinn::Endpoint, quinn::Connection) {
    let tls = cluster.peer_tls(PeerKind::Framework, name).unwrap();
    let ep = net::link::client_endpoint(&tls, cluster.config.tuning).unwrap();
    let conn = ep
        .connect(cluster.master_addr, MASTER_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    (ep, conn)
}

/// Opens the control stream and says `Hello` as a scheduler (the answer is not awaited).
async fn hello(conn: &quinn::Connection) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        role: Role::Scheduler,
    };
    net::codec::write_one(&mut send, &hello).await.unwrap();
    (send, recv)
}

/// A connection with `ep`'s certificate past `Hello` (`Ok`), or the master's reason for
/// refusing it (`Err`), however early the refusal comes.
async fn admitted(
    ep: &quinn::Endpoint,
    cluster: &LocalCluster,
) -> Result<(quinn::Connection, (quinn::SendStream, quinn::RecvStream)), String> {
    let why = |e: quinn::ConnectionError| match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            String::from_utf8_lossy(&c.reason).into_owned()
        }
        other => other.to_string(),
    };
    let conn = ep
        .connect(cluster.master_addr, MASTER_SERVER_NAME)
        .unwrap()
        .await
        .map_err(why)?;
    let Ok((mut send, mut recv)) = conn.open_bi().await else {
        return Err(why(conn.closed().await));
    };
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        role: Role::Scheduler,
    };
    let _ = net::codec::write_one(&mut send, &hello).await;
    match net::codec::read_one(&mut recv, proto::frame::DEFAULT_MAX_FRAME).await {
        Ok(Some(Message::HelloAck { .. })) => Ok((conn, (send, recv))),
        _ => Err(why(conn.closed().await)),
    }
}

/// A normal tenant's `hello` end to end: subscribe, upload, launch, finish. Returns how long it
/// took (reported, never compared with a threshold).
async fn hello_runs(cluster: &LocalCluster, name: &str) -> Duration {
    let start = Instant::now();
    let mut sched = Scheduler::connect(cluster.scheduler_options(name, "*").unwrap())
        .await
        .unwrap();
    let module = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let offer = next_offers(&mut sched).await.remove(0);
    let task = TaskBuilder::new("hello", module)
        .resources(res_mib(0.1, 64))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    let end = wait_terminal(&mut sched, "hello").await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    sched.teardown().await.unwrap();
    start.elapsed()
}

/// The tests measuring this process's memory run one at a time: a cluster started by a test
/// running beside would be counted too.
static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Resident memory of this process (master and agents run in it), from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_hold_up_only_their_own_tenant() {
    trace();
    let _alone = MEMORY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "node1", res(2.0, 2.0)).await;
    let baseline = hello_runs(&cluster, "baseline").await;

    // Four uploads announcing 1 MiB that stop after 64 bytes.
    let (_ep, conn) = attacker(&cluster, "staller").await;
    let _control = hello(&conn).await;
    let mut stalled = Vec::new();
    for i in 0..4u8 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let announce = Message::UploadBlob {
            digest: Digest::of(&[i]),
            kind: BlobKind::File,
            size: 1 << 20,
        };
        net::codec::write_one(&mut send, &announce).await.unwrap();
        send.write_all(&[0u8; 64]).await.unwrap();
        stalled.push((send, recv));
    }
    let during = hello_runs(&cluster, "victim").await;
    tracing::info!(?baseline, ?during, "hello beside four stalled uploads");

    // Each stalled upload is answered with an error once it has been silent too long.
    for (_send, mut recv) in stalled {
        let answer = tokio::time::timeout(
            Duration::from_secs(30),
            net::codec::read_one(&mut recv, proto::frame::DEFAULT_MAX_FRAME),
        )
        .await
        .expect("a stalled upload was never dropped");
        match answer {
            Ok(Some(Message::BlobError { message })) => {
                assert!(message.contains("stalled"), "{message}")
            }
            other => panic!("expected a BlobError, got {other:?}"),
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_of_half_a_million_ids_is_one_error() {
    trace();
    let _alone = MEMORY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "node1", res(2.0, 2.0)).await;
    let opts = cluster.scheduler_options("flooder", "*").unwrap();
    let mut flooder = Scheduler::connect(opts).await.unwrap();
    let before = rss_bytes();
    // 500,000 copies of one id: a frame just under the 1 MiB limit.
    flooder
        .reconcile(vec![proto::TaskId::from("t"); 500_000])
        .unwrap();
    let answer = wait_for(&mut flooder, Duration::from_secs(10), |e| match e {
        Event::Error(m) => Some(m.clone()),
        Event::Update(_) => panic!("a refused reconcile must not answer per id"),
        _ => None,
    })
    .await;
    assert!(answer.contains("at most 10000"), "{answer}");
    let grown = rss_bytes().saturating_sub(before);
    tracing::info!(grown, "memory after the reconcile");
    // Decoding the one 1 MiB frame into 500,000 ids is the cost (about 50 MB, transient): bounded
    // by the frame limit, not by what the peer asks for.
    assert!(grown < 96 << 20, "the master grew by {grown} bytes");
    flooder.teardown().await.unwrap(); // it held the agent's offer
    hello_runs(&cluster, "victim").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_announcing_large_frames_cost_only_what_they_send() {
    trace();
    let _alone = MEMORY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "node1", res(2.0, 2.0)).await;
    let before = rss_bytes();
    // Two connections, each opening as many streams as the master grants (up to 255 asked),
    // each announcing a 1 MiB frame and sending 16 bytes of it.
    let mut held = Vec::new();
    for c in 0..2 {
        let (ep, conn) = attacker(&cluster, &format!("hoarder{c}")).await;
        let control = hello(&conn).await;
        let mut opened = 0;
        for _ in 0..255 {
            let Ok(Ok((mut send, recv))) =
                tokio::time::timeout(Duration::from_millis(200), conn.open_bi()).await
            else {
                break; // the master grants no more streams
            };
            send.write_all(&((1u32 << 20) - 1).to_be_bytes())
                .await
                .unwrap();
            send.write_all(&[0u8; 16]).await.unwrap();
            held.push((send, recv));
            opened += 1;
        }
        assert!(
            opened <= net::tls::SERVER_MAX_STREAMS as usize,
            "{opened} streams"
        );
        held.push(control);
        tracing::info!(opened, "streams held open");
        std::mem::forget(ep);
        std::mem::forget(conn);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_bytes().saturating_sub(before);
    tracing::info!(grown, "memory with the streams held");
    assert!(grown < 32 << 20, "the master grew by {grown} bytes");
    hello_runs(&cluster, "victim").await;
    drop(held);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_holds_a_bounded_number_of_connections() {
    trace();
    let _alone = MEMORY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "node1", res(2.0, 2.0)).await;
    let tls = cluster.peer_tls(PeerKind::Framework, "hog").unwrap();
    let ep = net::link::client_endpoint(&tls, cluster.config.tuning).unwrap();
    let mut held = Vec::new();
    let refused = loop {
        match admitted(&ep, &cluster).await {
            Ok(admitted) => held.push(admitted),
            Err(why) => break why,
        }
        assert!(held.len() <= 64, "more than 64 connections admitted");
    };
    assert_eq!(held.len(), 64);
    assert!(
        refused.contains("already holds 64 connections"),
        "{refused}"
    );
    // Every other tenant still gets in.
    hello_runs(&cluster, "victim").await;
    // Slots come back as connections close (the master notices the close at once).
    let (gone, _) = held.pop().unwrap();
    gone.close(0u32.into(), b"bye");
    gone.closed().await;
    let mut admitted_again = false;
    for _ in 0..50 {
        // The master may not have seen the close yet: refused, and its slot comes back.
        if let Ok(conn) = admitted(&ep, &cluster).await {
            held.push(conn);
            admitted_again = true;
            break;
        }
    }
    assert!(admitted_again, "a freed slot is usable again");
    cluster.shutdown().await;
}
