//! Pushers and the notification outbox: [`PushStore`].

use async_trait::async_trait;
use ruma_common::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::Value;

use super::{StoreResult, StreamPos};

/// A push target a client registered (`POST /pushers/set`).
#[derive(Debug, Clone, PartialEq)]
pub struct PusherRecord {
    pub user_id: OwnedUserId,
    pub app_id: String,
    pub pushkey: String,
    /// `http` (a Matrix push gateway).
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// `url`, `format` and whatever else the client put there.
    pub data: Value,
    pub device_id: Option<OwnedDeviceId>,
    pub created_ts: i64,
}

/// Pushers (and, with the push delivery work, its outbox).
#[async_trait]
pub trait PushStore: Send + Sync {
    /// Adds or replaces the user's pusher for its `(app_id, pushkey)`.
    /// Without `append`, the same `(app_id, pushkey)` is taken from any other
    /// user, in the same transaction (the spec's default).
    async fn set_pusher(&self, pusher: PusherRecord, append: bool) -> StoreResult<()>;
    /// Removes one pusher; whether it existed.
    async fn delete_pusher(
        &self,
        user_id: &UserId,
        app_id: &str,
        pushkey: &str,
    ) -> StoreResult<bool>;
    /// A user's pushers, oldest first.
    async fn pushers(&self, user_id: &UserId) -> StoreResult<Vec<PusherRecord>>;
    /// Removes the pushers registered from the user's devices: one device,
    /// or (`device_id` `None`) every device but `keep_device`. A logged-out
    /// phone must stop getting the user's notifications.
    async fn delete_device_pushers(
        &self,
        user_id: &UserId,
        device_id: Option<&DeviceId>,
        keep_device: Option<&DeviceId>,
    ) -> StoreResult<()>;
    /// Every pusher (read once at start-up to know who has any).
    async fn all_pushers(&self) -> StoreResult<Vec<PusherRecord>>;
    /// Removes the pusher `(app_id, pushkey)` from whoever holds it (a
    /// gateway said the key is dead).
    async fn delete_pushkey(&self, app_id: &str, pushkey: &str) -> StoreResult<()>;
    /// Queues the notifications for the event at `stream`, durably, each due
    /// at its `due_ts`, unless that event's were queued already (false then,
    /// and nothing is queued): an event handed out twice is never pushed
    /// twice.
    async fn enqueue_pushes(
        &self,
        stream: i64,
        pushes: Vec<OutboxPush>,
        now_ts: i64,
    ) -> StoreResult<bool>;
    /// Takes up to `limit` queued notifications due by `now_ts`, oldest
    /// first, and makes them due again only at `lease_until`, in one step:
    /// two senders never take the same notification. Notifications for the
    /// destinations (`url`s) in `skip_urls` are left where they are: those
    /// gateways have as many requests in flight as they may.
    async fn claim_pushes(
        &self,
        now_ts: i64,
        lease_until: i64,
        limit: usize,
        skip_urls: &[String],
    ) -> StoreResult<Vec<QueuedPush>>;
    /// The earliest time a queued notification falls due, if any.
    async fn next_push_due(&self) -> StoreResult<Option<i64>>;
    /// A notification was delivered or given up: forget it.
    async fn finish_push(&self, id: i64) -> StoreResult<()>;
    /// A notification failed: try again at `next_ts`.
    async fn retry_push(&self, id: i64, attempts: i64, next_ts: i64) -> StoreResult<()>;
    /// One node: the stream position through which every event's pushes
    /// were decided, if one was ever saved.
    async fn pushes_decided_through(&self) -> StoreResult<Option<i64>>;
    /// Saves that position.
    async fn set_pushes_decided_through(&self, stream: i64) -> StoreResult<()>;
}

/// One notification for one pusher, as queued.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxPush {
    pub user_id: OwnedUserId,
    pub app_id: String,
    pub pushkey: String,
    pub url: String,
    /// The request body for the gateway.
    pub body: Value,
    /// When it is first due (as read back from the queue: when it is due
    /// next, which for a taken one is its lease's end).
    pub due_ts: i64,
    /// Held for a connected user: sent only if by `due_ts` no device of theirs
    /// received (or read) this room up to this event.
    pub unless_received: Option<(OwnedRoomId, StreamPos)>,
}

/// A queued notification with its queue id and attempts so far.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedPush {
    pub id: i64,
    pub push: OutboxPush,
    pub attempts: i64,
}
