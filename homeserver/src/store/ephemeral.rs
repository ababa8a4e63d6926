//! Short-lived data with TTLs: [`Ephemeral`].

use async_trait::async_trait;
use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, UserId};

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

/// Short-lived data with TTLs: typing and presence. Not durable by design.
#[async_trait]
pub trait Ephemeral: Send + Sync {
    /// Marks `user_id` typing in a room until `until_ts` (ms), or stops it
    /// (`None`). Returns the room's new position in the typing stream if the
    /// set of typists changed, `None` if it did not (a typist renewing).
    async fn set_typing(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        until_ts: Option<i64>,
    ) -> StoreResult<Option<StreamPos>>;
    /// Drops typists whose time ran out by `now_ts`; returns each room whose
    /// set changed with its new position.
    async fn expire_typing(&self, now_ts: i64) -> StoreResult<Vec<(OwnedRoomId, StreamPos)>>;
    /// The earliest time a typist runs out, if anyone is typing.
    async fn next_typing_expiry(&self) -> StoreResult<Option<i64>>;
    /// For each of `room_ids` whose typists changed after `since`: the room
    /// and who types in it now (possibly nobody, so clients see the stop).
    async fn typing_since(
        &self,
        room_ids: &[OwnedRoomId],
        since: StreamPos,
    ) -> StoreResult<Vec<(OwnedRoomId, Vec<OwnedUserId>)>>;
    /// Highest position of the typing stream.
    async fn typing_position(&self) -> StoreResult<StreamPos>;
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
    /// Takes one token from the bucket `key` (holding at most `burst`,
    /// refilled at `per_sec`): `None` if taken, else the milliseconds until
    /// one is there. Shared by every node, so a cluster limits a user once.
    async fn take_token(&self, key: &str, burst: f64, per_sec: f64) -> StoreResult<Option<u64>>;
}
