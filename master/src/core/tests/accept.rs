//! Accepting offers: which offers an accept may name, and how each task in it is validated.

use super::*;

#[test]
fn accept_with_unknown_foreign_and_stale_offers() {
    let (mut h, a, f1, o, m) = one_agent_one_offer();
    // f2 on another agent, so it holds an offer too.
    let _f2 = h.subscribe(20, "f2");
    h.register(2, res(2.0, 2 * GIB));
    let o2 = h.offers(20).remove(0);
    h.take();

    // Unknown id.
    h.msg(
        10,
        Message::Accept {
            offer_ids: vec![OfferId("r-O999".into())],
            tasks: vec![task("t1", &a, res(1.0, GIB), m)],
            filters: Filters::default(),
        },
    );
    let msgs = h.sent(10);
    assert_eq!(
        errors(&msgs),
        ["accept failed: offer r-O999 is unknown or no longer valid"]
    );
    let st: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Update { status } => Some(status.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].state, TaskState::Dropped);
    assert_eq!(st[0].reason, Some(Reason::InvalidOffers));
    assert_eq!(st[0].uuid, None);
    assert!(h.m.offer(&o.id).is_some(), "f1's offer untouched");

    // Foreign offer (f2's) together with f1's own: everything dropped, f1's offer returns to
    // the pool, f2's offer is untouched.
    h.accept(10, &[&o, &o2], vec![task("t1", &a, res(1.0, GIB), m)]);
    // The returned resources were offered again (to f1: no filter on invalid accepts).
    let again = h.offers(10).remove(0);
    assert_eq!(again.resources, res(4.0, 4 * GIB));
    let msgs = h.sent(10);
    let errs = errors(&msgs);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains(&format!(
        "offer {} is not an offer to framework {f1}",
        o2.id
    )));
    assert!(h.m.offer(&o2.id).is_some());
    assert!(h.m.offer(&o.id).is_none());
    assert!(h.m.tasks().next().is_none());

    // Use it, then try the stale one again.
    h.accept(10, &[&again], vec![task("t1", &a, res(1.0, GIB), m)]);
    assert_eq!(run_tasks(&h.sent(1)).len(), 1);
    h.take();
    h.accept(10, &[&again], vec![task("t2", &a, res(1.0, GIB), m)]);
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Dropped);
    assert!(ups[0].message.contains("unknown or no longer valid"));
    assert!(run_tasks(&h.sent(1)).is_empty());
}

#[test]
fn accept_offers_of_two_agents_is_refused() {
    let mut h = H::new();
    let a1 = h.register(1, res(1.0, GIB));
    h.register(2, res(1.0, GIB));
    h.subscribe(10, "f1");
    let offers = h.offers(10);
    assert_eq!(offers.len(), 2);
    let m = h.upload_module(b"m");
    h.accept(
        10,
        &[&offers[0], &offers[1]],
        vec![task("t", &a1, res(1.0, GIB), m)],
    );
    let msgs = h.sent(10);
    assert!(errors(&msgs)[0].contains("one accept uses offers of one agent"));
    assert!(h.m.tasks().next().is_none());
}

#[test]
fn accept_validates_each_task() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let missing = Digest::of(b"never uploaded");
    let file = Digest::of(b"data");
    h.ev(Event::BlobStored {
        digest: file,
        kind: BlobKind::File,
        owner: Some("default".into()),
    });
    let mut with_bad_path = task("badpath", &a, res(0.1, MIB), m);
    with_bad_path.files = vec![TaskFile {
        path: "../etc/passwd".into(),
        digest: file,
    }];
    let mut with_missing_file = task("nofile", &a, res(0.1, MIB), m);
    with_missing_file.files = vec![TaskFile {
        path: "in/data.txt".into(),
        digest: missing,
    }];
    let mut with_file = task("withfile", &a, res(0.1, MIB), m);
    with_file.files = vec![TaskFile {
        path: "in/data.txt".into(),
        digest: file,
    }];
    let mut elsewhere = task("elsewhere", &a, res(0.1, MIB), m);
    elsewhere.agent_id = AgentId("r-A77".into());
    h.accept(
        10,
        &[&o],
        vec![
            task("ok", &a, res(3.0, GIB), m),
            task("ok", &a, res(0.1, MIB), m), // duplicate in this call
            task("", &a, res(0.1, MIB), m),   // empty id
            task("big", &a, res(2.0, GIB), m), // only 1 cpu left
            task("nomod", &a, res(0.1, MIB), missing), // module not uploaded
            task("filemod", &a, res(0.1, MIB), file), // uploaded as a file
            task("zero", &a, res(0.0, MIB), m), // no cpus
            with_bad_path,
            with_missing_file,
            elsewhere,
            with_file,
        ],
    );
    let launched = run_tasks(&h.sent(1));
    assert_eq!(launched, [TaskId("ok".into()), TaskId("withfile".into())]);
    let ups = h.updates(10);
    let got: Vec<(&str, TaskState, Option<Reason>)> = ups
        .iter()
        .map(|s| (s.task_id.as_str(), s.state, s.reason.clone()))
        .collect();
    let invalid = Some(Reason::TaskInvalid);
    let module = Some(Reason::ModuleInvalid);
    assert_eq!(
        got,
        [
            ("ok", TaskState::Error, invalid.clone()),
            ("", TaskState::Error, invalid.clone()),
            ("big", TaskState::Error, invalid.clone()),
            ("nomod", TaskState::Error, module.clone()),
            ("filemod", TaskState::Error, module),
            ("zero", TaskState::Error, invalid.clone()),
            ("badpath", TaskState::Error, invalid.clone()),
            ("nofile", TaskState::Error, invalid.clone()),
            ("elsewhere", TaskState::Error, invalid),
        ]
    );
    assert!(ups[0].message.contains("used twice"));
    assert_eq!(
        ups[2].message,
        "task big needs <2 cpus, 1 GB> but only <1 cpu, 3 GB> remain in the offers"
    );
    assert_eq!(
        ups[3].message,
        format!(
            "module sha256:{} has not been uploaded by principal default",
            missing.to_hex()
        )
    );
    // A live task id cannot be reused in a later accept.
    h.take();
    h.msg(10, Message::Revive);
    let o = h.offers(10).remove(0);
    h.accept(10, &[&o], vec![task("ok", &a, res(0.1, MIB), m)]);
    let ups = h.updates(10);
    assert!(ups[0].message.contains("already in use"), "{ups:?}");
    assert!(h.m.task(&f, &TaskId("ok".into())).is_some());
}
