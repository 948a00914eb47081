//! The pipeline's order: what goes now, what waits for which commit.

use super::*;
use proto::{AgentId, Digest, Resources, TaskInfo, TaskState, TaskStatus, UpdateId};

fn run_task(id: &str) -> Message {
    Message::RunTask {
        framework_id: FrameworkId("f".into()),
        task: TaskInfo {
            task_id: TaskId(id.into()),
            name: id.into(),
            agent_id: AgentId("a".into()),
            resources: Resources::ZERO,
            module: Digest::of(b"m"),
            args: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            timeout_ms: None,
            max_cpu_ms: None,
            datasets: Vec::new(),
            executor: None,
            data: Vec::new(),
        },
    }
}

/// An update of task `id`: from an agent (with a uuid) or made by the master.
fn update(id: &str, state: TaskState, from_agent: bool) -> Message {
    Message::Update {
        status: TaskStatus {
            task_id: TaskId(id.into()),
            framework_id: FrameworkId("f".into()),
            agent_id: Some(AgentId("a".into())),
            state,
            reason: None,
            message: String::new(),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            uuid: from_agent.then(|| UpdateId(format!("{id}-{}", state.name()))),
        },
    }
}

fn send(conn: ConnId, msg: Message) -> Action {
    Action::Send { conn, msg }
}

fn put() -> Action {
    Action::Persist(vec![RegistryOp::RemoveBlob(Digest::of(b"x"))])
}

fn name(a: &Action) -> String {
    match a {
        Action::Send { conn, msg } => format!("{conn}:{}", msg.kind()),
        Action::Close { conn, .. } => format!("{conn}:close"),
        Action::Persist(_) => "persist".into(),
    }
}

fn names(held: &[Held<&'static str>]) -> Vec<String> {
    held.iter()
        .map(|h| match h {
            Held::Action(a) => name(a),
            Held::Ack(what) => format!("ack:{what}"),
        })
        .collect()
}

/// Routes `drained` in order; returns the names of what may go now.
fn route(p: &mut Pipeline<&'static str>, drained: Vec<Action>) -> Vec<String> {
    drained
        .into_iter()
        .filter_map(|a| p.route(a))
        .map(|a| name(&a))
        .collect()
}

/// With nothing in flight: what precedes the first change goes now; after it, only a launch
/// or an agent's update does, and not past a handshake or close held on its connection.
#[test]
fn sends_before_a_change_go_now_and_after_it_only_launches_and_agent_updates() {
    let mut p = Pipeline::default();
    let now = route(
        &mut p,
        vec![
            send(1, Message::Revive),
            put(),
            send(1, Message::Revive),
            send(1, run_task("t1")),
            send(1, update("t1", TaskState::Running, true)),
            send(1, update("t9", TaskState::Lost, false)),
            send(
                2,
                Message::Registered {
                    agent_id: AgentId("a".into()),
                },
            ),
            send(2, run_task("t2")),
            put(),
            Action::Close {
                conn: 3,
                reason: "bye".into(),
            },
            send(3, run_task("t3")),
            send(4, run_task("t4")),
        ],
    );
    assert_eq!(now, ["1:Revive", "1:RunTask", "1:Update", "4:RunTask"]);
    let ops = p.start().expect("changes wait");
    assert_eq!(ops.len(), 2, "both changes in one commit");
    assert!(p.in_flight());
    assert_eq!(p.start(), None, "one commit at a time");
    assert_eq!(
        names(&p.committed()),
        [
            "1:Revive",
            "1:Update",
            "2:Registered",
            "2:RunTask",
            "3:close",
            "3:RunTask"
        ]
    );
    assert_eq!(p.held(), 0);
    // Durable and nothing in flight: everything goes at once again.
    assert_eq!(route(&mut p, vec![send(2, run_task("t5"))]), ["2:RunTask"]);
    assert_eq!(route(&mut p, vec![send(2, Message::Revive)]), ["2:Revive"]);
}

/// While a commit is in flight, what the next inputs queue waits for the changes before it:
/// a send with no change of its own waits for the commit in flight, one after a new change
/// for the next commit, which starts only when the one in flight is durable.
#[test]
fn inputs_during_a_commit_wait_for_the_changes_queued_before_them() {
    let mut p = Pipeline::default();
    assert_eq!(
        route(&mut p, vec![put(), send(1, Message::Revive)]),
        Vec::<String>::new()
    );
    let first = p.start().expect("changes wait");
    assert_eq!(first.len(), 1);
    // Inputs handled while the first commit is in flight.
    let now = route(
        &mut p,
        vec![
            send(1, Message::Revive),
            send(2, run_task("t1")),
            put(),
            send(1, update("t1", TaskState::Finished, true)),
            send(1, Message::Revive),
        ],
    );
    assert_eq!(now, ["2:RunTask", "1:Update"]);
    assert_eq!(
        p.ack("upload"),
        None,
        "an ack waits for the changes before it"
    );
    assert_eq!(p.start(), None, "the second commit waits for the first");
    assert_eq!(names(&p.committed()), ["1:Revive", "1:Revive"]);
    assert_eq!(p.held(), 2);
    let second = p.start().expect("the second commit starts");
    assert_eq!(second.len(), 1);
    assert_eq!(names(&p.committed()), ["1:Revive", "ack:upload"]);
    assert_eq!(p.held(), 0);
    assert_eq!(
        p.ack("now"),
        Some("now"),
        "nothing is pending: acked at once"
    );
}

/// An agent's update never overtakes a held update of the same task on the same connection
/// (say the master's `TASK_UNREACHABLE` waiting for its commit), nor a held handshake.
#[test]
fn an_agent_update_does_not_pass_a_held_update_of_its_task_or_a_held_handshake() {
    let mut p = Pipeline::default();
    let now = route(
        &mut p,
        vec![
            put(),
            send(1, update("t1", TaskState::Unreachable, false)),
            send(1, update("t1", TaskState::Running, true)),
            send(1, update("t2", TaskState::Running, true)),
            send(
                5,
                Message::Subscribed {
                    framework_id: FrameworkId("g".into()),
                    heartbeat_interval_ms: 1000,
                },
            ),
            send(5, update("t3", TaskState::Running, true)),
        ],
    );
    assert_eq!(now, ["1:Update"], "only t2's update goes");
    p.start().expect("changes wait");
    assert_eq!(
        names(&p.committed()),
        ["1:Update", "1:Update", "5:Subscribed", "5:Update"]
    );
    // The bars went with what raised them.
    route(&mut p, vec![put()]);
    p.start().expect("changes wait");
    let now = route(
        &mut p,
        vec![
            send(1, update("t1", TaskState::Finished, true)),
            send(5, update("t3", TaskState::Finished, true)),
        ],
    );
    assert_eq!(now, ["1:Update", "5:Update"]);
}

/// Without any change, nothing is ever held and no commit starts.
#[test]
fn without_changes_everything_goes_at_once() {
    let mut p: Pipeline<&'static str> = Pipeline::default();
    let now = route(
        &mut p,
        vec![
            send(1, Message::Revive),
            Action::Close {
                conn: 1,
                reason: "bye".into(),
            },
            send(2, update("t", TaskState::Lost, false)),
        ],
    );
    assert_eq!(now, ["1:Revive", "1:close", "2:Update"]);
    assert_eq!(p.ack("a"), Some("a"));
    assert_eq!(p.start(), None);
    assert!(!p.in_flight());
}

/// An agent's update does not pass a held executor's message on the framework's connection
/// (the agent sent the message first), and a launch does not pass a held message to an
/// executor or its kill on the agent's connection.
#[test]
fn sends_ahead_do_not_pass_held_executor_messages_or_kills() {
    let mut p = Pipeline::default();
    let now = route(
        &mut p,
        vec![
            put(),
            send(
                1,
                Message::FrameworkMessage {
                    agent_id: AgentId("a".into()),
                    executor_id: proto::ExecutorId("e".into()),
                    data: b"done".to_vec(),
                },
            ),
            send(1, update("t1", TaskState::Finished, true)),
            send(
                2,
                Message::KillTask {
                    framework_id: FrameworkId("f".into()),
                    task_id: TaskId("t0".into()),
                },
            ),
            send(2, run_task("t2")),
            send(3, run_task("t3")),
        ],
    );
    assert_eq!(now, ["3:RunTask"]);
    p.start().expect("changes wait");
    assert_eq!(
        names(&p.committed()),
        ["1:FrameworkMessage", "1:Update", "2:KillTask", "2:RunTask"]
    );
}

/// Past `MAX_WAITING` held actions the loop stops reading input until the commit is durable.
#[test]
fn a_slow_commit_stops_input_past_the_bound() {
    let mut p = Pipeline::default();
    route(&mut p, vec![put()]);
    p.start().expect("changes wait");
    for _ in 0..MAX_WAITING - 1 {
        assert_eq!(p.ack("a"), None);
    }
    assert!(p.has_room());
    assert_eq!(p.ack("a"), None);
    assert!(!p.has_room());
    assert_eq!(p.committed().len(), MAX_WAITING);
    assert!(p.has_room());
}
