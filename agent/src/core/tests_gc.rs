//! Deterministic tests of the garbage collection of task and executor directories: virtual
//! time, no files (the core only decides; the driver removes).

use super::tests::{ack, drain, fid, registered, task};
use super::*;
use proto::resources::GIB;

const DELAY: Duration = Duration::from_secs(3600);

fn gc_agent(now: Instant) -> Agent {
    registered(now).with_gc(GcPolicy {
        delay: DELAY,
        disk_headroom: 0.1,
    })
}

fn target(t: &str) -> GcTarget {
    GcTarget::Task {
        framework_id: fid(),
        task_id: TaskId::from(t),
    }
}

fn status_of(actions: &[Action]) -> Vec<TaskStatus> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Message::StatusUpdate { status }) => Some(status.clone()),
            _ => None,
        })
        .collect()
}

/// Acknowledges every update in `actions` and the ones that follow, until none is left.
fn ack_everything(a: &mut Agent, now: Instant, mut actions: Vec<Action>) {
    while let Some(s) = status_of(&actions).pop() {
        ack(a, now, s.task_id.as_str(), s.uuid.unwrap());
        actions = drain(a);
    }
}

/// Runs task `id` to FINISHED; `ack_final` says whether the final update is acknowledged.
fn run_to_end(a: &mut Agent, now: Instant, id: &str, ack_final: bool) -> Option<TaskStatus> {
    a.handle(
        now,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task(id, 100, GIB),
        }),
    );
    let key = (fid(), TaskId::from(id));
    let mut acts = drain(a);
    a.handle(
        now,
        Event::Prepared {
            key: key.clone(),
            result: Ok(()),
        },
    );
    acts.extend(drain(a));
    a.handle(now, Event::Running { key: key.clone() });
    acts.extend(drain(a));
    a.handle(
        now,
        Event::Finished {
            key,
            outcome: Outcome {
                state: TaskState::Finished,
                reason: Reason::ExitCode(0),
                message: "exited 0".into(),
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            },
        },
    );
    acts.extend(drain(a));
    // Acknowledge everything but (maybe) the final update.
    loop {
        let s = status_of(&acts).pop()?;
        if s.state == TaskState::Finished && !ack_final {
            return Some(s);
        }
        ack(a, now, s.task_id.as_str(), s.uuid.unwrap());
        acts = drain(a);
    }
}

fn gcs(a: &mut Agent) -> Vec<GcTarget> {
    std::iter::from_fn(|| a.poll_gc()).collect()
}

#[test]
fn a_task_directory_goes_after_the_final_ack_plus_the_delay() {
    let t0 = Instant::now();
    let mut a = gc_agent(t0);
    let last = run_to_end(&mut a, t0, "t1", false).expect("final update unacknowledged");
    // Terminal but unacknowledged: not collectable (the update may be resent, the output read).
    assert_eq!(a.gc_pending(), 0);
    let t1 = t0 + Duration::from_secs(10);
    ack(&mut a, t1, "t1", last.uuid.unwrap());
    drain(&mut a);
    assert_eq!(a.gc_pending(), 1);
    // Disk empty: the delay in force is (1 - headroom) of the configured one.
    let delay = a.gc_delay().unwrap();
    assert_eq!(delay, DELAY.mul_f64(0.9));
    assert_eq!(a.poll_timeout(), Some(t1 + delay));
    a.handle_timeout(t1 + delay - Duration::from_secs(1));
    assert!(gcs(&mut a).is_empty());
    a.handle_timeout(t1 + delay);
    assert_eq!(gcs(&mut a), vec![target("t1")]);
    assert_eq!(a.gc_pending(), 0);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn a_fuller_disk_shortens_the_delay_and_a_full_one_collects_at_once() {
    let t0 = Instant::now();
    let mut a = gc_agent(t0);
    run_to_end(&mut a, t0, "t1", true);
    assert_eq!(a.gc_pending(), 1);
    a.set_disk_usage(0.6);
    let delay = a.gc_delay().unwrap();
    assert!((delay.as_secs_f64() - DELAY.as_secs_f64() * 0.3).abs() < 1e-6);
    assert_eq!(a.poll_timeout(), Some(t0 + delay));
    a.handle_timeout(t0 + delay);
    assert_eq!(gcs(&mut a), vec![target("t1")]);

    run_to_end(&mut a, t0 + DELAY, "t2", true);
    a.set_disk_usage(0.95);
    assert_eq!(a.gc_delay(), Some(Duration::ZERO));
    a.handle_timeout(t0 + DELAY);
    assert_eq!(gcs(&mut a), vec![target("t2")]);
}

#[test]
fn collection_runs_while_disconnected_and_a_rerun_cancels_it() {
    let t0 = Instant::now();
    let mut a = gc_agent(t0);
    run_to_end(&mut a, t0, "t1", true);
    run_to_end(&mut a, t0, "t2", true);
    assert_eq!(a.gc_pending(), 2);
    // A task of the same id again: its fresh directory is not garbage.
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task("t1", 100, GIB),
        }),
    );
    drain(&mut a);
    assert_eq!(a.gc_pending(), 1);
    a.handle(t0, Event::Disconnected);
    let later = t0 + DELAY;
    a.handle_timeout(later);
    assert_eq!(gcs(&mut a), vec![target("t2")]);
}

#[test]
fn unsafe_ids_never_name_a_directory_and_collection_is_off_by_default() {
    let t0 = Instant::now();
    let mut a = gc_agent(t0);
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task("../../etc", 100, GIB),
        }),
    );
    let acts = drain(&mut a);
    ack_everything(&mut a, t0, acts);
    assert_eq!(a.task_count(), 0);
    assert_eq!(a.gc_pending(), 0);

    let mut plain = registered(t0);
    run_to_end(&mut plain, t0, "t1", true);
    assert_eq!(plain.gc_pending(), 0);
    assert_eq!(plain.gc_delay(), None);
    plain.handle_timeout(t0 + DELAY * 10);
    assert!(gcs(&mut plain).is_empty());
}

#[test]
fn a_shutdown_schedules_every_forgotten_task() {
    let t0 = Instant::now();
    let mut a = gc_agent(t0);
    run_to_end(&mut a, t0, "t1", false);
    a.handle(
        t0,
        Event::Message(Message::Shutdown {
            message: "forgotten".into(),
        }),
    );
    drain(&mut a);
    assert_eq!(a.task_count(), 0);
    a.handle_timeout(t0 + DELAY);
    assert_eq!(gcs(&mut a), vec![target("t1")]);
}

#[test]
fn blobs_in_use_are_those_of_tasks_not_ended_and_of_live_executors() {
    let t0 = Instant::now();
    let mut a = gc_agent(t0);
    let mut t = task("t1", 100, GIB);
    t.files = vec![proto::TaskFile {
        path: "in.txt".into(),
        digest: proto::Digest::of(b"input"),
    }];
    let (module, file) = (t.module.to_hex(), proto::Digest::of(b"input").to_hex());
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: t,
        }),
    );
    drain(&mut a);
    assert_eq!(
        a.blobs_in_use(),
        std::collections::BTreeSet::from([module.clone(), file])
    );
    // Once it has ended (even with its last update not yet acknowledged), nothing is in use.
    a.handle(
        t0,
        Event::Prepared {
            key: (fid(), TaskId::from("t1")),
            result: Ok(()),
        },
    );
    a.handle(
        t0,
        Event::Finished {
            key: (fid(), TaskId::from("t1")),
            outcome: Outcome {
                state: TaskState::Finished,
                reason: Reason::ExitCode(0),
                message: "exited 0".into(),
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            },
        },
    );
    drain(&mut a);
    assert!(a.blobs_in_use().is_empty());
    // A live executor's component stays in use with no task.
    let (e, _) = super::tests_executors::running_one(t0);
    let component = super::tests_executors::exec_info().module.to_hex();
    assert!(e.blobs_in_use().contains(&component));
}
