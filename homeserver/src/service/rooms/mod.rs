//! The room service: every room event this server creates is built by its
//! room's actor (see [`actor`]), which checks the authorization rules against
//! the room's current state, signs the PDU and queues it for durable append.
//! Reads (history, state, members, directory) go to the store, filtered by
//! history visibility.

mod actor;
mod auth;
mod create;
mod directory;
mod forks;
mod jump;
mod known_events;
mod membership;
mod past_state;
mod read;
mod relations;
mod remote_events;
mod remote_invite;
mod remote_join;
mod resident;
mod served;
pub mod state;
mod state_groups;
pub mod visibility;

use std::sync::Arc;

use ruma_common::{
    OwnedDeviceId, OwnedEventId, OwnedServerName, OwnedUserId, RoomId, ServerName, UserId,
};
use serde_json::Value;
use tokio::sync::oneshot;

pub use create::CreateRoomRequest;
pub use directory::PublicRoom;
pub use read::{present, MessagesPage, PageRequest, RoomEventFilter};
pub use relations::{attach_bundles, Bundles, RelationsPage};
pub use remote_invite::IncomingInvite;
pub use resident::{JoinedAnswer, Template};

use self::actor::{Core, Job, SendJob};
use self::state::RoomState;
use super::error::{ServiceError, ServiceResult};
use super::federation::sender::Outbox;
use super::federation::FederationService;
use super::keys::ServerKey;
use super::timeline_cache::TimelineCache;
use crate::store::{AccountStore, EventBus, RoomStore};

/// Who is acting: a user on one of their devices.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

/// An event a caller wants to send.
#[derive(Debug, Clone)]
pub struct EventRequest {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Value,
}

/// Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct RoomService {
    store: Arc<dyn RoomStore>,
    accounts: Arc<dyn AccountStore>,
    server_name: OwnedServerName,
    core: Arc<Core>,
    /// Joins rooms of other servers; `None` when not federating.
    federation: Option<Arc<FederationService>>,
    /// State groups read lately (the state at events).
    groups: Arc<state_groups::GroupCache>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl RoomService {
    pub fn new(
        store: Arc<dyn RoomStore>,
        accounts: Arc<dyn AccountStore>,
        bus: Arc<dyn EventBus>,
        cache: Arc<TimelineCache>,
        key: Arc<ServerKey>,
        server_name: OwnedServerName,
        federation: Option<(Arc<FederationService>, Outbox)>,
    ) -> Self {
        let (federation, outbox) = federation.unzip();
        Self {
            core: Core::new(store.clone(), bus, cache, key, server_name.clone(), outbox),
            store,
            accounts,
            server_name,
            federation,
            groups: Arc::default(),
        }
    }

    /// Another node appended to this room: the local actor's head is stale.
    pub fn head_moved_elsewhere(&self, room_id: &RoomId) {
        self.core.reload_if_running(room_id);
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// A snapshot of a room's current state, or `None` if the room is unknown.
    pub async fn state_snapshot(&self, room_id: &RoomId) -> ServiceResult<Option<Arc<RoomState>>> {
        let (reply, answer) = oneshot::channel();
        self.core.submit(room_id, Job::Snapshot(reply));
        answer.await.map_err(ServiceError::internal)?
    }

    /// A snapshot of a known room's current state; `M_NOT_FOUND` otherwise.
    pub async fn known_state(&self, room_id: &RoomId) -> ServiceResult<Arc<RoomState>> {
        self.state_snapshot(room_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Unknown room"))
    }

    /// The room's state if `user_id` is joined to it; `M_FORBIDDEN` otherwise
    /// (an unknown room included: whether it exists is not for outsiders).
    pub async fn require_joined(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> ServiceResult<Arc<RoomState>> {
        self.state_snapshot(room_id)
            .await?
            .filter(|state| state.is_joined(user_id))
            .ok_or_else(|| ServiceError::forbidden("You are not joined to this room"))
    }

    /// Sends one event; idempotent per `(device, txn_id)` when a txn id is given.
    pub async fn send_event(
        &self,
        who: &Requester,
        room_id: &RoomId,
        request: EventRequest,
        txn_id: Option<&str>,
    ) -> ServiceResult<OwnedEventId> {
        let txn = txn_id.map(|t| {
            let (user, device) = (who.user_id.clone(), who.device_id.clone());
            (room_id.to_owned(), user, device, t.to_owned())
        });
        // The actor looks the transaction up among recent sends and, once per
        // round for all its requests, in the store.
        if let Some(event_id) = txn.as_ref().and_then(|k| self.core.recent_txn(k)) {
            return Ok(event_id);
        }
        let ids = self
            .submit(room_id, &who.user_id, vec![request], txn, false)
            .await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| ServiceError::internal("an accepted send produced no event"))
    }

    /// Sends an EDU about `room_id` (typing, receipts) to the room's other
    /// servers when federating. Ephemeral: lost if this node stops first.
    pub async fn share_edu(&self, room_id: &RoomId, edu_type: &str, content: Value) {
        let Some(outbox) = self.core.outbox() else {
            return;
        };
        let Ok(Some(state)) = self.state_snapshot(room_id).await else {
            return;
        };
        let servers = state.other_servers(&self.server_name);
        if servers.is_empty() {
            return;
        }
        let edu = serde_json::json!({ "edu_type": edu_type, "content": content });
        match serde_json::value::to_raw_value(&edu) {
            Ok(raw) => outbox.send_edu(&raw, servers),
            Err(err) => tracing::warn!(%err, "an EDU could not be serialized"),
        }
    }

    /// Has the room's actor build `requests` atomically; resolves once durable.
    async fn submit(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        requests: Vec<EventRequest>,
        txn: Option<actor::TxnKey>,
        create: bool,
    ) -> ServiceResult<Vec<OwnedEventId>> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Send(SendJob {
            sender: sender.to_owned(),
            requests,
            txn,
            create,
            reply,
            attempt: 0,
        });
        self.core.submit(room_id, job);
        answer.await.map_err(ServiceError::internal)?
    }
}
