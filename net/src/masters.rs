//! Several master addresses (one leader, the rest standbys) and the order a peer dials them in.
//!
//! A standby answers a `Hello` with `NotLeader { leader }` ([`LinkError::NotLeader`]). A
//! [`MasterSet`] dials the leader hinted by the last such answer first, then the other
//! addresses round-robin (each pass starts one further along, so a dead first address does not
//! cost every pass the same timeout); a `NotLeader(Some(a))` sends it to `a` at once, within
//! the same pass. Only when a whole pass fails does it wait: the jittered exponential
//! [`Reconnect`] delay after connection failures, or a short jittered 125–250 ms when some
//! master said that nobody leads yet (an election is under way and ends within a lease TTL,
//! so the exponential delay would only make the peer late).
//!
//! A single address is a set of one, and dials exactly as [`Link::connect_with`] does.
//! Names are resolved at each dial, so a master that moves to another address is found.
//!
//! A peer whose link to the leader is lost without a word (the leader was killed, or is cut
//! off) [`MasterSet::demote`]s it. For [`QUARANTINE`] it is not dialled at all, and a standby
//! that still names it (its lease has not expired yet) counts as "nobody leads yet": the peer
//! retries the others on the short pause until one is elected, instead of paying a dead
//! leader's handshake timeout on every pass. After that it is dialled last, until some master
//! accepts (it may only have been cut off for a while). A leader that steps down
//! closes with [`crate::link::NOT_LEADER_CLOSE_CODE`] instead and stays the hint: it is alive
//! and answers the next `Hello` with the new leader.
//!
//! Used by the agent's driver (`AgentOptions::masters`), the SDK (`SchedulerOptions::masters`)
//! and the CLI's `--master a:5050,b:5050`. Driver loops that must keep serving other inputs
//! between passes call [`MasterSet::dial_pass`] and wait [`MasterSet::retry_pause`]
//! themselves; the rest call [`MasterSet::connect_any`].

use crate::backoff::Reconnect;
use crate::link::{Link, LinkError};
use backon::{BackoffBuilder, ConstantBackoff, ConstantBuilder};
use proto::messages::{Message, Role};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// The longest reconnect delay unless [`MasterSet::with_max_backoff`] says otherwise.
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The base of the pause after a pass that met only "no leader yet" (jitter adds up to as much).
const NO_LEADER_WAIT: Duration = Duration::from_millis(125);

/// How long a [demoted](MasterSet::demote) master is not dialled (unless it is the only one):
/// longer than a leader's lease (3 s by default), so a dead leader is replaced meanwhile.
pub const QUARANTINE: Duration = Duration::from_secs(5);

/// Why a list of master addresses is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterSetError {
    /// The list holds no address.
    #[error("no master address given")]
    Empty,
    /// One entry is not `host:port` with a numeric port.
    #[error("master address {0:?} is not host:port")]
    BadAddr(String),
}

/// The masters a peer may dial and what it learnt about which one leads.
///
/// A clone keeps the addresses, the hint and the rotation, and starts its delays afresh: the
/// options of a peer hold one, and each connection loop works on its own copy.
#[derive(Debug)]
pub struct MasterSet {
    addrs: Vec<String>,
    hint: Option<String>,
    /// Lost without a word: not dialled until the instant, then dialled last until some
    /// master accepts.
    demoted: Option<(String, std::time::Instant)>,
    quarantine: Duration,
    cursor: usize,
    max_backoff: Duration,
    backoff: Reconnect,
    no_leader: ConstantBackoff,
}

impl Clone for MasterSet {
    fn clone(&self) -> Self {
        Self {
            addrs: self.addrs.clone(),
            hint: self.hint.clone(),
            demoted: self.demoted.clone(),
            quarantine: self.quarantine,
            cursor: self.cursor,
            max_backoff: self.max_backoff,
            backoff: Reconnect::new(self.max_backoff),
            no_leader: Self::no_leader_delays(),
        }
    }
}

impl From<SocketAddr> for MasterSet {
    fn from(addr: SocketAddr) -> Self {
        Self::single(addr)
    }
}

impl std::fmt::Display for MasterSet {
    /// The addresses as `--master` takes them: `a:5050,b:5050`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addrs.join(","))
    }
}

/// How one full pass over the masters failed.
#[derive(Debug)]
pub struct PassFailed {
    /// The last error met (every address failed).
    pub last: LinkError,
    /// Some master answered that nobody leads yet.
    pub no_leader: bool,
    /// A master refused this peer for good (its certificate, its version) or the local
    /// endpoint failed: retrying as is would not help.
    pub fatal: Option<LinkError>,
}

impl FromStr for MasterSet {
    type Err = MasterSetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl MasterSet {
    /// Parses `host:port[,host:port...]` (spaces around entries ignored, duplicates dropped).
    pub fn parse(list: &str) -> Result<Self, MasterSetError> {
        Self::new(list.split(',').map(str::trim).filter(|a| !a.is_empty()))
    }

    /// A set of the given `host:port` addresses, in the order given.
    pub fn new<S: Into<String>>(
        addrs: impl IntoIterator<Item = S>,
    ) -> Result<Self, MasterSetError> {
        let mut out: Vec<String> = Vec::new();
        for a in addrs {
            let a: String = a.into();
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(MasterSetError::BadAddr(a));
            }
            if !out.contains(&a) {
                out.push(a);
            }
        }
        if out.is_empty() {
            return Err(MasterSetError::Empty);
        }
        Ok(Self {
            addrs: out,
            hint: None,
            demoted: None,
            quarantine: QUARANTINE,
            cursor: 0,
            max_backoff: DEFAULT_MAX_BACKOFF,
            backoff: Reconnect::new(DEFAULT_MAX_BACKOFF),
            no_leader: Self::no_leader_delays(),
        })
    }

    /// The set of one address: what every peer had before there were several masters.
    pub fn single(addr: SocketAddr) -> Self {
        Self::new([addr.to_string()]).expect("a socket address is host:port")
    }

    /// Caps the exponential delay between failed passes at `max` (5 s by default).
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self.backoff = Reconnect::new(max);
        self
    }

    /// The pause before the next pass after one that failed: a short jittered 125–250 ms when
    /// some master said nobody leads yet (`no_leader`, [`PassFailed::no_leader`]), else the
    /// next jittered exponential delay. For loops that cannot sleep inside
    /// [`MasterSet::connect_any_with`] (an agent keeps serving its guests meanwhile).
    pub fn retry_pause(&mut self, no_leader: bool) -> Duration {
        if no_leader {
            self.no_leader.next().unwrap_or(NO_LEADER_WAIT)
        } else {
            self.backoff.next_delay()
        }
    }

    /// Starts the exponential delays over (after a connection that worked).
    pub fn reset_backoff(&mut self) {
        self.backoff.reset();
    }

    /// `addr`'s link was lost without a word (no not-leader close): it may be dead, so it is
    /// no longer the hint, is not dialled for the quarantine ([`QUARANTINE`]) and is dialled
    /// last after it, until some master accepts.
    pub fn demote(&mut self, addr: &str) {
        if self.hint.as_deref() == Some(addr) {
            self.hint = None;
        }
        self.demoted = Some((addr.to_owned(), std::time::Instant::now() + self.quarantine));
    }

    /// Sets how long a demoted master is not dialled ([`QUARANTINE`] by default).
    pub fn with_quarantine(mut self, quarantine: Duration) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// The demoted address, if any.
    fn demoted(&self) -> Option<&String> {
        self.demoted.as_ref().map(|(a, _)| a)
    }

    /// Whether `addr` is demoted and still in quarantine (never the only address).
    fn quarantined(&self, addr: &str) -> bool {
        self.addrs.len() > 1
            && self
                .demoted
                .as_ref()
                .is_some_and(|(a, until)| a == addr && std::time::Instant::now() < *until)
    }

    fn no_leader_delays() -> ConstantBackoff {
        ConstantBuilder::default()
            .with_delay(NO_LEADER_WAIT)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The configured addresses.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The master believed to lead: the last one connected to or named by a `NotLeader`.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Sets (or forgets) the leader to dial first, e.g. from a `NotLeader` met elsewhere.
    pub fn set_hint(&mut self, leader: Option<String>) {
        self.hint = leader;
    }

    /// The order the next pass dials in: the hint, then every other address round-robin from
    /// where the last pass started plus one; a [demoted](MasterSet::demote) address last, or
    /// not at all while in quarantine.
    pub fn pass_order(&self) -> Vec<String> {
        let n = self.addrs.len();
        let mut order: Vec<String> = self.hint.iter().cloned().collect();
        for i in 0..n {
            let a = &self.addrs[(self.cursor + i) % n];
            if self.hint.as_ref() != Some(a) && self.demoted() != Some(a) {
                order.push(a.clone());
            }
        }
        if let Some(d) = self.demoted() {
            if self.hint.as_ref() != Some(d) && !self.quarantined(d) {
                order.push(d.clone());
            }
        }
        order
    }

    /// Dials once through the whole set with `dial` (the hint first, redirects followed at
    /// once, each address at most once); on success the address dialled becomes the hint.
    pub async fn dial_pass<T, F, Fut>(&mut self, mut dial: F) -> Result<(String, T), PassFailed>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, LinkError>>,
    {
        let mut queue: VecDeque<String> = self.pass_order().into();
        self.cursor = (self.cursor + 1) % self.addrs.len();
        let mut tried = HashSet::new();
        let mut no_leader = false;
        let mut fatal = None;
        let mut last = None;
        while let Some(addr) = queue.pop_front() {
            if !tried.insert(addr.clone()) {
                continue;
            }
            let err = match dial(addr.clone()).await {
                Ok(t) => {
                    self.hint = Some(addr.clone());
                    self.demoted = None;
                    return Ok((addr, t));
                }
                Err(e) => e,
            };
            tracing::debug!(%addr, error = %err, "master dial failed");
            match &err {
                LinkError::NotLeader {
                    leader: Some(leader),
                } if self.quarantined(leader) => {
                    // It names the leader this peer just lost: its lease has not run out
                    // yet. An election follows; retry the others on the short pause.
                    no_leader = true;
                }
                LinkError::NotLeader {
                    leader: Some(leader),
                } => {
                    self.hint = Some(leader.clone());
                    if !tried.contains(leader) {
                        queue.push_front(leader.clone());
                    }
                }
                other => {
                    if matches!(other, LinkError::NotLeader { leader: None }) {
                        no_leader = true;
                    }
                    // A hint that fails is stale: the next pass starts with the rotation.
                    if self.hint.as_ref() == Some(&addr) {
                        self.hint = None;
                    }
                    if matches!(
                        other,
                        LinkError::HelloRefused(_) | LinkError::Tls(_) | LinkError::Endpoint(_)
                    ) {
                        fatal = Some(err);
                        continue;
                    }
                }
            }
            last = Some(err);
        }
        Err(PassFailed {
            last: last.unwrap_or_else(|| {
                LinkError::Protocol(fatal.as_ref().map_or_else(
                    || "no master address to dial".to_owned(),
                    ToString::to_string,
                ))
            }),
            no_leader,
            fatal,
        })
    }

    /// Dials pass after pass until one master accepts, pausing between passes with `sleep`
    /// (see the module doc for how long). Returns the address that accepted and what `dial`
    /// made of it; returns an error only when a pass failed on a refusal that retrying will not
    /// cure ([`PassFailed::fatal`]). Bound it with a timeout where giving up is wanted.
    pub async fn connect_any_with<T, F, Fut, S, SFut>(
        &mut self,
        mut dial: F,
        mut sleep: S,
    ) -> Result<(String, T), LinkError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, LinkError>>,
        S: FnMut(Duration) -> SFut,
        SFut: Future<Output = ()>,
    {
        loop {
            match self.dial_pass(&mut dial).await {
                Ok(done) => {
                    self.backoff.reset();
                    return Ok(done);
                }
                Err(failed) => {
                    if let Some(fatal) = failed.fatal {
                        return Err(fatal);
                    }
                    let pause = self.retry_pause(failed.no_leader);
                    tracing::debug!(error = %failed.last, ?pause, "no master accepted; retrying");
                    sleep(pause).await;
                }
            }
        }
    }

    /// [`MasterSet::connect_any_with`] over real QUIC: resolves each `host:port` at its dial and
    /// does [`Link::connect_with`] as `role` with `first` pipelined behind the `Hello`.
    pub async fn connect_any(
        &mut self,
        ep: &quinn::Endpoint,
        role: Role,
        first: &[Message],
    ) -> Result<(String, Link), LinkError> {
        self.connect_any_with(
            |addr| async move { connect_to(ep, &addr, role, first).await },
            tokio::time::sleep,
        )
        .await
    }
}

/// Resolves `addr` (`host:port`) now and does [`Link::connect_with`] as `role` with `first`
/// pipelined behind the `Hello`: one dial of a pass, for [`MasterSet::dial_pass`].
pub async fn connect_to(
    ep: &quinn::Endpoint,
    addr: &str,
    role: Role,
    first: &[Message],
) -> Result<Link, LinkError> {
    let sock = resolve(addr).await?;
    Link::connect_with(ep, sock, role, first).await
}

/// The first socket address `host:port` resolves to ([`LinkError::Resolve`] if none).
pub async fn resolve(addr: &str) -> Result<SocketAddr, LinkError> {
    let mut found = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| LinkError::Resolve {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
    found.next().ok_or_else(|| LinkError::Resolve {
        addr: addr.to_owned(),
        message: "no address".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn not_leader(leader: Option<&str>) -> LinkError {
        LinkError::NotLeader {
            leader: leader.map(str::to_owned),
        }
    }

    fn unreachable() -> LinkError {
        LinkError::Protocol("unreachable".into())
    }

    #[test]
    fn parses_lists_and_refuses_bad_entries() {
        let set = MasterSet::parse(" a:5050, b:5051 ,a:5050,c:1,").unwrap();
        assert_eq!(set.addrs(), ["a:5050", "b:5051", "c:1"]);
        assert_eq!(set.hint(), None);
        assert_eq!(MasterSet::parse(""), Err(MasterSetError::Empty));
        assert_eq!(MasterSet::parse(" , "), Err(MasterSetError::Empty));
        for bad in ["a", "a:", ":5050", "a:port", "a:70000"] {
            assert_eq!(
                MasterSet::parse(bad),
                Err(MasterSetError::BadAddr(bad.into()))
            );
        }
        let v6: MasterSet = "[::1]:5050".parse().unwrap();
        assert_eq!(v6.addrs(), ["[::1]:5050"]);
        let one = MasterSet::single("127.0.0.1:9".parse().unwrap());
        assert_eq!(one.addrs(), ["127.0.0.1:9"]);
    }

    impl PartialEq for MasterSet {
        fn eq(&self, other: &Self) -> bool {
            self.addrs == other.addrs && self.hint == other.hint
        }
    }

    #[test]
    fn the_order_rotates_and_puts_the_hint_first() {
        let mut set = MasterSet::parse("a:1,b:1,c:1").unwrap();
        assert_eq!(set.pass_order(), ["a:1", "b:1", "c:1"]);
        set.set_hint(Some("b:1".into()));
        assert_eq!(set.pass_order(), ["b:1", "a:1", "c:1"]);
        // A hinted leader outside the list (an advertised name) still goes first.
        set.set_hint(Some("x:1".into()));
        assert_eq!(set.pass_order(), ["x:1", "a:1", "b:1", "c:1"]);
    }

    #[test]
    fn a_demoted_leader_goes_last_until_a_master_accepts_and_clones_keep_the_hint() {
        let mut set = MasterSet::parse("a:1,b:1,c:1").unwrap();
        set.set_hint(Some("a:1".into()));
        set.demote("a:1");
        assert_eq!(set.hint(), None);
        // Not dialled in quarantine, dialled last after it.
        assert_eq!(set.pass_order(), ["b:1", "c:1"]);
        let mut set = set.with_quarantine(Duration::ZERO);
        set.demote("a:1");
        assert_eq!(set.pass_order(), ["b:1", "c:1", "a:1"]);
        // A redirect to it later still puts it first.
        set.set_hint(Some("a:1".into()));
        assert_eq!(set.pass_order(), ["a:1", "b:1", "c:1"]);
        let copy = set.clone();
        assert_eq!(copy.hint(), Some("a:1"));
        assert_eq!(copy.to_string(), "a:1,b:1,c:1");
    }

    /// A fake dialer: `answers` says what each address does; every dial is logged.
    fn fake<'a>(
        log: &'a RefCell<Vec<String>>,
        answers: impl Fn(&str) -> Result<(), LinkError> + 'a,
    ) -> impl FnMut(String) -> std::future::Ready<Result<(), LinkError>> + 'a {
        move |addr: String| {
            log.borrow_mut().push(addr.clone());
            std::future::ready(answers(&addr))
        }
    }

    #[tokio::test]
    async fn a_redirect_is_followed_at_once_and_remembered() {
        let mut set = MasterSet::parse("a:1,b:1,c:1").unwrap();
        let log = RefCell::new(Vec::new());
        let (addr, ()) = set
            .dial_pass(fake(&log, |a| match a {
                "a:1" => Err(not_leader(Some("c:1"))),
                "c:1" => Ok(()),
                _ => Err(unreachable()),
            }))
            .await
            .unwrap();
        assert_eq!(addr, "c:1");
        assert_eq!(*log.borrow(), ["a:1", "c:1"]);
        assert_eq!(set.hint(), Some("c:1"));
        // The next connection dials the leader first.
        log.borrow_mut().clear();
        set.dial_pass(fake(&log, |a| {
            if a == "c:1" {
                Ok(())
            } else {
                Err(unreachable())
            }
        }))
        .await
        .unwrap();
        assert_eq!(*log.borrow(), ["c:1"]);
        // Demoted and then reached again: no longer last.
        set.demote("c:1");
        set.dial_pass(fake(&log, |_| Ok(()))).await.unwrap();
        assert_eq!(set.demoted, None);
    }

    #[tokio::test]
    async fn a_standby_naming_a_quarantined_leader_counts_as_no_leader_yet() {
        let mut set = MasterSet::parse("a:1,b:1,c:1").unwrap();
        set.demote("a:1");
        let log = RefCell::new(Vec::new());
        let failed = set
            .dial_pass(fake(&log, |_| Err(not_leader(Some("a:1")))))
            .await
            .unwrap_err();
        // The dead leader is not dialled; the pass waits the short no-leader pause.
        assert!(failed.no_leader);
        assert_eq!(log.borrow().len(), 2);
        assert!(!log.borrow().contains(&"a:1".to_owned()));
        // A set of one still dials its only master.
        let mut one = MasterSet::parse("a:1").unwrap();
        one.demote("a:1");
        assert_eq!(one.pass_order(), ["a:1"]);
    }

    #[tokio::test]
    async fn a_stale_hint_is_dropped_and_passes_rotate() {
        let mut set = MasterSet::parse("a:1,b:1,c:1").unwrap();
        set.set_hint(Some("b:1".into()));
        let log = RefCell::new(Vec::new());
        let failed = set
            .dial_pass(fake(&log, |_| Err(unreachable())))
            .await
            .unwrap_err();
        assert!(!failed.no_leader && failed.fatal.is_none());
        assert_eq!(*log.borrow(), ["b:1", "a:1", "c:1"]);
        assert_eq!(set.hint(), None);
        log.borrow_mut().clear();
        let _ = set.dial_pass(fake(&log, |_| Err(unreachable()))).await;
        assert_eq!(*log.borrow(), ["b:1", "c:1", "a:1"]);
    }

    #[tokio::test]
    async fn redirect_loops_end_with_the_pass() {
        let mut set = MasterSet::parse("a:1,b:1").unwrap();
        let log = RefCell::new(Vec::new());
        let failed = set
            .dial_pass(fake(&log, |a| {
                Err(not_leader(Some(if a == "a:1" { "b:1" } else { "a:1" })))
            }))
            .await
            .unwrap_err();
        assert_eq!(*log.borrow(), ["a:1", "b:1"]);
        assert!(matches!(failed.last, LinkError::NotLeader { .. }));
        assert_eq!(set.hint(), Some("a:1"));
    }

    /// Pauses come only between full passes: exponential after connection failures, short
    /// after "no leader yet"; the delays start over after a success.
    #[tokio::test]
    async fn backoff_only_after_a_full_pass() {
        let mut set = MasterSet::parse("a:1,b:1,c:1")
            .unwrap()
            .with_max_backoff(Duration::from_secs(5));
        let log = RefCell::new(Vec::new());
        let sleeps = RefCell::new(Vec::new());
        let dials = RefCell::new(0usize);
        let (addr, ()) = set
            .connect_any_with(
                fake(&log, |a| {
                    let n = {
                        let mut d = dials.borrow_mut();
                        *d += 1;
                        *d
                    };
                    match n {
                        // Pass 1 and 2: nobody answers. Pass 3: an election is running.
                        1..=6 => Err(unreachable()),
                        7..=9 => Err(not_leader(None)),
                        // Pass 4: b leads.
                        _ if a == "b:1" => Ok(()),
                        _ => Err(not_leader(Some("b:1"))),
                    }
                }),
                |d| {
                    sleeps.borrow_mut().push((log.borrow().len(), d));
                    std::future::ready(())
                },
            )
            .await
            .unwrap();
        assert_eq!(addr, "b:1");
        let sleeps = sleeps.into_inner();
        let at: Vec<usize> = sleeps.iter().map(|s| s.0).collect();
        assert_eq!(
            at,
            [3, 6, 9],
            "one pause after each failed pass, none within"
        );
        // The exponential delays: 100 ms then 200 ms, each plus up to as much jitter.
        assert!(sleeps[0].1 <= Duration::from_millis(200));
        assert!(sleeps[1].1 >= Duration::from_millis(200));
        let no_leader = sleeps[2].1;
        assert!(
            no_leader >= NO_LEADER_WAIT && no_leader <= NO_LEADER_WAIT * 2,
            "{no_leader:?}"
        );
        // Pass 4 starts at a again (the rotation wrapped), which redirects to b at once.
        assert_eq!(&log.borrow()[9..], ["a:1", "b:1"]);
    }

    #[tokio::test]
    async fn a_refusal_everywhere_is_returned_not_retried() {
        let mut set = MasterSet::parse("a:1,b:1").unwrap();
        let log = RefCell::new(Vec::new());
        let err = set
            .connect_any_with(
                fake(&log, |_| Err(LinkError::HelloRefused("version".into()))),
                |_| async { panic!("a refusal must not be retried") },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, LinkError::HelloRefused(_)));
        assert_eq!(log.borrow().len(), 2);
    }
    /// Over real QUIC on loopback: a stand-in standby answers every `Hello` with
    /// `NotLeader { leader: Some(real) }` and closes with the not-leader code; a stand-in
    /// leader answers `HelloAck`. A client given [standby, leader-by-its-hint-only] ends on
    /// the leader, and its next connection dials the leader first.
    #[tokio::test]
    async fn a_standby_sends_the_client_to_the_leader_over_quic() {
        use crate::codec::{MessageReader, MessageWriter};
        use crate::link::{client_endpoint, NOT_LEADER_CLOSE_CODE};
        use crate::tls::{
            server_config, ClusterCa, PeerTls, TransportTuning, DEFAULT_PEER_VALIDITY,
        };
        use proto::frame::DEFAULT_MAX_FRAME;
        use proto::identity::{PeerId, PeerKind};
        use proto::messages::PROTOCOL_VERSION;

        let ca = ClusterCa::generate("prod").unwrap();
        let master = ca.issue_master().unwrap();
        let tuning = TransportTuning::default();
        let bind = |answer: Option<String>| {
            let cfg = server_config(&ca.cert_pem, &master, tuning).unwrap();
            let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = ep.local_addr().unwrap();
            // `answer`: Some(leader) for a standby, None for the leader itself.
            let task = tokio::spawn(async move {
                let mut hellos = 0usize;
                while let Some(incoming) = ep.accept().await {
                    let Ok(conn) = incoming.await else { continue };
                    let Ok((send, recv)) = conn.accept_bi().await else {
                        continue;
                    };
                    let mut send = MessageWriter::new(send);
                    let mut recv = MessageReader::new(recv, DEFAULT_MAX_FRAME);
                    let Ok(Some(Message::Hello { .. })) = recv.recv().await else {
                        continue;
                    };
                    hellos += 1;
                    match &answer {
                        Some(leader) => {
                            let _ = send
                                .send(&Message::NotLeader {
                                    leader: Some(leader.clone()),
                                })
                                .await;
                            let _ = send.get_mut().finish();
                            // Let the answer leave before the close, as a standby would.
                            let _ = tokio::time::timeout(
                                Duration::from_secs(5),
                                send.get_mut().stopped(),
                            )
                            .await;
                            conn.close(NOT_LEADER_CLOSE_CODE.into(), b"not the leader");
                        }
                        None => {
                            let _ = send
                                .send(&Message::HelloAck {
                                    version: PROTOCOL_VERSION,
                                })
                                .await;
                            // Hold the connection until the client closes it.
                            let _ = conn.closed().await;
                        }
                    }
                    if hellos == 2 {
                        break;
                    }
                }
                hellos
            });
            (addr, task)
        };
        let (leader_addr, leader) = bind(None);
        let (standby_addr, standby) = bind(Some(leader_addr.to_string()));

        let peer = ca
            .issue_peer(
                &PeerId::new(PeerKind::Agent, "a1").unwrap(),
                DEFAULT_PEER_VALIDITY,
            )
            .unwrap();
        let tls = PeerTls {
            ca_pem: ca.cert_pem.clone(),
            identity: peer,
            crls: Vec::new(),
        };
        let ep = client_endpoint(&tls, tuning).unwrap();
        // Only the standby is listed: the leader is found through its answer.
        let mut set = MasterSet::single(standby_addr);
        let (addr, link) = tokio::time::timeout(
            Duration::from_secs(30),
            set.connect_any(&ep, Role::Agent, &[]),
        )
        .await
        .expect("the client must reach the leader")
        .unwrap();
        assert_eq!(addr, leader_addr.to_string());
        assert_eq!(set.hint(), Some(addr.as_str()));
        assert_eq!(link.conn.remote_address(), leader_addr);
        link.conn.close(0u32.into(), b"done");

        // The next connection goes straight to the leader: the standby sees no second Hello.
        let (again, link) = set.connect_any(&ep, Role::Agent, &[]).await.unwrap();
        assert_eq!(again, leader_addr.to_string());
        link.conn.close(0u32.into(), b"done");
        assert_eq!(leader.await.unwrap(), 2);
        standby.abort();
        let _ = standby.await;
    }
    /// A standby that closes with the not-leader code before its answer arrives still reads
    /// as `NotLeader` (with no leader known), not as a broken connection.
    #[tokio::test]
    async fn the_not_leader_close_code_reads_as_not_leader() {
        use crate::link::{client_endpoint, NOT_LEADER_CLOSE_CODE};
        use crate::tls::{
            server_config, ClusterCa, PeerTls, TransportTuning, DEFAULT_PEER_VALIDITY,
        };
        use proto::identity::{PeerId, PeerKind};

        let ca = ClusterCa::generate("prod").unwrap();
        let tuning = TransportTuning::default();
        let cfg = server_config(&ca.cert_pem, &ca.issue_master().unwrap(), tuning).unwrap();
        let server = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let standby = tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                let Ok(conn) = incoming.await else { continue };
                // Wait for the Hello's stream, then close without answering.
                let _ = conn.accept_bi().await;
                conn.close(NOT_LEADER_CLOSE_CODE.into(), b"not the leader");
                let _ = conn.closed().await;
                break;
            }
        });
        let tls = PeerTls {
            ca_pem: ca.cert_pem.clone(),
            identity: ca
                .issue_peer(
                    &PeerId::new(PeerKind::Framework, "s1").unwrap(),
                    DEFAULT_PEER_VALIDITY,
                )
                .unwrap(),
            crls: Vec::new(),
        };
        let ep = client_endpoint(&tls, tuning).unwrap();
        let err = tokio::time::timeout(
            Duration::from_secs(30),
            Link::connect(&ep, addr, Role::Scheduler),
        )
        .await
        .expect("the close must end the handshake")
        .err()
        .expect("a standby's close is no link");
        assert!(
            matches!(err, LinkError::NotLeader { leader: None }),
            "{err:?}"
        );
        standby.await.unwrap();
    }
}
