//! Presence (`presence`) of those who share a joined room with the user.

use std::collections::HashSet;

use ruma_common::{OwnedRoomId, OwnedUserId, UserId};
use ruma_events::room::member::MembershipState;

use super::plan::Pass;
use super::SyncService;
use crate::service::error::ServiceResult;
use crate::service::presence::PresenceEvent;
use crate::store::MembershipRecord;

impl SyncService {
    /// Presence that moved since the token, plus the current presence of
    /// `newly_shared` (people who came to share a room with the user),
    /// whatever the room filter.
    pub(super) async fn presence_events(
        &self,
        pass: &Pass<'_>,
        memberships: &[MembershipRecord],
        mut newly_shared: HashSet<OwnedUserId>,
    ) -> ServiceResult<Vec<PresenceEvent>> {
        let (who, since, upto) = (pass.who, pass.since, pass.upto);
        let presence_filter = &pass.filter.presence;
        // Nothing moved in the presence stream: skip the room list too.
        let presence_moved = since.is_none_or(|s| s.presence != upto.presence);
        newly_shared.remove(&who.user_id);
        let wanted = (presence_moved || !newly_shared.is_empty())
            && presence_filter.allows_type("m.presence");
        if !wanted {
            return Ok(Vec::new());
        }
        let joined_rooms: Vec<OwnedRoomId> = memberships
            .iter()
            .filter(|m| m.membership == MembershipState::Join && m.stream <= upto.events)
            .map(|m| m.room_id.clone())
            .collect();
        let mut events = if presence_moved {
            self.presence
                .sync_events(
                    &who.user_id,
                    &joined_rooms,
                    since.map(|s| s.presence),
                    upto.presence,
                )
                .await?
        } else {
            Vec::new()
        };
        let reported: HashSet<&UserId> = events.iter().map(|e| e.sender.as_ref()).collect();
        let missing: Vec<OwnedUserId> = newly_shared
            .into_iter()
            .filter(|u| !reported.contains::<UserId>(u))
            .collect();
        events.extend(self.presence.current_events(&who.user_id, &missing).await?);
        events.retain(|e| presence_filter.matches_parts("m.presence", e.sender.as_str()));
        if let Some(limit) = presence_filter.limit.filter(|l| *l >= 0) {
            events.truncate(limit as usize);
        }
        Ok(events)
    }
}
