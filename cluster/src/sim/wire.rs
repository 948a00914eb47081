//! Messages in flight between the master and its peers, and the faults set on agents' links.
//!
//! Each connection is a reliable, ordered pipe with latency (what one QUIC stream gives): a
//! message never overtakes an earlier one in the same direction.

use master::core::ConnId;
use proto::Message;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

/// The faults set on one agent's link (cleared by [`crate::sim::Sim::recover`]), or on a
/// framework's (loss and latency only; cleared by [`crate::sim::Sim::recover_framework`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Fraction of datagrams lost; on a QUIC stream a loss costs a retransmission timeout and
    /// holds up what follows, it never loses a message.
    pub loss: f64,
    /// Latency added to every message.
    pub delay: std::time::Duration,
    /// Nothing gets through: held while the connection lives, lost with it.
    pub isolated: bool,
}

/// One message on its way.
#[derive(Debug)]
struct Packet {
    at: Instant,
    conn: ConnId,
    to_master: bool,
    msg: Message,
}

/// Every message in flight.
#[derive(Default)]
pub(crate) struct Wire {
    packets: VecDeque<Packet>,
    /// When the last message queued in each direction of each connection arrives (order).
    last_delivery: BTreeMap<(ConnId, bool), Instant>,
    /// Connections whose messages are held (an isolated link the ends have not given up on).
    held: BTreeSet<ConnId>,
}

impl Wire {
    /// Queues `msg` on `conn` to arrive `latency` after `now`, after everything queued before.
    pub fn send(
        &mut self,
        now: Instant,
        latency: std::time::Duration,
        conn: ConnId,
        to_master: bool,
        msg: Message,
    ) {
        let key = (conn, to_master);
        let at = (now + latency).max(self.last_delivery.get(&key).copied().unwrap_or(now));
        self.last_delivery.insert(key, at);
        self.packets.push_back(Packet {
            at,
            conn,
            to_master,
            msg,
        });
    }

    /// When the next message that can arrive does.
    pub fn next_at(&self) -> Option<Instant> {
        self.packets
            .iter()
            .filter(|p| !self.held.contains(&p.conn))
            .map(|p| p.at)
            .min()
    }

    /// Takes the first message due by `now`: `(conn, to_master, msg)`.
    pub fn take_due(&mut self, now: Instant) -> Option<(ConnId, bool, Message)> {
        let i = self
            .packets
            .iter()
            .position(|p| p.at <= now && !self.held.contains(&p.conn))?;
        let p = self.packets.remove(i).expect("index valid");
        Some((p.conn, p.to_master, p.msg))
    }

    /// Takes what is in flight from the master to the peer on `conn`, in order (a close
    /// flushes what was sent before it).
    pub fn flush_to_peer(&mut self, conn: ConnId) -> Vec<Message> {
        let (mine, rest) = std::mem::take(&mut self.packets)
            .into_iter()
            .partition(|p| p.conn == conn && !p.to_master);
        self.packets = rest;
        let mine: VecDeque<Packet> = mine;
        mine.into_iter().map(|p| p.msg).collect()
    }

    /// Loses everything in flight on `conn` (the connection is gone).
    pub fn forget(&mut self, conn: ConnId) {
        self.packets.retain(|p| p.conn != conn);
        self.held.remove(&conn);
    }

    /// Holds `conn`'s messages where they are.
    pub fn hold(&mut self, conn: ConnId) {
        self.held.insert(conn);
    }

    /// Lets `conn`'s held messages go: those overdue arrive at `now`.
    pub fn release(&mut self, conn: ConnId, now: Instant) {
        if self.held.remove(&conn) {
            for p in self.packets.iter_mut().filter(|p| p.conn == conn) {
                p.at = p.at.max(now);
            }
        }
    }
}
