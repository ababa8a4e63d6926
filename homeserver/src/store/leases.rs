//! Which node each user's syncs are on: [`ConnectionLeases`].

use async_trait::async_trait;
use ruma_common::{OwnedUserId, UserId};

use super::StoreResult;

/// Leases on users' connections, for a cluster: a user is online while any
/// node renews their lease, and the nodes find those whose node died. A
/// single node keeps this in its own memory and needs none.
#[async_trait]
pub trait ConnectionLeases: Send + Sync {
    /// Records that each of `user_ids` has a sync open on `node`, for
    /// `ttl_ms` unless renewed: which user is connected to which node, for
    /// every node of a cluster to see.
    async fn set_connected(
        &self,
        user_ids: &[OwnedUserId],
        node: &str,
        ttl_ms: i64,
    ) -> StoreResult<()>;
    /// The node `user_id` is connected to, if any entry is still live.
    async fn connected_node(&self, user_id: &UserId) -> StoreResult<Option<String>>;
    /// Takes up to `limit` users whose connection ran out by `now_ts`
    /// without renewal (they left, or their node died): each is handed to
    /// one caller only, which sees to their presence.
    async fn take_lapsed_connections(
        &self,
        now_ts: i64,
        limit: usize,
    ) -> StoreResult<Vec<OwnedUserId>>;
}
