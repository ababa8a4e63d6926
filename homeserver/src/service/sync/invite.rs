//! Rooms the user is invited to (`rooms.invite`).

use std::collections::BTreeMap;

use ruma_common::OwnedRoomId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::plan::Pass;
use super::response::{Events, InvitedRoom, StrippedState};
use super::SyncService;
use crate::service::error::ServiceResult;
use crate::store::{MembershipRecord, StoredEvent};

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
            let invite_event = state.iter().find(|e| e.event_id == m.event_id);
            // An invite from an ignored user is not shown.
            if invite_event.is_some_and(|e| pass.ignored.contains(&e.sender)) {
                continue;
            }
            // A room we do not hold: the state its server showed with the
            // invite, then the invite itself.
            if let Some(shown) = invite_event.and_then(|e| shown_state(&e.pdu)) {
                let invite_state = Events {
                    events: shown.into_iter().chain(invite_event.map(strip)).collect(),
                };
                invite.insert(m.room_id.clone(), InvitedRoom { invite_state });
                continue;
            }
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
                .map(strip)
                .collect();
            let invite_state = Events { events: stripped };
            invite.insert(m.room_id.clone(), InvitedRoom { invite_state });
        }
        Ok(invite)
    }
}

fn strip(e: &StoredEvent) -> StrippedState {
    StrippedState {
        kind: e.kind.clone(),
        state_key: e.state_key.clone(),
        sender: e.sender.clone(),
        content: e.pdu.get("content").cloned().unwrap_or(json!({})),
    }
}

/// The stripped state another server sent with an invite, kept in the
/// invite's `unsigned`.
fn shown_state(pdu: &Value) -> Option<Vec<StrippedState>> {
    let shown = pdu.get("unsigned")?.get("invite_room_state")?.as_array()?;
    Some(
        shown
            .iter()
            .filter_map(|event| StrippedState::deserialize(event).ok())
            .collect(),
    )
}
