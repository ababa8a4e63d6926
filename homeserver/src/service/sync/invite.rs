//! Rooms the user is invited to (`rooms.invite`).

use serde_json::{json, Map, Value};

use super::plan::Pass;
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
    ) -> ServiceResult<Map<String, Value>> {
        let who = pass.who;
        let mut invite = Map::new();
        for m in invites {
            let state = self.rooms.current_state(&m.room_id).await?;
            let inviter = state
                .iter()
                .find(|e| e.event_id == m.event_id)
                .map(|e| e.sender.as_str())
                .unwrap_or_default();
            let stripped: Vec<Value> = state
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
                .map(|e| {
                    json!({"type": e.kind, "state_key": e.state_key, "sender": e.sender,
                           "content": e.pdu.get("content").cloned().unwrap_or(json!({}))})
                })
                .collect();
            invite.insert(
                m.room_id.to_string(),
                json!({"invite_state": {"events": stripped}}),
            );
        }
        Ok(invite)
    }
}
