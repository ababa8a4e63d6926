//! What other servers read of a room we hold: single events, the state at
//! an event, auth chains, history before an event (`backfill`) and the
//! events between two points (`get_missing_events`). Only a server with a
//! user in the room may read it, and an event sent while the room's
//! history was visible to members only reaches a server whose users were
//! not yet in the room redacted.
//!
//! The state at an event is read from the state group stored with it
//! (see `state_groups.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use ruma_common::canonical_json::{redact, CanonicalJsonObject};
use ruma_common::{EventId, OwnedEventId, RoomId, ServerName};
use ruma_events::room::member::MembershipState;
use serde_json::Value;

use super::resident::event_ids;
use super::state::RoomState;
use super::RoomService;
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::pdu::rules_for;
use crate::store::{Direction, StoredEvent, StreamPos};

/// Most events one `backfill` or `get_missing_events` answers.
pub const MAX_HISTORY: usize = 100;

/// Whether an event sent under this history visibility is shown to any
/// server in the room, whenever its users came.
fn open(event: &StoredEvent) -> bool {
    matches!(event.visibility.as_str(), "world_readable" | "shared")
}

/// The PDU as a server whose users were not in the room yet sees it.
fn redacted(event: &StoredEvent, version: &str) -> ServiceResult<Arc<Value>> {
    let object: CanonicalJsonObject =
        serde_json::from_value((*event.pdu).clone()).map_err(ServiceError::internal)?;
    let redacted =
        redact(object, &rules_for(version).redaction, None).map_err(ServiceError::internal)?;
    Ok(Arc::new(
        serde_json::to_value(redacted).map_err(ServiceError::internal)?,
    ))
}

impl RoomService {
    /// The room's state, if `origin` may read the room: one of its users is
    /// joined now and the room's server ACL lets it in.
    async fn readable_by(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
    ) -> ServiceResult<Arc<RoomState>> {
        let state = self
            .state_snapshot(room_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Unknown room"))?;
        let joined = state
            .members_with(MembershipState::Join)
            .iter()
            .any(|user| user.server_name() == origin);
        if !joined {
            return Err(ServiceError::forbidden("Your server is not in this room"));
        }
        if !state.server_allowed(origin) {
            return Err(ServiceError::forbidden(format!(
                "The room's server ACL denies {origin}"
            )));
        }
        Ok(state)
    }

    /// `events` as `origin` may see them. When one was sent while history
    /// was members-only, the first membership (invite or join) of any of
    /// its users is looked up, once, to tell.
    async fn shown_to(
        &self,
        origin: &ServerName,
        state: &RoomState,
        events: &[StoredEvent],
    ) -> ServiceResult<Vec<Arc<Value>>> {
        let member_since = match events.iter().find(|e| !open(e)) {
            Some(event) => self.first_membership(origin, &event.room_id).await?,
            None => None,
        };
        events
            .iter()
            .map(|event| {
                let member = member_since.is_some_and(|since| since <= event.stream);
                if open(event) || member {
                    Ok(event.pdu.clone())
                } else {
                    redacted(event, state.room_version())
                }
            })
            .collect()
    }

    /// The first invite or join of any of `origin`'s users in the room.
    async fn first_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
    ) -> ServiceResult<Option<StreamPos>> {
        let mut first: Option<StreamPos> = None;
        let members = self.store.members(room_id).await?;
        for record in members.iter().filter(|m| m.user_id.server_name() == origin) {
            let history = self
                .store
                .membership_history(room_id, &record.user_id)
                .await?;
            let theirs = history
                .iter()
                .filter(|(_, m)| matches!(m, MembershipState::Join | MembershipState::Invite))
                .map(|(stream, _)| *stream)
                .min();
            first = first.into_iter().chain(theirs).min();
        }
        Ok(first)
    }

    /// An event of this room, as `origin` may see it.
    async fn event_in(&self, room_id: &RoomId, event_id: &EventId) -> ServiceResult<StoredEvent> {
        self.store
            .get_event(event_id)
            .await?
            .filter(|event| event.room_id == room_id)
            .ok_or_else(|| ServiceError::not_found("Unknown event"))
    }

    /// `GET /event/{eventId}`.
    pub async fn event_for_server(
        &self,
        origin: &ServerName,
        event_id: &EventId,
    ) -> ServiceResult<Arc<Value>> {
        let event = self
            .store
            .get_event(event_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Unknown event"))?;
        let state = self.readable_by(origin, &event.room_id).await?;
        let mut shown = self
            .shown_to(origin, &state, std::slice::from_ref(&event))
            .await?;
        shown
            .pop()
            .ok_or_else(|| ServiceError::internal("an event shown as nothing"))
    }

    /// `GET /state` and `/state_ids`: the state before `event_id` and its
    /// auth chain.
    pub async fn state_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> ServiceResult<(Vec<StoredEvent>, Vec<StoredEvent>)> {
        self.readable_by(origin, room_id).await?;
        let event = self.event_in(room_id, event_id).await?;
        let state = self.state_before(&event).await?;
        let chain = self.auth_chain(state.iter()).await?;
        Ok((state, chain))
    }

    /// `GET /event_auth`: the auth chain of one event.
    pub async fn event_auth_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> ServiceResult<Vec<Arc<Value>>> {
        self.readable_by(origin, room_id).await?;
        let event = self.event_in(room_id, event_id).await?;
        let chain = self.auth_chain(std::iter::once(&event)).await?;
        Ok(chain.into_iter().map(|e| e.pdu).collect())
    }

    /// The room's state just before `event`: the group after it, or for a
    /// state event that made its own group, that group's parent.
    async fn state_before(&self, event: &StoredEvent) -> ServiceResult<Vec<StoredEvent>> {
        let group = self
            .store
            .state_groups_of(std::slice::from_ref(&event.event_id))
            .await?
            .pop()
            .map(|(_, group)| group)
            .ok_or_else(|| ServiceError::internal("no state recorded for the event"))?;
        let before = match event.state_key.is_some() && group == event.event_id {
            true => self.store.state_group(&group).await?.and_then(|g| g.parent),
            false => Some(group),
        };
        let Some(before) = before else {
            return Ok(Vec::new()); // the create event: nothing before it
        };
        let state = self.group_state(&before).await?;
        let ids: Vec<OwnedEventId> = state.values().cloned().collect();
        let mut events = self.store.get_events(&ids).await?;
        events.sort_by_key(|e| e.stream);
        Ok(events)
    }

    /// `GET /backfill`: the events `from` names and those before them,
    /// newest first, at most `limit`.
    pub async fn backfill_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: usize,
    ) -> ServiceResult<Vec<Arc<Value>>> {
        let state = self.readable_by(origin, room_id).await?;
        let starts = self.store.get_events(from).await?;
        let Some(start) = starts
            .iter()
            .filter(|e| e.room_id == room_id)
            .map(|e| e.stream)
            .max()
        else {
            return Ok(Vec::new());
        };
        let events = self
            .store
            .room_events(room_id, start, Direction::Backward, limit.min(MAX_HISTORY))
            .await?;
        self.shown_to(origin, &state, &events).await
    }

    /// `POST /get_missing_events`: walking back from `latest` along
    /// `prev_events`, the events not in `earliest`, oldest first.
    pub async fn missing_events_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
        min_depth: i64,
    ) -> ServiceResult<Vec<Arc<Value>>> {
        let state = self.readable_by(origin, room_id).await?;
        let limit = limit.min(MAX_HISTORY);
        let mut seen: HashSet<OwnedEventId> = earliest.iter().cloned().collect();
        seen.extend(latest.iter().cloned());
        let mut frontier: Vec<OwnedEventId> = self
            .store
            .get_events(latest)
            .await?
            .iter()
            .filter(|e| e.room_id == room_id)
            .flat_map(|e| event_ids(&e.pdu, "prev_events"))
            .collect();
        let mut found: Vec<StoredEvent> = Vec::new();
        while !frontier.is_empty() && found.len() < limit {
            frontier.retain(|id| seen.insert(id.clone()));
            let generation = self.store.get_events(&frontier).await?;
            frontier.clear();
            for event in generation {
                let depth = event.pdu.get("depth").and_then(Value::as_i64).unwrap_or(0);
                if event.room_id != room_id || depth < min_depth || found.len() >= limit {
                    continue;
                }
                frontier.extend(event_ids(&event.pdu, "prev_events"));
                found.push(event);
            }
        }
        found.sort_by_key(|e| e.stream);
        self.shown_to(origin, &state, &found).await
    }
}
