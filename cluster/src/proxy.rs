//! A tiny UDP proxy to put between a peer and the master, for fault tests: it can black-hole the
//! link (a crashed machine or a cut cable: nothing arrives, no QUIC close frame), and drop,
//! duplicate, delay or reorder datagrams, with every random choice drawn from a seeded [`Rng`] so
//! a given seed always makes the same sequence of choices. It is the real tier's fault injector,
//! as the fault verbs of [`crate::sim::Sim`] are the virtual-time tier's.
//!
//! ```text
//!  client ──▶ [front 127.0.0.1:p] ──(faults)──▶ [upstream socket per client] ──▶ target
//!  client ◀── [front]            ◀──(faults)── [upstream socket per client] ◀── target
//! ```

use crate::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Largest datagram forwarded (QUIC never sends more than this on loopback).
const MAX_DATAGRAM: usize = 65_535;

/// What the proxy does to each datagram, in either direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a (not dropped) datagram is sent twice.
    pub duplicate: f64,
    /// Latency added to every datagram.
    pub delay: Duration,
    /// Probability that a datagram is held back by an extra random delay of up to
    /// `reorder_delay`, so that later ones overtake it.
    pub reorder: f64,
    /// The longest extra delay of a reordered datagram.
    pub reorder_delay: Duration,
}

impl Faults {
    /// Drops a `p` fraction of the datagrams, nothing else.
    pub fn lossy(p: f64) -> Self {
        Faults {
            drop: p,
            ..Faults::default()
        }
    }
}

/// Counters of what the proxy did, over both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Datagrams received from either side.
    pub received: u64,
    /// Datagrams sent on (duplicates counted once more each).
    pub forwarded: u64,
    /// Datagrams dropped by the `drop` knob.
    pub dropped: u64,
    /// Datagrams swallowed while black-holed.
    pub blackholed: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Datagrams held back to be reordered.
    pub reordered: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    blackholed: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

struct Shared {
    blackhole: AtomicBool,
    faults: Mutex<Faults>,
    rng: Mutex<Rng>,
    counters: Counters,
}

/// What to do with one datagram, decided under the locks and carried out after.
struct Plan {
    copies: usize,
    delay: Duration,
    /// The link's fixed latency (`delay` is more when the datagram is held back to reorder).
    base: Duration,
}

impl Shared {
    fn plan(&self) -> Option<Plan> {
        let c = &self.counters;
        c.received.fetch_add(1, Ordering::Relaxed);
        if self.blackhole.load(Ordering::SeqCst) {
            c.blackholed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let f = *self.faults.lock().expect("poisoned");
        let mut rng = self.rng.lock().expect("poisoned");
        if rng.chance(f.drop) {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut copies = 1;
        if rng.chance(f.duplicate) {
            c.duplicated.fetch_add(1, Ordering::Relaxed);
            copies = 2;
        }
        let mut delay = f.delay;
        if rng.chance(f.reorder) {
            c.reordered.fetch_add(1, Ordering::Relaxed);
            delay += f.reorder_delay.mul_f64(rng.unit());
        }
        Some(Plan {
            copies,
            delay,
            base: f.delay,
        })
    }

    /// Sends `buf` through `line` as `plan` says: at once, in order behind what the line
    /// already holds, or (when reordered) from a task of its own after its extra delay.
    async fn forward(self: &Arc<Self>, line: &DelayLine, buf: &[u8], plan: Plan) {
        self.counters
            .forwarded
            .fetch_add(plan.copies as u64, Ordering::Relaxed);
        if plan.delay.is_zero() {
            for _ in 0..plan.copies {
                line.send_now(buf).await;
            }
        } else if plan.delay <= plan.base {
            line.push(plan.delay, buf, plan.copies);
        } else {
            let (sock, to) = (line.sock.clone(), line.to);
            let buf = buf.to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(plan.delay).await;
                for _ in 0..plan.copies {
                    send(&sock, &buf, to).await;
                }
            });
        }
    }
}

/// Sends one datagram; errors (e.g. ICMP unreachable surfacing) are a lost datagram, as on a
/// real link.
async fn send(sock: &UdpSocket, buf: &[u8], to: Option<SocketAddr>) {
    let _ = match to {
        Some(addr) => sock.send_to(buf, addr).await,
        None => sock.send(buf).await,
    };
}

/// One direction of one client's path: delayed datagrams leave in the order they came, as on
/// a real link of fixed latency. (A task per datagram sleeping its delay would reorder
/// datagrams that arrive within the timer's granularity, and QUIC pays for reordering around
/// its handshake with a retransmission timeout: a server drops 1-RTT packets that overtake
/// the client's `Finished`.) Only the `reorder` knob reorders.
struct DelayLine {
    sock: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    queue: tokio::sync::mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>, usize)>,
}

impl DelayLine {
    /// A line sending through `sock` (to `to`, or to its connected peer), with its task added
    /// to `tasks`.
    fn new(
        sock: Arc<UdpSocket>,
        to: Option<SocketAddr>,
        tasks: &Mutex<Vec<JoinHandle<()>>>,
    ) -> Self {
        let (queue, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>, usize)>();
        let out = sock.clone();
        let task = tokio::spawn(async move {
            while let Some((due, buf, copies)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                for _ in 0..copies {
                    send(&out, &buf, to).await;
                }
            }
        });
        tasks.lock().expect("poisoned").push(task);
        Self { sock, to, queue }
    }

    async fn send_now(&self, buf: &[u8]) {
        send(&self.sock, buf, self.to).await;
    }

    fn push(&self, delay: Duration, buf: &[u8], copies: usize) {
        let due = tokio::time::Instant::now() + delay;
        let _ = self.queue.send((due, buf.to_vec(), copies));
    }
}

/// A running UDP proxy; stops when dropped.
pub struct UdpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl UdpProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `target`, mangling datagrams as `faults`
    /// says with choices drawn from a generator seeded with `seed`.
    pub async fn start(target: SocketAddr, faults: Faults, seed: u64) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            blackhole: AtomicBool::new(false),
            faults: Mutex::new(faults),
            rng: Mutex::new(Rng::new(seed)),
            counters: Counters::default(),
        });
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let main = tokio::spawn(run_front(front, target, shared.clone(), tasks.clone()));
        tasks.lock().expect("poisoned").push(main);
        Ok(UdpProxy {
            addr,
            target,
            shared,
            tasks,
        })
    }

    /// The address clients should dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Drops everything in both directions while `on` (like pulling the cable).
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// Changes the faults applied from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().expect("poisoned") = faults;
    }

    /// What it did so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            received: c.received.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            blackholed: c.blackholed.load(Ordering::Relaxed),
            duplicated: c.duplicated.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
        }
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("poisoned").drain(..) {
            t.abort();
        }
    }
}

async fn run_front(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut upstreams: HashMap<SocketAddr, DelayLine> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match front.recv_from(&mut buf).await {
            Ok(x) => x,
            // On some platforms an ICMP error of an earlier send surfaces here; keep going.
            Err(_) => continue,
        };
        let line = match upstreams.entry(client) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let Ok(up) = open_upstream(target).await else {
                    continue;
                };
                let up = Arc::new(up);
                let back_line = DelayLine::new(front.clone(), Some(client), &tasks);
                let back = tokio::spawn(run_back(up.clone(), back_line, shared.clone()));
                tasks.lock().expect("poisoned").push(back);
                e.insert(DelayLine::new(up, None, &tasks))
            }
        };
        if let Some(plan) = shared.plan() {
            shared.forward(line, &buf[..n], plan).await;
        }
    }
}

async fn open_upstream(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let up = UdpSocket::bind("127.0.0.1:0").await?;
    up.connect(target).await?;
    Ok(up)
}

/// Carries the target's answers back to one client.
async fn run_back(up: Arc<UdpSocket>, line: DelayLine, shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = match up.recv(&mut buf).await {
            Ok(n) => n,
            Err(_) => continue,
        };
        if let Some(plan) = shared.plan() {
            shared.forward(&line, &buf[..n], plan).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_both_ways_and_blackholes() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let proxy = UdpProxy::start(server.local_addr().unwrap(), Faults::default(), 1)
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 64];
        let within = Duration::from_secs(5);

        client.send(b"ping").await.unwrap();
        let (n, from) = tokio::time::timeout(within, server.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", from).await.unwrap();
        let n = tokio::time::timeout(within, client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"pong");

        proxy.blackhole(true);
        client.send(b"lost").await.unwrap();
        server.send_to(b"lost too", from).await.unwrap();
        // Wait until the proxy has seen (and swallowed) both, then lift the blackhole.
        while proxy.stats().blackholed < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.blackhole(false);
        client.send(b"again").await.unwrap();
        let n = tokio::time::timeout(within, server.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            &buf[..n],
            b"again",
            "the swallowed datagram must not arrive"
        );
        let s = proxy.stats();
        assert_eq!((s.received, s.forwarded, s.blackholed), (5, 3, 2));
    }

    #[tokio::test]
    async fn a_fixed_delay_keeps_datagrams_in_order() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let faults = Faults {
            delay: Duration::from_millis(20),
            ..Faults::default()
        };
        let proxy = UdpProxy::start(server.local_addr().unwrap(), faults, 1)
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy.addr()).await.unwrap();
        for i in 0..200u32 {
            client.send(&i.to_be_bytes()).await.unwrap();
        }
        let mut buf = [0u8; 8];
        for i in 0..200u32 {
            let n = tokio::time::timeout(Duration::from_secs(5), server.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], &i.to_be_bytes(), "datagram {i} out of order");
        }
    }
}
