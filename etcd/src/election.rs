//! Leader election on one key, `P/leader`: a lease and one create-if-absent txn.
//!
//! A candidate grants itself a lease and, in one txn, creates `P/leader` (value
//! `"{advertise} {run_id}"`, on the lease) if it does not exist. The winner's fence is the
//! key's create revision: every registry write compares it, so a write after the lease
//! expired (the key is gone) or after another master won (another revision) changes nothing.
//! A loser publishes the leader's address, watches the key and tries again when it is deleted
//! (re-reading it every TTL in case a watch event was missed).

use crate::keys::Keys;
use crate::lease;
use crate::options::EtcdOptions;
use crate::registry::{self, EtcdRegistry};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use master::ha::{BoxFuture, Coordinator, HaError, Term};
use master::registry::{BlobRecord, RegistryError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Masters campaigning for one cluster's leadership in etcd, and its registry there.
#[derive(Clone)]
pub struct EtcdCoordinator {
    client: Client,
    opts: EtcdOptions,
    keys: Keys,
    removed_kept: Option<usize>,
}

impl std::fmt::Debug for EtcdCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCoordinator")
            .field("endpoints", &self.opts.endpoints)
            .field("prefix", &self.opts.prefix)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed: etcd failed, retried after a short pause.
enum Attempt {
    Transient(String),
}

impl From<etcd_client::Error> for Attempt {
    fn from(e: etcd_client::Error) -> Self {
        Attempt::Transient(e.to_string())
    }
}

/// A fresh identity for one campaign (one term at most).
fn run_id() -> String {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("the OS has randomness");
    hex::encode(b)
}

/// Revokes the lease when the term is dropped, and stops its keepalive.
struct Resign {
    client: Client,
    lease: i64,
    ttl: Duration,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Resign {
    fn drop(&mut self) {
        self.keeper.abort();
        let client = self.client.clone();
        let (lease, ttl) = (self.lease, self.ttl);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(revoke_until_done(client, lease, ttl));
        }
    }
}

/// Revokes `lease`, retrying while etcd is unreachable: etcd restores leases (with a fresh
/// TTL) when it restarts, so a resignation that waits for etcd to come back spares the
/// successor a whole TTL. Gives up after a while: the lease then simply expires.
async fn revoke_until_done(mut client: Client, lease: i64, ttl: Duration) {
    let give_up = Instant::now() + ttl * 2 + Duration::from_secs(30);
    while Instant::now() < give_up {
        match tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await {
            Ok(Ok(_)) => {
                tracing::info!(ts_ms = crate::unix_ms(), lease, "resigned: lease revoked");
                return;
            }
            // Already expired or revoked.
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.message().contains("not found") => {
                return
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    tracing::info!(lease, "resign: lease not revoked; it expires by itself");
}

impl EtcdCoordinator {
    /// Connects to etcd and checks the prefix: a prefix stamped by another cluster, or with a
    /// newer schema, is refused ([`HaError::Config`] / [`HaError::Registry`]); an unreachable
    /// etcd is [`HaError::Unavailable`]; bad endpoints or TLS material [`HaError::Config`].
    pub async fn connect(opts: EtcdOptions) -> Result<Self, HaError> {
        let client = opts.client().await?;
        let keys = Keys::new(&opts.prefix);
        let mut kv = client.kv_client();
        let meta = format!("{}/meta/", keys.prefix());
        let read = kv.get(
            meta.clone(),
            Some(GetOptions::new().with_range(format!("{}/meta0", keys.prefix()))),
        );
        let resp = match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(HaError::Unavailable(format!(
                    "etcd at {:?}: {e}",
                    opts.endpoints
                )))
            }
            Err(_) => {
                return Err(HaError::Unavailable(format!(
                    "etcd at {:?} did not answer within 10 s",
                    opts.endpoints
                )))
            }
        };
        let mut schema = None;
        let mut cluster = None;
        for kv in resp.kvs() {
            if kv.key() == keys.schema_version().as_slice() {
                schema = kv.value().try_into().ok().map(u32::from_le_bytes);
            } else if kv.key() == keys.cluster().as_slice() {
                cluster = Some(String::from_utf8_lossy(kv.value()).into_owned());
            }
        }
        registry::check_meta(&keys, schema, cluster.as_deref(), &opts.cluster).map_err(
            |e| match e {
                RegistryError::NewerSchema { .. } => HaError::Registry(e),
                e => HaError::Config(e.to_string()),
            },
        )?;
        Ok(Self {
            client,
            opts,
            keys,
            removed_kept: None,
        })
    }

    /// Keeps at most `n` tombstones of each kind instead of
    /// [`REMOVED_IDS_KEPT`](master::registry::REMOVED_IDS_KEPT) (tests of eviction).
    pub fn with_removed_kept(mut self, n: usize) -> Self {
        self.removed_kept = Some(n);
        self
    }

    /// The etcd client (tests and tools inspect the prefix with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The key layout of this cluster's prefix.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// One attempt: wins, or publishes the leader and waits until the key is gone.
    async fn attempt(
        &self,
        advertise: &str,
        leader: &watch::Sender<Option<String>>,
        started: Instant,
    ) -> Result<Option<Term>, Attempt> {
        let ttl = self.opts.lease_ttl;
        let mut client = self.client.clone();
        let key = self.keys.leader();
        // Look before taking a lease, so standbys do not churn leases.
        let got = client.get(key.clone(), None).await?;
        if let Some(kv) = got.kvs().first() {
            publish(leader, Some(addr_of(kv.value())));
            let rev = got.header().map_or(0, |h| h.revision());
            self.wait_deleted(&key, rev + 1).await?;
            return Ok(None);
        }
        let id = run_id();
        let sent_at = Instant::now();
        let grant = client.lease_grant(self.opts.ttl_secs(), None).await?;
        let lease_id = grant.id();
        let value = format!("{advertise} {id}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                Some(registry::put_on_lease(lease_id)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let r = match client.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                revoke(&self.client, lease_id);
                return Err(e.into());
            }
        };
        if !r.succeeded() {
            revoke(&self.client, lease_id);
            let rev = r.header().map_or(0, |h| h.revision());
            let current = r.op_responses().into_iter().find_map(|o| match o {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| addr_of(kv.value())),
                _ => None,
            });
            publish(leader, current);
            self.wait_deleted(&key, rev + 1).await?;
            return Ok(None);
        }
        let fence = r.header().map_or(0, |h| h.revision());
        let Some(until) = lease::valid_until(sent_at, grant.ttl(), ttl) else {
            revoke(&self.client, lease_id);
            return Err(Attempt::Transient("etcd granted a lease of ttl 0".into()));
        };
        let (tx, rx) = watch::channel(Some(until));
        let keeper = {
            let client = self.client.clone();
            tokio::spawn(async move {
                let why = lease::keep_alive(client, lease_id, ttl, tx).await;
                if why != "term dropped" {
                    tracing::warn!(ts_ms = crate::unix_ms(), fence, reason = why, "lease lost");
                }
            })
        };
        publish(leader, Some(advertise.to_owned()));
        tracing::info!(
            ts_ms = crate::unix_ms(),
            fence,
            run_id = %id,
            waited_ms = started.elapsed().as_millis() as u64,
            "elected"
        );
        let registry = EtcdRegistry::new(
            self.client.clone(),
            self.keys.clone(),
            self.opts.cluster.clone(),
            fence,
            &id,
            rx.clone(),
            self.removed_kept,
        );
        Ok(Some(Term {
            fence: fence as u64,
            valid_until: rx,
            registry: Box::new(registry),
            guard: Box::new(Resign {
                client: self.client.clone(),
                lease: lease_id,
                ttl,
                keeper,
            }),
        }))
    }

    /// Waits until the leader key is deleted (watching from `from_rev`), or a TTL passes (the
    /// caller reads it again).
    async fn wait_deleted(&self, key: &[u8], from_rev: i64) -> Result<(), Attempt> {
        let mut client = self.client.clone();
        let mut stream = client
            .watch(
                key.to_vec(),
                Some(WatchOptions::new().with_start_revision(from_rev)),
            )
            .await?;
        let give_up = tokio::time::Instant::now() + self.opts.lease_ttl;
        loop {
            match tokio::time::timeout_at(give_up, stream.message()).await {
                Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(resp))) => {
                    if resp.canceled() {
                        return Ok(());
                    }
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The advertised address in a leader key's value.
fn addr_of(value: &[u8]) -> String {
    let v = String::from_utf8_lossy(value);
    v.split(' ').next().unwrap_or_default().to_owned()
}

fn publish(leader: &watch::Sender<Option<String>>, addr: Option<String>) {
    leader.send_if_modified(|l| {
        let changed = *l != addr;
        *l = addr;
        changed
    });
}

/// Revokes a lease in the background (best effort: it expires anyway).
fn revoke(client: &Client, lease: i64) {
    let mut client = client.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await;
    });
}

impl Coordinator for EtcdCoordinator {
    fn campaign<'a>(
        &'a self,
        advertise: &'a str,
        leader: &'a watch::Sender<Option<String>>,
    ) -> BoxFuture<'a, Result<Term, HaError>> {
        Box::pin(async move {
            let started = Instant::now();
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.attempt(advertise, leader, started).await {
                    Ok(Some(term)) => return Ok(term),
                    Ok(None) => backoff = Duration::from_millis(100),
                    Err(Attempt::Transient(e)) => {
                        tracing::debug!(error = %e, "campaign: etcd failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        })
    }

    fn blobs(&self) -> BoxFuture<'_, Result<Vec<BlobRecord>, HaError>> {
        Box::pin(async move {
            let mut kv = self
                .client
                .kv_client()
                .max_decoding_message_size(registry::MAX_DECODE);
            let resp = kv
                .get(
                    self.keys.blob_prefix(),
                    Some(GetOptions::new().with_prefix()),
                )
                .await
                .map_err(|e| HaError::Unavailable(e.to_string()))?;
            let mut out = Vec::new();
            for kv in resp.kvs() {
                out.push(
                    postcard::from_bytes::<BlobRecord>(kv.value()).map_err(|source| {
                        HaError::Registry(RegistryError::Corrupt {
                            table: "blob",
                            source,
                        })
                    })?,
                );
            }
            out.sort_by_key(|a| a.digest);
            Ok(out)
        })
    }
}
