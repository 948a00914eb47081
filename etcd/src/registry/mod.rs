//! The master's registry in etcd, every write fenced to one term of leadership.
//!
//! Each txn compares `create_revision(P/leader) == fence` (the leader key this master created
//! when it was elected): once its lease expired or another master was elected the compare
//! fails, nothing is written and `apply` returns [`RegistryError::Fenced`]. Each txn also puts
//! `P/meta/writer = "{fence} {run_id}"`, whose MVCC history shows who wrote when. A txn is
//! also only sent while the term is still valid locally, and under a timeout at the end of it
//! (an unknown outcome is an error: the master steps down).
//!
//! Key layout: [`crate::keys`]; how a batch becomes txns: [`plan`]; how keys become a snapshot:
//! [`decode`].

pub mod decode;
pub mod plan;

use self::plan::{shape, KvOp, Mirror, Shape};
use crate::keys::Keys;
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use master::ha::{AsyncRegistry, BoxFuture};
use master::registry::{RegistryError, RegistryOp, Snapshot, REMOVED_IDS_KEPT, SCHEMA_VERSION};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How many keys one page of `load` reads.
pub const PAGE_KEYS: i64 = 512;

/// The largest response this client accepts (a page of big records).
pub(crate) const MAX_DECODE: usize = 64 << 20;

/// How long reading the whole registry may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a txn may take when the term sets no earlier bound.
const TXN_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn store_err(what: &'static str) -> impl FnOnce(etcd_client::Error) -> RegistryError {
    move |e| RegistryError::Store {
        what,
        source: Box::new(e),
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("compacted"))
}

/// Reads every key under `keys`' prefix at one revision, [`PAGE_KEYS`] at a time (restarting
/// if the revision is compacted away meanwhile). Returns the keys, the revision and the pages.
pub(crate) async fn read_all(
    client: &Client,
    keys: &Keys,
) -> Result<(BTreeMap<Vec<u8>, Vec<u8>>, i64, usize), RegistryError> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_DECODE);
    let (start, end) = keys.range();
    'snapshot: loop {
        let mut out = BTreeMap::new();
        let mut rev = 0;
        let mut pages = 0;
        let mut from = start.clone();
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_KEYS);
            if rev != 0 {
                opts = opts.with_revision(rev);
            }
            let resp = match kv.get(from.clone(), Some(opts)).await {
                Ok(r) => r,
                Err(e) if is_compacted(&e) => continue 'snapshot,
                Err(e) => return Err(store_err("read")(e)),
            };
            pages += 1;
            if rev == 0 {
                rev = resp.header().map_or(0, |h| h.revision());
            }
            let mut resp = resp;
            let more = resp.more();
            let mut last = None;
            for kv in resp.take_kvs() {
                let (k, v) = kv.into_key_value();
                last = Some(k.clone());
                out.insert(k, v);
            }
            match (more, last) {
                (true, Some(mut k)) => {
                    k.push(0);
                    from = k;
                }
                _ => return Ok((out, rev, pages)),
            }
        }
    }
}

/// Checks the stamps in `P/meta/*`: a newer schema or another cluster's prefix is refused.
pub(crate) fn check_meta(
    keys: &Keys,
    schema: Option<u32>,
    found_cluster: Option<&str>,
    cluster: &str,
) -> Result<(), RegistryError> {
    match schema {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(RegistryError::NewerSchema {
                found: v,
                supported: SCHEMA_VERSION,
            })
        }
        Some(v) if v < SCHEMA_VERSION => {
            return Err(RegistryError::Store {
                what: "check schema version",
                source: format!("version {v} is older than {SCHEMA_VERSION} and has no migration")
                    .into(),
            })
        }
        _ => {}
    }
    match found_cluster {
        Some(c) if c != cluster => Err(RegistryError::Store {
            what: "check cluster",
            source: format!(
                "prefix {} holds cluster {c:?}, not {cluster:?}: use this cluster's own prefix",
                keys.prefix()
            )
            .into(),
        }),
        _ => Ok(()),
    }
}

/// The registry of one term: writes fenced to its leader key's create revision.
pub struct EtcdRegistry {
    client: Client,
    keys: Keys,
    cluster: String,
    fence: i64,
    writer: Vec<u8>,
    valid_until: watch::Receiver<Option<Instant>>,
    mirror: Option<Mirror>,
    kept: usize,
    next_batch: u64,
}

impl EtcdRegistry {
    /// The registry of the term whose leader key was created at revision `fence`.
    pub(crate) fn new(
        client: Client,
        keys: Keys,
        cluster: String,
        fence: i64,
        run_id: &str,
        valid_until: watch::Receiver<Option<Instant>>,
        kept: Option<usize>,
    ) -> Self {
        Self {
            client,
            keys,
            cluster,
            fence,
            writer: format!("{fence} {run_id}").into_bytes(),
            valid_until,
            mirror: None,
            kept: kept.unwrap_or(REMOVED_IDS_KEPT),
            next_batch: 0,
        }
    }

    /// One fenced txn: `ops` plus the writer put, sent only while the term is valid and
    /// awaited until its end at most.
    async fn txn(&mut self, ops: Vec<KvOp>) -> Result<(), RegistryError> {
        let now = Instant::now();
        let deadline = match *self.valid_until.borrow() {
            Some(until) if now < until => until.min(now + TXN_TIMEOUT),
            _ => return Err(RegistryError::Fenced),
        };
        let mut then: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                KvOp::Put { key, value } => TxnOp::put(key, value, None),
                KvOp::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        then.push(TxnOp::put(self.keys.writer(), self.writer.clone(), None));
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.keys.leader(),
                CompareOp::Equal,
                self.fence,
            )])
            .and_then(then);
        let mut kv = self.client.kv_client();
        match tokio::time::timeout_at(deadline.into(), kv.txn(txn)).await {
            Err(_) => Err(RegistryError::Store {
                what: "write (outcome unknown)",
                source: "etcd did not answer before the term's deadline".into(),
            }),
            Ok(Err(e)) => Err(store_err("write")(e)),
            Ok(Ok(r)) if r.succeeded() => Ok(()),
            Ok(Ok(_)) => Err(RegistryError::Fenced),
        }
    }

    /// Applies `ops` (distinct keys) atomically, by the fast path or the journal.
    async fn write(&mut self, ops: Vec<KvOp>) -> Result<(), RegistryError> {
        match shape(ops) {
            Shape::Empty => Ok(()),
            Shape::Fast(ops) => self.txn(ops).await,
            Shape::Journal {
                chunks,
                materialize,
            } => {
                let batch = self.next_batch;
                self.next_batch += 1;
                let dir = self.keys.journal_batch(self.fence as u64, batch);
                for (i, chunk) in chunks.into_iter().enumerate() {
                    let key = format!("{dir}{i:04}").into_bytes();
                    self.txn(vec![KvOp::Put { key, value: chunk }]).await?;
                }
                // The commit point.
                self.txn(vec![KvOp::Put {
                    key: format!("{dir}commit").into_bytes(),
                    value: Vec::new(),
                }])
                .await?;
                self.materialize(materialize, dir.into_bytes()).await
            }
        }
    }

    /// Writes a committed journal's final state, then deletes the journal under `dir`.
    async fn materialize(
        &mut self,
        groups: Vec<Vec<KvOp>>,
        dir: Vec<u8>,
    ) -> Result<(), RegistryError> {
        for g in groups {
            self.txn(g).await?;
        }
        self.delete_prefix(dir).await
    }

    async fn delete_prefix(&mut self, dir: Vec<u8>) -> Result<(), RegistryError> {
        // A delete with a range is one op; the writer put is sent with it, fenced.
        let now = Instant::now();
        let deadline = match *self.valid_until.borrow() {
            Some(until) if now < until => until.min(now + TXN_TIMEOUT),
            _ => return Err(RegistryError::Fenced),
        };
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.keys.leader(),
                CompareOp::Equal,
                self.fence,
            )])
            .and_then([
                TxnOp::delete(dir, Some(DeleteOptions::new().with_prefix())),
                TxnOp::put(self.keys.writer(), self.writer.clone(), None),
            ]);
        let mut kv = self.client.kv_client();
        match tokio::time::timeout_at(deadline.into(), kv.txn(txn)).await {
            Err(_) => Err(RegistryError::Store {
                what: "delete journal (outcome unknown)",
                source: "etcd did not answer before the term's deadline".into(),
            }),
            Ok(Err(e)) => Err(store_err("delete journal")(e)),
            Ok(Ok(r)) if r.succeeded() => Ok(()),
            Ok(Ok(_)) => Err(RegistryError::Fenced),
        }
    }

    async fn load_inner(&mut self) -> Result<Snapshot, RegistryError> {
        let started = Instant::now();
        self.mirror = None;
        let (kvs, rev, pages) =
            tokio::time::timeout(LOAD_TIMEOUT, read_all(&self.client, &self.keys))
                .await
                .map_err(|_| RegistryError::Store {
                    what: "read",
                    source: format!("etcd did not answer within {LOAD_TIMEOUT:?}").into(),
                })??;
        let records = kvs.len();
        let d = decode::decode(&self.keys, kvs)?;
        check_meta(
            &self.keys,
            d.schema_version,
            d.cluster.as_deref(),
            &self.cluster,
        )?;
        if d.schema_version.is_none() || d.cluster.is_none() {
            self.txn(vec![
                KvOp::Put {
                    key: self.keys.schema_version(),
                    value: SCHEMA_VERSION.to_le_bytes().to_vec(),
                },
                KvOp::Put {
                    key: self.keys.cluster(),
                    value: self.cluster.clone().into_bytes(),
                },
            ])
            .await?;
        }
        if !d.journal_keys.is_empty() {
            // Committed journals are written out (idempotent final state), then every
            // journal, committed or not, is deleted.
            let mut finals: BTreeMap<Vec<u8>, KvOp> = BTreeMap::new();
            for op in d.replayed.iter() {
                finals.insert(op.key().to_vec(), op.clone());
            }
            let ops: Vec<KvOp> = finals.into_values().collect();
            let groups = match shape(ops) {
                Shape::Empty => Vec::new(),
                Shape::Fast(ops) => vec![ops],
                Shape::Journal { materialize, .. } => materialize,
            };
            tracing::info!(
                journal_keys = d.journal_keys.len(),
                replayed_ops = d.replayed.len(),
                "registry: materializing committed journals"
            );
            self.materialize(groups, self.keys.journal_prefix()).await?;
        }
        tracing::info!(
            ts_ms = crate::unix_ms(),
            records,
            pages,
            revision = rev,
            ms = started.elapsed().as_millis() as u64,
            "registry loaded"
        );
        self.mirror = Some(d.mirror);
        Ok(d.snapshot)
    }

    async fn apply_inner(&mut self, batch: &[RegistryOp]) -> Result<(), RegistryError> {
        if !matches!(*self.valid_until.borrow(), Some(u) if Instant::now() < u) {
            return Err(RegistryError::Fenced);
        }
        if self.mirror.is_none() {
            self.load_inner().await?;
        }
        // Taken out while the write is in flight: if it fails, or this future is dropped
        // midway (a caller's timeout), the outcome is unknown and the next write is planned
        // against a fresh load.
        let mut mirror = self.mirror.take().expect("loaded");
        let plan = mirror.plan(&self.keys, batch, self.kept);
        self.write(plan.ops()).await?;
        mirror.commit(plan);
        self.mirror = Some(mirror);
        Ok(())
    }
}

impl AsyncRegistry for EtcdRegistry {
    fn load(&mut self) -> BoxFuture<'_, Result<Snapshot, RegistryError>> {
        Box::pin(self.load_inner())
    }

    fn apply<'a>(
        &'a mut self,
        batch: &'a [RegistryOp],
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.apply_inner(batch))
    }
}

/// Puts a value on a lease (for the leader key), used by the election.
pub(crate) fn put_on_lease(lease: i64) -> PutOptions {
    PutOptions::new().with_lease(lease)
}
