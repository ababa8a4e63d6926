//! This server as the resident of a room that another server's user joins
//! or leaves: the template of `make_join`/`make_leave`, built on the room's
//! head, and the signed event of `send_join`/`send_leave`, checked like any
//! remote PDU, authorized against the current state (refused, not
//! soft-failed: the sender is waiting for the answer), countersigned and
//! appended by the room's actor, which sends it on to the room's other
//! servers.

use std::collections::HashMap;
use std::sync::Arc;

use ruma_common::{
    EventId, OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
};
use ruma_events::room::member::MembershipState;
use ruma_events::StateEventType;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::actor::{Job, RoomHandle};
use super::auth::{authorize, Proposed};
use super::remote_join::{imported, ImportAs};
use super::{now_ms, RoomService};
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::service::federation::event::{
    authorize_by_auth_events, authorize_by_state, rules_of, trusted, RemotePdu,
};
use crate::service::federation::not_federating;
use crate::store::StoredEvent;

/// The answer to `make_join`/`make_leave`: an unsigned event to sign.
pub struct Template {
    pub version: RoomVersionId,
    pub event: Value,
}

/// What a joining server is sent: the state before its join and the auth
/// chain of that state, with the join as we countersigned it.
pub struct JoinedAnswer {
    pub state: Vec<Arc<Value>>,
    pub auth_chain: Vec<Arc<Value>>,
    pub event: Value,
    pub servers: Vec<OwnedServerName>,
}

impl RoomService {
    /// The room's head, `None` for a room this server does not hold.
    pub(super) async fn head(&self, room_id: &RoomId) -> ServiceResult<Option<RoomHandle>> {
        let (reply, answer) = oneshot::channel();
        self.core.submit(room_id, Job::Head(reply));
        answer.await.map_err(ServiceError::internal)?
    }

    /// The head and version of a room we hold, if its server ACL lets
    /// `origin` in.
    async fn held_by(
        &self,
        room_id: &RoomId,
        origin: &ServerName,
    ) -> ServiceResult<(RoomHandle, RoomVersionId)> {
        let head = self
            .head(room_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Unknown room"))?;
        acl(&head, origin)?;
        let version = RoomVersionId::try_from(head.state.room_version())
            .map_err(|_| ServiceError::internal("a room of no valid version"))?;
        Ok((head, version))
    }

    /// `make_join`/`make_leave`: the event `user_id` of `origin` would
    /// send, if the room's rules allow it now.
    pub async fn make_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        membership: MembershipState,
        versions: &[RoomVersionId],
    ) -> ServiceResult<Template> {
        own_user(origin, user_id)?;
        let (head, version) = self.held_by(room_id, origin).await?;
        if membership == MembershipState::Join && !versions.contains(&version) {
            return Err(ServiceError::new(
                ErrorKind::IncompatibleRoomVersion {
                    room_version: version.to_string(),
                },
                format!("The room is of version {version}, which your server does not support"),
            ));
        }
        let content = json!({ "membership": membership });
        authorize(
            &head.state,
            &Proposed {
                kind: "m.room.member",
                sender: user_id,
                state_key: Some(user_id.as_str()),
                content: &content,
            },
        )?;
        let auth_events =
            head.state
                .auth_event_ids("m.room.member", user_id, Some(user_id.as_str()), &content);
        let event = json!({
            "type": "m.room.member",
            "room_id": room_id,
            "sender": user_id,
            "state_key": user_id,
            "content": content,
            "origin_server_ts": now_ms(),
            "prev_events": head.prev_events(),
            "auth_events": auth_events,
            "depth": head.depth + 1,
        });
        Ok(Template { version, event })
    }

    /// `send_join`: the join checked, countersigned and appended; the
    /// state before it and that state's auth chain.
    pub async fn send_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        raw: &RawValue,
    ) -> ServiceResult<JoinedAnswer> {
        let before = self.store.current_state(room_id).await?;
        let (event, head) = self
            .accept_membership(
                origin,
                room_id,
                event_id,
                raw,
                MembershipState::Join,
                &before,
            )
            .await?;
        let auth_chain = self.auth_chain(before.iter()).await?;
        let mut servers = head.state.other_servers(&self.server_name);
        servers.extend([origin.to_owned(), self.server_name.clone()]);
        servers.sort();
        servers.dedup();
        Ok(JoinedAnswer {
            state: before.into_iter().map(|e| e.pdu).collect(),
            auth_chain: auth_chain.into_iter().map(|e| e.pdu).collect(),
            event,
            servers,
        })
    }

    /// `send_leave`: the leave checked, countersigned and appended.
    pub async fn send_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        raw: &RawValue,
    ) -> ServiceResult<()> {
        let current = self.store.current_state(room_id).await?;
        self.accept_membership(
            origin,
            room_id,
            event_id,
            raw,
            MembershipState::Leave,
            &current,
        )
        .await
        .map(drop)
    }

    /// A membership event of `origin`'s user about themself, checked and
    /// authorized against `current` (the room's current state), then
    /// appended with our signature added; returns it and the head it was
    /// accepted on.
    async fn accept_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        raw: &RawValue,
        membership: MembershipState,
        current: &[StoredEvent],
    ) -> ServiceResult<(Value, RoomHandle)> {
        let federation = self.federation.as_ref().ok_or_else(not_federating)?;
        let (head, version) = self.held_by(room_id, origin).await?;
        let rules = rules_of(&version).map_err(|e| ServiceError::bad_json(e.to_string()))?;
        let pdu = federation
            .check_pdu(raw, &version)
            .await
            .map_err(|e| ServiceError::bad_json(e.to_string()))?;
        check_membership(origin, room_id, event_id, &pdu, &membership)?;
        if let Some(stored) = self.store.get_event(event_id).await? {
            // Sent again (the first answer was lost): the same answer.
            return Ok(((*stored.pdu).clone(), head));
        }
        self.authorize_remote(&pdu, &rules, current).await?;
        let mut json = pdu.json.clone();
        ruma_signatures::sign_json(self.server_name.as_str(), &self.core.key.pair, &mut json)
            .map_err(ServiceError::internal)?;
        let signed = serde_json::to_value(&json).map_err(ServiceError::internal)?;
        let mut event = imported(pdu)?;
        event.pdu = signed.clone();
        self.import(room_id, vec![event], ImportAs::Forwarded)
            .await?;
        Ok((signed, head))
    }

    /// Authorized by its auth events and by the current state, or refused.
    async fn authorize_remote(
        &self,
        pdu: &RemotePdu,
        rules: &ruma_common::room_version_rules::RoomVersionRules,
        current: &[StoredEvent],
    ) -> ServiceResult<()> {
        let mut by_id = HashMap::with_capacity(current.len());
        let mut by_key = HashMap::with_capacity(current.len());
        for event in current {
            let parsed = trusted(event.event_id.clone(), &event.pdu)
                .map_err(|e| ServiceError::internal(e.to_string()))?;
            let key = (
                StateEventType::from(event.kind.as_str()),
                event.state_key.clone().unwrap_or_default(),
            );
            by_id.insert(event.event_id.clone(), parsed.clone());
            by_key.insert(key, parsed);
        }
        let missing = pdu.auth_events.iter().find(|id| !by_id.contains_key(*id));
        if let Some(id) = missing {
            // An auth event the current state no longer holds: it may
            // still be ours, from before a change.
            if let Some(stored) = self.store.get_event(id).await? {
                let parsed = trusted(id.clone(), &stored.pdu)
                    .map_err(|e| ServiceError::internal(e.to_string()))?;
                by_id.insert(id.clone(), parsed);
            }
        }
        authorize_by_auth_events(pdu, rules, &by_id)
            .and_then(|()| authorize_by_state(pdu, rules, &by_key))
            .map_err(|e| ServiceError::forbidden(e.to_string()))
    }

    /// Every event the given events' auth events name, transitively: one
    /// store round trip per generation of the chain.
    pub(super) async fn auth_chain<'a>(
        &self,
        events: impl Iterator<Item = &'a StoredEvent>,
    ) -> ServiceResult<Vec<StoredEvent>> {
        let mut seen: std::collections::HashSet<OwnedEventId> = std::collections::HashSet::new();
        let mut next: Vec<OwnedEventId> = Vec::new();
        for event in events {
            next.extend(event_ids(&event.pdu, "auth_events"));
        }
        let mut chain = Vec::new();
        while !next.is_empty() {
            next.retain(|id| seen.insert(id.clone()));
            if next.is_empty() {
                break;
            }
            let found = self.store.get_events(&next).await?;
            next = found
                .iter()
                .flat_map(|e| event_ids(&e.pdu, "auth_events"))
                .collect();
            chain.extend(found);
        }
        Ok(chain)
    }
}

/// The ids a stored PDU lists in `field` (`auth_events`, `prev_events`).
pub(super) fn event_ids(pdu: &Value, field: &str) -> Vec<OwnedEventId> {
    pdu.get(field)
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .filter_map(|id| EventId::parse(id).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The room's server ACL must let `origin` in.
fn acl(head: &RoomHandle, origin: &ServerName) -> ServiceResult<()> {
    if head.state.server_allowed(origin) {
        Ok(())
    } else {
        Err(ServiceError::forbidden(format!(
            "The room's server ACL denies {origin}"
        )))
    }
}

/// A server speaks only for its own users.
fn own_user(origin: &ServerName, user_id: &UserId) -> ServiceResult<()> {
    if user_id.server_name() == origin {
        Ok(())
    } else {
        Err(ServiceError::forbidden(format!(
            "{user_id} is not a user of {origin}"
        )))
    }
}

/// The event is the membership it was sent as, of `origin`'s user about
/// themself, in this room, under the id in the path.
fn check_membership(
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    pdu: &RemotePdu,
    membership: &MembershipState,
) -> ServiceResult<()> {
    own_user(origin, &pdu.sender)?;
    if pdu.event_id != event_id {
        return Err(ServiceError::bad_json(format!(
            "The event's id is {}, not {event_id}",
            pdu.event_id
        )));
    }
    if pdu.room_id.as_deref() != Some(room_id) {
        return Err(ServiceError::bad_json("The event is of another room"));
    }
    let sent: Option<MembershipState> = serde_json::from_str::<Value>(pdu.content.get())
        .ok()
        .as_ref()
        .and_then(super::state::membership_of);
    let about_self = pdu.state_key.as_deref() == Some(pdu.sender.as_str());
    if pdu.kind.to_string() != "m.room.member" || !about_self || sent.as_ref() != Some(membership) {
        return Err(ServiceError::bad_json(format!(
            "Not an m.room.member event of membership {membership} about its sender"
        )));
    }
    if pdu.redacted {
        return Err(ServiceError::bad_json(
            "The event's content hash does not match",
        ));
    }
    Ok(())
}
