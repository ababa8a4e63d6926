//! History visibility: which events a user may see (spec: "History visibility").

use crate::store::{StoredEvent, StreamPos};
use ruma_common::UserId;
use ruma_events::room::member::MembershipState;

/// A user's view of one room: their membership changes, oldest first.
pub struct Viewer<'a> {
    pub user_id: &'a UserId,
    pub history: Vec<(StreamPos, MembershipState)>,
}

impl Viewer<'_> {
    fn membership_at(&self, stream: StreamPos) -> Option<&MembershipState> {
        self.history
            .iter()
            .take_while(|(pos, _)| *pos <= stream)
            .last()
            .map(|(_, m)| m)
    }

    pub fn current(&self) -> Option<&MembershipState> {
        self.history.last().map(|(_, m)| m)
    }

    fn joined_now(&self) -> bool {
        self.current() == Some(&MembershipState::Join)
    }

    /// True if the user was ever in the room (joined or invited).
    pub fn ever_member(&self) -> bool {
        self.history
            .iter()
            .any(|(_, m)| matches!(m, MembershipState::Join | MembershipState::Invite))
    }

    pub fn can_see(&self, event: &StoredEvent) -> bool {
        if event.visibility == "world_readable" {
            return true;
        }
        // Users always see their own membership changes.
        if event.kind == "m.room.member"
            && event.state_key.as_deref() == Some(self.user_id.as_str())
        {
            return true;
        }
        match self.membership_at(event.stream) {
            Some(MembershipState::Join) => true,
            Some(MembershipState::Invite)
                if event.visibility == "invited" || event.visibility == "shared" =>
            {
                event.visibility == "invited" || self.joined_now()
            }
            _ => event.visibility == "shared" && self.joined_now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use ruma_common::{owned_room_id, owned_user_id, user_id};

    fn event(stream: StreamPos, visibility: &str) -> StoredEvent {
        StoredEvent {
            stream,
            event_id: ruma_common::EventId::parse(format!("$e{stream}")).unwrap(),
            room_id: owned_room_id!("!r:t"),
            sender: owned_user_id!("@a:t"),
            kind: "m.room.message".into(),
            state_key: None,
            pdu: Arc::new(serde_json::json!({})),
            txn: None,
            visibility: visibility.into(),
        }
    }

    #[test]
    fn joined_visibility_hides_events_before_join_and_after_leave() {
        let viewer = Viewer {
            user_id: user_id!("@b:t"),
            history: vec![(10, "join".into()), (20, "leave".into())],
        };
        assert!(!viewer.can_see(&event(5, "joined")));
        assert!(viewer.can_see(&event(15, "joined")));
        assert!(!viewer.can_see(&event(25, "joined")));
        assert!(!viewer.can_see(&event(25, "shared")));
        assert!(viewer.can_see(&event(25, "world_readable")));
    }

    #[test]
    fn shared_history_is_visible_to_current_members() {
        let viewer = Viewer {
            user_id: user_id!("@b:t"),
            history: vec![(10, "join".into())],
        };
        assert!(viewer.can_see(&event(5, "shared")));
        let outsider = Viewer {
            user_id: user_id!("@c:t"),
            history: vec![],
        };
        assert!(!outsider.can_see(&event(5, "shared")));
    }
}
