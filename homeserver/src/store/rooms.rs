//! Rooms, their timelines, current state and membership: [`RoomStore`].

use std::sync::Arc;

use async_trait::async_trait;
use ruma_common::{
    DeviceId, EventId, OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId,
    RoomAliasId, RoomId, UserId,
};
use ruma_events::room::member::MembershipState;
use serde_json::Value;

use super::{StoreResult, StreamPos};

/// Resolves once an append is durable, with the positions it was given.
pub type Durable = futures::future::BoxFuture<'static, StoreResult<Vec<StreamPos>>>;

/// An event as stored: the signed PDU plus the columns queries need.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    pub stream: StreamPos,
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub kind: String,
    pub state_key: Option<String>,
    /// The full federation-format PDU (possibly redacted).
    pub pdu: Arc<Value>,
    /// `(device_id, txn_id)` of the client request that sent it, if local.
    pub txn: Option<(OwnedDeviceId, String)>,
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
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub kind: String,
    pub state_key: Option<String>,
    pub pdu: Arc<Value>,
    pub txn: Option<(OwnedDeviceId, String)>,
    pub visibility: String,
    /// `membership` value when this is an `m.room.member` event.
    pub membership: Option<MembershipState>,
    /// Redacted PDU that replaces the event it redacts.
    pub redaction: Option<(OwnedEventId, Value)>,
    /// The room's state head (its latest state event) this event was
    /// authorized against; `None` for a room's first event. The engine
    /// refuses the event with [`StoreError::Stale`] when the room's head is
    /// another by then: a node of a cluster changed the state meanwhile, and
    /// the event must be authorized again. A state event becomes the head.
    pub built_on: Option<OwnedEventId>,
    /// Where the event stands in the room's state; see [`EventState`].
    pub state: EventState,
}

impl NewEvent {
    /// The event with its state as on a history of one chain (as in tests
    /// of the store): a state event makes the group after it (its parent's
    /// plus itself) and becomes the head; any other event stays on the
    /// group it was built on.
    pub fn on_one_chain(mut self) -> Self {
        let Some(state_key) = &self.state_key else {
            self.state.group = self.built_on.clone();
            return self;
        };
        self.state = EventState {
            group: Some(self.event_id.clone()),
            new_groups: vec![NewStateGroup {
                id: self.event_id.clone(),
                room_id: self.room_id.clone(),
                parent: self.built_on.clone(),
                snapshot: self.built_on.is_none(),
                entries: vec![StateKeyed {
                    kind: self.kind.clone(),
                    state_key: state_key.clone(),
                    event_id: self.event_id.clone(),
                }],
            }],
            head: Some(self.event_id.clone()),
            resets: Vec::new(),
        };
        self
    }
}

/// The room's state at an event (issue 18): the state group after it, the
/// groups this append adds, the head it moves the room to, and current
/// state a resolution moved back to older events.
#[derive(Debug, Clone, Default)]
pub struct EventState {
    /// The state group after the event; `None` only for events from
    /// before state groups were stored.
    pub group: Option<OwnedEventId>,
    /// Groups to store with the event (before it is written).
    pub new_groups: Vec<NewStateGroup>,
    /// The room's state head after this event, when it moves: the state
    /// group of the room's current state. For a local event that is the
    /// event itself if it is a state event.
    pub head: Option<OwnedEventId>,
    /// Entries of the room's current state that now name an event already
    /// stored (a state resolution chose it), written after the event.
    pub resets: Vec<StateReset>,
}

/// One state group: the room's full state at some point, as the entries
/// that differ from `parent`, or all of them (`parent` then `None`, or
/// kept as the state it came after, with `snapshot`).
#[derive(Debug, Clone)]
pub struct NewStateGroup {
    pub id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub parent: Option<OwnedEventId>,
    pub snapshot: bool,
    pub entries: Vec<StateKeyed>,
}

/// `(type, state_key) -> event_id`: one entry of a state map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKeyed {
    pub kind: String,
    pub state_key: String,
    pub event_id: OwnedEventId,
}

/// A current-state entry set to an event already stored, or dropped.
#[derive(Debug, Clone)]
pub struct StateReset {
    pub entry: StateKeyed,
    pub membership: Option<MembershipState>,
    /// The resolution left the key out (every event for it failed): its
    /// row goes, and a member's membership with it.
    pub dropped: bool,
}

/// An event refused (rejected, or soft-failed: allowed by the state it was
/// built on, not by the room's current state) and why.
#[derive(Debug, Clone)]
pub struct Refused {
    pub event_id: OwnedEventId,
    pub pdu: Arc<Value>,
    pub soft_failed: bool,
    pub reason: String,
}

/// An event known here but not in the timeline.
#[derive(Debug, Clone)]
pub struct Outlier {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub pdu: Arc<Value>,
    /// `Some` when it was refused: `(soft_failed, reason)`.
    pub refused: Option<(bool, String)>,
}

/// A stored state group: its parent (the state it came after) and the
/// room's full state in it.
#[derive(Debug, Clone, Default)]
pub struct StateGroup {
    pub parent: Option<OwnedEventId>,
    pub entries: Vec<StateKeyed>,
}

/// A client transaction: `(sender, device_id, txn_id)`.
pub type TxnKey = (OwnedUserId, OwnedDeviceId, String);

/// Where a room listing or paging starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

/// Which relations of one event to read (`/relations`).
#[derive(Debug, Clone)]
pub struct RelationQuery<'a> {
    pub room_id: &'a RoomId,
    pub target: &'a EventId,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// Exclusive bounds in stream order; `from` is where paging starts.
    pub from: Option<StreamPos>,
    pub to: Option<StreamPos>,
    pub dir: Direction,
    pub limit: usize,
    /// Also relations of relations, up to three levels down.
    pub recurse: bool,
}

/// A thread's summary: how many replies, the latest, and whether the
/// asking user wrote any of it.
#[derive(Debug, Clone)]
pub struct ThreadSummary {
    pub root: OwnedEventId,
    pub count: i64,
    pub latest: StoredEvent,
    pub participated: bool,
}

/// What is bundled with events (`unsigned.m.relations`), for a set of them.
#[derive(Debug, Clone, Default)]
pub struct RelationSummaries {
    pub threads: Vec<ThreadSummary>,
    /// The newest edit of each edited event by its own sender.
    pub edits: Vec<(OwnedEventId, StoredEvent)>,
    /// `(target, referencing event)` pairs.
    pub references: Vec<(OwnedEventId, OwnedEventId)>,
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
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub membership: MembershipState,
    pub event_id: OwnedEventId,
    pub stream: StreamPos,
}

/// Rooms, their event timelines, current state and membership.
///
/// `append` is the single write: the event log and the derived views
/// (current state, membership) change in one atomic, durable step, so a crash
/// never leaves state that disagrees with the timeline.
#[async_trait]
pub trait RoomStore: Send + Sync {
    async fn create_room(
        &self,
        room_id: &RoomId,
        version: &str,
        creator: &UserId,
    ) -> StoreResult<()>;
    async fn room_exists(&self, room_id: &RoomId) -> StoreResult<bool>;

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

    async fn get_event(&self, event_id: &EventId) -> StoreResult<Option<StoredEvent>>;
    /// The events of these ids that are stored, in one round trip per
    /// thousand ids, in no particular order (what auth chains and state
    /// answers to other servers are read with).
    async fn get_events(&self, event_ids: &[OwnedEventId]) -> StoreResult<Vec<StoredEvent>>;
    /// The event id a device's transaction produced in a room, for idempotent sends.
    async fn find_txn(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        device_id: &DeviceId,
        txn_id: &str,
    ) -> StoreResult<Option<OwnedEventId>>;
    /// [`RoomStore::find_txn`] for many `(sender, device_id, txn_id)` of one
    /// room in one round trip: the event id of each one found.
    async fn find_txns(
        &self,
        room_id: &RoomId,
        txns: &[TxnKey],
    ) -> StoreResult<Vec<(TxnKey, OwnedEventId)>>;
    /// The room's state head: the latest state event appended (see
    /// [`NewEvent::built_on`]).
    async fn state_head(&self, room_id: &RoomId) -> StoreResult<Option<OwnedEventId>>;
    /// The state group after each of these events that has one.
    async fn state_groups_of(
        &self,
        event_ids: &[OwnedEventId],
    ) -> StoreResult<Vec<(OwnedEventId, OwnedEventId)>>;
    /// A state group's full state (its deltas applied up to a snapshot),
    /// `None` if no such group is stored.
    async fn state_group(&self, group: &EventId) -> StoreResult<Option<StateGroup>>;
    /// Keeps events known for authorization but not in the timeline (a
    /// joined room's auth chain); an event kept already is kept once.
    async fn add_outliers(
        &self,
        room_id: &RoomId,
        events: &[(OwnedEventId, Arc<Value>)],
    ) -> StoreResult<()>;
    /// Keeps events refused or soft-failed, with why (an event kept
    /// already is kept once, with its first answer).
    async fn add_refused(&self, room_id: &RoomId, events: &[Refused]) -> StoreResult<()>;
    /// The outliers among `event_ids`, refused ones included.
    async fn outliers(&self, event_ids: &[OwnedEventId]) -> StoreResult<Vec<Outlier>>;
    /// How many groups a read of `group` walks before its snapshot (0 for
    /// a snapshot); `None` if no such group is stored.
    async fn state_group_deltas(&self, group: &EventId) -> StoreResult<Option<usize>>;
    /// Last event of a room (for `prev_events`) and its depth.
    async fn latest_event(&self, room_id: &RoomId) -> StoreResult<Option<StoredEvent>>;

    /// Events of one room from `from` (exclusive) in `dir`, at most `limit`.
    async fn room_events(
        &self,
        room_id: &RoomId,
        from: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// For each room, the last `limit` events with `after < stream <= upto`,
    /// in one round trip however many rooms there are.
    async fn recent_events(
        &self,
        room_ids: &[OwnedRoomId],
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<(OwnedRoomId, RoomSlice)>>;

    /// Current state events of one room.
    async fn current_state(&self, room_id: &RoomId) -> StoreResult<Vec<StoredEvent>>;
    /// Current state of many rooms in one round trip, optionally only entries
    /// changed in `(after, upto]`.
    async fn current_state_of_rooms(
        &self,
        room_ids: &[OwnedRoomId],
        after: StreamPos,
        upto: StreamPos,
    ) -> StoreResult<Vec<StoredEvent>>;

    /// Every room the user has a membership in (any kind).
    async fn memberships_of_user(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRecord>>;
    /// Memberships of a room, every kind.
    async fn members(&self, room_id: &RoomId) -> StoreResult<Vec<MembershipRecord>>;
    /// The user's membership changes in a room: `(stream, membership)` oldest first.
    async fn membership_history(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> StoreResult<Vec<(StreamPos, MembershipState)>>;

    async fn set_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> StoreResult<()>;
    async fn get_alias(
        &self,
        alias: &RoomAliasId,
    ) -> StoreResult<Option<(OwnedRoomId, OwnedUserId)>>;
    async fn delete_alias(&self, alias: &RoomAliasId) -> StoreResult<bool>;
    async fn aliases_of_room(&self, room_id: &RoomId) -> StoreResult<Vec<OwnedRoomAliasId>>;
    /// Events relating to one event, in stream order of `dir`.
    async fn relations(&self, query: &RelationQuery<'_>) -> StoreResult<Vec<StoredEvent>>;
    /// The thread, edit and reference summaries of `targets`, with
    /// `user`'s participation in each thread.
    async fn relation_summaries(
        &self,
        targets: &[OwnedEventId],
        user: &UserId,
    ) -> StoreResult<RelationSummaries>;
    /// A room's thread roots by latest reply, newest first: the root and
    /// the latest reply's position, only those before `before` if given,
    /// only those `participant` wrote in (or started) if given.
    async fn threads(
        &self,
        room_id: &RoomId,
        participant: Option<&UserId>,
        before: Option<StreamPos>,
        limit: usize,
    ) -> StoreResult<Vec<(OwnedEventId, StreamPos)>>;
    async fn set_room_public(&self, room_id: &RoomId, public: bool) -> StoreResult<()>;
    async fn public_rooms(&self) -> StoreResult<Vec<OwnedRoomId>>;
}
