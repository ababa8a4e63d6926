//! What other servers have of our events: [`FederationStore`], the durable
//! half of the federation outbox.

use async_trait::async_trait;
use ruma_common::{OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId};

use super::{StoreResult, StreamPos};

/// Another server in one of our rooms, and how far it has our events.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomDestination {
    pub room_id: OwnedRoomId,
    pub server: OwnedServerName,
    /// The position of the earliest join among its users now joined: it
    /// had the room up to there from the join itself.
    pub joined_at: StreamPos,
    /// The latest of our events in the room it accepted, if any.
    pub sent_upto: Option<StreamPos>,
}

#[async_trait]
pub trait FederationStore: Send + Sync {
    /// `destination` accepted our events of each room up to the given
    /// position (positions only move forward).
    async fn set_sent(
        &self,
        destination: &ServerName,
        upto: &[(&RoomId, StreamPos)],
    ) -> StoreResult<()>;
    /// Every other server with users joined to a room of ours (by
    /// `our_server`'s view of membership), with how far it has our events.
    async fn destinations(&self, our_server: &ServerName) -> StoreResult<Vec<RoomDestination>>;
    /// The other servers with users joined to a room `user_id` is joined
    /// to: where that user's presence goes.
    async fn servers_sharing_with(
        &self,
        user_id: &UserId,
        our_server: &ServerName,
    ) -> StoreResult<Vec<OwnedServerName>>;
}
