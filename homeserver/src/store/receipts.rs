//! Read and delivery receipts: [`ReceiptStore`].

use async_trait::async_trait;
use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{StoreResult, StreamPos};

/// A receipt to record: `user_id` has received or read `room_id` up to
/// `event_id` (at `event_stream` in the event stream).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewReceipt {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub receipt_type: String,
    pub thread_id: Option<String>,
    pub event_id: OwnedEventId,
    /// Who sent the event: the one user who sees delivered receipts for it.
    pub event_sender: OwnedUserId,
    pub event_stream: StreamPos,
    pub ts: i64,
}

/// A receipt as stored, with its position in the receipts stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReceiptRecord {
    pub receipt: NewReceipt,
    pub stream: StreamPos,
}

/// Read and delivery receipts: durable and stream-positioned.
#[async_trait]
pub trait ReceiptStore: Send + Sync {
    /// Moves receipts forward, atomically and durably. For each, the new
    /// position in the receipts stream, or `None` where the user's receipt of
    /// that type already covered a later (or the same) event.
    async fn set_receipts(&self, receipts: Vec<NewReceipt>) -> StoreResult<Vec<Option<StreamPos>>>;
    /// Receipts of these rooms that moved after `since`.
    async fn receipts_since(
        &self,
        room_ids: &[OwnedRoomId],
        since: StreamPos,
    ) -> StoreResult<Vec<ReceiptRecord>>;
    async fn receipts_position(&self) -> StoreResult<StreamPos>;
    /// Up to `limit` durable receipts of every room after `after`, in stream
    /// order (a cluster node's gap filling, like `RoomStore::events_after`).
    async fn receipts_after(
        &self,
        after: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<ReceiptRecord>>;
    /// For each of `room_ids` where `user_id` has a read receipt (`m.read` or
    /// `m.read.private`, any thread): the position of the latest event read.
    async fn read_positions(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
    ) -> StoreResult<Vec<(OwnedRoomId, StreamPos)>>;
    /// The position of the latest event of `room_id` that `user_id` received
    /// (`tern.delivered`) or read, if any: whether a device of theirs has it.
    async fn received_upto(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> StoreResult<Option<StreamPos>>;
    /// For each user and receipt type in a room: the earliest time a receipt
    /// of theirs covered the event at `event_stream`.
    async fn receipt_times(
        &self,
        room_id: &RoomId,
        event_stream: StreamPos,
    ) -> StoreResult<Vec<(OwnedUserId, String, i64)>>;
}
