//! Elections on a real etcd (a private one per test): one leader at a time, the others know
//! it; a resigned or expired leader is replaced and its writes are fenced; a leader cut from
//! etcd stops believing it leads before etcd lets another win; etcd restarts under a leader.
//! Timing is printed, never asserted; only the order of events is.

use master::ha::{Coordinator, Term};
use master::registry::RegistryError;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tessera_etcd::testing::{EtcdServer, TcpProxy};
use tessera_etcd::{require_etcd, EtcdCoordinator, EtcdOptions};
use tokio::sync::watch;

fn opts(endpoints: Vec<String>) -> EtcdOptions {
    let mut o = EtcdOptions::new(endpoints, "c1");
    o.lease_ttl = Duration::from_secs(2);
    o
}

/// Campaigns in the background; returns the term when won, and the leader it observes.
fn campaign(
    coord: EtcdCoordinator,
    addr: &'static str,
) -> (
    tokio::task::JoinHandle<(Term, Instant)>,
    watch::Receiver<Option<String>>,
) {
    let (tx, rx) = watch::channel(None);
    let h = tokio::spawn(async move {
        let term = coord.campaign(addr, &tx).await.expect("campaign");
        (term, Instant::now())
    });
    (h, rx)
}

/// Waits until `valid_until` is `None` or in the past; returns when that was seen.
async fn ended(mut v: watch::Receiver<Option<Instant>>) -> Instant {
    loop {
        let until = *v.borrow_and_update();
        match until {
            None => return Instant::now(),
            Some(u) if u <= Instant::now() => return u,
            Some(u) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(u.into()) => return u,
                    r = v.changed() => if r.is_err() { return Instant::now() },
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_the_other_follows_and_takes_over_when_it_resigns() {
    require_etcd!();
    let etcd = EtcdServer::start().await.unwrap();
    let a = EtcdCoordinator::connect(opts(etcd.endpoints()))
        .await
        .unwrap();
    let b = EtcdCoordinator::connect(opts(etcd.endpoints()))
        .await
        .unwrap();
    let (ha, _rxa) = campaign(a.clone(), "a:1");
    let (ta, _) = ha.await.unwrap();
    let (hb, mut rxb) = campaign(b.clone(), "b:1");
    rxb.wait_for(|l| l.as_deref() == Some("a:1")).await.unwrap();
    assert!(!hb.is_finished());
    let Term {
        fence,
        mut registry,
        guard,
        valid_until,
    } = ta;
    registry.apply(&[]).await.unwrap();
    assert!(valid_until.borrow().is_some());
    // Resign: the other wins without waiting for the lease to expire.
    let resigned = Instant::now();
    drop(guard);
    let (tb, elected) = hb.await.unwrap();
    println!(
        "election after resign: {:?} (ttl 2 s)",
        elected.duration_since(resigned)
    );
    assert!(tb.fence > fence);
    assert_eq!(rxb.borrow().as_deref(), Some("b:1"));
    // The deposed term's writes are fenced, even while it believes it still leads.
    let op = master::registry::RegistryOp::RemoveAgent(proto::AgentId("x".into()));
    assert!(matches!(
        registry.apply(&[op]).await,
        Err(RegistryError::Fenced)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_etcd_steps_down_before_another_is_elected() {
    require_etcd!();
    let etcd = EtcdServer::start().await.unwrap();
    let up: SocketAddr = format!("127.0.0.1:{}", etcd.client_port()).parse().unwrap();
    let proxy = TcpProxy::start(up).await.unwrap();
    let a = EtcdCoordinator::connect(opts(vec![proxy.endpoint()]))
        .await
        .unwrap();
    let b = EtcdCoordinator::connect(opts(etcd.endpoints()))
        .await
        .unwrap();
    let (ha, _rxa) = campaign(a, "a:1");
    let (ta, _) = ha.await.unwrap();
    let (hb, mut rxb) = campaign(b, "b:1");
    rxb.wait_for(|l| l.as_deref() == Some("a:1")).await.unwrap();
    let cut = Instant::now();
    proxy.blackhole(true);
    let a_ended = tokio::spawn(ended(ta.valid_until.clone()));
    let (tb, b_elected) = hb.await.unwrap();
    let a_ended = a_ended.await.unwrap();
    println!(
        "cut at 0: leader's term ended at {:?}, other elected at {:?} (ttl 2 s): lease expiry",
        a_ended.duration_since(cut),
        b_elected.duration_since(cut)
    );
    assert!(a_ended < b_elected, "the cut leader stopped leading first");
    assert!(tb.fence > ta.fence);
    let mut ta = ta;
    assert!(matches!(
        ta.registry.apply(&[]).await,
        Err(RegistryError::Fenced)
    ));
    // Healed, its writes are still fenced by etcd.
    proxy.blackhole(false);
    let op = master::registry::RegistryOp::RemoveAgent(proto::AgentId("x".into()));
    let r = ta.registry.apply(&[op]).await;
    assert!(matches!(r, Err(RegistryError::Fenced)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarts_under_a_leader() {
    require_etcd!();
    let mut etcd = EtcdServer::start().await.unwrap();
    let mut o = opts(etcd.endpoints());
    o.lease_ttl = Duration::from_secs(3);
    let a = EtcdCoordinator::connect(o.clone()).await.unwrap();
    let (ha, _rxa) = campaign(a.clone(), "a:1");
    let (mut ta, _) = ha.await.unwrap();
    ta.registry.load().await.unwrap();

    // Down for about a second (well under the TTL).
    etcd.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    etcd.restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = ta.valid_at(Instant::now());
    let wrote = ta.registry.apply(&[]).await;
    println!("etcd down ~1 s under a 3 s lease: term kept = {kept}, write = {wrote:?}");
    if kept {
        wrote.expect("a kept term writes");
    } else {
        // Stepped down cleanly: its writes are fenced or refused.
        assert!(wrote.is_err());
    }

    // Down for longer than the TTL: the term ends; a leader is elected once etcd is back.
    etcd.kill();
    let down = Instant::now();
    let a_ended = ended(ta.valid_until.clone()).await;
    println!(
        "etcd down: the term ended {:?} after",
        a_ended.duration_since(down)
    );
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(down.elapsed())).await;
    drop(ta);
    let (hb, _rxb) = campaign(a.clone(), "a:2");
    etcd.restart().await.unwrap();
    let back = Instant::now();
    let (tb, elected) = hb.await.unwrap();
    println!(
        "re-elected {:?} after etcd came back (fence {})",
        elected.duration_since(back),
        tb.fence
    );
    assert!(tb.valid_at(Instant::now()));
}
