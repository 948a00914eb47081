//! The blob garbage collection in virtual time: unused blobs go after the grace, blobs named by
//! live tasks stay, a collected blob is "not uploaded" until it is uploaded again.

use super::*;

const GRACE: Duration = Duration::from_secs(100);

fn gc_h() -> H {
    H::with(MasterConfig {
        run_id: "r".into(),
        blob_gc_grace: Some(GRACE),
        ..MasterConfig::default()
    })
}

fn collected(h: &mut H) -> Vec<Digest> {
    std::iter::from_fn(|| h.m.poll_blob_gc()).collect()
}

#[test]
fn unused_blobs_go_after_the_grace_and_referenced_ones_stay() {
    let mut h = gc_h();
    let a = h.register(1, res(4.0, 4 * GIB));
    let f = h.subscribe(10, "f1");
    let offers = h.offers(10);
    let m = h.upload_module(b"\0asm used");
    let unused = h.upload_module(b"\0asm unused");
    h.accept(10, &[&offers[0]], vec![task("t1", &a, res(1.0, GIB), m)]);
    assert_eq!(run_tasks(&h.sent(1)), vec![TaskId("t1".into())]);
    h.advance(GRACE - Duration::from_secs(1));
    assert!(collected(&mut h).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(collected(&mut h), vec![unused]);
    assert_eq!(h.m.has_blob(&unused), None);
    // The live task keeps its module, however long it runs.
    h.advance(GRACE * 5);
    assert!(collected(&mut h).is_empty());
    assert_eq!(h.m.has_blob(&m), Some(BlobKind::Module));
    // Once it ended and was acknowledged, its module goes within 1.25 graces.
    h.status(1, update(&f, "t1", &a, TaskState::Finished, "u1"));
    h.ack(10, &a, "t1", "u1");
    assert!(h.m.task(&f, &TaskId("t1".into())).is_none());
    h.advance(GRACE + GRACE / 4);
    assert_eq!(collected(&mut h), vec![m]);
    // No blob left: the sweep is disarmed.
    assert_eq!(h.m.timers.get(&Timer::BlobGc), None);
}

#[test]
fn a_collected_module_is_not_uploaded_until_uploaded_again() {
    let mut h = gc_h();
    let a = h.register(1, res(4.0, 4 * GIB));
    h.subscribe(10, "f1");
    let offers = h.offers(10);
    let m = h.upload_module(b"\0asm module");
    h.advance(GRACE);
    assert_eq!(collected(&mut h), vec![m]);
    h.take();
    h.accept(10, &[&offers[0]], vec![task("t1", &a, res(1.0, GIB), m)]);
    let msgs = h.sent(10);
    let lost: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Update { status } => Some(status.message.clone()),
            _ => None,
        })
        .collect();
    assert!(
        lost.iter().any(|s| s.contains("has not been uploaded")),
        "{msgs:?}"
    );
    // Uploading it again makes it usable and restarts its grace.
    let again = h.upload_module(b"\0asm module");
    assert_eq!(again, m);
    h.advance(GRACE / 2);
    assert!(collected(&mut h).is_empty());
    assert_eq!(h.m.has_blob(&m), Some(BlobKind::Module));
}

#[test]
fn off_by_default() {
    let mut h = H::new();
    h.upload_module(b"\0asm module");
    h.advance(Duration::from_secs(10 * 24 * 3600));
    assert!(collected(&mut h).is_empty());
}
