//! Rooms the user is invited to (`rooms.invite`).

use std::collections::BTreeMap;

use ruma_common::OwnedRoomId;
use serde_json::json;

use super::plan::Pass;
use super::response::{Events, InvitedRoom, StrippedState};
use super::SyncService;
use crate::service::error::ServiceResult;
use crate::store::MembershipRecord;

impl SyncService {
    /// Each invite with the stripped state a client shows it by: the room's
    /// name, avatar and the like, and the invitee's and inviter's members.
    pub(super) async fn invited_rooms(
        &self,
        pass: &Pass<'_>,
        invites: &[&MembershipRecord],
    ) -> ServiceResult<BTreeMap<OwnedRoomId, InvitedRoom>> {
        let who = pass.who;
        let mut invite = BTreeMap::new();
        for m in invites {
            let state = self.rooms.current_state(&m.room_id).await?;
            let inviter = state
                .iter()
                .find(|e| e.event_id == m.event_id)
                .map(|e| e.sender.as_str())
                .unwrap_or_default();
            let stripped = state
                .iter()
                .filter(|e| {
                    matches!(
                        e.kind.as_str(),
                        "m.room.create"
                            | "m.room.join_rules"
                            | "m.room.name"
                            | "m.room.avatar"
                            | "m.room.canonical_alias"
                            | "m.room.encryption"
                            | "m.room.topic"
                    ) || (e.kind == "m.room.member"
                        && (e.state_key.as_deref() == Some(who.user_id.as_str())
                            || e.state_key.as_deref() == Some(inviter)))
                })
                .map(|e| StrippedState {
                    kind: e.kind.clone(),
                    state_key: e.state_key.clone(),
                    sender: e.sender.clone(),
                    content: e.pdu.get("content").cloned().unwrap_or(json!({})),
                })
                .collect();
            let invite_state = Events { events: stripped };
            invite.insert(m.room_id.clone(), InvitedRoom { invite_state });
        }
        Ok(invite)
    }
}
