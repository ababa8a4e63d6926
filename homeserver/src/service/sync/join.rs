//! Joined rooms (`rooms.join`): timelines, the state a client lacks, and
//! unread counts.

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma_common::{EventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use ruma_events::room::member::MembershipState;
use serde_json::Value;

use super::plan::{Pass, Plan};
use super::response::{Events, JoinedRoom, Timeline};
use super::SyncService;
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::rooms::attach_bundles;
use crate::service::rooms::state::membership_of;
use crate::service::token::pagination_token;
use crate::store::{RoomSlice, StoredEvent, StreamPos};

/// A joined room's entry, for adding `ephemeral` or `account_data` events:
/// a new one with an empty timeline if the room had none.
pub(super) fn room_entry<'a>(
    join: &'a mut BTreeMap<OwnedRoomId, JoinedRoom>,
    room_id: &RoomId,
    upto: StreamPos,
) -> &'a mut JoinedRoom {
    join.entry(room_id.to_owned())
        .or_insert_with(|| JoinedRoom {
            timeline: Timeline {
                prev_batch: pagination_token(upto),
                ..Timeline::default()
            },
            ..JoinedRoom::default()
        })
}

/// How the people the user shares rooms with changed in a pass.
pub(super) struct Sharing {
    /// Who came to share a room with the user.
    pub newly_shared: HashSet<OwnedUserId>,
    /// Whether someone left a room of the user's (then the device lists'
    /// `left` is worked out).
    pub someone_left: bool,
}

impl SyncService {
    /// Adds every joined room with something to show (and every room shown
    /// in full) to `join`. Returns who came to share a room with the user
    /// since the token, and whether someone may have left one.
    pub(super) async fn add_joined_rooms(
        &self,
        pass: &Pass<'_>,
        plan: &Plan<'_>,
        join: &mut BTreeMap<OwnedRoomId, JoinedRoom>,
    ) -> ServiceResult<Sharing> {
        let timelines = self.timelines(pass, plan).await?;
        let state_by_room = self.state(pass, plan, &timelines).await?;
        let mut newly_shared = self.members_of_new_rooms(pass, plan).await;
        let mut someone_left = false;

        let join_streams: HashMap<&RoomId, StreamPos> = plan
            .joined
            .iter()
            .map(|(m, _)| (m.room_id.as_ref(), m.stream))
            .collect();
        let full: HashSet<&RoomId> = plan.full.iter().map(AsRef::as_ref).collect();
        let mut shown = Vec::with_capacity(timelines.len());
        for (room_id, slice) in timelines {
            let join_stream = join_streams
                .get::<RoomId>(room_id.as_ref())
                .copied()
                .unwrap_or(0);
            let events = self
                .visible(&pass.who.user_id, &room_id, join_stream, slice.events)
                .await?;
            // Whoever joined a room of the user's since the token; and
            // whether someone left (or may have, in a gap).
            if pass.since.is_some() {
                someone_left |= slice.limited
                    || events.iter().any(|e| {
                        e.kind == "m.room.member"
                            && matches!(
                                membership_of(&e.pdu["content"]),
                                Some(MembershipState::Leave | MembershipState::Ban)
                            )
                    });
                newly_shared.extend(
                    events
                        .iter()
                        .filter(|e| {
                            e.kind == "m.room.member"
                                && membership_of(&e.pdu["content"]) == Some(MembershipState::Join)
                        })
                        .filter_map(|e| UserId::parse(e.state_key.as_deref()?).ok()),
                );
            }
            let whole = full.contains::<RoomId>(room_id.as_ref());
            if events.is_empty() && !whole {
                continue;
            }
            shown.push((room_id, events, slice.limited, whole));
        }
        // Summaries of relations (edits, threads) are bundled where a room
        // is shown in full (an initial sync, a new join), as clients expect.
        // A timeline is the room's newest tail, so whatever relates to an
        // event in it is in it too: incremental passes, gaps included, skip
        // the reads (measured: bundling every limited delta cost 5-15% of
        // the acknowledged send rate at full load).
        let history = shown
            .iter()
            .filter(|(_, _, _, whole)| *whole)
            .flat_map(|(_, events, _, _)| events);
        // Every room here is one the user is joined to: they see all that
        // relates to what they are shown.
        let bundles = self
            .sharing
            .bundles(pass.who, history, |_| true, pass.now)
            .await?;
        for (room_id, events, limited, _) in shown {
            let state = state_by_room.get(&room_id).map(Vec::as_slice);
            let mut entry = self.joined_room(pass, &events, limited, state);
            attach_bundles(&mut entry.timeline.events, &bundles);
            join.insert(room_id, entry);
        }
        Ok(Sharing {
            newly_shared,
            someone_left,
        })
    }

    /// The joined rooms' timelines. Incremental rooms come from the cache
    /// when it holds everything since the token; the rest from the store in
    /// one batch.
    async fn timelines(
        &self,
        pass: &Pass<'_>,
        plan: &Plan<'_>,
    ) -> ServiceResult<Vec<(OwnedRoomId, RoomSlice)>> {
        let (since, upto, limit) = (pass.since_events, pass.upto.events, pass.limit);
        let mut timelines = Vec::with_capacity(plan.joined.len());
        let mut uncached = Vec::new();
        for room_id in &plan.incremental {
            match self.cache.recent(room_id, since, upto, limit) {
                Some(slice) => timelines.push((room_id.clone(), slice)),
                None => uncached.push(room_id.clone()),
            }
        }
        timelines.extend(
            self.rooms
                .recent_events(&uncached, since, upto, limit)
                .await?,
        );
        timelines.extend(self.rooms.recent_events(&plan.full, 0, upto, limit).await?);
        Ok(timelines)
    }

    /// State by room: everything for full rooms; for incremental rooms with
    /// a gap, the state that changed in the gap.
    async fn state(
        &self,
        pass: &Pass<'_>,
        plan: &Plan<'_>,
        timelines: &[(OwnedRoomId, RoomSlice)],
    ) -> ServiceResult<HashMap<OwnedRoomId, Vec<StoredEvent>>> {
        let incremental: HashSet<&RoomId> = plan.incremental.iter().map(AsRef::as_ref).collect();
        let gapped: Vec<OwnedRoomId> = timelines
            .iter()
            .filter(|(room, slice)| slice.limited && incremental.contains::<RoomId>(room.as_ref()))
            .map(|(room, _)| room.clone())
            .collect();
        let upto = pass.upto.events;
        let mut state_by_room: HashMap<OwnedRoomId, Vec<StoredEvent>> = HashMap::new();
        for event in self
            .rooms
            .current_state_of_rooms(&plan.full, 0, upto)
            .await?
        {
            state_by_room
                .entry(event.room_id.clone())
                .or_default()
                .push(event);
        }
        for event in self
            .rooms
            .current_state_of_rooms(&gapped, pass.since_events, upto)
            .await?
        {
            state_by_room
                .entry(event.room_id.clone())
                .or_default()
                .push(event);
        }
        Ok(state_by_room)
    }

    /// People who came to share a room with the user since the token: the
    /// members of rooms the user joined (and, found in the timelines,
    /// whoever joined a room of theirs). Their presence goes out even if it
    /// did not move.
    async fn members_of_new_rooms(&self, pass: &Pass<'_>, plan: &Plan<'_>) -> HashSet<OwnedUserId> {
        let mut newly_shared: HashSet<OwnedUserId> = HashSet::new();
        if pass.since.is_some() {
            for (m, _) in plan
                .joined
                .iter()
                .filter(|(m, _)| m.stream > pass.since_events)
            {
                newly_shared.extend(self.notifier.room_members(&m.room_id).await.iter().cloned());
            }
        }
        newly_shared
    }

    /// One joined room's entry: the timeline, and the state before it that
    /// the timeline does not show.
    fn joined_room(
        &self,
        pass: &Pass<'_>,
        events: &[StoredEvent],
        limited: bool,
        state: Option<&[StoredEvent]>,
    ) -> JoinedRoom {
        let filter = &pass.filter.room;
        let timeline_ids: HashSet<&EventId> = events.iter().map(|e| e.event_id.as_ref()).collect();
        let first_stream = events
            .first()
            .map(|e| e.stream)
            .unwrap_or(pass.upto.events + 1);
        let state: Vec<Value> = state
            .map(|list| {
                list.iter()
                    .filter(|e| {
                        !timeline_ids.contains::<EventId>(e.event_id.as_ref())
                            && e.stream < first_stream
                    })
                    .filter(|e| filter.state.matches(e))
                    .map(|e| self.format(e, pass.who, pass.now))
                    .collect()
            })
            .unwrap_or_default();
        let prev_batch = pagination_token(first_stream - 1);
        let timeline: Vec<Value> = events
            .iter()
            .filter(|e| filter.timeline.matches(e) && !pass.hides(e))
            .map(|e| self.format(e, pass.who, pass.now))
            .collect();
        JoinedRoom {
            timeline: Timeline {
                events: timeline,
                limited,
                prev_batch,
            },
            state: Events { events: state },
            ..JoinedRoom::default()
        }
    }

    /// Unread counts for every joined room the response shows.
    pub(super) async fn add_unread_counts(
        &self,
        pass: &Pass<'_>,
        join: &mut BTreeMap<OwnedRoomId, JoinedRoom>,
    ) -> ServiceResult<()> {
        let shown = join
            .keys()
            .map(|room| RoomId::parse(room.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ServiceError::internal)?;
        let counts = self
            .unread
            .counts(&pass.who.user_id, &shown, pass.upto.events)
            .await?;
        for (entry, counts) in join.values_mut().zip(counts) {
            entry.unread_notifications = counts;
        }
        Ok(())
    }
}
