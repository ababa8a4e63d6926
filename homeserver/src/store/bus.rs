//! Fan-out of stream notices between the writers and the waiting syncs: [`EventBus`].

use async_trait::async_trait;
use futures::stream::BoxStream;
use ruma_common::{OwnedRoomId, OwnedUserId};

use super::{cluster, StoreResult, StreamPos};

/// A note that something a client can sync was written.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamNotice {
    /// A room event at `stream`; `affected_user` is the target of a membership change.
    RoomEvent {
        stream: StreamPos,
        room_id: OwnedRoomId,
        affected_user: Option<OwnedUserId>,
    },
    /// Account data of `user_id` at `stream` in the account-data stream.
    AccountData {
        stream: StreamPos,
        user_id: OwnedUserId,
    },
    /// Who types in `room_id` changed, at `stream` in the typing stream.
    Typing {
        stream: StreamPos,
        room_id: OwnedRoomId,
    },
    /// The presence of `user_id` changed, at `stream` in the presence stream.
    Presence {
        stream: StreamPos,
        user_id: OwnedUserId,
    },
    /// A receipt in `room_id` moved, at `stream` in the receipts stream;
    /// `only_user` is set when only that user may see it (delivered ticks
    /// go to the message's sender, not to the whole room).
    Receipt {
        stream: StreamPos,
        room_id: OwnedRoomId,
        only_user: Option<OwnedUserId>,
    },
    /// The devices or keys of `user_id` changed, at `stream` in the
    /// device-list stream: whoever shares a room with them syncs it.
    DeviceLists {
        stream: StreamPos,
        user_id: OwnedUserId,
    },
    /// A to-device message for a device of `user_id`, at `stream` in the
    /// to-device stream.
    ToDevice {
        stream: StreamPos,
        user_id: OwnedUserId,
    },
    /// The subscriber fell behind and missed notices: wake every sync, which
    /// is always safe. Seen only locally, never published.
    Lagged,
}

/// Fan-out of stream notices to every node, so waiting syncs wake at once.
#[async_trait]
pub trait EventBus: Send + Sync {
    async fn publish(&self, notice: StreamNotice) -> StoreResult<()>;
    /// A stream of every notice published after the call.
    fn subscribe(&self) -> BoxStream<'static, StreamNotice>;
    /// Tells the other nodes what this one committed. `message` builds what
    /// to send and is called only where other nodes listen: a single node
    /// builds (and copies) nothing.
    fn share(&self, _message: &dyn Fn() -> cluster::ClusterMessage) {}
    /// Like [`share`](Self::share), and resolves once the message is durable
    /// on the bus (at once on one node).
    fn share_durable(
        &self,
        _message: &dyn Fn() -> cluster::ClusterMessage,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(futures::future::ready(()))
    }
    /// On a cluster, the committed events this node acts on for `group` on
    /// behalf of all nodes (each event goes to one node of the group). `None`
    /// on one node, where every [`StreamNotice::RoomEvent`] is its own.
    fn claim_events(&self, _group: &str) -> Option<BoxStream<'static, cluster::ClaimedEvents>> {
        None
    }
}
