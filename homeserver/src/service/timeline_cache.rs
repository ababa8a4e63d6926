//! Recent events in memory, so a woken `/sync` usually answers without
//! touching the database.
//!
//! Every event the room service commits passes through [`TimelineCache::insert`]
//! before anyone is told about it. The cache keeps the last few events of each
//! room and a *watermark*: the highest position up to which every committed
//! event has been inserted. Syncs read up to the watermark, never beyond, so
//! an event committed by one task but not yet inserted by it can never be
//! skipped: it is simply picked up by the next sync, which its own insert wakes.
//!
//! The cache also remembers each user's memberships, dropped whenever one of
//! them changes, which spares every sync a memberships query.

use parking_lot::Mutex;
use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

use crate::store::cluster::Redaction;
use crate::store::{MembershipRecord, RoomSlice, StoredEvent, StreamPos};

/// Events kept per room; older ones are read from the store.
const EVENTS_PER_ROOM: usize = 64;
/// Rooms kept; past this the cache forgets the least recently used room.
const MAX_ROOMS: NonZeroUsize = NonZeroUsize::new(20_000).expect("non-zero");
/// Users whose memberships are kept (the least recently used go first).
const MAX_USERS: NonZeroUsize = NonZeroUsize::new(100_000).expect("non-zero");

/// An event that became visible to syncs: what the notifier needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Visible {
    pub stream: StreamPos,
    pub room_id: OwnedRoomId,
    /// The target of a membership change.
    pub affected_user: Option<OwnedUserId>,
}

struct RoomEvents {
    events: VecDeque<Arc<StoredEvent>>,
    /// Every event of the room after this position is in `events`.
    complete_after: StreamPos,
}

struct Inner {
    /// Every event after this is in the cache, unless its room was evicted.
    floor: StreamPos,
    watermark: StreamPos,
    /// Inserted above the watermark, waiting for the gap below to fill.
    pending: BTreeMap<StreamPos, Visible>,
    rooms: LruCache<OwnedRoomId, RoomEvents>,
    membership_changed: HashMap<OwnedUserId, StreamPos>,
    memberships: LruCache<OwnedUserId, (StreamPos, Arc<Vec<MembershipRecord>>)>,
}

pub struct TimelineCache {
    inner: Mutex<Inner>,
}

impl TimelineCache {
    /// A cache that starts complete after `position`, the store's head.
    pub fn new(position: StreamPos) -> Self {
        Self {
            inner: Mutex::new(Inner {
                floor: position,
                watermark: position,
                pending: BTreeMap::new(),
                rooms: LruCache::new(MAX_ROOMS),
                membership_changed: HashMap::new(),
                memberships: LruCache::new(MAX_USERS),
            }),
        }
    }

    /// Highest position up to which every committed event is visible.
    pub fn watermark(&self) -> StreamPos {
        self.inner.lock().watermark
    }

    /// The lowest position waiting above a gap, if any (in a cluster: a
    /// message from another node is late or lost).
    pub fn lowest_pending(&self) -> Option<StreamPos> {
        let inner = self.inner.lock();
        inner.pending.keys().next().copied()
    }

    /// Adds committed events, applies redactions `(room, target, redacted PDU)`
    /// to cached targets, and returns the events that became visible, in order.
    pub fn insert(&self, events: Vec<StoredEvent>, redactions: Vec<Redaction>) -> Vec<Visible> {
        let mut inner = self.inner.lock();
        for (room_id, target, pdu) in redactions {
            if let Some(room) = inner.rooms.get_mut(&room_id) {
                if let Some(slot) = room.events.iter_mut().find(|e| e.event_id == target) {
                    let mut redacted = StoredEvent::clone(slot);
                    redacted.pdu = pdu;
                    *slot = Arc::new(redacted);
                }
            }
        }
        for event in events {
            // In a cluster an event can arrive twice (its message, and the
            // store when a gap is filled): the first one counts.
            if event.stream <= inner.watermark || inner.pending.contains_key(&event.stream) {
                continue;
            }
            let affected = (event.kind == "m.room.member")
                .then(|| {
                    event
                        .state_key
                        .as_deref()
                        .and_then(|k| UserId::parse(k).ok())
                })
                .flatten();
            if let Some(user) = &affected {
                inner.membership_changed.insert(user.clone(), event.stream);
                inner.memberships.pop(user);
            }
            inner.pending.insert(
                event.stream,
                Visible {
                    stream: event.stream,
                    room_id: event.room_id.clone(),
                    affected_user: affected,
                },
            );
            let room = inner.room_mut(&event.room_id);
            // Appends finish out of order across tasks: keep each room sorted.
            let at = room.events.partition_point(|e| e.stream < event.stream);
            room.events.insert(at, Arc::new(event));
            if room.events.len() > EVENTS_PER_ROOM {
                if let Some(old) = room.events.pop_front() {
                    room.complete_after = old.stream;
                }
            }
        }
        let mut visible = Vec::new();
        loop {
            let wanted = inner.watermark + 1;
            let Some(next) = inner.pending.remove(&wanted) else {
                break;
            };
            inner.watermark = next.stream;
            visible.push(next);
        }
        visible
    }

    /// The last `limit` events of a room in `(after, upto]`, or `None` if
    /// the cache cannot be sure it holds all of them.
    pub fn recent(
        &self,
        room_id: &RoomId,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Option<RoomSlice> {
        let mut inner = self.inner.lock();
        let floor = inner.floor;
        let Some(room) = inner.rooms.get(room_id) else {
            return (after >= floor).then(RoomSlice::default);
        };
        if after < room.complete_after {
            return None;
        }
        // Each room's events are kept sorted: two binary searches find the
        // window, so a sync pays for what it returns, not for the room's past.
        let start = room.events.partition_point(|e| e.stream <= after);
        let end = room.events.partition_point(|e| e.stream <= upto);
        let len = end.saturating_sub(start);
        let limited = len > limit;
        let events = room
            .events
            .range(end - len.min(limit)..end)
            .map(|e| StoredEvent::clone(e))
            .collect();
        Some(RoomSlice { events, limited })
    }

    /// Like [`Self::recent`] without the limit, sharing the cached events
    /// instead of copying them: for readers that only look.
    pub fn recent_shared(
        &self,
        room_id: &RoomId,
        after: StreamPos,
        upto: StreamPos,
    ) -> Option<Vec<Arc<StoredEvent>>> {
        let mut inner = self.inner.lock();
        let floor = inner.floor;
        let Some(room) = inner.rooms.get(room_id) else {
            return (after >= floor).then(Vec::new);
        };
        if after < room.complete_after {
            return None;
        }
        let start = room.events.partition_point(|e| e.stream <= after);
        let end = room.events.partition_point(|e| e.stream <= upto);
        Some(room.events.range(start..end.max(start)).cloned().collect())
    }

    /// The cached events of a room in `(after, upto]`, however far back the
    /// cache reaches (maybe not to `after`): for readers that want only the
    /// latest of them, such as delivery receipts.
    pub fn cached_shared(
        &self,
        room_id: &RoomId,
        after: StreamPos,
        upto: StreamPos,
    ) -> Vec<Arc<StoredEvent>> {
        let mut inner = self.inner.lock();
        let Some(room) = inner.rooms.get(room_id) else {
            return Vec::new();
        };
        let start = room.events.partition_point(|e| e.stream <= after);
        let end = room.events.partition_point(|e| e.stream <= upto);
        room.events.range(start..end.max(start)).cloned().collect()
    }

    /// The user's memberships, if cached and unchanged since.
    pub fn memberships(&self, user_id: &UserId) -> Option<Arc<Vec<MembershipRecord>>> {
        let mut inner = self.inner.lock();
        let changed = inner
            .membership_changed
            .get(user_id)
            .copied()
            .unwrap_or(i64::MIN);
        let (loaded_at, list) = inner.memberships.get(user_id)?;
        (*loaded_at >= changed).then(|| list.clone())
    }

    /// Remembers memberships read from the store when the watermark was `loaded_at`.
    pub fn store_memberships(
        &self,
        user_id: &UserId,
        loaded_at: StreamPos,
        list: Arc<Vec<MembershipRecord>>,
    ) {
        let mut inner = self.inner.lock();
        let changed = inner
            .membership_changed
            .get(user_id)
            .copied()
            .unwrap_or(i64::MIN);
        if loaded_at >= changed {
            inner.memberships.put(user_id.to_owned(), (loaded_at, list));
        }
    }
}

impl Inner {
    /// The room's cached events, a new empty entry if it has none. A room
    /// that comes (back) into the cache is complete only after the floor.
    fn room_mut(&mut self, room_id: &RoomId) -> &mut RoomEvents {
        if !self.rooms.contains(room_id) {
            let fresh = RoomEvents {
                events: VecDeque::new(),
                complete_after: self.floor,
            };
            if let Some((_, forgotten)) = self.rooms.push(room_id.to_owned(), fresh) {
                self.forget(forgotten);
            }
        }
        self.rooms.get_mut(room_id).expect("inserted above")
    }

    /// Raises the floor past a room the cache let go: a room absent from the
    /// cache is then known complete only after the newest event forgotten.
    fn forget(&mut self, room: RoomEvents) {
        if let Some(last) = room.events.back() {
            self.floor = self.floor.max(last.stream);
        }
        self.floor = self.floor.max(room.complete_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma_common::{owned_user_id, room_id, user_id};

    fn event(stream: StreamPos, room: &str, member: Option<&str>) -> StoredEvent {
        StoredEvent {
            stream,
            event_id: ruma_common::EventId::parse(format!("$e{stream}")).unwrap(),
            room_id: RoomId::parse(room).unwrap(),
            sender: owned_user_id!("@a:t"),
            kind: if member.is_some() {
                "m.room.member"
            } else {
                "m.room.message"
            }
            .into(),
            state_key: member.map(Into::into),
            pdu: Arc::new(serde_json::json!({})),
            txn: None,
            visibility: "shared".into(),
        }
    }

    #[test]
    fn watermark_waits_for_gaps() {
        let cache = TimelineCache::new(10);
        assert!(cache.insert(vec![event(12, "!a", None)], vec![]).is_empty());
        assert_eq!(cache.watermark(), 10);
        let visible = cache.insert(vec![event(11, "!b", None)], vec![]);
        assert_eq!(
            visible.iter().map(|v| v.stream).collect::<Vec<_>>(),
            vec![11, 12]
        );
        assert_eq!(cache.watermark(), 12);
    }

    #[test]
    fn serves_only_what_it_holds_completely() {
        let cache = TimelineCache::new(0);
        let events: Vec<StoredEvent> = (1..=100).map(|n| event(n, "!a", None)).collect();
        cache.insert(events, vec![]);
        let slice = cache.recent(room_id!("!a"), 90, 100, 5).unwrap();
        assert_eq!(
            slice.events.iter().map(|e| e.stream).collect::<Vec<_>>(),
            vec![96, 97, 98, 99, 100]
        );
        assert!(slice.limited);
        // The oldest events were evicted: the store must answer.
        assert!(cache.recent(room_id!("!a"), 10, 100, 5).is_none());
        // A room never seen since start-up has nothing new.
        assert!(cache
            .recent(room_id!("!quiet"), 0, 100, 5)
            .unwrap()
            .events
            .is_empty());
    }

    #[test]
    fn memberships_are_dropped_when_they_change() {
        let cache = TimelineCache::new(0);
        cache.store_memberships(user_id!("@u:t"), 0, Arc::new(Vec::new()));
        assert!(cache.memberships(user_id!("@u:t")).is_some());
        cache.insert(vec![event(1, "!a", Some("@u:t"))], vec![]);
        assert!(cache.memberships(user_id!("@u:t")).is_none());
        // A list read before the change is refused.
        cache.store_memberships(user_id!("@u:t"), 0, Arc::new(Vec::new()));
        assert!(cache.memberships(user_id!("@u:t")).is_none());
        cache.store_memberships(user_id!("@u:t"), 1, Arc::new(Vec::new()));
        assert!(cache.memberships(user_id!("@u:t")).is_some());
    }

    #[test]
    fn evicted_rooms_fall_back_to_the_store() {
        let cache = TimelineCache::new(0);
        let events: Vec<StoredEvent> = (1..=(MAX_ROOMS.get() as i64 + 1))
            .map(|n| event(n, &format!("!r{n}:t"), None))
            .collect();
        cache.insert(events, vec![]);
        let absent = (1..=(MAX_ROOMS.get() as i64 + 1)).find(|n| {
            cache
                .recent(&RoomId::parse(format!("!r{n}:t")).unwrap(), 0, i64::MAX, 5)
                .is_none()
        });
        assert!(
            absent.is_some(),
            "some evicted room must not claim to be complete"
        );
    }
}
