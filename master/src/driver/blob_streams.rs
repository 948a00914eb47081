//! The blob streams beside each control stream: uploads (validated, stored, charged to the
//! uploader's quota, dropped when they stall) and fetches (served only to whom the core says
//! may fetch).

use super::{close_code, ConnShared, Input};
use crate::blobs::BlobError;
use crate::core::{ConnId, Event};
use net::codec::{read_one, write_one};
use proto::identity::PeerId;
use proto::{BlobKind, Message, Role};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Uploads held in memory at once across all connections (each up to `max_blob_size`), so a
/// burst of uploads cannot exhaust the master's memory; further uploads wait their turn.
pub(super) const CONCURRENT_UPLOADS: usize = 8;

/// Uploads of one principal at once: a tenant stalling its uploads waits on its own permits.
const UPLOADS_PER_PRINCIPAL: usize = 2;

/// Longest silence inside an upload's body before it is dropped.
const UPLOAD_IDLE: Duration = Duration::from_secs(5);

/// Slowest average rate an upload may keep after [`UPLOAD_GRACE`] (bytes per second).
const UPLOAD_MIN_RATE: u64 = 64 * 1024;

/// Time every upload gets on top of its size at [`UPLOAD_MIN_RATE`].
const UPLOAD_GRACE: Duration = Duration::from_secs(10);

/// Bytes each principal has stored, against the per-principal limit, and each principal's
/// upload permits.
pub(super) struct Quota {
    limit: u64,
    state: std::sync::Mutex<QuotaState>,
}

#[derive(Default)]
struct QuotaState {
    /// Digests charged to each principal, with their sizes (a re-upload of its own blob is not
    /// charged twice).
    charged: HashMap<String, (u64, HashMap<proto::Digest, u64>)>,
    permits: HashMap<String, Arc<tokio::sync::Semaphore>>,
}

impl Quota {
    pub(super) fn new(limit: u64) -> Self {
        Self {
            limit,
            state: Default::default(),
        }
    }

    /// Charges `size` bytes of `digest` to `principal` unless it holds that digest already
    /// (`Ok(false)`: nothing charged); `Err(used)` when the charge would pass the limit.
    fn reserve(&self, principal: &str, digest: proto::Digest, size: u64) -> Result<bool, u64> {
        let mut state = self.state.lock().expect("poisoned");
        let (bytes, digests) = state.charged.entry(principal.to_owned()).or_default();
        if digests.contains_key(&digest) {
            return Ok(false);
        }
        if bytes.saturating_add(size) > self.limit {
            return Err(*bytes);
        }
        *bytes += size;
        digests.insert(digest, size);
        Ok(true)
    }

    /// Gives back every principal's charge for a blob the garbage collector deleted.
    pub(super) fn forget(&self, digest: proto::Digest) {
        let mut state = self.state.lock().expect("poisoned");
        for (bytes, digests) in state.charged.values_mut() {
            if let Some(size) = digests.remove(&digest) {
                *bytes = bytes.saturating_sub(size);
            }
        }
    }

    /// Gives back a reservation whose upload failed.
    fn release(&self, principal: &str, digest: proto::Digest, size: u64) {
        let mut state = self.state.lock().expect("poisoned");
        if let Some((bytes, digests)) = state.charged.get_mut(principal) {
            if digests.remove(&digest).is_some() {
                *bytes = bytes.saturating_sub(size);
            }
        }
    }

    fn permits(&self, principal: &str) -> Arc<tokio::sync::Semaphore> {
        let mut state = self.state.lock().expect("poisoned");
        state
            .permits
            .entry(principal.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(UPLOADS_PER_PRINCIPAL)))
            .clone()
    }
}

/// Who is at the other end of a blob stream.
pub(super) struct Peer {
    pub(super) conn_id: ConnId,
    pub(super) role: Role,
    pub(super) principal: PeerId,
    /// The core's input queue of the term the connection belongs to.
    pub(super) tx: mpsc::Sender<Input>,
}

pub(super) async fn serve_blob_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: Peer,
    shared: Arc<ConnShared>,
) {
    let reply = match read_one(&mut recv, shared.max_frame).await {
        Ok(Some(Message::UploadBlob { digest, kind, size })) => {
            upload(&mut recv, digest, kind, size, &peer, &shared).await
        }
        Ok(Some(Message::FetchBlob { digest })) if !may_fetch(&peer, digest, &shared).await => {
            tracing::warn!(principal = %peer.principal, ?digest, "fetch refused");
            // The same answer as for a blob that does not exist: no oracle for other tenants'.
            Message::BlobError {
                message: format!("unknown blob {digest:?}"),
            }
        }
        Ok(Some(Message::FetchBlob { digest })) => {
            let path = shared.store.path(&digest);
            match tokio::fs::File::open(&path).await {
                Ok(mut file) => {
                    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
                    if write_one(&mut send, &Message::BlobOk { size })
                        .await
                        .is_ok()
                    {
                        if let Err(e) = tokio::io::copy(&mut file, &mut send).await {
                            tracing::debug!(error = %e, "blob send failed");
                        }
                    }
                    let _ = send.finish();
                    return;
                }
                Err(_) => Message::BlobError {
                    message: format!("unknown blob {digest:?}"),
                },
            }
        }
        Ok(Some(other)) => Message::BlobError {
            message: format!("unexpected {} on a blob stream", other.kind()),
        },
        Ok(None) => return,
        Err(e) => Message::BlobError {
            message: e.to_string(),
        },
    };
    let _ = write_one(&mut send, &reply).await;
    let _ = send.finish();
}

/// Asks the core whether `peer` may fetch `digest`.
async fn may_fetch(peer: &Peer, digest: proto::Digest, _shared: &ConnShared) -> bool {
    if peer.role == Role::Standby {
        // A standby master mirrors every blob (its certificate was checked at the `Hello`).
        return true;
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let asked = peer
        .tx
        .send(Input::MayFetch {
            conn_id: peer.conn_id,
            digest,
            reply,
        })
        .await;
    asked.is_ok() && answer.await.unwrap_or(false)
}

async fn upload(
    recv: &mut quinn::RecvStream,
    digest: proto::Digest,
    kind: BlobKind,
    size: u64,
    peer: &Peer,
    shared: &ConnShared,
) -> Message {
    if peer.role != Role::Scheduler {
        return Message::BlobError {
            message: "only schedulers upload blobs".into(),
        };
    }
    if size > shared.max_blob_size {
        let _ = recv.stop(close_code::PROTOCOL.into());
        return Message::BlobError {
            message: BlobError::TooLarge {
                size,
                max: shared.max_blob_size,
            }
            .to_string(),
        };
    }
    let owner = peer.principal.name.clone();
    // One principal's uploads wait for its own permits first, so a tenant stalling uploads
    // holds up only itself; then a global permit bounds the bytes held in memory.
    let own = shared.quota.permits(&owner);
    let Ok(_own) = own.acquire().await else {
        return Message::BlobError {
            message: "master shutting down".into(),
        };
    };
    let Ok(_permit) = shared.uploads.acquire().await else {
        return Message::BlobError {
            message: "master shutting down".into(),
        };
    };
    // Reserved before the bytes are read, under the quota's lock: uploads racing each other
    // cannot all pass a check made against the same old total.
    let charged = match shared.quota.reserve(&owner, digest, size) {
        Ok(charged) => charged,
        Err(used) => {
            let _ = recv.stop(close_code::PROTOCOL.into());
            return Message::BlobError {
                message: format!(
                    "storage quota exceeded: principal {owner} has {used} of {} bytes stored and \
                     this blob is {size}",
                    shared.quota.limit
                ),
            };
        }
    };
    let reply = receive(recv, digest, kind, size, &owner, &peer.tx, shared).await;
    if charged && !matches!(reply, Message::BlobOk { .. }) {
        shared.quota.release(&owner, digest, size);
    }
    reply
}

/// Reads, validates and stores an upload whose quota is reserved; answers once the core knows
/// the blob and its owner (and, with a shared registry, once that is written there).
async fn receive(
    recv: &mut quinn::RecvStream,
    digest: proto::Digest,
    kind: BlobKind,
    size: u64,
    owner: &str,
    tx: &mpsc::Sender<Input>,
    shared: &ConnShared,
) -> Message {
    // A stalled or crawling upload is dropped: each chunk must come within `UPLOAD_IDLE`, and
    // the whole body at `UPLOAD_MIN_RATE` after a grace period.
    let deadline = UPLOAD_GRACE + Duration::from_secs(size / UPLOAD_MIN_RATE);
    let pace = net::link::Pace {
        idle: UPLOAD_IDLE,
        grace: UPLOAD_GRACE,
        min_rate: UPLOAD_MIN_RATE,
    };
    let read = net::link::read_blob_body_paced(recv, size, pace);
    let bytes = match tokio::time::timeout(deadline, read).await {
        Ok(Ok((bytes, _))) => bytes,
        Ok(Err(e)) => {
            let _ = recv.stop(close_code::PROTOCOL.into());
            return Message::BlobError {
                message: e.to_string(),
            };
        }
        Err(_) => {
            let _ = recv.stop(close_code::PROTOCOL.into());
            return Message::BlobError {
                message: format!("upload too slow: {size} bytes not received within {deadline:?}"),
            };
        }
    };
    let store = shared.store.clone();
    let who = owner.to_owned();
    // The owner is recorded durably with the blob before the upload is answered, so a
    // restarted master still knows who may use it.
    let stored = tokio::task::spawn_blocking(move || {
        store.put(digest, kind, &bytes)?;
        store.add_owner(&digest, &who)
    })
    .await;
    match stored {
        Ok(Ok(())) => {
            tracing::info!(?digest, ?kind, size, "blob stored");
            let (done, recorded) = oneshot::channel();
            let _ = tx
                .send(Input::Stored {
                    event: Event::BlobStored {
                        digest,
                        kind,
                        owner: Some(owner.to_owned()),
                    },
                    size,
                    done,
                })
                .await;
            match recorded.await {
                Ok(()) => Message::BlobOk { size },
                Err(_) => Message::BlobError {
                    message: "the master stopped leading before the upload was recorded; \
                              upload it again"
                        .into(),
                },
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(?digest, error = %e, "upload refused");
            Message::BlobError {
                message: e.to_string(),
            }
        }
        Err(e) => Message::BlobError {
            message: format!("store failed: {e}"),
        },
    }
}
