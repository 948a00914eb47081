//! Keeping a leader's lease alive, and how long that proves it may lead.
//!
//! A keepalive is sent every ttl/3. etcd counts a lease's time from when it *received* the
//! last keepalive, so a reply to a keepalive sent at `sent_at` granting `ttl` proves the lease
//! until at least `sent_at + ttl`; this master acts as leader only until that less a margin
//! (max(100 ms, ttl/10)), so its belief ends before etcd could let another master win (an etcd
//! leader change only extends leases). A reply with ttl 0 (the lease is gone), or no proven
//! renewal before the deadline, ends the term: `valid_until` becomes `None` for good.

use etcd_client::Client;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The safety margin for a lease of `ttl`.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(100))
}

/// Until when a renewal sent at `sent_at` that granted `granted_secs` lets this master lead.
pub fn valid_until(sent_at: Instant, granted_secs: i64, ttl: Duration) -> Option<Instant> {
    if granted_secs <= 0 {
        return None;
    }
    Some(sent_at + Duration::from_secs(granted_secs as u64) - margin(ttl))
}

/// Renews `lease` until it cannot be proven any more (or the receivers are all gone),
/// publishing each new deadline. Returns why it stopped.
pub async fn keep_alive(
    client: Client,
    lease: i64,
    ttl: Duration,
    tx: watch::Sender<Option<Instant>>,
) -> &'static str {
    let period = ttl / 3;
    let mut lc = client.lease_client();
    let mut stream = None;
    loop {
        let until = match *tx.borrow() {
            Some(u) => u,
            None => return "lease lost",
        };
        let sent_at = Instant::now();
        if sent_at >= until {
            tx.send_replace(None);
            return "lease not renewed in time";
        }
        if stream.is_none() {
            match tokio::time::timeout_at(until.into(), lc.keep_alive(lease)).await {
                Ok(Ok(s)) => stream = Some(s),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "lease keepalive stream failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(_) => continue,
            }
        }
        let (keeper, replies) = stream.as_mut().expect("opened");
        let renewed = tokio::time::timeout_at(until.into(), async {
            keeper.keep_alive().await?;
            replies.message().await
        })
        .await;
        match renewed {
            Ok(Ok(Some(r))) => match valid_until(sent_at, r.ttl(), ttl) {
                Some(u) => {
                    if tx.send(Some(u)).is_err() {
                        return "term dropped";
                    }
                }
                None => {
                    tx.send_replace(None);
                    return "lease expired (etcd answered ttl 0)";
                }
            },
            Ok(Ok(None)) | Ok(Err(_)) => {
                stream = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => continue, // the loop head ends the term
        }
        let next = sent_at + period;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = tx.closed() => return "term dropped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_proves_the_lease_from_when_it_was_sent_less_the_margin() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3);
        assert_eq!(margin(ttl), Duration::from_millis(300));
        assert_eq!(margin(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(
            valid_until(t0, 3, ttl),
            Some(t0 + Duration::from_millis(2700))
        );
        assert_eq!(valid_until(t0, 0, ttl), None, "ttl 0: the lease is gone");
        assert_eq!(valid_until(t0, -1, ttl), None);
    }
}
