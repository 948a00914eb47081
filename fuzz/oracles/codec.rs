// The oracle of the `codec` fuzz target, shared by the target and the corpus replay in
// `cargo test` (both `include!` this file, so they check the same thing).
use bytes::BytesMut;
use net::codec::MessageCodec;
use proto::frame::{parse, DEFAULT_MAX_FRAME};
use tokio_util::codec::Decoder;

/// The live reader's decoder fed untrusted bytes in arbitrary pieces must yield exactly what
/// `proto::frame::parse` yields on the whole buffer: chunking never changes a message, loses one
/// or invents one.
/// The sizes of the pieces come from the bytes themselves, so a corpus file alone replays.
pub fn codec(data: &[u8]) {
    // What a reader holding every byte at once sees.
    let mut whole = Vec::new();
    let mut rest = data;
    let whole_failed = loop {
        match parse(rest, DEFAULT_MAX_FRAME) {
            Ok(Some((msg, used))) => {
                whole.push(msg);
                rest = &rest[used..];
            }
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    // The codec, fed in pieces of 1 to 16 bytes.
    let mut codec = MessageCodec::new(DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut failed = false;
    let mut at = 0;
    let key = data.first().copied().unwrap_or(0);
    let mut sizes = data.iter().map(|b| ((b ^ key) % 16) as usize + 1).cycle();
    'feed: while at < data.len() {
        let n = sizes.next().unwrap_or(data.len()).min(data.len() - at);
        buf.extend_from_slice(&data[at..at + n]);
        at += n;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(msg)) => got.push(msg),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(failed, whole_failed);
    assert_eq!(format!("{got:?}"), format!("{whole:?}"));
}
