//! Deterministic tests of the scheduler core: messages in, messages and events out, no sockets.

use super::*;
use proto::{AgentId, Resources, TaskState, UpdateId};

fn framework(id: Option<&str>) -> FrameworkInfo {
    FrameworkInfo {
        priority: 0,
        name: "fw".into(),
        role: "*".into(),
        principal: "fw".into(),
        id: id.map(FrameworkId::from),
        failover_timeout_ms: 60_000,
    }
}

fn sent(core: &mut SchedulerCore) -> Vec<Message> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

fn events(core: &mut SchedulerCore) -> Vec<Event> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

fn subscribed_msg(id: &str) -> Message {
    Message::Subscribed {
        framework_id: FrameworkId::from(id),
        heartbeat_interval_ms: 5000,
    }
}

/// A core connected and subscribed as `F1`, with its outputs drained.
fn subscribed(auto_acknowledge: bool) -> SchedulerCore {
    let mut core = SchedulerCore::new(framework(None), auto_acknowledge);
    core.handle_connected();
    sent(&mut core);
    core.handle_message(subscribed_msg("F1"));
    events(&mut core);
    assert!(core.is_subscribed());
    core
}

fn status(task: &str, uuid: Option<&str>) -> TaskStatus {
    TaskStatus {
        task_id: TaskId::from(task),
        framework_id: FrameworkId::from("F1"),
        agent_id: Some(AgentId::from("A1")),
        state: TaskState::Running,
        reason: None,
        message: String::new(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        uuid: uuid.map(UpdateId::from),
    }
}

fn update(task: &str, uuid: &str) -> Message {
    Message::Update {
        status: status(task, Some(uuid)),
    }
}

fn ack(task: &str, uuid: &str) -> Message {
    Message::Acknowledge {
        agent_id: AgentId::from("A1"),
        task_id: TaskId::from(task),
        uuid: UpdateId::from(uuid),
    }
}

fn kill(task: &str) -> Message {
    Message::Kill {
        task_id: TaskId::from(task),
    }
}

fn subscribe_id(msg: &Message) -> Option<FrameworkId> {
    match msg {
        Message::Subscribe { framework } => framework.id.clone(),
        other => panic!("expected Subscribe, got {other:?}"),
    }
}

#[test]
fn connecting_sends_subscribe_with_the_given_framework_id() {
    let mut fresh = SchedulerCore::new(framework(None), true);
    fresh.handle_connected();
    let out = sent(&mut fresh);
    assert_eq!(out.len(), 1);
    assert_eq!(subscribe_id(&out[0]), None);

    let mut failover = SchedulerCore::new(framework(Some("F9")), true);
    failover.handle_connected();
    assert_eq!(subscribe_id(&sent(&mut failover)[0]), Some("F9".into()));
}

#[test]
fn subscribed_is_surfaced_and_its_id_kept() {
    let mut core = SchedulerCore::new(framework(None), true);
    core.handle_connected();
    sent(&mut core);
    assert!(!core.is_subscribed());
    core.handle_message(subscribed_msg("F1"));
    assert_eq!(
        events(&mut core),
        vec![Event::Subscribed {
            framework_id: "F1".into()
        }]
    );
    assert_eq!(core.framework_id(), Some(&FrameworkId::from("F1")));
}

#[test]
fn reconnect_resubscribes_with_the_id_the_master_assigned() {
    let mut core = subscribed(true);
    core.handle_disconnected("link lost".into());
    assert_eq!(
        events(&mut core),
        vec![Event::Disconnected("link lost".into())]
    );
    assert!(sent(&mut core).is_empty(), "nothing to send without a link");
    core.handle_connected();
    let out = sent(&mut core);
    assert_eq!(out.len(), 1);
    assert_eq!(subscribe_id(&out[0]), Some("F1".into()));
    core.handle_message(subscribed_msg("F1"));
    assert_eq!(
        events(&mut core),
        vec![Event::Subscribed {
            framework_id: "F1".into()
        }]
    );
}

#[test]
fn calls_while_subscribed_go_out_at_once_in_order() {
    let mut core = subscribed(true);
    core.kill("t1".into());
    core.revive();
    core.suppress();
    core.reconcile(vec![]);
    core.decline(vec!["O1".into()], Filters::default());
    core.accept(vec!["O2".into()], vec![], Filters::default());
    assert_eq!(
        sent(&mut core),
        vec![
            kill("t1"),
            Message::Revive,
            Message::Suppress,
            Message::Reconcile { task_ids: vec![] },
            Message::Decline {
                offer_ids: vec!["O1".into()],
                filters: Filters::default()
            },
            Message::Accept {
                offer_ids: vec!["O2".into()],
                tasks: vec![],
                filters: Filters::default()
            },
        ]
    );
}

#[test]
fn calls_while_disconnected_are_sent_once_in_order_after_resubscription() {
    let mut core = subscribed(true);
    core.handle_disconnected("link lost".into());
    core.kill("t1".into());
    core.revive();
    core.kill("t2".into());
    assert!(sent(&mut core).is_empty());

    core.handle_connected();
    let out = sent(&mut core);
    assert_eq!(
        out.len(),
        1,
        "only the Subscribe before Subscribed: {out:?}"
    );
    core.kill("t3".into()); // while subscribing: waits too, behind the others
    assert!(sent(&mut core).is_empty());

    core.handle_message(subscribed_msg("F1"));
    assert_eq!(
        sent(&mut core),
        vec![kill("t1"), Message::Revive, kill("t2"), kill("t3")]
    );
    core.handle_message(Message::Heartbeat);
    assert!(sent(&mut core).is_empty(), "each call is sent once");
}

#[test]
fn a_call_whose_write_failed_is_sent_first_after_resubscription() {
    let mut core = subscribed(true);
    core.kill("t1".into());
    core.kill("t2".into());
    let first = core.poll_transmit().expect("t1");
    assert_eq!(first, kill("t1"));
    core.handle_write_failed(first, "stream reset".into());
    assert_eq!(
        events(&mut core),
        vec![Event::Disconnected("stream reset".into())]
    );
    core.revive(); // made while down: after the unwritten ones
    core.handle_connected();
    assert_eq!(subscribe_id(&sent(&mut core)[0]), Some("F1".into()));
    core.handle_message(subscribed_msg("F1"));
    assert_eq!(
        sent(&mut core),
        vec![kill("t1"), kill("t2"), Message::Revive]
    );
}

#[test]
fn an_unanswered_subscribe_is_not_resent_twice_on_the_next_stream() {
    let mut core = SchedulerCore::new(framework(None), true);
    core.handle_connected();
    core.handle_disconnected("lost before writing".into());
    core.handle_connected();
    let out = sent(&mut core);
    assert_eq!(out.len(), 1, "one Subscribe per stream: {out:?}");
}

#[test]
fn a_lost_link_is_reported_once() {
    let mut core = subscribed(true);
    core.handle_disconnected("first".into());
    core.handle_disconnected("again".into());
    core.handle_write_failed(Message::Revive, "late write".into());
    assert_eq!(events(&mut core), vec![Event::Disconnected("first".into())]);
}

#[test]
fn updates_are_delivered_and_auto_acknowledged() {
    let mut core = subscribed(true);
    core.handle_message(update("t1", "u1"));
    assert_eq!(sent(&mut core), vec![ack("t1", "u1")]);
    assert_eq!(
        events(&mut core),
        vec![Event::Update(status("t1", Some("u1")))]
    );
}

#[test]
fn no_auto_acknowledge_when_disabled_and_acknowledge_sends_one() {
    let mut core = subscribed(false);
    core.handle_message(update("t1", "u1"));
    assert!(sent(&mut core).is_empty());
    let Some(Event::Update(st)) = core.poll_event() else {
        panic!("expected the update");
    };
    core.acknowledge(&st);
    assert_eq!(sent(&mut core), vec![ack("t1", "u1")]);
}

#[test]
fn updates_without_uuid_are_delivered_every_time_and_never_acknowledged() {
    let mut core = subscribed(true);
    let no_uuid = Message::Update {
        status: status("t1", None),
    };
    core.handle_message(no_uuid.clone());
    core.handle_message(no_uuid);
    assert!(sent(&mut core).is_empty());
    assert_eq!(events(&mut core).len(), 2);
    core.acknowledge(&status("t1", None));
    assert!(sent(&mut core).is_empty(), "nothing to acknowledge");
}

#[test]
fn duplicate_updates_are_dropped_but_acknowledged_again() {
    let mut core = subscribed(true);
    core.handle_message(update("t1", "u1"));
    core.handle_message(update("t1", "u1"));
    core.handle_message(update("t1", "u2"));
    core.handle_message(update("t2", "u1"));
    assert_eq!(
        events(&mut core),
        vec![
            Event::Update(status("t1", Some("u1"))),
            Event::Update(status("t1", Some("u2"))),
            Event::Update(status("t2", Some("u1"))),
        ]
    );
    // The repeat means the first ack may be lost: it is acknowledged again.
    assert_eq!(
        sent(&mut core),
        vec![
            ack("t1", "u1"),
            ack("t1", "u1"),
            ack("t1", "u2"),
            ack("t2", "u1")
        ]
    );
}

#[test]
fn duplicates_are_dropped_across_a_reconnection() {
    let mut core = subscribed(true);
    core.handle_message(update("t1", "u1"));
    events(&mut core);
    core.handle_disconnected("lost".into());
    core.handle_connected();
    core.handle_message(subscribed_msg("F1"));
    events(&mut core);
    core.handle_message(update("t1", "u1"));
    assert!(events(&mut core).is_empty());
}

#[test]
fn the_dedup_window_stays_bounded_and_forgets_the_oldest_first() {
    let mut core = subscribed(false);
    for i in 0..DEDUP_WINDOW + 10 {
        core.handle_message(update("t", &i.to_string()));
        core.poll_event().expect("a new update is delivered");
    }
    assert_eq!(core.remembered_updates(), DEDUP_WINDOW);
    core.handle_message(update("t", &(DEDUP_WINDOW + 9).to_string()));
    assert_eq!(core.poll_event(), None, "a recent one is still a duplicate");
    core.handle_message(update("t", "0"));
    assert!(
        matches!(core.poll_event(), Some(Event::Update(_))),
        "the oldest was forgotten, so it is delivered again"
    );
    assert_eq!(core.remembered_updates(), DEDUP_WINDOW);
}

#[test]
fn heartbeats_are_ignored() {
    let mut core = subscribed(true);
    core.handle_message(Message::Heartbeat);
    assert!(sent(&mut core).is_empty());
    assert!(events(&mut core).is_empty());
}

#[test]
fn offers_rescinds_and_errors_are_surfaced_in_order() {
    let mut core = subscribed(true);
    let offer = Offer {
        datasets: Vec::new(),
        id: "O1".into(),
        framework_id: "F1".into(),
        agent_id: "A1".into(),
        hostname: "h1".into(),
        resources: Resources::new(1000, 1 << 30, 0),
        reserved_for: None,
        attributes: vec![],
    };
    core.handle_message(Message::Offers {
        offers: vec![offer.clone()],
    });
    core.handle_message(Message::Rescind {
        offer_id: "O1".into(),
    });
    core.handle_message(Message::Error {
        message: "bad call".into(),
    });
    assert_eq!(
        events(&mut core),
        vec![
            Event::Offers(vec![offer]),
            Event::Rescind("O1".into()),
            Event::Error("bad call".into()),
        ]
    );
    assert!(sent(&mut core).is_empty());
}

#[test]
fn an_error_while_subscribing_keeps_calls_queued() {
    let mut core = subscribed(true);
    core.handle_disconnected("lost".into());
    core.kill("t1".into());
    core.handle_connected();
    sent(&mut core);
    core.handle_message(Message::Error {
        message: "refused".into(),
    });
    assert!(sent(&mut core).is_empty());
    core.handle_message(subscribed_msg("F1"));
    assert_eq!(sent(&mut core), vec![kill("t1")]);
}

#[test]
fn teardown_is_the_last_message_and_finishes_the_core() {
    let mut core = subscribed(true);
    core.kill("t1".into());
    core.teardown();
    core.revive(); // after teardown: ignored
    assert!(!core.is_finished());
    assert_eq!(sent(&mut core), vec![kill("t1"), Message::Teardown]);
    assert!(core.is_finished());
    core.handle_message(update("t1", "u1"));
    core.handle_disconnected("closed".into());
    assert!(sent(&mut core).is_empty());
    assert!(events(&mut core).is_empty(), "a finished core is silent");
}

#[test]
fn teardown_while_disconnected_is_sent_after_resubscription() {
    let mut core = subscribed(true);
    core.handle_disconnected("lost".into());
    core.teardown();
    assert!(sent(&mut core).is_empty());
    assert!(!core.is_finished());
    core.handle_connected();
    core.handle_message(subscribed_msg("F1"));
    let out = sent(&mut core);
    assert_eq!(out.last(), Some(&Message::Teardown));
    assert!(core.is_finished());
}

#[test]
fn a_teardown_whose_write_failed_is_sent_again_after_resubscription() {
    let mut core = subscribed(true);
    core.teardown();
    let msg = core.poll_transmit().expect("the teardown");
    assert!(core.is_finished());
    core.handle_write_failed(msg, "stream reset".into());
    assert!(!core.is_finished());
    core.handle_connected();
    core.handle_message(subscribed_msg("F1"));
    let out = sent(&mut core);
    assert_eq!(out[1..], [Message::Teardown]);
    assert!(core.is_finished());
}

#[test]
fn executor_messages_and_exits_come_out_as_events_and_calls_go_out() {
    let mut core = subscribed(true);
    core.send_message(AgentId::from("A1"), ExecutorId::from("kv"), b"q".to_vec());
    core.shutdown_executor(AgentId::from("A1"), ExecutorId::from("kv"));
    assert_eq!(
        sent(&mut core),
        vec![
            Message::FrameworkMessage {
                agent_id: AgentId::from("A1"),
                executor_id: ExecutorId::from("kv"),
                data: b"q".to_vec(),
            },
            Message::ShutdownExecutor {
                agent_id: AgentId::from("A1"),
                executor_id: ExecutorId::from("kv"),
            },
        ]
    );
    core.handle_message(Message::FrameworkMessage {
        agent_id: AgentId::from("A1"),
        executor_id: ExecutorId::from("kv"),
        data: b"a".to_vec(),
    });
    core.handle_message(Message::ExecutorExited {
        framework_id: FrameworkId::from("F1"),
        agent_id: AgentId::from("A1"),
        executor_id: ExecutorId::from("kv"),
        failed: true,
        message: "trap".into(),
    });
    assert_eq!(
        events(&mut core),
        vec![
            Event::Message {
                agent_id: AgentId::from("A1"),
                executor_id: ExecutorId::from("kv"),
                data: b"a".to_vec(),
            },
            Event::ExecutorExited {
                agent_id: AgentId::from("A1"),
                executor_id: ExecutorId::from("kv"),
                failed: true,
                message: "trap".into(),
            },
        ]
    );
}
