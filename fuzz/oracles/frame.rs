// The oracle of the `frame` fuzz target, shared by the target and the corpus replay in
// `cargo test` (both `include!` this file, so they check the same thing).
use proto::frame::{self, check, parse, DEFAULT_MAX_FRAME};

/// Untrusted bytes on a control stream: `check` and `parse` must agree, never panic, and every
/// message they accept must re-encode to the very bytes it came from.
pub fn frame(data: &[u8]) {
    let mut rest = data;
    loop {
        let checked = check(rest, DEFAULT_MAX_FRAME);
        match parse(rest, DEFAULT_MAX_FRAME) {
            Ok(Some((msg, used))) => {
                assert_eq!(checked.ok().flatten(), Some(used));
                assert_eq!(frame::encode(&msg).unwrap(), &rest[..used]);
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
