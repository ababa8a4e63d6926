//! The first step of a sync pass: what the pass reads ([`Pass`]) and which
//! of the user's rooms enter the response, and how ([`Plan`]).

use super::{Filter, SyncRequest};
use crate::service::accounts::IgnoredUsers;
use crate::service::rooms::{now_ms, Requester};
use crate::service::token::SyncToken;
use crate::store::{MembershipRecord, StoredEvent, StreamPos};
use ruma_common::OwnedRoomId;
use ruma_events::room::member::MembershipState;

/// What every step of one sync pass reads: who asks, and the window of
/// the streams from `since` to `upto`.
pub(super) struct Pass<'a> {
    pub who: &'a Requester,
    pub since: Option<SyncToken>,
    /// `since`'s event position; 0 for an initial sync.
    pub since_events: StreamPos,
    pub upto: SyncToken,
    pub filter: &'a Filter,
    pub full_state: bool,
    /// Timeline length per room.
    pub limit: usize,
    /// When the pass started, for the events' `unsigned.age`.
    pub now: i64,
    /// Users whose messages and invites the user does not want.
    pub ignored: IgnoredUsers,
}

impl<'a> Pass<'a> {
    pub fn new(
        who: &'a Requester,
        since: Option<SyncToken>,
        request: &'a SyncRequest,
        upto: SyncToken,
        ignored: IgnoredUsers,
    ) -> Self {
        Self {
            who,
            since,
            since_events: since.map(|s| s.events).unwrap_or(0),
            upto,
            filter: &request.filter,
            full_state: request.full_state,
            limit: request.filter.timeline_limit(),
            now: now_ms(),
            ignored,
        }
    }
}

/// How one joined room enters the response.
pub(super) enum RoomPlan {
    /// Timeline since the token, state changes only if the timeline has a gap.
    Incremental,
    /// Full state plus recent timeline: initial sync, full_state or a new join.
    Full,
}

/// Which of the user's rooms enter the response, and how. Borrows the
/// memberships: a pass copies no record.
pub(super) struct Plan<'a> {
    pub joined: Vec<(&'a MembershipRecord, RoomPlan)>,
    /// Ids of the joined rooms shown incrementally, and in full (the stores
    /// take lists of ids).
    pub incremental: Vec<OwnedRoomId>,
    pub full: Vec<OwnedRoomId>,
    pub invites: Vec<&'a MembershipRecord>,
    pub leaves: Vec<&'a MembershipRecord>,
}

impl<'a> Plan<'a> {
    pub fn new(pass: &Pass<'_>, memberships: &'a [MembershipRecord]) -> Self {
        let (since, filter) = (pass.since, pass.filter);
        let mut joined = Vec::new();
        let mut invites = Vec::new();
        let mut leaves = Vec::new();
        for m in memberships {
            if !filter.allows_room(&m.room_id) || m.stream > pass.upto.events {
                continue;
            }
            let changed = m.stream > pass.since_events;
            match m.membership {
                MembershipState::Join => {
                    let plan = if since.is_none() || pass.full_state || changed {
                        RoomPlan::Full
                    } else {
                        RoomPlan::Incremental
                    };
                    joined.push((m, plan));
                }
                MembershipState::Invite if changed || since.is_none() => invites.push(m),
                MembershipState::Leave | MembershipState::Ban
                    if (changed && since.is_some())
                        || (since.is_none() && filter.room.include_leave) =>
                {
                    leaves.push(m)
                }
                _ => {}
            }
        }
        let ids_of = |wanted: fn(&RoomPlan) -> bool| -> Vec<OwnedRoomId> {
            joined
                .iter()
                .filter(|(_, p)| wanted(p))
                .map(|(m, _)| m.room_id.clone())
                .collect()
        };
        let incremental = ids_of(|p| matches!(p, RoomPlan::Incremental));
        let full = ids_of(|p| matches!(p, RoomPlan::Full));
        Self {
            joined,
            incremental,
            full,
            invites,
            leaves,
        }
    }
}

impl Pass<'_> {
    /// Whether the event is from an ignored user and must not be shown:
    /// messages are dropped, state stays (the room's state is the room's).
    pub fn hides(&self, event: &StoredEvent) -> bool {
        event.state_key.is_none() && self.ignored.contains(&event.sender)
    }
}
