//! A standby's copy of the leader's blobs. Blobs live on the leader's disk; a standby that
//! takes over without them would refuse every launch naming one ("not uploaded"). So while it
//! waits, a standby lists the blobs the shared registry knows, fetches those it lacks from the
//! leader (as [`Role::Standby`], which only master certificates may take), and deletes those the
//! registry no longer lists (collected by the leader).
//!
//! The copy lags the leader by up to [`MIRROR_INTERVAL`] plus the transfer: a blob uploaded just
//! before the leader dies may be missing on its successor, which then drops it from the
//! registry; its framework's launches fail as "not uploaded" until it uploads it again.

use crate::blobs::BlobStore;
use crate::ha::Coordinator;
use net::link::{fetch_blob, Link};
use proto::Role;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a standby compares its blobs with the registry's list.
pub(super) const MIRROR_INTERVAL: Duration = Duration::from_millis(500);

/// Mirrors until dropped (the driver aborts it once this master leads).
pub(super) async fn mirror_blobs(
    coordinator: Arc<dyn Coordinator>,
    store: Arc<BlobStore>,
    endpoint: quinn::Endpoint,
    leader: watch::Receiver<Option<String>>,
    max_blob_size: u64,
) {
    // The connection to the leader, kept between rounds; redialed when the leader changes.
    let mut link: Option<(String, Link)> = None;
    loop {
        if let Err(e) = mirror_round(
            &*coordinator,
            &store,
            &endpoint,
            &leader,
            &mut link,
            max_blob_size,
        )
        .await
        {
            tracing::debug!(error = %e, "blob mirror round incomplete");
        }
        tokio::time::sleep(MIRROR_INTERVAL).await;
    }
}

/// One comparison of the local store with the registry's list.
async fn mirror_round(
    coordinator: &dyn Coordinator,
    store: &Arc<BlobStore>,
    endpoint: &quinn::Endpoint,
    leader: &watch::Receiver<Option<String>>,
    link: &mut Option<(String, Link)>,
    max_blob_size: u64,
) -> Result<(), String> {
    let listed = coordinator.blobs().await.map_err(|e| e.to_string())?;
    let wanted: HashSet<_> = listed.iter().map(|b| b.digest).collect();
    let local = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.scan())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let have: HashSet<_> = local.iter().map(|(d, _)| *d).collect();
    for (digest, _) in &local {
        if !wanted.contains(digest) {
            tracing::debug!(digest = %digest.to_hex(), "mirror: blob collected by the leader");
            let _ = store.remove(digest);
        }
    }
    for blob in listed.iter().filter(|b| !have.contains(&b.digest)) {
        let Some(addr) = leader.borrow().clone() else {
            return Err("nobody leads".into());
        };
        if link
            .as_ref()
            .is_none_or(|(a, l)| *a != addr || l.conn.close_reason().is_some())
        {
            let to = resolve(&addr).await?;
            let l = Link::connect(endpoint, to, Role::Standby)
                .await
                .map_err(|e| format!("dialing the leader {addr}: {e}"))?;
            *link = Some((addr, l));
        }
        let (_, l) = link.as_ref().expect("just set");
        let tmp = tempfile::Builder::new()
            .prefix(".mirror-")
            .tempfile_in(
                store
                    .path(&blob.digest)
                    .parent()
                    .expect("blobs live in a dir"),
            )
            .map_err(|e| e.to_string())?;
        let started = std::time::Instant::now();
        let size = fetch_blob(&l.conn, blob.digest, tmp.path(), max_blob_size)
            .await
            .map_err(|e| format!("fetching {}: {e}", blob.digest.to_hex()))?;
        let (store, digest, kind) = (store.clone(), blob.digest, blob.kind);
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(tmp.path())?;
            store.put(digest, kind, &bytes)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        tracing::info!(
            digest = %blob.digest.to_hex(),
            size,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "mirrored a blob from the leader"
        );
    }
    Ok(())
}

/// The first address `host:port` resolves to.
async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("resolving {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}
