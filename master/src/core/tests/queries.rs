//! Reads of agents through the master (task output, agent metrics): who may ask, which agent
//! is asked, and that every pending query is answered exactly once (agent answer, agent gone,
//! timeout), within a bound on how many are outstanding.

use super::*;
use crate::acl::Caller;
use crate::core::queries::{MAX_PENDING_QUERIES, QUERY_TIMEOUT};
use crate::core::{QueryError, QueryId};
use proto::identity::PeerKind;
use proto::{AgentAnswer, AgentQuery, OutputStream};

fn framework_caller(name: &str) -> Caller {
    Caller::Peer(PeerId::new(PeerKind::Framework, name).unwrap())
}

/// One running task `t1` of framework `f` (principal "default") on agent conn 1.
fn running_task() -> (H, AgentId, FrameworkId) {
    let (mut h, a, f, offer, module) = one_agent_one_offer();
    h.accept(10, &[&offer], vec![task("t1", &a, res(1.0, GIB), module)]);
    h.take();
    (h, a, f)
}

fn read(h: &mut H, caller: &Caller, task_id: &str) -> Result<QueryId, QueryError> {
    let r = h.m.query_output(
        caller,
        None,
        &TaskId::from(task_id),
        OutputStream::Stdout,
        0,
        u32::MAX,
    );
    h.settle();
    r
}

fn answers(h: &mut H) -> Vec<(QueryId, crate::core::QueryResult)> {
    std::iter::from_fn(|| h.m.poll_answer()).collect()
}

#[test]
fn a_read_goes_to_the_tasks_agent_and_its_answer_comes_back_once() {
    let (mut h, _, f) = running_task();
    let id = read(&mut h, &framework_caller("default"), "t1").unwrap();
    let sent = h.sent(1);
    assert_eq!(
        sent,
        vec![Message::AgentQuery {
            request_id: id,
            query: AgentQuery::Output {
                framework_id: f.clone(),
                task_id: TaskId::from("t1"),
                stream: OutputStream::Stdout,
                offset: 0,
                length: proto::MAX_OUTPUT_READ,
            },
        }]
    );
    assert_eq!(h.m.pending_queries(), 1);
    let answer = AgentAnswer::Output {
        data: b"hi".to_vec(),
        size: 2,
        ended: false,
    };
    // An answer on another connection (not the agent asked) is ignored.
    h.subscribe(11, "f2");
    h.take();
    h.msg(
        1,
        Message::AgentAnswer {
            request_id: id + 100,
            answer: answer.clone(),
        },
    );
    assert!(answers(&mut h).is_empty());
    h.msg(
        1,
        Message::AgentAnswer {
            request_id: id,
            answer: answer.clone(),
        },
    );
    assert_eq!(answers(&mut h), vec![(id, Ok(answer.clone()))]);
    // A late duplicate is not answered twice, and the timeout is disarmed.
    h.msg(
        1,
        Message::AgentAnswer {
            request_id: id,
            answer,
        },
    );
    h.advance(QUERY_TIMEOUT * 2);
    assert!(answers(&mut h).is_empty());
    assert_eq!(h.m.pending_queries(), 0);
    assert!(h.closes().is_empty());
}

#[test]
fn unknown_tasks_and_other_tenants_are_refused_at_once() {
    let (mut h, a, f) = running_task();
    assert_eq!(
        read(&mut h, &Caller::Local, "nope"),
        Err(QueryError::UnknownTask("nope".into()))
    );
    assert!(matches!(
        read(&mut h, &framework_caller("someone-else"), "t1"),
        Err(QueryError::NotAllowed(_))
    ));
    assert!(matches!(
        h.m.query_agent_metrics(&framework_caller("default"), &a),
        Err(QueryError::NotAllowed(_))
    ));
    assert_eq!(
        h.m.query_agent_metrics(&Caller::Local, &AgentId::from("ghost")),
        Err(QueryError::UnknownAgent("ghost".into()))
    );
    h.settle();
    assert!(h.sent(1).is_empty(), "nothing was asked of the agent");
    // An operator may read anyone's task. An agent that does not know a live task yet (its
    // launch on the way) has nothing written for it yet.
    let id = read(&mut h, &Caller::Local, "t1").unwrap();
    let unknown = |request_id| Message::AgentAnswer {
        request_id,
        answer: AgentAnswer::UnknownTask,
    };
    h.msg(1, unknown(id));
    let nothing_yet = AgentAnswer::Output {
        data: vec![],
        size: 0,
        ended: false,
    };
    assert_eq!(answers(&mut h), vec![(id, Ok(nothing_yet))]);
    // Once the task ended, the agent's "no such task" (its sandbox collected) is an error.
    h.status(1, update(&f, "t1", &a, TaskState::Finished, "u1"));
    h.take();
    let id = read(&mut h, &Caller::Local, "t1").unwrap();
    h.msg(1, unknown(id));
    assert!(matches!(
        answers(&mut h).as_slice(),
        [(i, Err(QueryError::UnknownTask(_)))] if *i == id
    ));
}

#[test]
fn an_agent_that_disconnects_or_does_not_answer_fails_its_queries() {
    let (mut h, a, _) = running_task();
    let metrics = h.m.query_agent_metrics(&Caller::Local, &a).unwrap();
    let output = read(&mut h, &Caller::Local, "t1").unwrap();
    h.disconnect(1);
    let got = answers(&mut h);
    assert_eq!(
        got,
        vec![
            (metrics, Err(QueryError::AgentGone(a.to_string()))),
            (output, Err(QueryError::AgentGone(a.to_string()))),
        ]
    );
    // While it is away, reads are refused at once.
    assert_eq!(
        read(&mut h, &Caller::Local, "t1"),
        Err(QueryError::AgentGone(a.to_string()))
    );
    // Back, but silent: the timeout answers.
    h.connect(2, AGENT);
    h.msg(2, register_msg(Some(a.clone()), res(4.0, 4 * GIB), vec![]));
    h.take();
    let id = h.m.query_agent_metrics(&Caller::Local, &a).unwrap();
    h.settle();
    h.advance(QUERY_TIMEOUT - Duration::from_millis(1));
    assert!(answers(&mut h).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(
        answers(&mut h),
        vec![(id, Err(QueryError::TimedOut(a.to_string())))]
    );
    assert_eq!(h.m.pending_queries(), 0);
}

#[test]
fn outstanding_queries_are_bounded() {
    let (mut h, a, _) = running_task();
    for _ in 0..MAX_PENDING_QUERIES {
        h.m.query_agent_metrics(&Caller::Local, &a).unwrap();
    }
    assert_eq!(
        h.m.query_agent_metrics(&Caller::Local, &a),
        Err(QueryError::Busy)
    );
    h.settle();
    h.advance(QUERY_TIMEOUT);
    assert_eq!(answers(&mut h).len(), MAX_PENDING_QUERIES);
    assert!(h.m.query_agent_metrics(&Caller::Local, &a).is_ok());
    h.settle();
}
