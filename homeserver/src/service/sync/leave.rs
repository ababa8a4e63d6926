//! Rooms the user left or was banned from (`rooms.leave`).

use std::collections::BTreeMap;

use ruma_common::OwnedRoomId;

use super::plan::Pass;
use super::response::{LeftRoom, Timeline};
use super::SyncService;
use crate::service::error::ServiceResult;
use crate::service::token::pagination_token;
use crate::store::MembershipRecord;

impl SyncService {
    /// Each room left (and not forgotten since) with its timeline up to the
    /// leave: what happened between the token and the user's departure.
    pub(super) async fn left_rooms(
        &self,
        pass: &Pass<'_>,
        leaves: &[&MembershipRecord],
    ) -> ServiceResult<BTreeMap<OwnedRoomId, LeftRoom>> {
        let who = pass.who;
        let mut leave = BTreeMap::new();
        if leaves.is_empty() {
            return Ok(leave);
        }
        // A room the user forgot since leaving is theirs no more.
        let forgotten = self.accounts.forgotten_rooms(&who.user_id).await?;
        let forgot = |m: &MembershipRecord| forgotten.contains(&(m.room_id.clone(), m.stream));
        for m in leaves.iter().filter(|m| !forgot(m)) {
            let slices = self
                .rooms
                .recent_events(
                    std::slice::from_ref(&m.room_id),
                    pass.since_events,
                    m.stream,
                    pass.limit,
                )
                .await?;
            let Some((_, slice)) = slices.into_iter().next() else {
                continue;
            };
            let events = self
                .visible(&who.user_id, &m.room_id, 0, slice.events)
                .await?;
            let first_stream = events.first().map(|e| e.stream).unwrap_or(m.stream);
            let timeline = Timeline {
                events: events
                    .iter()
                    .map(|e| self.format(e, who, pass.now))
                    .collect(),
                limited: slice.limited,
                prev_batch: pagination_token(first_stream - 1),
            };
            let room = LeftRoom {
                timeline,
                ..LeftRoom::default()
            };
            leave.insert(m.room_id.clone(), room);
        }
        Ok(leave)
    }
}
