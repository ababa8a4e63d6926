//! Who is online: [`PresenceStore`].

use async_trait::async_trait;
use ruma_common::{OwnedUserId, UserId};

use super::{StoreResult, StreamPos};

/// Presence states as the spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    Online,
    Unavailable,
    Offline,
}

/// A user's presence as last recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceRecord {
    pub state: PresenceState,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    /// The user hides their presence ("last seen") from everyone else.
    pub hidden: bool,
}

/// Users' presence and the stream of its announced changes. Not durable by
/// design: after a restart everyone is offline until they sync.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// Records a user's presence. With `announce`, the change moves the
    /// presence stream (others should hear of it) and its new position is
    /// returned; without, it is a silent update (a newer `last_active_ts`).
    async fn set_presence(
        &self,
        user_id: &UserId,
        presence: PresenceRecord,
        announce: bool,
    ) -> StoreResult<Option<StreamPos>>;
    async fn get_presence(&self, user_id: &UserId) -> StoreResult<Option<PresenceRecord>>;
    /// The current presence of those of `user_ids` that have any.
    async fn presences(
        &self,
        user_ids: &[OwnedUserId],
    ) -> StoreResult<Vec<(OwnedUserId, PresenceRecord)>>;
    /// Users whose presence was announced after `since`, oldest change
    /// first, at most `limit`, with their current presence.
    async fn presence_since(
        &self,
        since: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<(OwnedUserId, PresenceRecord)>>;
    /// Highest position of the presence stream.
    async fn presence_position(&self) -> StoreResult<StreamPos>;
}
