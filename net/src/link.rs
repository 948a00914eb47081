//! The client side of a Tessera connection, shared by agents and schedulers: dial the master
//! over QUIC with mutual TLS, open the control stream, do the version handshake; and the blob
//! streams (upload, fetch) that run beside it.
//!
//! Only the mechanics live here; when to reconnect and what to say is each role's business.
//!
//! With several masters (one leader, standbys), a standby answers the `Hello` with
//! [`Message::NotLeader`], which the handshake returns as [`LinkError::NotLeader`]; the
//! [`crate::masters::MasterSet`] turns that into "dial the leader next" (the agent, the SDK and
//! the CLI dial through it). A leader that steps down closes its connections with
//! [`NOT_LEADER_CLOSE_CODE`]; [`is_not_leader_close`] tells a peer to look for the new leader
//! at once rather than back off.

use crate::codec::{read_one, write_one, MessageReader, MessageWriter};
use crate::tls::{self, PeerTls, TlsError, TransportTuning, MASTER_SERVER_NAME};
use proto::frame::{FrameError, DEFAULT_MAX_FRAME};
use proto::ids::{Digest, Hasher};
use proto::messages::{BlobKind, Message, Role, PROTOCOL_VERSION};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Chunk size for streaming blob bytes.
const CHUNK: usize = 64 * 1024;

/// What can go wrong on a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The local UDP socket could not be opened.
    #[error("opening endpoint: {0}")]
    Endpoint(std::io::Error),
    /// Dialling failed before the handshake.
    #[error("connecting to {addr}: {message}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A stream failed.
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    /// Framing failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer answered with something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The master refused a blob.
    #[error("blob refused: {0}")]
    Refused(String),
    /// The master refused the connection at the handshake (its certificate's kind, version...).
    #[error("the master refused this peer: {0}")]
    HelloRefused(String),
    /// A fetched blob's bytes did not match its digest.
    #[error("blob {expected:?} arrived with digest {got:?}")]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        got: Digest,
    },
    /// Local file i/o.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The master dialled is a standby: `leader` is the leader it knows of, if any.
    #[error("that master is not the leader (leader: {})", leader.as_deref().unwrap_or("none yet"))]
    NotLeader {
        /// The leader's advertised `host:port`, or `None` while nobody leads.
        leader: Option<String>,
    },
    /// A master's `host:port` did not resolve to an address.
    #[error("resolving {addr}: {message}")]
    Resolve {
        /// The name that failed.
        addr: String,
        /// Why.
        message: String,
    },
}

/// The QUIC application close code a standby master closes a connection with after its
/// [`Message::NotLeader`] (the master's `close_code::NOT_LEADER` must equal it): a peer that
/// sees the close before the message still knows to look for the leader.
pub const NOT_LEADER_CLOSE_CODE: u32 = 5;

/// Whether a connection ended with a master's not-leader close ([`NOT_LEADER_CLOSE_CODE`]): a
/// standby refusing a `Hello`, or a leader that stepped down. Either way the cluster is alive
/// and the peer should look for the leader now, not back off.
pub fn is_not_leader_close(reason: &quinn::ConnectionError) -> bool {
    matches!(reason, quinn::ConnectionError::ApplicationClosed(close)
        if close.error_code == quinn::VarInt::from_u32(NOT_LEADER_CLOSE_CODE))
}

/// A client QUIC endpoint configured for mutual TLS with the cluster.
pub fn client_endpoint(
    tls: &PeerTls,
    tuning: TransportTuning,
) -> Result<quinn::Endpoint, LinkError> {
    let cfg = tls::client_config_with_crls(&tls.ca_pem, &tls.identity, &tls.crls, tuning)?;
    let mut ep = quinn::Endpoint::client("0.0.0.0:0".parse().expect("valid addr"))
        .map_err(LinkError::Endpoint)?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// An established connection with its control stream, past the handshake.
pub struct Link {
    /// The QUIC connection (open blob streams on it).
    pub conn: quinn::Connection,
    /// Sending half of the control stream.
    pub send: MessageWriter<quinn::SendStream>,
    /// Receiving half of the control stream.
    pub recv: MessageReader<quinn::RecvStream>,
}

impl Link {
    /// Dials the master and performs the handshake as `role`.
    pub async fn connect(
        ep: &quinn::Endpoint,
        addr: SocketAddr,
        role: Role,
    ) -> Result<Self, LinkError> {
        Self::connect_with(ep, addr, role, &[]).await
    }

    /// Dials the master and performs the handshake as `role`, sending `first` right behind
    /// the `Hello` instead of after the `HelloAck`: on a slow link that saves a round trip
    /// (a scheduler's `Subscribe` travels with its `Hello`). The master reads its control
    /// stream in order, so `first` is handled only once the `Hello` is accepted, and dropped
    /// with the connection when it is refused.
    pub async fn connect_with(
        ep: &quinn::Endpoint,
        addr: SocketAddr,
        role: Role,
        first: &[Message],
    ) -> Result<Self, LinkError> {
        Self::connect_with_then(ep, addr, role, first, |_| {}).await
    }

    /// [`Link::connect_with`], calling `on_conn` with the connection as soon as the QUIC
    /// handshake is done and the `Hello` (with `first`) is written, before the `HelloAck`
    /// comes back: blob streams opened there travel in the same flight as the `Hello`, a
    /// round trip earlier. The control stream is opened first, so it has the lowest stream
    /// id and the master (which takes its first accepted stream as the control stream) never
    /// mistakes an upload for it; the master serves blob streams only once the `Hello` is
    /// accepted, and QUIC holds their bytes until then.
    pub async fn connect_with_then(
        ep: &quinn::Endpoint,
        addr: SocketAddr,
        role: Role,
        first: &[Message],
        on_conn: impl FnOnce(&quinn::Connection),
    ) -> Result<Self, LinkError> {
        let t0 = std::time::Instant::now();
        let connecting = ep
            .connect(addr, MASTER_SERVER_NAME)
            .map_err(|e| LinkError::Connect {
                addr,
                message: e.to_string(),
            })?;
        let conn = connecting.await?;
        tracing::debug!(elapsed = ?t0.elapsed(), %addr, "QUIC handshake done");
        let (send, recv) = conn.open_bi().await?;
        let mut send = MessageWriter::new(send);
        let mut recv = MessageReader::new(recv, DEFAULT_MAX_FRAME);
        send.send(&Message::Hello {
            version: PROTOCOL_VERSION,
            role,
        })
        .await?;
        for msg in first {
            send.send(msg).await?;
        }
        on_conn(&conn);
        match recv.recv().await {
            Ok(Some(Message::HelloAck { .. })) => {
                tracing::debug!(elapsed = ?t0.elapsed(), %addr, "HelloAck received");
                Ok(Self { conn, send, recv })
            }
            Ok(Some(Message::Error { message })) => Err(LinkError::HelloRefused(message)),
            Ok(Some(Message::NotLeader { leader })) => {
                tracing::debug!(%addr, ?leader, "the master is a standby");
                Err(LinkError::NotLeader { leader })
            }
            Ok(Some(other)) => Err(LinkError::Protocol(format!(
                "expected HelloAck, got {}",
                other.kind()
            ))),
            Ok(None) => Err(closed_reason(&conn, "the master closed the control stream")),
            Err(FrameError::Io(_)) | Err(FrameError::Truncated) => {
                Err(closed_reason(&conn, "the master closed the connection"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends one control message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        self.send.send(msg).await?;
        Ok(())
    }

    /// Receives one control message; `None` when the master closed the stream.
    pub async fn recv(&mut self) -> Result<Option<Message>, LinkError> {
        Ok(self.recv.recv().await?)
    }
}

fn closed_reason(conn: &quinn::Connection, fallback: &str) -> LinkError {
    match conn.close_reason() {
        Some(e) if is_not_leader_close(&e) => LinkError::NotLeader { leader: None },
        Some(e) => LinkError::Connection(e),
        None => LinkError::Protocol(fallback.to_owned()),
    }
}

/// Uploads a blob on a stream of its own; returns once the master has validated and stored it.
pub async fn upload_blob(
    conn: &quinn::Connection,
    kind: BlobKind,
    bytes: &[u8],
) -> Result<Digest, LinkError> {
    let digest = Digest::of(bytes);
    let (mut send, mut recv) = conn.open_bi().await?;
    write_one(
        &mut send,
        &Message::UploadBlob {
            digest,
            kind,
            size: bytes.len() as u64,
        },
    )
    .await?;
    send.write_all(bytes).await?;
    let _ = send.finish();
    match read_one(&mut recv, DEFAULT_MAX_FRAME).await? {
        Some(Message::BlobOk { .. }) => Ok(digest),
        Some(Message::BlobError { message }) => Err(LinkError::Refused(message)),
        Some(other) => Err(LinkError::Protocol(format!(
            "unexpected {} on blob stream",
            other.kind()
        ))),
        None => Err(LinkError::Protocol(
            "blob stream closed without an answer".into(),
        )),
    }
}

/// Fetches a blob into `dest` (written to a temporary name, checked against the digest, then
/// renamed into place, so a torn or corrupt transfer never leaves a file under the real name).
pub async fn fetch_blob(
    conn: &quinn::Connection,
    digest: Digest,
    dest: &Path,
    max_size: u64,
) -> Result<u64, LinkError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_one(&mut send, &Message::FetchBlob { digest }).await?;
    let _ = send.finish();
    let size = match read_one(&mut recv, DEFAULT_MAX_FRAME).await? {
        Some(Message::BlobOk { size }) => size,
        Some(Message::BlobError { message }) => return Err(LinkError::Refused(message)),
        Some(other) => {
            return Err(LinkError::Protocol(format!(
                "unexpected {} on blob stream",
                other.kind()
            )))
        }
        None => {
            return Err(LinkError::Protocol(
                "blob stream closed without an answer".into(),
            ))
        }
    };
    if size > max_size {
        return Err(LinkError::Refused(format!(
            "blob of {size} bytes exceeds the {max_size}-byte limit"
        )));
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dest.with_extension(format!("part-{}-{n}", std::process::id()));
    let mut file = tokio::fs::File::create(&tmp).await?;
    let mut hasher = Hasher::default();
    let mut chunks = Chunks::new(size);
    let copied: Result<(), LinkError> = async {
        while let Some(chunk) = chunks.next(&mut recv).await? {
            hasher.update(chunk);
            file.write_all(chunk).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    let got = hasher.finish();
    if got != digest {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(LinkError::DigestMismatch {
            expected: digest,
            got,
        });
    }
    tokio::fs::rename(&tmp, dest).await?;
    Ok(size)
}

/// Reads exactly `size` bytes of a blob body from a stream (the master's side of an upload),
/// hashing as it goes; refuses more than `size`.
pub async fn read_blob_body(
    recv: &mut quinn::RecvStream,
    size: u64,
) -> Result<(Vec<u8>, Digest), LinkError> {
    read_blob_body_paced(recv, size, Pace::NONE).await
}

/// How slow an upload may be before the reader gives up on it.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Longest silence between two chunks.
    pub idle: Duration,
    /// Time before the average rate is checked.
    pub grace: Duration,
    /// Slowest average rate after the grace period, in bytes per second.
    pub min_rate: u64,
}

impl Pace {
    /// No limit at all.
    pub const NONE: Pace = Pace {
        idle: Duration::MAX,
        grace: Duration::MAX,
        min_rate: 0,
    };
}

/// [`read_blob_body`] that gives up when no byte arrives for `pace.idle`, or when, after
/// `pace.grace`, fewer bytes have come than `pace.min_rate` would have brought since: a peer
/// stalling or trickling an upload loses it instead of holding the master's upload slot.
pub async fn read_blob_body_paced(
    recv: &mut quinn::RecvStream,
    size: u64,
    pace: Pace,
) -> Result<(Vec<u8>, Digest), LinkError> {
    // Grows as bytes arrive: the announced size is the peer's word, not a reason to allocate.
    let mut out = Vec::with_capacity(size.min(CHUNK as u64) as usize);
    let mut hasher = Hasher::default();
    let mut chunks = Chunks::new(size);
    let start = tokio::time::Instant::now();
    loop {
        let next = if pace.idle == Duration::MAX {
            chunks.next(recv).await?
        } else {
            match tokio::time::timeout(pace.idle, chunks.next(recv)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(LinkError::Protocol(format!(
                        "upload stalled: no bytes for {:?}",
                        pace.idle
                    )))
                }
            }
        };
        let Some(chunk) = next else { break };
        hasher.update(chunk);
        out.extend_from_slice(chunk);
        let elapsed = start.elapsed();
        if elapsed > pace.grace {
            let due = (elapsed - pace.grace).as_secs_f64() * pace.min_rate as f64;
            if (out.len() as f64) < due {
                return Err(LinkError::Protocol(format!(
                    "upload too slow: {} bytes in {elapsed:?}, below {} bytes/s",
                    out.len(),
                    pace.min_rate
                )));
            }
        }
    }
    recv.read_to_end(0)
        .await
        .map_err(|_| LinkError::Protocol("more bytes than the announced size".into()))?;
    Ok((out, hasher.finish()))
}

/// Reads exactly `size` bytes from a stream, a chunk at a time; a stream that ends early is
/// `Truncated`.
struct Chunks {
    left: u64,
    buf: Vec<u8>,
}

impl Chunks {
    fn new(size: u64) -> Self {
        Self {
            left: size,
            buf: vec![0u8; (size.min(CHUNK as u64) as usize).max(1)],
        }
    }

    /// The next chunk, or `None` once `size` bytes have been read.
    async fn next(&mut self, recv: &mut quinn::RecvStream) -> Result<Option<&[u8]>, LinkError> {
        if self.left == 0 {
            return Ok(None);
        }
        let want = self.buf.len().min(self.left as usize);
        match recv
            .read(&mut self.buf[..want])
            .await
            .map_err(|e| LinkError::Io(e.into()))?
        {
            Some(0) | None => Err(LinkError::Frame(FrameError::Truncated)),
            Some(n) => {
                self.left -= n as u64;
                Ok(Some(&self.buf[..n]))
            }
        }
    }
}
