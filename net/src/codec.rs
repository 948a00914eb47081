//! The framed reader and writer of every control stream, built on `proto`'s pure framing.
//!
//! [`MessageCodec`] is a tokio-util codec whose decoder is exactly [`proto::frame::parse`] over
//! the bytes buffered so far, so the framing the unit tests and fuzzers exercise on byte slices
//! is the framing that runs on the wire. The buffer grows only as bytes arrive: a peer
//! announcing a 1 MiB frame and sending nothing costs a few KiB, not a 1 MiB allocation.

use bytes::{Buf, BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use proto::frame::{self, FrameError, HEADER_LEN};
use proto::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

/// Length-prefixed postcard [`Message`]s with a maximum frame size.
#[derive(Clone, Copy, Debug)]
pub struct MessageCodec {
    max: usize,
}

impl MessageCodec {
    /// A codec refusing frames over `max` bytes (prefix excluded).
    pub fn new(max: usize) -> Self {
        Self { max }
    }
}

impl Decoder for MessageCodec {
    type Item = Message;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        match frame::parse(src, self.max)? {
            Some((msg, used)) => {
                src.advance(used);
                Ok(Some(msg))
            }
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

impl Encoder<&Message> for MessageCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        let bytes = frame::encode(msg)?;
        dst.reserve(bytes.len());
        dst.put_slice(&bytes);
        Ok(())
    }
}

/// Reads [`Message`]s from a stream that carries nothing but frames (a control stream).
pub struct MessageReader<R> {
    inner: FramedRead<R, MessageCodec>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// Wraps `r`, refusing frames over `max` bytes.
    pub fn new(r: R, max: usize) -> Self {
        Self {
            inner: FramedRead::new(r, MessageCodec::new(max)),
        }
    }

    /// The next message; `Ok(None)` is a clean end of stream at a frame boundary. After an
    /// error the stream is unusable (the peer broke the framing or the transport failed).
    pub async fn recv(&mut self) -> Result<Option<Message>, FrameError> {
        self.inner.next().await.transpose()
    }

    /// The underlying stream (to stop it, for instance).
    pub fn get_mut(&mut self) -> &mut R {
        self.inner.get_mut()
    }
}

/// Writes [`Message`]s to a stream.
pub struct MessageWriter<W> {
    inner: FramedWrite<W, MessageCodec>,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    /// Wraps `w`.
    pub fn new(w: W) -> Self {
        Self {
            inner: FramedWrite::new(w, MessageCodec::new(usize::MAX)),
        }
    }

    /// Writes and flushes one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), FrameError> {
        self.inner.send(msg).await
    }

    /// The underlying stream (to finish it, for instance).
    pub fn get_mut(&mut self) -> &mut W {
        self.inner.get_mut()
    }
}

/// Reads exactly one frame and not a byte more, for streams that carry a frame followed by raw
/// bytes (blob streams) or a single handshake frame. The body buffer grows as bytes arrive.
/// `Ok(None)` is a stream that ended before the first byte.
pub async fn read_one<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Message>, FrameError> {
    let mut buf = Vec::with_capacity(HEADER_LEN);
    (&mut *r)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut buf)
        .await?;
    if buf.is_empty() {
        return Ok(None);
    }
    let size = match frame::check(&buf, max)? {
        Some(_) => 0,
        None if buf.len() < HEADER_LEN => return Err(FrameError::Truncated),
        None => u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize,
    };
    (&mut *r).take(size as u64).read_to_end(&mut buf).await?;
    match frame::parse(&buf, max)? {
        Some((msg, _)) => Ok(Some(msg)),
        None => Err(FrameError::Truncated),
    }
}

/// Writes one message to a stream that is not wrapped in a [`MessageWriter`] (blob streams).
pub async fn write_one<W: AsyncWrite + Unpin>(w: &mut W, msg: &Message) -> Result<(), FrameError> {
    use tokio::io::AsyncWriteExt;
    let bytes = frame::encode(msg)?;
    w.write_all(&bytes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::frame::DEFAULT_MAX_FRAME;
    use proto::TaskId;
    use tokio::io::AsyncWriteExt;

    fn sample() -> Message {
        Message::Kill {
            task_id: TaskId::from("t-1"),
        }
    }

    #[tokio::test]
    async fn reader_and_writer_round_trip_in_order() {
        let (a, b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let mut w = MessageWriter::new(a);
            w.send(&sample()).await.unwrap();
            w.send(&Message::Revive).await.unwrap();
        });
        let mut r = MessageReader::new(b, 1024);
        assert_eq!(r.recv().await.unwrap(), Some(sample()));
        assert_eq!(r.recv().await.unwrap(), Some(Message::Revive));
        writer.await.unwrap();
        assert_eq!(r.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_truncated() {
        let (mut a, b) = tokio::io::duplex(64);
        let bytes = frame::encode(&sample()).unwrap();
        a.write_all(&bytes[..bytes.len() - 1]).await.unwrap();
        drop(a);
        let mut r = MessageReader::new(b, 1024);
        assert!(matches!(r.recv().await, Err(FrameError::Truncated)));
    }

    #[tokio::test]
    async fn an_oversized_announcement_is_refused_before_its_body() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&(10u32 << 20).to_be_bytes()).await.unwrap();
        let mut r = MessageReader::new(b, DEFAULT_MAX_FRAME);
        assert!(matches!(r.recv().await, Err(FrameError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn read_one_leaves_the_bytes_after_the_frame() {
        let (mut a, mut b) = tokio::io::duplex(64);
        write_one(&mut a, &Message::Revive).await.unwrap();
        a.write_all(b"raw blob bytes").await.unwrap();
        drop(a);
        assert_eq!(read_one(&mut b, 1024).await.unwrap(), Some(Message::Revive));
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"raw blob bytes");
    }

    #[tokio::test]
    async fn read_one_of_an_empty_stream_is_none() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert_eq!(read_one(&mut b, 1024).await.unwrap(), None);
    }
}
