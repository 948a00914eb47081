//! The runtime socket's protocol: length-delimited frames (tokio-util), each one postcard
//! message, [`Request`]s from the agent and [`Reply`]s from the runtime process.
//!
//! A connection starts with [`Request::Hello`]; the runtime answers [`Reply::Welcome`] with the
//! [`Attachment`], then sends the unacknowledged outbox and live events as [`Reply::Event`]s.
//! Frames over [`MAX_FRAME`] and frames that do not decode end the connection (never the
//! runtime).

use std::path::PathBuf;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::{Attachment, GuestId, PrepareInfo, RuntimeEvent};
use crate::executor::{InstanceSpec, InstanceTask, TaskSpec};

/// Version of this protocol; a runtime refuses a hello of another version. Postcard is not
/// self-describing, so bump it whenever [`Request`], [`Reply`] or any type they carry (the
/// executor's specs, events and config) changes; a test pins the encoding to it. The
/// [`Request::Hello`] and [`Reply::Refused`] variants keep their place and shape forever, so
/// that a refusal is always understood.
pub(crate) const PROTOCOL_VERSION: u32 = 9;

/// Largest frame either side sends or accepts (guest messages are at most 64 KiB, specs and
/// outcomes a few KiB: this leaves room for large argument lists and scheduler messages).
pub(crate) const MAX_FRAME: usize = 16 << 20;

/// From the agent to the runtime process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// First frame of a connection.
    Hello {
        /// [`PROTOCOL_VERSION`] of the agent.
        version: u32,
        /// The agent's boot id, for the runtime's log.
        boot_id: String,
    },
    /// Compile a module; answered by [`Reply::Prepared`] with the same `id`, unless
    /// [`Request::CancelPrepare`] comes first.
    Prepare {
        /// Matches the answer to the call.
        id: u64,
        /// The module's digest.
        digest: String,
        /// Its file.
        wasm_path: PathBuf,
    },
    /// [`Runtime::launch`](super::Runtime::launch).
    Launch { guest: GuestId, spec: TaskSpec },
    /// [`Runtime::kill`](super::Runtime::kill).
    Kill { guest: GuestId },
    /// [`Runtime::start_instance`](super::Runtime::start_instance).
    StartInstance { guest: GuestId, spec: InstanceSpec },
    /// [`Runtime::instance_launch`](super::Runtime::instance_launch).
    InstanceLaunch { guest: GuestId, task: InstanceTask },
    /// [`Runtime::instance_kill_task`](super::Runtime::instance_kill_task).
    InstanceKillTask { guest: GuestId, task_id: String },
    /// [`Runtime::instance_message`](super::Runtime::instance_message).
    InstanceMessage { guest: GuestId, data: Vec<u8> },
    /// [`Runtime::instance_shutdown`](super::Runtime::instance_shutdown).
    InstanceShutdown { guest: GuestId },
    /// [`Runtime::set_envelope`](super::Runtime::set_envelope).
    SetEnvelope {
        guest: GuestId,
        cpus_milli: u64,
        mem_bytes: u64,
    },
    /// [`Runtime::ack`](super::Runtime::ack).
    Ack { seq: u64 },
    /// Kill every guest, wait for their ends, answer [`Reply::Stopped`] and exit.
    Stop,
    /// [`Runtime::read_output`](super::Runtime::read_output); answered by [`Reply::Output`]
    /// with the same `id` (version 4).
    ReadOutput {
        /// Matches the answer to the call.
        id: u64,
        /// The task's directory.
        task_dir: PathBuf,
        /// stderr (else stdout).
        stderr: bool,
        /// Where to start.
        offset: u64,
        /// Most bytes.
        length: u64,
    },
    /// [`Runtime::forget_output`](super::Runtime::forget_output) (version 4).
    ForgetOutput { task_dir: PathBuf },
    /// The caller of [`Request::Prepare`] `id` is gone (its task was killed): the runtime
    /// drops the prepare, unanswered, which stops a compile no other prepare waits for
    /// (version 9).
    CancelPrepare {
        /// The prepare's `id`.
        id: u64,
    },
}

/// From the runtime process to the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The answer to a valid hello.
    Welcome(Attachment),
    /// The answer to a hello the runtime cannot serve (another protocol version).
    Refused(String),
    /// The answer to [`Request::Prepare`]: whether the module cache had it and how long
    /// compiling took, or the executor's error message if it refused (version 3 added the
    /// [`PrepareInfo`], for the agent's cache metrics).
    Prepared {
        id: u64,
        result: Result<PrepareInfo, String>,
    },
    /// A guest's event (replayed or live).
    Event(RuntimeEvent),
    /// Every guest has ended; the runtime process exits.
    Stopped,
    /// The answer to [`Request::ReadOutput`]: the bytes and the stream's size if the runtime
    /// holds the stream in memory, `None` if it is in its file (version 4).
    Output {
        id: u64,
        data: Option<(Vec<u8>, u64)>,
    },
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The socket failed, or a frame was over [`MAX_FRAME`].
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The frame is not a message of the protocol (or a message could not be encoded).
    #[error("malformed frame: {0}")]
    Decode(#[from] postcard::Error),
    /// A message to send encodes to more than [`MAX_FRAME`] bytes: not sent, the connection
    /// stays usable.
    #[error("message of {0} bytes is over the frame cap")]
    TooLarge(usize),
}

/// Reads messages of type `T` from a socket's read half.
pub(crate) struct Reader<T> {
    /// Frames off the socket.
    inner: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    /// The message type it decodes.
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Reader<T> {
    pub(crate) fn new(r: OwnedReadHalf) -> Self {
        Reader {
            inner: FramedRead::new(r, codec()),
            _t: std::marker::PhantomData,
        }
    }

    /// The next message; `Ok(None)` at a clean end of stream. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Result<Option<T>, FrameError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(frame) => Ok(Some(postcard::from_bytes(&frame?)?)),
        }
    }
}

/// Writes messages of type `T` to a socket's write half.
pub(crate) struct Writer<T> {
    /// Frames onto the socket.
    inner: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    /// The message type it encodes.
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T: Serialize> Writer<T> {
    pub(crate) fn new(w: OwnedWriteHalf) -> Self {
        Writer {
            inner: FramedWrite::new(w, codec()),
            _t: std::marker::PhantomData,
        }
    }

    /// Sends one message (an error if it encodes to more than [`MAX_FRAME`] bytes).
    pub(crate) async fn send(&mut self, msg: &T) -> Result<(), FrameError> {
        let bytes = postcard::to_stdvec(msg)?;
        if bytes.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        self.inner.send(Bytes::from(bytes)).await?;
        Ok(())
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}
