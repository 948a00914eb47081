// The oracle of the `frame` fuzz target, shared by the target and the corpus replay in
// `cargo test` (both `include!` this file, so they check the same thing).
use proto::frame::{self, check, parse, DEFAULT_MAX_FRAME};

/// Untrusted bytes on a control stream: `check` and `parse` must agree and never panic, and every
/// message they accept must re-encode canonically (no longer than what came in) and round-trip.
pub fn frame(data: &[u8]) {
    let mut rest = data;
    loop {
        let checked = check(rest, DEFAULT_MAX_FRAME);
        match parse(rest, DEFAULT_MAX_FRAME) {
            Ok(Some((msg, used))) => {
                assert_eq!(checked.ok().flatten(), Some(used));
                // postcard accepts non-minimal varints, so several byte strings may decode to one
                // message (found by this target); its own encoding is the shortest and a fixpoint.
                let again = frame::encode(&msg).unwrap();
                assert!(again.len() <= used);
                let (same, n) = parse(&again, usize::MAX).unwrap().unwrap();
                assert_eq!(n, again.len());
                assert_eq!(frame::encode(&same).unwrap(), again);
                rest = &rest[used..];
            }
            Ok(None) => {
                assert!(matches!(checked, Ok(None)));
                break;
            }
            Err(_) => break,
        }
    }
}
