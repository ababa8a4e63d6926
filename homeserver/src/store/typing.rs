//! Who types where: [`TypingStore`].

use async_trait::async_trait;
use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{StoreResult, StreamPos};

/// Typing notifications, short-lived by nature: a typist who is not renewed
/// runs out. Not durable by design.
#[async_trait]
pub trait TypingStore: Send + Sync {
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
}
