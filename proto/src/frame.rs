//! Framing: a 4-byte big-endian length prefix, then a postcard-encoded [`Message`].
//!
//! The split mirrors mini-redis: [`check`] says cheaply whether a whole frame is buffered (or
//! that its announced length is over the limit, before a byte of it is read), [`parse`] decodes
//! it. The live reader (`tessera-net`'s `MessageReader`) is a buffered loop over exactly these
//! two functions. A peer announcing an oversized frame, or sending bytes that do not decode, gets its
//! connection closed; nothing it sent is ever half-applied.

use crate::messages::Message;

/// Length of the prefix.
pub const HEADER_LEN: usize = 4;

/// Default limit on one control frame: 1 MiB (blob bytes travel outside frames).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// What can go wrong reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced length is over the limit.
    #[error("frame of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced length.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The bytes do not decode as a message of this protocol version.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The transport failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `msg` with its length prefix.
pub fn encode(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(msg)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Looks at buffered bytes: `Ok(None)` means more bytes are needed, `Ok(Some(n))` that a whole
/// frame of `n` bytes (prefix included) is buffered.
pub fn check(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    if buf.len() < HEADER_LEN + size {
        return Ok(None);
    }
    Ok(Some(HEADER_LEN + size))
}

/// Decodes the first frame of `buf`, returning it and the bytes it used; `Ok(None)` when
/// incomplete.
pub fn parse(buf: &[u8], max: usize) -> Result<Option<(Message, usize)>, FrameError> {
    let Some(n) = check(buf, max)? else {
        return Ok(None);
    };
    let msg = decode_body(&buf[HEADER_LEN..n])?;
    Ok(Some((msg, n)))
}

fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
    let (msg, rest) = postcard::take_from_bytes::<Message>(body)?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, ProptestConfig};
    use proptest::test_runner::TestRunner;

    fn sample() -> Message {
        Message::Kill {
            task_id: TaskId::from("t-1"),
        }
    }

    #[test]
    fn round_trip_and_incomplete() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut], DEFAULT_MAX_FRAME).unwrap().is_none());
        }
        let (msg, used) = parse(&bytes, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(msg, sample());
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn oversized_is_refused_before_the_body() {
        let header = (10u32 << 20).to_be_bytes();
        assert!(matches!(
            check(&header, DEFAULT_MAX_FRAME),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        let mut bytes = vec![0, 0, 0, 5];
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            parse(&bytes, DEFAULT_MAX_FRAME),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_malformed() {
        let mut bytes = encode(&Message::Revive).unwrap();
        bytes.push(0);
        bytes[3] += 1;
        assert!(matches!(
            parse(&bytes, DEFAULT_MAX_FRAME),
            Err(FrameError::Malformed(_))
        ));
    }

    /// `NotLeader` (protocol 4) is appended last: the variants before it keep their postcard
    /// indices, so its index is the count of the others (the fuzz corpus holds these bytes).
    #[test]
    fn not_leader_is_the_last_variant_and_round_trips() {
        for leader in [None, Some("10.0.0.2:5050".to_owned())] {
            let msg = Message::NotLeader { leader };
            let bytes = encode(&msg).unwrap();
            assert_eq!(
                bytes[HEADER_LEN], 37,
                "NotLeader must stay the 38th variant"
            );
            let (back, used) = parse(&bytes, DEFAULT_MAX_FRAME).unwrap().unwrap();
            assert_eq!((back, used), (msg, bytes.len()));
        }
        assert_eq!(encode(&Message::AgentLeft).unwrap()[HEADER_LEN], 36);
    }

    /// Runs `test` on a thread with a large stack: the derived strategy for [`Message`] is deep
    /// enough to overflow a test thread's default 2 MiB while generating.
    fn on_big_stack(test: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(test)
            .unwrap()
            .join()
            .unwrap();
    }

    /// Every message survives the wire: `parse(encode(m)) == m` (compared as re-encoded bytes
    /// too, which also holds for messages carrying a NaN).
    #[test]
    fn every_message_round_trips() {
        on_big_stack(|| {
            let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
            runner
                .run(&any::<Message>(), |msg| {
                    let bytes = encode(&msg).unwrap();
                    let (back, used) = parse(&bytes, usize::MAX).unwrap().unwrap();
                    prop_assert_eq!(used, bytes.len());
                    prop_assert_eq!(encode(&back).unwrap(), bytes);
                    #[allow(clippy::eq_op)]
                    if msg == msg {
                        prop_assert_eq!(back, msg);
                    }
                    Ok(())
                })
                .unwrap();
        });
    }

    /// Every proper prefix of a frame is "need more bytes", never an error or a message.
    #[test]
    fn every_prefix_is_incomplete() {
        on_big_stack(|| {
            let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
            runner
                .run(&any::<Message>(), |msg| {
                    let bytes = encode(&msg).unwrap();
                    for cut in [0, 1, HEADER_LEN, bytes.len() / 2, bytes.len() - 1] {
                        if cut < bytes.len() {
                            prop_assert!(parse(&bytes[..cut], usize::MAX).unwrap().is_none());
                        }
                    }
                    Ok(())
                })
                .unwrap();
        });
    }

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes never panic the parser: a frame, "need more", or an error.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, DEFAULT_MAX_FRAME);
        }
    }
}
