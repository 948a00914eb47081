//! The fault verbs of [`Sim`]: what can go wrong with an agent's link, the agent itself, a
//! framework's link, or the clock. Each is one word, as in raft-rs's test `Network`, and leaves a line in the trace.

use super::{LinkFaults, Sim};
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
            self.silent.insert(conn, self.now + self.idle_timeout);
            self.agents[i].lost_at = Some(self.now + self.idle_timeout);
        }
    }

    /// Cuts agent `i`'s link: in-flight messages are lost, the agent notices now, the master
    /// after the idle timeout.
    pub fn cut(&mut self, i: usize) {
        if let Some(conn) = self.agents[i].conn {
            self.note(|| format!("cut agent{i} conn{conn}"));
            self.wire.forget(conn);
            self.half_open.insert(conn, self.now + self.idle_timeout);
            self.agents[i].disconnected(self.now, self.redial);
        }
    }

    /// Clears every fault on agent `i`'s link. An isolated connection neither end has given up
    /// on carries on, and what it held arrives now.
    pub fn recover(&mut self, i: usize) {
        self.note(|| format!("recover agent{i}"));
        self.faults[i] = LinkFaults::default();
        if self.agents[i].lost_at.take().is_some() {
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

    /// Cuts framework `f`'s link: in-flight messages are lost, the framework notices now (its
    /// scheduler core queues the calls made meanwhile and redials after the redial delay,
    /// re-subscribing under the same id), the master after the idle timeout.
    pub fn cut_framework(&mut self, f: usize) {
        if let Some(conn) = self.frameworks[f].conn {
            self.note(|| format!("cut framework{f} conn{conn}"));
            self.wire.forget(conn);
            self.half_open.insert(conn, self.now + self.idle_timeout);
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
