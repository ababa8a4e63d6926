//! Invites across servers. Ours of another server's user: built on the
//! room's head and authorized as a local event would be, sent to the
//! invitee's server to countersign, then appended by the room's actor and
//! sent on to the room's other servers. Another server's of our user:
//! checked and countersigned; for a room we do not hold, kept as the
//! room's only event here with the state the inviter showed, until the
//! user joins (through that server) or rejects (a leave through it).

use std::sync::Arc;

use ruma_common::{
    EventId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId, ServerName, UserId,
};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::auth::{authorize, Proposed};
use super::remote_join::{imported, ImportAs};
use super::{now_ms, Requester, RoomService};
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::service::federation::event::{rules_of, RemotePdu};
use crate::service::federation::not_federating;
use crate::service::pdu::{build_pdu, rules_for, PduParts};

/// The state an invitee's server is shown of the room.
const INVITE_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

impl RoomService {
    /// Invites `target` (of another server) with member `content`.
    pub(super) async fn invite_remote(
        &self,
        who: &Requester,
        room_id: &RoomId,
        target: &UserId,
        content: Value,
    ) -> ServiceResult<()> {
        let federation = self.federation.as_ref().ok_or_else(not_federating)?;
        let head = self
            .head(room_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Unknown room"))?;
        let state_key = Some(target.as_str());
        authorize(
            &head.state,
            &Proposed {
                kind: "m.room.member",
                sender: &who.user_id,
                state_key,
                content: &content,
            },
        )?;
        let version_name = head.state.room_version().to_owned();
        let version = RoomVersionId::try_from(version_name.as_str())
            .map_err(|_| ServiceError::internal("a room of no valid version"))?;
        let auth_events =
            head.state
                .auth_event_ids("m.room.member", &who.user_id, state_key, &content);
        let (event_id, pdu) = build_pdu(
            &self.core.key,
            &self.server_name,
            PduParts {
                room_id,
                sender: &who.user_id,
                kind: "m.room.member",
                state_key,
                content,
                prev_events: head.prev_events(),
                auth_events,
                depth: head.depth + 1,
                origin_server_ts: now_ms(),
                rules: rules_for(&version_name),
            },
        )?;
        let room_state = self.invite_state(room_id, &who.user_id).await?;
        let signed = federation
            .invite_remote(
                target.server_name(),
                room_id,
                &event_id,
                &version,
                &pdu,
                &room_state,
            )
            .await?;
        self.import(room_id, vec![imported(signed)?], ImportAs::Forwarded)
            .await
            .map(drop)
    }

    /// The room's state an invitee is shown, with the inviter's member
    /// event, as full PDUs.
    async fn invite_state(
        &self,
        room_id: &RoomId,
        inviter: &UserId,
    ) -> ServiceResult<Vec<Arc<Value>>> {
        let state = self.store.current_state(room_id).await?;
        Ok(state
            .into_iter()
            .filter(|e| {
                INVITE_STATE.contains(&e.kind.as_str())
                    || (e.kind == "m.room.member"
                        && e.state_key.as_deref() == Some(inviter.as_str()))
            })
            .map(|e| e.pdu)
            .collect())
    }
}

/// Most entries of `invite_room_state` kept.
const MAX_INVITE_STATE: usize = 50;

/// An invite of one of our users that another server sends (`PUT /invite`).
pub struct IncomingInvite<'a> {
    pub room_id: &'a RoomId,
    pub event_id: &'a EventId,
    pub version: &'a RoomVersionId,
    pub event: &'a RawValue,
    /// The room's state to show the invitee: PDUs or stripped events.
    pub room_state: &'a [Value],
}

impl RoomService {
    /// Whether this server holds the room (has its state), as opposed to
    /// knowing of it only through an invite of one of its users.
    pub(super) async fn holds(&self, room_id: &RoomId) -> ServiceResult<bool> {
        Ok(self
            .state_snapshot(room_id)
            .await?
            .is_some_and(|state| state.get("m.room.create", "").is_some()))
    }

    /// Another server invites one of our users: the invite is checked,
    /// countersigned and, for a room we do not hold, kept (with the room
    /// state to show) so the invitee's sync lists it.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        invite: IncomingInvite<'_>,
    ) -> ServiceResult<Value> {
        let federation = self.federation.as_ref().ok_or_else(not_federating)?;
        let IncomingInvite {
            room_id,
            event_id,
            version,
            event,
            room_state,
        } = invite;
        if rules_of(version).is_err() {
            return Err(ServiceError::new(
                ErrorKind::IncompatibleRoomVersion {
                    room_version: version.to_string(),
                },
                format!("This server does not support room version {version}"),
            ));
        }
        let pdu = federation
            .check_pdu(event, version)
            .await
            .map_err(|e| ServiceError::bad_json(e.to_string()))?;
        let invitee = check_invite(origin, room_id, event_id, &pdu, &self.server_name)?;
        if self.accounts.get_user(&invitee).await?.is_none() {
            return Err(ServiceError::not_found("Unknown user"));
        }
        let mut json = pdu.json.clone();
        ruma_signatures::sign_json(self.server_name.as_str(), &self.core.key.pair, &mut json)
            .map_err(ServiceError::internal)?;
        let signed = serde_json::to_value(&json).map_err(ServiceError::internal)?;
        if !self.holds(room_id).await? {
            // The room's events will not reach us: keep the invite here.
            let mut kept = imported(pdu)?;
            kept.pdu = signed.clone();
            kept.pdu["unsigned"] = json!({ "invite_room_state": stripped(room_state) });
            self.keep_invite(room_id, version, kept).await?;
        }
        Ok(signed)
    }

    /// Keeps an invite to a room we do not hold as that room's only event
    /// here (the room known by its invites alone).
    async fn keep_invite(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        invite: super::actor::Imported,
    ) -> ServiceResult<()> {
        let new_room = !self.store.room_exists(room_id).await?;
        if new_room {
            self.store
                .create_room(room_id, version.as_str(), &invite.sender)
                .await?;
        }
        let how = if new_room {
            ImportAs::NewRoom
        } else {
            ImportAs::Received
        };
        self.import(room_id, vec![invite], how).await.map(drop)
    }

    /// Rejects an invite to (or leaves) a room we do not hold: the leave
    /// goes through the inviter's server, then is kept here.
    pub(super) async fn leave_remote(
        &self,
        who: &Requester,
        room_id: &RoomId,
    ) -> ServiceResult<()> {
        let federation = self.federation.as_ref().ok_or_else(not_federating)?;
        let servers = self.invite_servers(room_id, &who.user_id).await?;
        let mut last = ServiceError::not_found("No server could let you leave");
        for server in &servers {
            match federation
                .leave_room(server, room_id, &who.user_id, &RoomVersionId::V11)
                .await
            {
                Ok(leave) => {
                    let events = vec![imported(leave)?];
                    return self
                        .import(room_id, events, ImportAs::Received)
                        .await
                        .map(drop);
                }
                Err(err) => {
                    tracing::info!(%server, %room_id, error = %err.message, "remote leave failed");
                    last = err;
                }
            }
        }
        Err(last)
    }

    /// The servers that can take a user's answer to an invite to a room we
    /// do not hold: the inviter's, then the room id's.
    pub(super) async fn invite_servers(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> ServiceResult<Vec<OwnedServerName>> {
        let mut servers = Vec::new();
        if let Some(state) = self.state_snapshot(room_id).await? {
            if let Some(invite) = state.get("m.room.member", user_id.as_str()) {
                servers.push(invite.sender.server_name().to_owned());
            }
        }
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        servers.retain(|server| *server != self.server_name);
        servers.dedup();
        Ok(servers)
    }
}

/// The invite is an `m.room.member` invite sent by `origin`'s user, in
/// this room, under this id, of a user of ours; returns the invitee.
fn check_invite(
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    pdu: &RemotePdu,
    ours: &ServerName,
) -> ServiceResult<OwnedUserId> {
    if pdu.sender.server_name() != origin {
        return Err(ServiceError::forbidden(format!(
            "{} is not a user of {origin}",
            pdu.sender
        )));
    }
    if pdu.event_id != event_id || pdu.room_id.as_deref() != Some(room_id) {
        return Err(ServiceError::bad_json(
            "The event is not the one named in the path",
        ));
    }
    let membership = serde_json::from_str::<Value>(pdu.content.get())
        .ok()
        .as_ref()
        .and_then(super::state::membership_of);
    let invitee = pdu
        .state_key
        .as_deref()
        .and_then(|key| UserId::parse(key).ok())
        .filter(|_| pdu.kind.to_string() == "m.room.member")
        .filter(|_| membership == Some(ruma_events::room::member::MembershipState::Invite))
        .ok_or_else(|| ServiceError::bad_json("Not an m.room.member invite"))?;
    if invitee.server_name() != ours {
        return Err(ServiceError::bad_json(
            "The invitee is not a user of this server",
        ));
    }
    Ok(invitee)
}

/// The invite state as clients get it: type, state key, sender, content.
fn stripped(room_state: &[Value]) -> Vec<Value> {
    room_state
        .iter()
        .take(MAX_INVITE_STATE)
        .filter_map(|event| {
            let kind = event.get("type")?.as_str()?;
            let state_key = event.get("state_key")?.as_str()?;
            let sender = event.get("sender")?.as_str()?;
            let content = event.get("content")?.as_object()?;
            Some(json!({
                "type": kind, "state_key": state_key, "sender": sender, "content": content,
            }))
        })
        .collect()
}
