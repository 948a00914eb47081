//! Agents and schedulers among several masters: a real master (the leader) and stand-ins that
//! do not lead ([`StandIn`]: a real QUIC server with the cluster's certificates answering
//! `NotLeader` and closing with the not-leader code). Each peer must end on the leader,
//! whatever its list's order, and run tasks there; a leader that steps down is left for the
//! one it names, the framework keeping its id.

use net::masters::MasterSet;
use proto::{Filters, TaskState};
use sdk::{Event, Scheduler, TaskBuilder};
use std::time::Duration;
use tessera_tests::*;

/// `a,b` as a master list.
fn masters(list: &[std::net::SocketAddr]) -> MasterSet {
    MasterSet::new(list.iter().map(|a| a.to_string())).unwrap()
}

/// Runs the hello guest as `name` on an offer from agent `host`, to its end.
async fn hello_on(sched: &mut Scheduler, host: &str, name: &str) -> proto::TaskStatus {
    let offer = offer_from(sched, host).await;
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let task = TaskBuilder::new(name, hello)
        .resources(res_mib(0.1, 32))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    wait_terminal(sched, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_find_the_leader_whatever_the_order_of_their_list() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let leader = cluster.master_addr;
    let standby = StandIn::for_cluster(&cluster, StandInMode::Standby(Some(leader.to_string())));

    // One agent lists the standby first, the other the leader first.
    let a1 = cluster
        .agent_options("a1", res(1.0, 1.0), None)
        .unwrap()
        .with_masters(masters(&[standby.addr, leader]));
    cluster.spawn_agent(a1);
    let a2 = cluster
        .agent_options("a2", res(1.0, 1.0), None)
        .unwrap()
        .with_masters(masters(&[leader, standby.addr]));
    cluster.spawn_agent(a2);

    let opts = cluster
        .scheduler_options("fw", "*")
        .unwrap()
        .with_masters(masters(&[standby.addr, leader]));
    let mut sched = Scheduler::connect(opts).await.unwrap();
    // Both agents are offered (an offer of each, however they are batched), and run a task.
    let mut offers = std::collections::BTreeMap::new();
    while offers.len() < 2 {
        for o in next_offers(&mut sched).await {
            offers.insert(o.hostname.clone(), o);
        }
    }
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    for (host, offer) in &offers {
        let task = TaskBuilder::new(&format!("on-{host}"), hello)
            .resources(res_mib(0.1, 32))
            .build(offer);
        sched
            .accept(vec![offer.id.clone()], vec![task], Filters::default())
            .unwrap();
    }
    wait_all(
        &mut sched,
        &[
            ("on-a1", TaskState::Finished),
            ("on-a2", TaskState::Finished),
        ],
    )
    .await;
    // The agent and the scheduler that listed the standby first were sent on by it.
    assert!(standby.hellos() >= 2, "{} Hellos", standby.hellos());
    sched.teardown().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_wait_out_an_election_then_follow_the_redirect() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let leader = cluster.master_addr;
    // Nobody leads yet: the only master the peers know says so, again and again.
    let standby = StandIn::for_cluster(&cluster, StandInMode::Standby(None));
    let agent = cluster
        .agent_options("a1", res(1.0, 1.0), None)
        .unwrap()
        .with_masters(masters(&[standby.addr]));
    cluster.spawn_agent(agent);
    let opts = cluster
        .scheduler_options("fw", "*")
        .unwrap()
        .with_masters(masters(&[standby.addr]));
    let connecting = tokio::spawn(Scheduler::connect(opts));

    // Both keep asking (a short pause between passes, not an exponential one that would
    // leave them waiting long after the election).
    standby.wait_hellos(8).await;
    assert!(
        !connecting.is_finished(),
        "no leader: nothing to subscribe with"
    );
    // The election ends: the standby now names the leader, which neither peer listed.
    standby.set_mode(StandInMode::Standby(Some(leader.to_string())));
    let elected = std::time::Instant::now();

    let mut sched = connecting.await.unwrap().unwrap();
    // Reported, not asserted: from the leader's being named to the subscription.
    eprintln!("leader named to subscribed: {:?}", elected.elapsed());
    let status = hello_on(&mut sched, "a1", "after-election").await;
    assert_eq!(status.state, TaskState::Finished, "{status:?}");
    sched.teardown().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stepping_down_is_left_for_the_one_it_names() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let leader = cluster.master_addr.to_string();
    // Each accepts its first peer as a leader, then steps down (not-leader close) and from
    // then on names the real master.
    let old_for_agent = StandIn::for_cluster(
        &cluster,
        StandInMode::StepDown {
            leader: leader.clone(),
            answer: false,
        },
    );
    let old_for_sched = StandIn::for_cluster(
        &cluster,
        StandInMode::StepDown {
            leader: leader.clone(),
            answer: true,
        },
    );
    let agent = cluster
        .agent_options("a1", res(1.0, 1.0), None)
        .unwrap()
        .with_masters(masters(&[old_for_agent.addr, cluster.master_addr]));
    cluster.spawn_agent(agent);
    let opts = cluster
        .scheduler_options("fw", "*")
        .unwrap()
        .with_masters(masters(&[old_for_sched.addr, cluster.master_addr]));
    // Subscribed by the old leader, which steps down right after.
    let mut sched = Scheduler::connect(opts).await.unwrap();
    let fid = sched.framework_id().clone();
    assert_eq!(fid.as_str(), "stepped-down-fw");

    // The scheduler redials (the old leader first: it names the new one) and re-subscribes
    // under its id; the agent, cut off before it registered, registers with the new leader.
    wait_for(&mut sched, Duration::from_secs(30), |e| match e {
        Event::Disconnected(_) => Some(()),
        _ => None,
    })
    .await;
    let lost = std::time::Instant::now();
    let again = wait_for(&mut sched, Duration::from_secs(30), |e| match e {
        Event::Subscribed { framework_id } => Some(framework_id.clone()),
        _ => None,
    })
    .await;
    assert_eq!(again, fid);
    // Reported, not asserted: from the step-down to the re-subscription with the leader.
    eprintln!("step-down to re-subscribed: {:?}", lost.elapsed());
    let status = hello_on(&mut sched, "a1", "after-step-down").await;
    assert_eq!(status.state, TaskState::Finished, "{status:?}");
    assert_eq!(status.framework_id, fid);
    // Each old leader saw its peer twice: as leader, then as the standby that sent it on.
    assert_eq!(old_for_sched.hellos(), 2);
    assert_eq!(old_for_agent.hellos(), 2);
    sched.teardown().await.unwrap();
    cluster.shutdown().await;
}
