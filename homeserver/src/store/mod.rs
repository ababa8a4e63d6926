//! Storage traits: the narrow seams between the service layer and the engines.
//!
//! One trait per domain (accounts, rooms and their timelines, the event bus,
//! ephemeral data). Every trait is async and object safe so the service layer
//! holds `Arc<dyn Trait>` and never learns which engine it talks to. Each engine
//! lives in its own module behind a cargo feature, and every engine must pass
//! the same suite in [`conformance`].

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::Value;

pub mod cluster;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod media;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis_bus;
#[cfg(feature = "redis")]
pub mod redis_store;
#[cfg(feature = "scylla")]
pub mod scylla;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(test)]
pub mod conformance;

/// A position in a totally ordered stream. Positions only grow, and a position
/// once returned by a write is durable.
pub type StreamPos = i64;

/// Errors raised by storage engines. The service layer maps them to Matrix errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("database error: {0}")]
    Database(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("storage is shutting down")]
    Closed,
    /// The room's state moved on since the event was authorized (another
    /// node of a cluster changed it): authorize again and retry.
    #[error("the room's state changed meanwhile")]
    Stale,
    /// A file or object store failed (media bytes).
    #[error("object storage error: {0}")]
    Io(String),
    /// A value the engine cannot store, such as a NUL character in text
    /// for PostgreSQL: the client's input is at fault, not the server.
    #[error("value cannot be stored: {0}")]
    Invalid(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            // PostgreSQL's character_not_in_repertoire: a NUL in a text value.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => {
                StoreError::Invalid(db.message().to_owned())
            }
            sqlx::Error::PoolClosed => StoreError::Closed,
            _ => StoreError::Database(err.to_string()),
        }
    }
}

/// The relational engine as a whole (SQLite or PostgreSQL), for what only
/// start-up and shutdown do with it; the services see the per-domain traits.
#[async_trait]
pub trait Database: Send + Sync {
    /// Waits for queued writes to commit, then closes the connections.
    async fn close(&self);
}

/// Resolves once an append is durable, with the positions it was given.
pub type Durable = futures::future::BoxFuture<'static, StoreResult<Vec<StreamPos>>>;

/// A registered account.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub created_ts: i64,
}

/// The user and device an access token acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
}

/// One account-data entry; `room_id` is `None` for global account data.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountDataEntry {
    pub room_id: Option<String>,
    pub kind: String,
    pub content: Value,
    pub stream: StreamPos,
}

/// Accounts, devices, access tokens, profiles, filters and account data.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account; `StoreError::Conflict` if the id is taken.
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn get_user(&self, user_id: &str) -> StoreResult<Option<UserRecord>>;
    async fn set_password_hash(&self, user_id: &str, hash: &str) -> StoreResult<()>;
    async fn set_displayname(&self, user_id: &str, name: Option<&str>) -> StoreResult<()>;
    async fn set_avatar_url(&self, user_id: &str, url: Option<&str>) -> StoreResult<()>;

    /// Creates (or replaces) a device and binds a new access token to it.
    /// Tokens are stored hashed; the caller passes the hash.
    async fn create_device_with_token(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        token_hash: &str,
    ) -> StoreResult<()>;
    async fn find_token(&self, token_hash: &str) -> StoreResult<Option<TokenOwner>>;
    /// Deletes the token and the device it belongs to.
    async fn delete_token(&self, token_hash: &str) -> StoreResult<()>;
    /// Deletes every token and device of a user, except `keep_device` if given.
    /// Returns the hashes of the deleted tokens so caches can drop them.
    async fn delete_all_tokens(
        &self,
        user_id: &str,
        keep_device: Option<&str>,
    ) -> StoreResult<Vec<String>>;

    async fn save_filter(&self, user_id: &str, filter: &Value) -> StoreResult<i64>;
    async fn get_filter(&self, user_id: &str, filter_id: i64) -> StoreResult<Option<Value>>;

    /// Stores account data and returns its position in the account-data stream.
    async fn set_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
        content: &Value,
    ) -> StoreResult<StreamPos>;
    async fn get_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
    ) -> StoreResult<Option<Value>>;
    /// Account data changed after `since` (all of it when `since` is 0).
    async fn account_data_since(
        &self,
        user_id: &str,
        since: StreamPos,
    ) -> StoreResult<Vec<AccountDataEntry>>;
    async fn account_data_position(&self) -> StoreResult<StreamPos>;
}

/// An event as stored: the signed PDU plus the columns queries need.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    pub stream: StreamPos,
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub kind: String,
    pub state_key: Option<String>,
    /// The full federation-format PDU (possibly redacted).
    pub pdu: Arc<Value>,
    /// `(device_id, txn_id)` of the client request that sent it, if local.
    pub txn: Option<(String, String)>,
    /// The room's history visibility when the event was sent.
    pub visibility: String,
}

impl AsRef<StoredEvent> for StoredEvent {
    fn as_ref(&self) -> &StoredEvent {
        self
    }
}

/// Everything one append writes, atomically: the event, the room's current
/// state and membership if it is a state event, and an optional redaction.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub kind: String,
    pub state_key: Option<String>,
    pub pdu: Arc<Value>,
    pub txn: Option<(String, String)>,
    pub visibility: String,
    /// `membership` value when this is an `m.room.member` event.
    pub membership: Option<String>,
    /// Redacted PDU that replaces the event it redacts.
    pub redaction: Option<(String, Value)>,
    /// The room's state head (its latest state event) this event was
    /// authorized against; `None` for a room's first event. The engine
    /// refuses the event with [`StoreError::Stale`] when the room's head is
    /// another by then: a node of a cluster changed the state meanwhile, and
    /// the event must be authorized again. A state event becomes the head.
    pub built_on: Option<String>,
}

/// Where a room listing or paging starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

/// Per-room result of a multi-room timeline query.
#[derive(Debug, Clone, Default)]
pub struct RoomSlice {
    /// Events in stream order (oldest first).
    pub events: Vec<StoredEvent>,
    /// True when more events in the window were left out by the limit.
    pub limited: bool,
}

/// A user's membership in one room as of the latest event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRecord {
    pub room_id: String,
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream: StreamPos,
}

/// Rooms, their event timelines, current state and membership.
///
/// `append` is the single write: the event log and the derived views
/// (current state, membership) change in one atomic, durable step, so a crash
/// never leaves state that disagrees with the timeline.
#[async_trait]
pub trait RoomStore: Send + Sync {
    async fn create_room(&self, room_id: &str, version: &str, creator: &str) -> StoreResult<()>;
    async fn room_exists(&self, room_id: &str) -> StoreResult<bool>;

    /// Queues events for appending and returns a future that resolves, with
    /// their stream positions, once they are durable. Calls are committed in
    /// the order they are made, so a caller may queue the next event of a room
    /// before the previous one is durable.
    ///
    /// Deliberately not `async`: queueing must finish in the call itself. The
    /// room service advances a room's head and queues its event with no await
    /// in between, so a cancelled request can never leave a head that names an
    /// event which was never queued.
    fn append(&self, events: Vec<NewEvent>) -> StoreResult<Durable>;
    /// Highest durable position of the event stream.
    async fn events_position(&self) -> StoreResult<StreamPos>;
    /// Up to `limit` durable events of every room after `after`, in stream
    /// order: how a node of a cluster fills a gap its bus left.
    async fn events_after(&self, after: StreamPos, limit: usize) -> StoreResult<Vec<StoredEvent>>;

    async fn get_event(&self, event_id: &str) -> StoreResult<Option<StoredEvent>>;
    /// The event id a device's transaction produced in a room, for idempotent sends.
    async fn find_txn(
        &self,
        room_id: &str,
        sender: &str,
        device_id: &str,
        txn_id: &str,
    ) -> StoreResult<Option<String>>;
    /// [`RoomStore::find_txn`] for many `(sender, device_id, txn_id)` of one
    /// room in one round trip: the event id of each one found.
    async fn find_txns(
        &self,
        room_id: &str,
        txns: &[(String, String, String)],
    ) -> StoreResult<Vec<((String, String, String), String)>>;
    /// Last event of a room (for `prev_events`) and its depth.
    async fn latest_event(&self, room_id: &str) -> StoreResult<Option<StoredEvent>>;

    /// Events of one room from `from` (exclusive) in `dir`, at most `limit`.
    async fn room_events(
        &self,
        room_id: &str,
        from: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// For each room, the last `limit` events with `after < stream <= upto`,
    /// in one round trip however many rooms there are.
    async fn recent_events(
        &self,
        room_ids: &[String],
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<(String, RoomSlice)>>;

    /// Current state events of one room.
    async fn current_state(&self, room_id: &str) -> StoreResult<Vec<StoredEvent>>;
    /// Current state of many rooms in one round trip, optionally only entries
    /// changed in `(after, upto]`.
    async fn current_state_of_rooms(
        &self,
        room_ids: &[String],
        after: StreamPos,
        upto: StreamPos,
    ) -> StoreResult<Vec<StoredEvent>>;

    /// Every room the user has a membership in (any kind).
    async fn memberships_of_user(&self, user_id: &str) -> StoreResult<Vec<MembershipRecord>>;
    /// Memberships of a room, every kind.
    async fn members(&self, room_id: &str) -> StoreResult<Vec<MembershipRecord>>;
    /// The user's membership changes in a room: `(stream, membership)` oldest first.
    async fn membership_history(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> StoreResult<Vec<(StreamPos, String)>>;

    async fn set_alias(&self, alias: &str, room_id: &str, creator: &str) -> StoreResult<()>;
    async fn get_alias(&self, alias: &str) -> StoreResult<Option<(String, String)>>;
    async fn delete_alias(&self, alias: &str) -> StoreResult<bool>;
    async fn aliases_of_room(&self, room_id: &str) -> StoreResult<Vec<String>>;
    async fn set_room_public(&self, room_id: &str, public: bool) -> StoreResult<()>;
    async fn public_rooms(&self) -> StoreResult<Vec<String>>;
}

/// A receipt to record: `user_id` has received or read `room_id` up to
/// `event_id` (at `event_stream` in the event stream).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewReceipt {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: Option<String>,
    pub event_id: String,
    /// Who sent the event: the one user who sees delivered receipts for it.
    pub event_sender: String,
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
        room_ids: &[String],
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
        user_id: &str,
        room_ids: &[String],
    ) -> StoreResult<Vec<(String, StreamPos)>>;
    /// For each user and receipt type in a room: the earliest time a receipt
    /// of theirs covered the event at `event_stream`.
    async fn receipt_times(
        &self,
        room_id: &str,
        event_stream: StreamPos,
    ) -> StoreResult<Vec<(String, String, i64)>>;
}

/// A push target a client registered (`POST /pushers/set`).
#[derive(Debug, Clone, PartialEq)]
pub struct PusherRecord {
    pub user_id: String,
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
    pub device_id: Option<String>,
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
    async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> StoreResult<bool>;
    /// A user's pushers, oldest first.
    async fn pushers(&self, user_id: &str) -> StoreResult<Vec<PusherRecord>>;
    /// Removes the pushers registered from the user's devices: one device,
    /// or (`device_id` `None`) every device but `keep_device`. A logged-out
    /// phone must stop getting the user's notifications.
    async fn delete_device_pushers(
        &self,
        user_id: &str,
        device_id: Option<&str>,
        keep_device: Option<&str>,
    ) -> StoreResult<()>;
    /// Every pusher (read once at start-up to know who has any).
    async fn all_pushers(&self) -> StoreResult<Vec<PusherRecord>>;
    /// Removes the pusher `(app_id, pushkey)` from whoever holds it (a
    /// gateway said the key is dead).
    async fn delete_pushkey(&self, app_id: &str, pushkey: &str) -> StoreResult<()>;
    /// Queues the notifications for the event at `stream`, durably and due
    /// at once, unless that event's were queued already (false then, and
    /// nothing is queued): an event handed out twice is never pushed twice.
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
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub url: String,
    /// The request body for the gateway.
    pub body: Value,
}

/// A queued notification with its queue id and attempts so far.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedPush {
    pub id: i64,
    pub push: OutboxPush,
    pub attempts: i64,
}

/// A note that something a client can sync was written.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamNotice {
    /// A room event at `stream`; `affected_user` is the target of a membership change.
    RoomEvent {
        stream: StreamPos,
        room_id: String,
        affected_user: Option<String>,
    },
    /// Account data of `user_id` at `stream` in the account-data stream.
    AccountData { stream: StreamPos, user_id: String },
    /// Who types in `room_id` changed, at `stream` in the typing stream.
    Typing { stream: StreamPos, room_id: String },
    /// The presence of `user_id` changed, at `stream` in the presence stream.
    Presence { stream: StreamPos, user_id: String },
    /// A receipt in `room_id` moved, at `stream` in the receipts stream;
    /// `only_user` is set when only that user may see it (delivered ticks
    /// go to the message's sender, not to the whole room).
    Receipt {
        stream: StreamPos,
        room_id: String,
        only_user: Option<String>,
    },
}

/// Fan-out of stream notices to every node, so waiting syncs wake at once.
#[async_trait]
pub trait EventBus: Send + Sync {
    async fn publish(&self, notice: StreamNotice) -> StoreResult<()>;
    /// A stream of every notice published after the call.
    fn subscribe(&self) -> BoxStream<'static, StreamNotice>;
    /// Whether other nodes listen; callers build a [`cluster::ClusterMessage`]
    /// only then, so a single node pays nothing.
    fn clustered(&self) -> bool {
        false
    }
    /// Tells the other nodes what this one committed (nothing on one node).
    fn share(&self, _message: cluster::ClusterMessage) {}
    /// Like [`share`](Self::share), and resolves once the message is durable
    /// on the bus (at once on one node).
    fn share_durable(
        &self,
        message: cluster::ClusterMessage,
    ) -> futures::future::BoxFuture<'static, ()> {
        self.share(message);
        Box::pin(futures::future::ready(()))
    }
    /// On a cluster, the committed events this node acts on for `group` on
    /// behalf of all nodes (each event goes to one node of the group). `None`
    /// on one node, where every [`StreamNotice::RoomEvent`] is its own.
    fn claim_events(&self, _group: &str) -> Option<BoxStream<'static, cluster::ClaimedEvents>> {
        None
    }
}

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
        room_id: &str,
        user_id: &str,
        until_ts: Option<i64>,
    ) -> StoreResult<Option<StreamPos>>;
    /// Drops typists whose time ran out by `now_ts`; returns each room whose
    /// set changed with its new position.
    async fn expire_typing(&self, now_ts: i64) -> StoreResult<Vec<(String, StreamPos)>>;
    /// The earliest time a typist runs out, if anyone is typing.
    async fn next_typing_expiry(&self) -> StoreResult<Option<i64>>;
    /// For each of `room_ids` whose typists changed after `since`: the room
    /// and who types in it now (possibly nobody, so clients see the stop).
    async fn typing_since(
        &self,
        room_ids: &[String],
        since: StreamPos,
    ) -> StoreResult<Vec<(String, Vec<String>)>>;
    /// Highest position of the typing stream.
    async fn typing_position(&self) -> StoreResult<StreamPos>;
    /// Records a user's presence. With `announce`, the change moves the
    /// presence stream (others should hear of it) and its new position is
    /// returned; without, it is a silent update (a newer `last_active_ts`).
    async fn set_presence(
        &self,
        user_id: &str,
        presence: PresenceRecord,
        announce: bool,
    ) -> StoreResult<Option<StreamPos>>;
    async fn get_presence(&self, user_id: &str) -> StoreResult<Option<PresenceRecord>>;
    /// The current presence of those of `user_ids` that have any.
    async fn presences(&self, user_ids: &[String]) -> StoreResult<Vec<(String, PresenceRecord)>>;
    /// Users whose presence was announced after `since`, oldest change
    /// first, at most `limit`, with their current presence.
    async fn presence_since(
        &self,
        since: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<(String, PresenceRecord)>>;
    /// Highest position of the presence stream.
    async fn presence_position(&self) -> StoreResult<StreamPos>;
    /// Records that each of `user_ids` has a sync open on `node`, for
    /// `ttl_ms` unless renewed: which user is connected to which node, for
    /// every node of a cluster to see.
    async fn set_connected(&self, user_ids: &[String], node: &str, ttl_ms: i64) -> StoreResult<()>;
    /// The node `user_id` is connected to, if any entry is still live.
    async fn connected_node(&self, user_id: &str) -> StoreResult<Option<String>>;
    /// Takes up to `limit` users whose connection ran out by `now_ts`
    /// without renewal (they left, or their node died): each is handed to
    /// one caller only, which sees to their presence.
    async fn take_lapsed_connections(&self, now_ts: i64, limit: usize) -> StoreResult<Vec<String>>;
    /// Takes one token from the bucket `key` (holding at most `burst`,
    /// refilled at `per_sec`): `None` if taken, else the milliseconds until
    /// one is there. Shared by every node, so a cluster limits a user once.
    async fn take_token(&self, key: &str, burst: f64, per_sec: f64) -> StoreResult<Option<u64>>;
}
