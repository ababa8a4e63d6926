//! A room's state at a point of its history: for a former member, the
//! state when they left (they may not see what came after), and for
//! `/members?at=`, the members at a page of history.

use ruma_common::{OwnedEventId, RoomId, UserId};
use ruma_events::room::member::MembershipState;

use super::RoomService;
use crate::service::error::{ServiceError, ServiceResult};
use crate::store::{Direction, StoredEvent, StreamPos};

impl RoomService {
    /// The room's state as `user_id` may read it: the current state for a
    /// member (or anyone, in a world-readable room), the state when they
    /// left for a former member; refused to anyone else.
    pub async fn room_state(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> ServiceResult<Vec<StoredEvent>> {
        let viewer = self.reader(room_id, user_id).await?;
        let state = self.store.current_state(room_id).await?;
        let world_readable = state.iter().any(|e| {
            e.kind == "m.room.history_visibility"
                && e.pdu["content"]["history_visibility"] == "world_readable"
        });
        if viewer.current() == Some(&MembershipState::Join) || world_readable {
            return Ok(state);
        }
        match self.departure(user_id, &state) {
            Some(left) => self.state_after(left).await,
            None => Err(ServiceError::forbidden("You are not joined to this room")),
        }
    }

    /// The state at history position `at` (a pagination token's), no later
    /// than when the reader left if they did.
    pub async fn state_at(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        at: StreamPos,
    ) -> ServiceResult<Vec<StoredEvent>> {
        let viewer = self.reader(room_id, user_id).await?;
        let mut at = at;
        if viewer.current() != Some(&MembershipState::Join) {
            let state = self.store.current_state(room_id).await?;
            if let Some(left) = self.departure(user_id, &state) {
                at = at.min(left.stream);
            }
        }
        // Backward from `at` includes the event at `at`.
        let last = self
            .store
            .room_events(room_id, at, Direction::Backward, 1)
            .await?;
        match last.into_iter().next() {
            Some(event) => self.state_after(&event).await,
            None => Ok(Vec::new()),
        }
    }

    /// The user's leave (or ban) event, if that is their membership now.
    fn departure<'s>(&self, user_id: &UserId, state: &'s [StoredEvent]) -> Option<&'s StoredEvent> {
        state.iter().find(|e| {
            e.kind == "m.room.member"
                && e.state_key.as_deref() == Some(user_id.as_str())
                && matches!(
                    e.pdu["content"]["membership"].as_str(),
                    Some("leave" | "ban")
                )
        })
    }

    /// The room's state right after `event`, from its state group.
    async fn state_after(&self, event: &StoredEvent) -> ServiceResult<Vec<StoredEvent>> {
        let groups = self
            .store
            .state_groups_of(std::slice::from_ref(&event.event_id))
            .await?;
        let Some((_, group)) = groups.into_iter().next() else {
            return Err(ServiceError::internal(format!(
                "event {} has no state group",
                event.event_id
            )));
        };
        let ids: Vec<OwnedEventId> = self.group_state(&group).await?.values().cloned().collect();
        Ok(self.store.get_events(&ids).await?)
    }
}
