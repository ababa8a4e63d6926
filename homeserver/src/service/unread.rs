//! Unread counts: `unread_notifications` (`notification_count`,
//! `highlight_count`) per joined room in `/sync`.
//!
//! A room's count for a user is the number of events after the user's read
//! receipt (`m.read` or `m.read.private`) that the user's push rules say to
//! notify for; the highlights are those the rules highlight. The same
//! evaluation decides pushes, so the badge and the push never disagree.
//!
//! Counts are pulled, not pushed: nothing is evaluated on the send path. When
//! a sync shows a room, the user's entry for it catches up with the events
//! since it was last brought up to date (from the timeline cache, usually
//! just the events that sync returns), so a busy room costs each member one
//! evaluation per event, at the moment they would see it anyway. An entry
//! missing (first sync, restart, eviction) is rebuilt from the store: the
//! read receipt, then at most [`MAX_COUNTED`] events after it. Nothing about
//! counts is written to disk, so a restart loses nothing.

use parking_lot::Mutex;
use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use ruma_events::room::member::MembershipState;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::error::ServiceResult;
use super::push_rules::{PreparedEvent, PushPowerLevels, PushRuleService, RoomPushContext};
use super::rooms::state::RoomState;
use super::rooms::RoomService;
use super::timeline_cache::TimelineCache;
use crate::store::{ReceiptStore, RoomStore, StoredEvent, StreamPos};

/// Counts stop here (clients show "99+" long before).
const MAX_COUNTED: usize = 1_000;
/// Entries (user, room) kept in memory; past this the map starts over and
/// entries are rebuilt from the store as syncs need them.
const MAX_ENTRIES: usize = 500_000;

/// A joined room's `unread_notifications` in a sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UnreadCounts {
    #[serde(rename = "notification_count")]
    pub notifications: u64,
    #[serde(rename = "highlight_count")]
    pub highlights: u64,
}

#[derive(Default)]
struct Entry {
    /// The latest event the user has read.
    read_upto: StreamPos,
    /// Events up to here have been evaluated; `None` until built.
    evaluated_upto: Option<StreamPos>,
    /// Notifying events after `read_upto`: position and whether highlighted.
    unread: VecDeque<(StreamPos, bool)>,
}

impl Entry {
    fn counts(&self) -> UnreadCounts {
        UnreadCounts {
            notifications: self.unread.len() as u64,
            highlights: self.unread.iter().filter(|(_, h)| *h).count() as u64,
        }
    }

    fn mark_read(&mut self, upto: StreamPos) {
        self.read_upto = self.read_upto.max(upto);
        while self
            .unread
            .front()
            .is_some_and(|(pos, _)| *pos <= self.read_upto)
        {
            self.unread.pop_front();
        }
    }
}

/// Entries by user, then room: looked up with borrowed ids, so a sync that
/// finds its entries allocates nothing.
#[derive(Default)]
struct Entries {
    by_user: HashMap<OwnedUserId, HashMap<OwnedRoomId, Entry>>,
    len: usize,
}

impl Entries {
    fn get(&self, user_id: &UserId, room_id: &RoomId) -> Option<&Entry> {
        self.by_user.get(user_id)?.get(room_id)
    }

    /// The entry, created if missing. Past [`MAX_ENTRIES`] the map starts
    /// over; entries are rebuilt from the store as syncs need them.
    fn get_or_create(&mut self, user_id: &UserId, room_id: &RoomId) -> &mut Entry {
        if self.len >= MAX_ENTRIES {
            self.by_user.clear();
            self.len = 0;
        }
        if !self.by_user.contains_key(user_id) {
            self.by_user.insert(user_id.to_owned(), HashMap::new());
        }
        let rooms = self.by_user.get_mut(user_id).expect("inserted above");
        if !rooms.contains_key(room_id) {
            rooms.insert(room_id.to_owned(), Entry::default());
            self.len += 1;
        }
        rooms.get_mut(room_id).expect("inserted above")
    }
}

pub struct UnreadService {
    rooms: RoomService,
    store: Arc<dyn RoomStore>,
    receipts: Arc<dyn ReceiptStore>,
    push_rules: Arc<PushRuleService>,
    cache: Arc<TimelineCache>,
    entries: Mutex<Entries>,
}

/// What the push rules need to know about a room.
pub(super) fn push_context(room_id: &RoomId, state: &RoomState) -> RoomPushContext {
    let levels = state.power_levels();
    let notifications_room = state
        .get("m.room.power_levels", "")
        .map(|e| PushPowerLevels::from_content(&e.content).notifications_room)
        .unwrap_or(50);
    RoomPushContext {
        room_id: room_id.to_owned(),
        member_count: state.members_with(MembershipState::Join).len() as u64,
        power_levels: Some(PushPowerLevels {
            users: levels.users,
            users_default: levels.users_default,
            notifications_room,
        }),
    }
}

pub(super) fn display_name(state: &RoomState, user_id: &UserId) -> String {
    state
        .get("m.room.member", user_id.as_str())
        .and_then(|e| e.content.get("displayname"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        // Without a display name, the localpart is what people type.
        .unwrap_or_else(|| user_id.localpart().to_owned())
}

impl UnreadService {
    pub fn new(
        rooms: RoomService,
        store: Arc<dyn RoomStore>,
        receipts: Arc<dyn ReceiptStore>,
        push_rules: Arc<PushRuleService>,
        cache: Arc<TimelineCache>,
    ) -> Self {
        Self {
            rooms,
            store,
            receipts,
            push_rules,
            cache,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The user read `room_id` up to the event at `upto`: its count drops.
    pub fn mark_read(&self, user_id: &UserId, room_id: &RoomId, upto: StreamPos) {
        let mut entries = self.entries.lock();
        entries.get_or_create(user_id, room_id).mark_read(upto);
    }

    /// Whether the user has read `room_id` up to the event at `stream`, as
    /// far as the last [`counts`](Self::counts) for that room knows.
    pub fn has_read(&self, user_id: &UserId, room_id: &RoomId, stream: StreamPos) -> bool {
        let entries = self.entries.lock();
        entries
            .get(user_id, room_id)
            .is_some_and(|entry| entry.read_upto >= stream)
    }

    /// Counts for each of `room_ids` (joined rooms), in their order, as of
    /// event position `upto`.
    pub async fn counts(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
        upto: StreamPos,
    ) -> ServiceResult<Vec<UnreadCounts>> {
        // Which rooms need building, and which catching up (from where).
        let mut build = Vec::new();
        let mut catch_up = Vec::new();
        {
            let entries = self.entries.lock();
            for room_id in room_ids {
                match entries.get(user_id, room_id).and_then(|e| e.evaluated_upto) {
                    None => build.push(room_id.clone()),
                    Some(done) if done < upto => catch_up.push((room_id.clone(), done)),
                    Some(_) => {}
                }
            }
        }
        if !build.is_empty() {
            self.build(user_id, &build, upto).await?;
        }
        for (room_id, from) in catch_up {
            let events: Vec<Arc<StoredEvent>> = match self.cache.recent_shared(&room_id, from, upto)
            {
                Some(events) => events,
                None => {
                    let slices = self
                        .store
                        .recent_events(std::slice::from_ref(&room_id), from, upto, MAX_COUNTED)
                        .await?;
                    slices
                        .into_iter()
                        .next()
                        .map(|(_, s)| s.events.into_iter().map(Arc::new).collect())
                        .unwrap_or_default()
                }
            };
            let found = self.evaluate(user_id, &room_id, &events).await?;
            self.apply(user_id, &room_id, Some(from), upto, found);
        }
        let entries = self.entries.lock();
        Ok(room_ids
            .iter()
            .map(|room_id| {
                entries
                    .get(user_id, room_id)
                    .map(Entry::counts)
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Builds entries from the store: read receipts in one query, the events
    /// after them in one batch.
    async fn build(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
        upto: StreamPos,
    ) -> ServiceResult<()> {
        let stored: HashMap<OwnedRoomId, StreamPos> = self
            .receipts
            .read_positions(user_id, room_ids)
            .await?
            .into_iter()
            .collect();
        // A receipt posted moments ago may not be written yet; the entry
        // `mark_read` left in memory knows it.
        let read: HashMap<&OwnedRoomId, StreamPos> = {
            let entries = self.entries.lock();
            room_ids
                .iter()
                .map(|room_id| {
                    let in_memory = entries
                        .get(user_id, room_id)
                        .map(|e| e.read_upto)
                        .unwrap_or(0);
                    let on_disk = stored.get(room_id).copied().unwrap_or(0);
                    (room_id, in_memory.max(on_disk))
                })
                .collect()
        };
        let since = read.values().copied().min().unwrap_or(0);
        let mut slices: HashMap<OwnedRoomId, Vec<StoredEvent>> = self
            .store
            .recent_events(room_ids, since, upto, MAX_COUNTED)
            .await?
            .into_iter()
            .map(|(room_id, slice)| (room_id, slice.events))
            .collect();
        // Every room gets built, also those with nothing after the receipt.
        for room_id in room_ids {
            let slice = slices.remove(room_id).unwrap_or_default();
            let read_upto = read.get(room_id).copied().unwrap_or(0);
            let events: Vec<StoredEvent> =
                slice.into_iter().filter(|e| e.stream > read_upto).collect();
            let found = self.evaluate(user_id, room_id, &events).await?;
            {
                let mut entries = self.entries.lock();
                let entry = entries.get_or_create(user_id, room_id);
                entry.read_upto = entry.read_upto.max(read_upto);
            }
            self.apply(user_id, room_id, None, upto, found);
        }
        Ok(())
    }

    /// Adds evaluated events to an entry, unless another sync brought it
    /// further meanwhile (`from` is where this evaluation started).
    fn apply(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        from: Option<StreamPos>,
        upto: StreamPos,
        found: Vec<(StreamPos, bool)>,
    ) {
        let mut entries = self.entries.lock();
        let entry = entries.get_or_create(user_id, room_id);
        if entry.evaluated_upto != from {
            return;
        }
        entry.evaluated_upto = Some(upto);
        let read_upto = entry.read_upto;
        entry
            .unread
            .extend(found.into_iter().filter(|(pos, _)| *pos > read_upto));
        while entry.unread.len() > MAX_COUNTED {
            entry.unread.pop_front();
        }
    }

    /// Which of `events` notify `user_id`, and which of those highlight.
    async fn evaluate<E: AsRef<StoredEvent> + Sync>(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        events: &[E],
    ) -> ServiceResult<Vec<(StreamPos, bool)>> {
        let candidates: Vec<&StoredEvent> = events
            .iter()
            .map(AsRef::as_ref)
            .filter(|e| e.sender != user_id)
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let Some(state) = self.rooms.state_snapshot(room_id).await? else {
            return Ok(Vec::new());
        };
        let context = push_context(room_id, &state);
        let name = display_name(&state, user_id);
        let ruleset = self.push_rules.get_ruleset(user_id).await?;
        let mut found = Vec::new();
        for event in candidates {
            let outcome = PreparedEvent::new(&event.pdu, &context)
                .evaluate(&ruleset, user_id, &name)
                .await;
            if outcome.notify {
                found.push((event.stream, outcome.highlight));
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma_common::user_id;

    #[test]
    fn reading_drops_what_was_read() {
        let mut entry = Entry {
            read_upto: 0,
            evaluated_upto: Some(10),
            unread: VecDeque::from([(3, false), (5, true), (8, false)]),
        };
        assert_eq!(
            entry.counts(),
            UnreadCounts {
                notifications: 3,
                highlights: 1
            }
        );
        entry.mark_read(5);
        assert_eq!(
            entry.counts(),
            UnreadCounts {
                notifications: 1,
                highlights: 0
            }
        );
        // A receipt for an older event moves nothing back.
        entry.mark_read(2);
        assert_eq!(entry.read_upto, 5);
        assert_eq!(entry.counts().notifications, 1);
    }

    #[test]
    fn display_name_falls_back_to_the_localpart() {
        let state = RoomState::default();
        assert_eq!(
            display_name(&state, user_id!("@alice:example.org")),
            "alice"
        );
    }
}
