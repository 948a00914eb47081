//! The one timer a driver keeps for its sans-IO core.

use tokio::time::Instant;

/// Sleeps until `deadline`, or forever when there is none: what a driver awaits beside its
/// inputs after asking its core for `poll_timeout`.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
