//! Faults between agents and the master, made with a UDP proxy in front of the master: a crashed
//! agent (nothing more on the wire, no QUIC close), a link that drops for a while and comes back,
//! and a lossy link.

use proto::{Filters, Offer, OfferId, Reason, TaskState, TaskStatus};
use sdk::{Event, Scheduler, TaskBuilder};
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_tests::proxy::{Faults, UdpProxy};
use tessera_tests::*;

fn no_filter() -> Filters {
    Filters {
        refuse_seconds: 0.0,
    }
}

/// The next event, with a generous hang guard.
async fn next(sched: &mut Scheduler) -> Event {
    wait_for(sched, Duration::from_secs(30), |e| Some(e.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_agent_has_its_offers_rescinded_and_its_tasks_lost() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let (proxy, doomed) = agent_behind_proxy(&mut cluster, "doomed", res(2.0, 1.0), 1).await;
    cluster.add_agent("healthy", res(1.0, 0.5)).unwrap();
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let spinner = sched.upload_module(wasm_examples::SPINNER).await.unwrap();
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();

    // One offer of each agent (they may come in one batch or two).
    let mut first: BTreeMap<String, Offer> = BTreeMap::new();
    while first.len() < 2 {
        if let Event::Offers(offers) = next(&mut sched).await {
            first.extend(offers.into_iter().map(|o| (o.hostname.clone(), o)));
        }
    }
    let healthy = first.remove("healthy").unwrap();
    let offer = first.remove("doomed").unwrap();
    let doomed_id = offer.agent_id.clone();
    let task = TaskBuilder::new("sleeper", spinner)
        .args(["sleep"])
        .resources(res_mib(0.5, 128))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], no_filter())
        .unwrap();

    // Run until the task is RUNNING and we hold an offer of the rest of its agent.
    let mut running = false;
    let mut outstanding: Option<OfferId> = None;
    while !running || outstanding.is_none() {
        match next(&mut sched).await {
            Event::Update(s) if s.task_id.as_str() == "sleeper" => {
                assert!(!s.state.is_terminal(), "{s:?}");
                running |= s.state == TaskState::Running;
            }
            Event::Offers(offers) => {
                for o in offers {
                    assert_eq!(o.hostname, "doomed", "{o:?}");
                    outstanding = Some(o.id);
                }
            }
            _ => {}
        }
    }
    let outstanding = outstanding.unwrap();

    // The machine dies: nothing more reaches the master, not even a QUIC close.
    proxy.blackhole(true);
    cluster.crash_agent(doomed);

    // The master notices by the idle timeout, rescinds the agent's offers and reports the
    // task TASK_UNREACHABLE; once the re-register timeout passes too, it is TASK_GONE.
    let mut rescinded = Vec::new();
    let mut unreachable = 0;
    let lost = loop {
        match next(&mut sched).await {
            Event::Rescind(id) => rescinded.push(id),
            Event::Update(s)
                if s.task_id.as_str() == "sleeper" && s.state == TaskState::Unreachable =>
            {
                unreachable += 1;
            }
            Event::Update(s) if s.task_id.as_str() == "sleeper" => break s,
            Event::Update(s) => panic!("unexpected update {s:?}"),
            _ => {}
        }
    };
    assert_eq!(unreachable, 1, "TASK_UNREACHABLE once, before the end");
    assert_eq!(lost.state, TaskState::Gone, "{lost:?}");
    assert_eq!(lost.reason, Some(Reason::AgentLost), "{lost:?}");
    assert_eq!(lost.agent_id.as_ref(), Some(&doomed_id));
    assert_eq!(
        rescinded,
        [outstanding],
        "exactly the dead agent's offer, before the loss"
    );

    // The healthy agent's offer was left alone and still works.
    let task = TaskBuilder::new("hello", hello).build(&healthy);
    sched
        .accept(vec![healthy.id.clone()], vec![task], Filters::default())
        .unwrap();
    let done = wait_terminal(&mut sched, "hello").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_re_registers_after_a_dropped_link_and_keeps_its_tasks() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_config();
    // The link is down longer than the idle timeout (the master notices), but the agent gets
    // all the time it needs to come back.
    cfg.master.agent_reregister_timeout = Duration::from_secs(30);
    let mut cluster = LocalCluster::start(cfg, dir.path()).await.unwrap();
    let (proxy, _) = agent_behind_proxy(&mut cluster, "flaky", res(1.0, 1.0), 2).await;
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let spinner = sched.upload_module(wasm_examples::SPINNER).await.unwrap();
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let offer = offer_from(&mut sched, "flaky").await;
    let agent_id = offer.agent_id.clone();
    let sleeper = TaskBuilder::new("sleeper", spinner)
        .args(["sleep"])
        .resources(res_mib(0.25, 64))
        .build(&offer);
    // Times out while the link is down: its terminal update must wait for the link.
    let timed = TaskBuilder::new("timed", spinner)
        .args(["sleep"])
        .resources(res_mib(0.25, 64))
        .timeout(Duration::from_secs(1))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![sleeper, timed], no_filter())
        .unwrap();

    let mut updates: BTreeMap<String, Vec<TaskStatus>> = BTreeMap::new();
    let count = |u: &BTreeMap<String, Vec<TaskStatus>>, t: &str, st: TaskState| {
        u.get(t)
            .map_or(0, |v| v.iter().filter(|s| s.state == st).count())
    };
    let mut outstanding = None;
    while count(&updates, "sleeper", TaskState::Running) == 0
        || count(&updates, "timed", TaskState::Running) == 0
        || outstanding.is_none()
    {
        match next(&mut sched).await {
            Event::Update(s) => updates.entry(s.task_id.0.clone()).or_default().push(s),
            Event::Offers(o) => outstanding = o.into_iter().next().map(|o| o.id),
            _ => {}
        }
    }

    // Cut the link until the master has noticed (it rescinds the agent's offer).
    proxy.blackhole(true);
    loop {
        match next(&mut sched).await {
            Event::Rescind(id) => {
                assert_eq!(Some(id), outstanding);
                break;
            }
            Event::Update(s) => panic!("an update crossed a dead link: {s:?}"),
            _ => {}
        }
    }

    // Restore it: the agent redials and re-registers under the same id with its tasks, and
    // the update queued meanwhile is delivered.
    proxy.blackhole(false);
    let mut offer = None;
    while offer.is_none() || count(&updates, "timed", TaskState::Failed) == 0 {
        match next(&mut sched).await {
            Event::Update(s) => updates.entry(s.task_id.0.clone()).or_default().push(s),
            Event::Offers(o) => offer = o.into_iter().next(),
            _ => {}
        }
    }
    let offer = offer.unwrap();
    assert_eq!(offer.agent_id, agent_id, "re-registered under a new id");
    let timed = updates["timed"].last().unwrap();
    assert_eq!(timed.reason, Some(Reason::Timeout), "{timed:?}");

    // The other task kept running on the agent: it can be killed, and a new task runs.
    sched.kill("sleeper".into()).unwrap();
    let task = TaskBuilder::new("hello", hello).build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    while count(&updates, "sleeper", TaskState::Killed) == 0
        || count(&updates, "hello", TaskState::Finished) == 0
    {
        if let Event::Update(s) = next(&mut sched).await {
            updates.entry(s.task_id.0.clone()).or_default().push(s);
        }
    }

    // Nothing was lost, and every task ended exactly once.
    for (task, statuses) in &updates {
        let states: Vec<TaskState> = statuses.iter().map(|s| s.state).collect();
        assert!(!states.contains(&TaskState::Lost), "{task}: {states:?}");
        let terminal = states.iter().filter(|s| s.is_terminal()).count();
        assert_eq!(terminal, 1, "{task}: {states:?}");
    }
    let killed = updates["sleeper"].last().unwrap();
    assert_eq!(killed.reason, Some(Reason::Killed), "{killed:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_finish_over_lossy_links_with_one_terminal_update_each() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    // The agent's link loses, duplicates and reorders; the scheduler's loses.
    let agent_link = Faults {
        drop: 0.1,
        duplicate: 0.05,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(20),
        ..Faults::default()
    };
    let agent_proxy = UdpProxy::start(cluster.master_addr, agent_link, 7)
        .await
        .unwrap();
    let sched_proxy = UdpProxy::start(cluster.master_addr, Faults::lossy(0.1), 11)
        .await
        .unwrap();
    let opts = cluster
        .agent_options("lossy", res(2.0, 1.0), Some(agent_proxy.addr()))
        .unwrap();
    cluster.spawn_agent(opts);
    let mut opts = cluster.scheduler_options("fw", "*").unwrap();
    opts.masters = sched_proxy.addr().into();
    let mut sched = Scheduler::connect(opts).await.unwrap();
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let offer = offer_from(&mut sched, "lossy").await;

    let names: Vec<String> = (0..8).map(|i| format!("hello-{i}")).collect();
    let tasks = names
        .iter()
        .map(|n| TaskBuilder::new(n, hello).args([n.as_str()]).build(&offer))
        .collect();
    sched
        .accept(vec![offer.id.clone()], tasks, Filters::default())
        .unwrap();

    let mut updates: BTreeMap<String, Vec<TaskStatus>> = BTreeMap::new();
    let terminal = |u: &BTreeMap<String, Vec<TaskStatus>>| {
        u.values()
            .filter(|v| v.iter().any(|s| s.state.is_terminal()))
            .count()
    };
    while terminal(&updates) < names.len() {
        if let Event::Update(s) = next(&mut sched).await {
            updates.entry(s.task_id.0.clone()).or_default().push(s);
        }
    }
    // Linger for a few status-retry periods: resent updates must not surface again.
    for ev in events_for(&mut sched, Duration::from_millis(1500)).await {
        if let Event::Update(s) = ev {
            updates.entry(s.task_id.0.clone()).or_default().push(s);
        }
    }

    assert_eq!(updates.len(), names.len(), "{:?}", updates.keys());
    for name in &names {
        let statuses = &updates[name];
        let states: Vec<TaskState> = statuses.iter().map(|s| s.state).collect();
        // TASK_STARTING only while the module was fetched and compiled (an agent's first
        // tasks); later ones go straight to RUNNING.
        let rest: Vec<TaskState> = states
            .iter()
            .copied()
            .skip_while(|s| *s == TaskState::Starting)
            .collect();
        assert!(states.len() - rest.len() <= 1, "{name}: {states:?}");
        assert_eq!(rest, [TaskState::Running, TaskState::Finished], "{name}");
        let done = statuses.last().unwrap();
        assert!(
            done.stdout_tail
                .contains(&format!("Hello from Tessera! {name}")),
            "{done:?}"
        );
    }
    let (a, s) = (agent_proxy.stats(), sched_proxy.stats());
    tracing::info!(agent = ?a, scheduler = ?s, "proxy stats");
    assert!(a.dropped > 0 && s.dropped > 0, "{a:?} {s:?}");
    cluster.shutdown().await;
}

/// Whether the master still holds task `task` live, as an operator sees it (a direct link).
async fn live(ops: &mut net::link::Link, task: &str) -> bool {
    let ask = proto::Message::Reconcile {
        task_ids: vec![proto::TaskId::from(task)],
    };
    ops.send(&ask).await.unwrap();
    loop {
        match ops.recv().await.unwrap() {
            Some(proto::Message::Update { status }) if status.task_id.as_str() == task => {
                return !status.state.is_terminal()
            }
            Some(proto::Message::Error { message }) if message.contains("no live task") => {
                return false
            }
            Some(_) => continue,
            None => panic!("the master closed the operator's link"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teardown_reaches_the_master_over_a_lossy_link() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "node1", res(2.0, 1.0)).await;
    let ops_tls = cluster
        .peer_tls(proto::identity::PeerKind::Operator, "ops")
        .unwrap();
    let ops_ep = net::link::client_endpoint(&ops_tls, cluster.config.tuning).unwrap();
    let mut ops = net::link::Link::connect(&ops_ep, cluster.master_addr, proto::Role::Scheduler)
        .await
        .unwrap();
    for round in 0..3 {
        // A proxy per scheduler: it forwards one client's datagrams.
        let proxy = UdpProxy::start(cluster.master_addr, Faults::lossy(0.3), 23 + round)
            .await
            .unwrap();
        let mut opts = cluster.scheduler_options("lossy-fw", "*").unwrap();
        opts.masters = proxy.addr().into();
        // Kept for an hour if the teardown were lost: only a delivered teardown ends it now.
        opts.framework.failover_timeout_ms = 3_600_000;
        let mut sched = Scheduler::connect(opts).await.unwrap();
        let spinner = sched.upload_module(wasm_examples::SPINNER).await.unwrap();
        let offer = offer_from(&mut sched, "node1").await;
        let name = format!("spin-{round}");
        let task = TaskBuilder::new(&name, spinner)
            .resources(res_mib(0.5, 64))
            .build(&offer);
        sched
            .accept(vec![offer.id.clone()], vec![task], no_filter())
            .unwrap();
        wait_state(&mut sched, &name, TaskState::Running).await;
        sched.teardown().await.unwrap();
        // The master ends the framework's task: the teardown got through the lossy link.
        let mut ended = false;
        for _ in 0..100 {
            if !live(&mut ops, &name).await {
                ended = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            ended,
            "round {round}: the torn-down framework's task still runs"
        );
        tracing::info!(round, stats = ?proxy.stats(), "proxy");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_started_before_its_master_is_reachable_redials_until_it_is() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "node1", res(1.0, 1.0)).await;
    // Nothing gets through at first: to the scheduler the master is not up yet.
    let proxy = UdpProxy::start(cluster.master_addr, Faults::default(), 31)
        .await
        .unwrap();
    proxy.blackhole(true);
    let mut opts = cluster.scheduler_options("early-fw", "*").unwrap();
    opts.masters = proxy.addr().into();
    opts.max_backoff = Duration::from_millis(500);
    opts.connect_timeout = Duration::from_secs(60);
    // The master comes up after more than one handshake's idle timeout (2 s in fast_config),
    // so the first dial fails and only a redial can succeed.
    let connecting = tokio::spawn(Scheduler::connect(opts));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !connecting.is_finished(),
        "connect gave up while the master was down"
    );
    proxy.blackhole(false);
    let mut sched = connecting
        .await
        .unwrap()
        .expect("subscribed once the master is up");
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let offer = offer_from(&mut sched, "node1").await;
    let task = TaskBuilder::new("late", hello).build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], no_filter())
        .unwrap();
    let done = wait_terminal(&mut sched, "late").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    sched.teardown().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_master_is_given_up_on_at_the_connect_deadline() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "node1", res(1.0, 1.0)).await;
    let proxy = UdpProxy::start(cluster.master_addr, Faults::default(), 32)
        .await
        .unwrap();
    proxy.blackhole(true);
    let mut opts = cluster.scheduler_options("fw", "*").unwrap();
    opts.masters = proxy.addr().into();
    opts.connect_timeout = Duration::from_secs(3);
    let err = Scheduler::connect(opts)
        .await
        .err()
        .expect("nothing to reach");
    assert!(matches!(err, sdk::SdkError::Unreachable { .. }), "{err:?}");
    assert!(!err.is_refusal(), "{err:?}");
    cluster.shutdown().await;
}
