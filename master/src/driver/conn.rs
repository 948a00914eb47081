//! One connection's life on the master: identity from its certificate, the `Hello`, then
//! (while this master leads) a reader feeding the core, a writer draining its queue and a task
//! accepting its blob streams. A standby answers the `Hello` with `NotLeader` and closes; a
//! standby master's own connection (mirroring blobs) only fetches blobs.

use super::blob_streams::{serve_blob_stream, Peer};
use super::{
    close_code, ConnShared, Input, Mode, CONNECTIONS_PER_PRINCIPAL, PEER_INPUTS, WRITE_QUEUE,
};
use crate::core::{ConnId, Event};
use net::{MessageReader, MessageWriter};
use proto::frame::FrameError;
use proto::identity::{PeerId, PeerKind};
use proto::{Message, Role, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Open connections per principal, against [`CONNECTIONS_PER_PRINCIPAL`].
#[derive(Default)]
pub(super) struct PrincipalSlots(std::sync::Mutex<HashMap<PeerId, usize>>);

impl PrincipalSlots {
    /// Takes a slot for `who`, given back when the returned guard drops; `None` when it holds
    /// all its slots.
    fn enter(&self, who: &PeerId) -> Option<PrincipalSlot<'_>> {
        let mut held = self.0.lock().expect("poisoned");
        let n = held.entry(who.clone()).or_default();
        if *n >= CONNECTIONS_PER_PRINCIPAL {
            return None;
        }
        *n += 1;
        Some(PrincipalSlot {
            slots: self,
            who: who.clone(),
        })
    }
}

/// One connection's slot; gives it back on drop.
struct PrincipalSlot<'a> {
    slots: &'a PrincipalSlots,
    who: PeerId,
}

impl Drop for PrincipalSlot<'_> {
    fn drop(&mut self) {
        let mut held = self.slots.0.lock().expect("poisoned");
        if let Some(n) = held.get_mut(&self.who) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.who);
            }
        }
    }
}

pub(super) async fn serve_connection(
    incoming: quinn::Incoming,
    conn_id: ConnId,
    shared: Arc<ConnShared>,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Includes clients without a certificate from the cluster CA.
            tracing::warn!(%remote, error = %e, "connection refused during the handshake");
            return;
        }
    };
    let principal = match net::identity::of_connection(&conn) {
        Ok((cluster, id)) if cluster == shared.cluster => id,
        Ok((cluster, id)) => {
            let why = format!(
                "certificate of {id} is for cluster {cluster:?}, this is cluster {:?}",
                shared.cluster
            );
            tracing::warn!(%remote, principal = %id, %why, "connection refused");
            conn.close(close_code::FORBIDDEN.into(), why.as_bytes());
            return;
        }
        Err(e) => {
            let why = format!("certificate refused: {e}");
            tracing::warn!(%remote, %why, "connection refused");
            conn.close(close_code::FORBIDDEN.into(), why.as_bytes());
            return;
        }
    };
    let Some(_slot) = shared.principals.enter(&principal) else {
        let why = format!(
            "{principal} already holds {CONNECTIONS_PER_PRINCIPAL} connections to the master"
        );
        tracing::warn!(%remote, %principal, "connection refused: too many connections");
        conn.close(close_code::FORBIDDEN.into(), why.as_bytes());
        return;
    };
    let handshake = async {
        let (send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut send = MessageWriter::new(send);
        let mut recv = MessageReader::new(recv, shared.max_frame);
        match recv.recv().await {
            Ok(Some(Message::Hello { version, role })) if version == PROTOCOL_VERSION => {
                if let Some(why) = role_refusal(role, &principal) {
                    tracing::warn!(%remote, %principal, ?role, %why, "connection refused");
                    let answer = Message::Error {
                        message: why.clone(),
                    };
                    answer_and_close(&conn, &mut send, &answer, close_code::FORBIDDEN, &why).await;
                    return Err(why);
                }
                // The mode is read once the peer is known: a connection belongs to the term
                // it was accepted in, and a term's end closes it.
                let tx = match &*shared.mode.borrow() {
                    Mode::Leading(tx) => Ok(tx.clone()),
                    Mode::Standby(leader) => Err(leader.clone()),
                };
                let tx = match tx {
                    Ok(tx) => tx,
                    Err(leader) => {
                        let answer = Message::NotLeader { leader };
                        let code = close_code::NOT_LEADER;
                        answer_and_close(&conn, &mut send, &answer, code, "not the leader").await;
                        return Ok(None);
                    }
                };
                send.send(&Message::HelloAck {
                    version: PROTOCOL_VERSION,
                })
                .await
                .map_err(|e| e.to_string())?;
                Ok(Some((send, recv, role, tx)))
            }
            Ok(Some(Message::Hello { version, .. })) => {
                let message = format!(
                    "protocol version {version} is not supported; this master speaks {PROTOCOL_VERSION}"
                );
                let answer = Message::Error {
                    message: message.clone(),
                };
                answer_and_close(&conn, &mut send, &answer, close_code::VERSION, &message).await;
                Err(message)
            }
            Ok(Some(other)) => Err(format!("expected Hello, got {}", other.kind())),
            Ok(None) => Err("stream closed before Hello".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    };
    let (mut send, mut recv, role, tx) =
        match tokio::time::timeout(shared.handshake_timeout, handshake).await {
            Ok(Ok(Some(x))) => x,
            Ok(Ok(None)) => {
                tracing::debug!(%remote, %principal, "standby: peer sent to the leader");
                return;
            }
            Ok(Err(why)) => {
                tracing::warn!(%remote, %why, "handshake failed");
                conn.close(close_code::PROTOCOL.into(), why.as_bytes());
                return;
            }
            Err(_) => {
                tracing::warn!(%remote, "no Hello in time");
                conn.close(close_code::PROTOCOL.into(), b"no Hello in time");
                return;
            }
        };
    tracing::debug!(%remote, conn_id, ?role, "peer connected");
    if role == Role::Standby {
        serve_standby(conn, recv, conn_id, principal, tx, shared.clone()).await;
        return;
    }

    let (writer, mut outbox) = mpsc::channel::<Message>(WRITE_QUEUE);
    let opened = tx
        .send(Input::Open {
            conn_id,
            conn: conn.clone(),
            writer,
            peer: principal.to_string(),
        })
        .await
        .is_ok()
        && tx
            .send(Input::Core(Event::Connected {
                conn: conn_id,
                role,
                peer: remote.to_string(),
                principal: principal.clone(),
            }))
            .await
            .is_ok();
    if !opened {
        // The term ended between the `HelloAck` and now.
        conn.close(close_code::NOT_LEADER.into(), b"not the leader any more");
        return;
    }
    tokio::spawn(async move {
        while let Some(msg) = outbox.recv().await {
            if let Err(e) = send.send(&msg).await {
                tracing::debug!(conn_id, error = %e, "control write failed");
                break;
            }
        }
    });
    let blobs = {
        let conn = conn.clone();
        let shared = shared.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(serve_blob_stream(
                    send,
                    recv,
                    Peer {
                        conn_id,
                        role,
                        principal: principal.clone(),
                        tx: tx.clone(),
                    },
                    shared.clone(),
                ));
            }
        })
    };

    let inputs = Arc::new(tokio::sync::Semaphore::new(PEER_INPUTS));
    let mut budget = crate::rate::FrameBudget::new(
        crate::rate::FRAMES_PER_SECOND,
        crate::rate::FRAME_BURST,
        std::time::Instant::now(),
    );
    loop {
        match recv.recv().await {
            Ok(Some(msg)) => {
                if let Some(wait) = budget.take(std::time::Instant::now()) {
                    // Over its rate: this peer waits, and QUIC flow control holds it back.
                    tokio::time::sleep(wait).await;
                }
                let Ok(permit) = inputs.clone().acquire_owned().await else {
                    break;
                };
                if tx
                    .send(Input::FromPeer(
                        Event::Message { conn: conn_id, msg },
                        permit,
                    ))
                    .await
                    .is_err()
                {
                    // The term ended: the peer must find the new leader.
                    conn.close(close_code::NOT_LEADER.into(), b"not the leader any more");
                    break;
                }
            }
            Ok(None) => break,
            Err(
                e
                @ (FrameError::TooLarge { .. } | FrameError::Malformed(_) | FrameError::Truncated),
            ) => {
                tracing::warn!(%remote, conn_id, error = %e, "closing connection: bad frame");
                conn.close(close_code::PROTOCOL.into(), e.to_string().as_bytes());
                break;
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!(%remote, conn_id, error = %e, "control stream ended");
                break;
            }
        }
    }
    blobs.abort();
    let _ = tx
        .send(Input::Core(Event::Disconnected { conn: conn_id }))
        .await;
}

/// Answers a `Hello` with `answer` (a refusal, or where the leader is), then closes the
/// connection with `code` a moment later, so the answer has a chance to arrive first.
async fn answer_and_close(
    conn: &quinn::Connection,
    send: &mut MessageWriter<quinn::SendStream>,
    answer: &Message,
    code: u32,
    reason: &str,
) {
    let _ = send.send(answer).await;
    let _ = send.get_mut().finish();
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.close(code.into(), reason.as_bytes());
}

/// A standby master's connection: it fetches blobs to mirror them (any blob: it may have to
/// serve them all as the next leader), and sends nothing on its control stream.
async fn serve_standby(
    conn: quinn::Connection,
    mut recv: MessageReader<quinn::RecvStream>,
    conn_id: ConnId,
    principal: PeerId,
    tx: mpsc::Sender<Input>,
    shared: Arc<ConnShared>,
) {
    let term = tx.clone();
    let blobs = {
        let conn = conn.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(serve_blob_stream(
                    send,
                    recv,
                    Peer {
                        conn_id,
                        role: Role::Standby,
                        principal: principal.clone(),
                        tx: tx.clone(),
                    },
                    shared.clone(),
                ));
            }
        })
    };
    tokio::select! {
        msg = recv.recv() => {
            if let Ok(Some(msg)) = msg {
                conn.close(
                    close_code::PROTOCOL.into(),
                    format!("a standby sends no {}", msg.kind()).as_bytes(),
                );
            }
        }
        _ = term.closed() => {
            conn.close(close_code::NOT_LEADER.into(), b"not the leader any more");
        }
    }
    blobs.abort();
}

/// Why a certificate of `principal`'s kind may not take `role`, if it may not: agents register
/// only with agent certificates, schedulers subscribe only with framework or operator ones.
pub(super) fn role_refusal(role: Role, principal: &PeerId) -> Option<String> {
    let allowed = match role {
        Role::Agent => principal.kind == PeerKind::Agent,
        Role::Scheduler => matches!(principal.kind, PeerKind::Framework | PeerKind::Operator),
        Role::Standby => principal.kind == PeerKind::Master,
    };
    (!allowed).then(|| {
        let what = match role {
            Role::Agent => "register as an agent",
            Role::Scheduler => "subscribe a framework",
            Role::Standby => "mirror blobs as a standby master",
        };
        format!(
            "a {} certificate ({principal}) may not {what}",
            principal.kind
        )
    })
}
