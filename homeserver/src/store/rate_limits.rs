//! Token buckets shared by the nodes of a cluster: [`RateLimitStore`].

use async_trait::async_trait;

use super::StoreResult;

/// Rate-limit buckets every node of a cluster takes from, so a user is
/// limited once however many nodes serve them. A single node limits in its
/// own memory and needs none.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Takes one token from the bucket `key` (holding at most `burst`,
    /// refilled at `per_sec`): `None` if taken, else the milliseconds until
    /// one is there. Shared by every node, so a cluster limits a user once.
    async fn take_token(&self, key: &str, burst: f64, per_sec: f64) -> StoreResult<Option<u64>>;
}
