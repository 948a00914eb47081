//! The fault verbs of [`Sim`]: what can go wrong with an agent's link, the agent itself, a
//! framework's link, the master process, or the clock. Each is one word, as in raft-rs's test
//! `Network`, and leaves a line in the trace.

use super::{LinkFaults, Peer, Sim};
use master::core::{Event as MEvent, Master};
use proto::BlobKind;
use std::time::Duration;

impl Sim {
    /// Loses a `rate` fraction (below 1; see [`Sim::isolate`] for a dead link) of the datagrams
    /// on agent `i`'s link: each loss delays a message by a retransmission timeout.
    pub fn drop(&mut self, i: usize, rate: f64) {
        assert!((0.0..1.0).contains(&rate), "loss rate {rate} not in [0, 1)");
        self.note(|| format!("drop agent{i} {rate}"));
        self.faults[i].loss = rate;
    }

    /// Adds `extra` one-way latency on agent `i`'s link.
    pub fn delay(&mut self, i: usize, extra: Duration) {
        self.note(|| format!("delay agent{i} {extra:?}"));
        self.faults[i].delay = extra;
    }

    /// Agent `i`'s link goes silent: nothing gets through, and each end notices only after the
    /// idle timeout; the agent's redials fail until [`Sim::recover`].
    pub fn isolate(&mut self, i: usize) {
        if self.faults[i].isolated {
            return;
        }
        self.note(|| format!("isolate agent{i}"));
        self.faults[i].isolated = true;
        if let Some(conn) = self.agents[i].conn {
            self.wire.hold(conn);
            let at = self.now + self.idle_timeout;
            // A connection whose master died is noticed on its own timer already.
            if self.conns.contains_key(&conn) {
                self.silent.insert(conn, at);
            }
            let lost_at = self.agents[i].lost_at.map_or(at, |t| t.min(at));
            self.agents[i].lost_at = Some(lost_at);
        }
    }

    /// Cuts agent `i`'s link: in-flight messages are lost, the agent notices now, the master
    /// after the idle timeout.
    pub fn cut(&mut self, i: usize) {
        if let Some(conn) = self.agents[i].conn {
            self.note(|| format!("cut agent{i} conn{conn}"));
            self.wire.forget(conn);
            if self.conns.contains_key(&conn) {
                self.half_open.insert(conn, self.now + self.idle_timeout);
            }
            self.agents[i].disconnected(self.now, self.redial);
        }
    }

    /// Clears every fault on agent `i`'s link. An isolated connection neither end has given up
    /// on carries on, and what it held arrives now.
    pub fn recover(&mut self, i: usize) {
        self.note(|| format!("recover agent{i}"));
        self.faults[i] = LinkFaults::default();
        // Only a connection the master still holds carries on; one whose master died stays
        // doomed (the agent notices on its idle timer).
        let alive = self.agents[i]
            .conn
            .is_some_and(|c| self.conns.contains_key(&c));
        if alive && self.agents[i].lost_at.take().is_some() {
            if let Some(conn) = self.agents[i].conn {
                self.silent.remove(&conn);
                self.wire.release(conn, self.now);
            }
        }
    }

    /// Restarts agent `i`: its link drops and its memory and guests are gone; it registers
    /// afresh.
    pub fn restart_agent(&mut self, i: usize) {
        self.cut(i);
        self.agents[i].restart();
        self.note(|| format!("restart agent{i}"));
    }

    /// Agent `i`'s process is killed (`kill -9`) while its guests keep running in the runtime
    /// process: the master notices after the idle timeout; the agent is back after
    /// [`SimOptions::agent_downtime`](super::SimOptions::agent_downtime), recovered from its
    /// last checkpoint, with what its guests did meanwhile replayed, and re-registers under its
    /// id.
    pub fn crash_agent_keep_guests(&mut self, i: usize) {
        self.crash_agent(i, true);
    }

    /// Agent `i`'s process and its runtime process are killed: the guests are gone. The agent
    /// is back as in [`Sim::crash_agent_keep_guests`] and reports each launched task that had
    /// not ended failed (`RuntimeLost`), once.
    pub fn crash_agent_and_runtime(&mut self, i: usize) {
        self.crash_agent(i, false);
    }

    fn crash_agent(&mut self, i: usize, keep_runtime: bool) {
        if self.agents[i].is_down() {
            // Already down: only the runtime may die in addition.
            if !keep_runtime {
                self.note(|| format!("crash runtime of agent{i}"));
                let back_at = self.agents[i].back_at.expect("down");
                self.agents[i].crash(back_at, false);
            }
            return;
        }
        self.note(|| format!("crash agent{i} (runtime kept: {keep_runtime})"));
        if let Some(conn) = self.agents[i].conn {
            self.wire.forget(conn);
            if self.conns.contains_key(&conn) {
                self.half_open.insert(conn, self.now + self.idle_timeout);
            }
        }
        let back_at = self.now + self.agent_downtime;
        self.agents[i].crash(back_at, keep_runtime);
    }

    /// The master process is killed (`kill -9`) and started again at once from its durable
    /// registry ([`Master::recover`]). Every connection dies without a word: what was in flight
    /// either way is lost, and each peer notices after its idle timeout, then redials (agents
    /// re-register under their ids, frameworks re-subscribe under theirs). The blob store is
    /// on disk with who uploaded each blob, and is scanned again as the real driver does: the
    /// module, then each framework's principal as its owner.
    pub fn restart_master(&mut self) {
        self.note(|| "restart master".into());
        self.master_restarts += 1;
        let dead: Vec<_> = self.conns.keys().copied().collect();
        for conn in dead {
            self.wire.forget(conn);
        }
        self.conns.clear();
        self.half_open.clear();
        self.silent.clear();
        let lost_at = self.now + self.idle_timeout;
        for a in &mut self.agents {
            if a.conn.is_some() {
                a.lost_at = Some(a.lost_at.map_or(lost_at, |t| t.min(lost_at)));
            }
        }
        for f in &mut self.frameworks {
            if f.conn.is_some() {
                f.lost_at = Some(lost_at);
            }
        }
        let allocator = master::allocator::by_name(self.master.allocator_name())
            .expect("the running allocator is a known one");
        let snapshot = self.registry.snapshot();
        self.master = Master::recover(self.master_cfg.clone(), allocator, &snapshot, self.now);
        self.master.handle(
            self.now,
            MEvent::BlobStored {
                digest: self.module,
                kind: BlobKind::Module,
                owner: None,
            },
        );
        for f in 0..self.frameworks.len() {
            self.master.handle(
                self.now,
                MEvent::BlobStored {
                    digest: self.module,
                    kind: BlobKind::Module,
                    owner: Some(Peer::Framework(f).principal().name),
                },
            );
        }
        self.pump();
    }

    /// Cuts framework `f`'s link: in-flight messages are lost, the framework notices now (its
    /// scheduler core queues the calls made meanwhile and redials after the redial delay,
    /// re-subscribing under the same id), the master after the idle timeout.
    pub fn cut_framework(&mut self, f: usize) {
        if let Some(conn) = self.frameworks[f].conn {
            self.note(|| format!("cut framework{f} conn{conn}"));
            self.wire.forget(conn);
            if self.conns.contains_key(&conn) {
                self.half_open.insert(conn, self.now + self.idle_timeout);
            }
            let redial_at = self.now + self.redial;
            self.frameworks[f].disconnected("link cut".into(), redial_at);
            self.flush_framework(f);
        }
    }

    /// Moves the clock forward by `d` at once (a paused VM, an NTP step on a monotonic
    /// source): every deadline that passed fires.
    pub fn jump(&mut self, d: Duration) {
        self.note(|| format!("jump {d:?}"));
        self.now += d;
    }

    /// Loses a `rate` fraction (below 1) of the datagrams on framework `f`'s link, as
    /// [`Sim::drop`] does on an agent's.
    pub fn drop_framework(&mut self, f: usize, rate: f64) {
        assert!((0.0..1.0).contains(&rate), "loss rate {rate} not in [0, 1)");
        self.note(|| format!("drop framework{f} {rate}"));
        self.framework_faults[f].loss = rate;
    }

    /// Adds `extra` one-way latency on framework `f`'s link.
    pub fn delay_framework(&mut self, f: usize, extra: Duration) {
        self.note(|| format!("delay framework{f} {extra:?}"));
        self.framework_faults[f].delay = extra;
    }

    /// Clears the loss and latency set on framework `f`'s link.
    pub fn recover_framework(&mut self, f: usize) {
        self.note(|| format!("recover framework{f}"));
        self.framework_faults[f] = LinkFaults::default();
    }
}
