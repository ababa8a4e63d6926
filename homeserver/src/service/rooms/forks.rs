//! Remote events where the room's history forks: an event whose
//! `prev_events` are not on the room's current state (another server built
//! it before our latest state change reached it), or that leaves the room
//! with several forward extremities on different states.
//!
//! Such an event is authorized against the state before it (its
//! `prev_events`' states resolved: rejected if that state does not allow
//! it), soft-failed if the current state does not allow it (kept out of
//! the room), and the room's current state becomes the resolution of its
//! forward extremities' states: the same on every server that holds the
//! same events, whatever order they arrived in.

use std::collections::HashMap;
use std::sync::Arc;

use ruma_common::{OwnedEventId, ServerName};
use ruma_events::StateEventType;
use serde_json::{json, Value};

use super::actor::Placed;
use super::known_events;
use super::remote_events::{reject, PduResult, Room};
use super::remote_join::{imported, ImportAs};
use super::state::{membership_of, StateEntry};
use super::state_groups::StateIds;
use super::RoomService;
use crate::service::error::ServiceResult;
use crate::service::federation::event::{
    authorize_by_auth_events, authorize_by_state, trusted, RemotePdu,
};
use crate::store::{EventState, NewStateGroup, StateKeyed, StateReset};

impl RoomService {
    /// The index of the first of `pdus` whose place in the room's state is
    /// not simply after the current state as the ones before it move it;
    /// `None` when all of them follow on. Unknown `prev_events` (a gap not
    /// filled) do not count. The common case, a chain from the room's one
    /// forward extremity, needs no query: one extremity is on the state.
    pub(super) async fn first_forked(
        &self,
        room: &Room,
        pdus: &[RemotePdu],
    ) -> ServiceResult<Option<usize>> {
        if let [only] = room.extremities.as_slice() {
            let mut tip = only;
            let chain = pdus.iter().all(|pdu| {
                let follows = pdu.prev_events.as_slice() == std::slice::from_ref(tip);
                tip = &pdu.event_id;
                follows
            });
            if chain {
                return Ok(None);
            }
        }
        let mut wanted: Vec<OwnedEventId> = pdus
            .iter()
            .flat_map(|p| p.prev_events.iter())
            .chain(&room.extremities)
            .cloned()
            .collect();
        wanted.sort();
        wanted.dedup();
        let mut groups: HashMap<OwnedEventId, OwnedEventId> = self
            .store
            .state_groups_of(&wanted)
            .await?
            .into_iter()
            .collect();
        let mut head = room.head_group.clone();
        let mut extremities = room.extremities.clone();
        for (n, pdu) in pdus.iter().enumerate() {
            let on_head =
                |id: &OwnedEventId| groups.get(id).is_none_or(|g| Some(g) == head.as_ref());
            let before_on_head = pdu.prev_events.iter().all(on_head);
            extremities.retain(|id| !pdu.prev_events.contains(id));
            let others_on_head = extremities.iter().all(on_head);
            if !before_on_head || !others_on_head {
                return Ok(Some(n));
            }
            extremities.push(pdu.event_id.clone());
            if pdu.state_key.is_some() {
                head = Some(pdu.event_id.clone());
            }
            if let Some(head) = &head {
                groups.insert(pdu.event_id.clone(), head.clone());
            }
        }
        Ok(None)
    }

    /// Authorizes one forked event and appends it with its place in the
    /// room's state: the state groups it brings, the resolved current
    /// state and what of it changed.
    pub(super) async fn import_forked(
        &self,
        origin: &ServerName,
        room: &Room,
        pdu: RemotePdu,
    ) -> ServiceResult<(OwnedEventId, PduResult)> {
        let id = pdu.event_id.clone();
        if self.store.get_event(&id).await?.is_some() {
            return Ok((id, Ok(()))); // sent again: already ours
        }
        let pdus = std::slice::from_ref(&pdu);
        if let Some(answer) = self.answered_before(pdus).await?.remove(&id) {
            return Ok((id, answer)); // refused before
        }
        let mut auth = self.auth_events_of(room, &pdu).await?;
        self.complete_auth_events(origin, room, pdus, &mut auth)
            .await?;
        if let Err(err) = authorize_by_auth_events(&pdu, &room.rules, &auth) {
            return Ok(self
                .refuse(room, &pdu, false, reject(err).to_string())
                .await);
        }
        // The state before it: its parents' states, resolved (parents not
        // here, a gap that could not be filled, count as the current state).
        let mut prev_groups: Vec<OwnedEventId> = self
            .store
            .state_groups_of(&pdu.prev_events)
            .await?
            .into_iter()
            .map(|(_, group)| group)
            .collect();
        if prev_groups.is_empty() {
            prev_groups.extend(room.head_group.clone());
        }
        let before = self
            .resolve_groups(&room.room_id, &room.rules, &prev_groups, None)
            .await?;
        let lookup = |kind: &StateEventType, key: &str| {
            before.state.get(&(kind.clone(), key.to_owned())).cloned()
        };
        let before_auth = self
            .auth_state_of(&room.rules, std::slice::from_ref(&pdu), lookup)
            .await?;
        if let Err(err) = authorize_by_state(&pdu, &room.rules, &before_auth) {
            return Ok(self
                .refuse(room, &pdu, false, reject(err).to_string())
                .await);
        }
        let current_auth = self
            .state_for_auth(room, std::slice::from_ref(&pdu))
            .await?;
        if let Err(err) = authorize_by_state(&pdu, &room.rules, &current_auth) {
            tracing::info!(event_id = %id, %err, "soft-failed an event");
            return Ok(self.refuse(room, &pdu, true, err.to_string()).await);
        }
        let placed = self.place(room, &pdu, before).await?;
        let mut event = imported(pdu)?;
        event.placed = Some(placed);
        let result = match self
            .import(&room.room_id, vec![event], ImportAs::Received)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => self.stored_after_all(&id, &err).await,
        };
        Ok((id, result))
    }

    /// Where an accepted forked event stands: its group (the state before
    /// it, plus itself if it is a state event), the room's current state
    /// as the resolution of its forward extremities' states, and how that
    /// differs from the head's.
    async fn place(
        &self,
        room: &Room,
        pdu: &RemotePdu,
        before: super::state_groups::Resolved,
    ) -> ServiceResult<Placed> {
        let room_id = &room.room_id;
        let mut new_groups: Vec<NewStateGroup> = before.new_group.into_iter().collect();
        let own_key = pdu
            .state_key
            .as_ref()
            .map(|key| (StateEventType::from(pdu.kind.to_string()), key.clone()));
        let after = match &own_key {
            Some((kind, key)) => {
                let mut state = (*before.state).clone();
                state.insert((kind.clone(), key.clone()), pdu.event_id.clone());
                self.remember_group(&pdu.event_id, Arc::new(state));
                new_groups.push(NewStateGroup {
                    id: pdu.event_id.clone(),
                    room_id: room_id.clone(),
                    parent: Some(before.id),
                    snapshot: false,
                    entries: vec![StateKeyed {
                        kind: kind.to_string(),
                        state_key: key.clone(),
                        event_id: pdu.event_id.clone(),
                    }],
                });
                pdu.event_id.clone()
            }
            None => before.id,
        };
        // The room's current state: its extremities' states resolved.
        let others: Vec<OwnedEventId> = room
            .extremities
            .iter()
            .filter(|id| !pdu.prev_events.contains(id))
            .cloned()
            .collect();
        let mut heads: Vec<OwnedEventId> = self
            .store
            .state_groups_of(&others)
            .await?
            .into_iter()
            .map(|(_, group)| group)
            .collect();
        heads.push(after.clone());
        let current = self
            .resolve_groups(room_id, &room.rules, &heads, Some(pdu))
            .await?;
        if let Some(group) = current.new_group {
            if !new_groups.iter().any(|g| g.id == group.id) {
                new_groups.push(group);
            }
        }
        let head: StateIds = room
            .state
            .entries()
            .map(|((kind, key), entry)| {
                let kind = StateEventType::from(kind.as_str());
                ((kind, key.clone()), entry.event_id.clone())
            })
            .collect();
        let changed: Vec<(&(StateEventType, String), &OwnedEventId)> = current
            .state
            .iter()
            .filter(|(key, id)| head.get(*key) != Some(*id))
            .collect();
        let ids: Vec<OwnedEventId> = changed.iter().map(|(_, id)| (*id).clone()).collect();
        let contents: HashMap<OwnedEventId, (ruma_common::OwnedUserId, Value)> = self
            .store
            .get_events(&ids)
            .await?
            .into_iter()
            .map(|e| {
                let content = e.pdu.get("content").cloned().unwrap_or_else(|| json!({}));
                (e.event_id, (e.sender, content))
            })
            .chain(std::iter::once((
                pdu.event_id.clone(),
                (
                    pdu.sender.clone(),
                    serde_json::from_str(pdu.content.get()).unwrap_or_else(|_| json!({})),
                ),
            )))
            .collect();
        let mut changes = Vec::with_capacity(changed.len());
        let mut resets = Vec::new();
        for ((kind, key), event_id) in changed {
            let Some((sender, content)) = contents.get(event_id) else {
                continue;
            };
            let membership = (*kind == StateEventType::RoomMember)
                .then(|| membership_of(content))
                .flatten();
            if *event_id != pdu.event_id {
                let (kind, key) = (kind.to_string(), key.clone());
                resets.push(reset(kind, key, event_id.clone(), membership, false));
            }
            let entry = StateEntry {
                event_id: event_id.clone(),
                sender: sender.clone(),
                content: content.clone(),
            };
            changes.push((kind.to_string(), key.clone(), entry));
        }
        // Keys the resolution left out: their rows go.
        let mut dropped: Vec<(String, String)> = head
            .keys()
            .filter(|key| !current.state.contains_key(*key))
            .map(|(kind, key)| (kind.to_string(), key.clone()))
            .collect();
        // The event's own entry lost the resolution: the store, which
        // writes a state event as current, is told to put back the winner,
        // or to drop the key when nothing won it.
        if let Some(own) = own_key.filter(|own| current.state.get(own) != Some(&pdu.event_id)) {
            let (kind, key) = (own.0.to_string(), own.1.clone());
            match current.state.get(&own) {
                Some(winner) if !resets.iter().any(|r| &r.entry.event_id == winner) => {
                    let membership = contents
                        .get(winner)
                        .filter(|_| own.0 == StateEventType::RoomMember)
                        .and_then(|(_, content)| membership_of(content));
                    resets.push(reset(kind, key, winner.clone(), membership, false));
                }
                Some(_) => {}
                None if !dropped.contains(&(kind.clone(), key.clone())) => {
                    dropped.push((kind, key))
                }
                None => {}
            }
        }
        for (kind, key) in &dropped {
            let held = head.get(&(StateEventType::from(kind.as_str()), key.clone()));
            let event_id = held.unwrap_or(&pdu.event_id).clone();
            resets.push(reset(kind.clone(), key.clone(), event_id, None, true));
        }
        self.remember_group(&current.id, current.state.clone());
        tracing::info!(
            room_id = %room_id,
            event_id = %pdu.event_id,
            group = %current.id,
            changed = ?changes.iter().map(|(kind, key, e)| format!("{kind}/{key}={}", e.event_id)).collect::<Vec<_>>(),
            "a fork resolved"
        );
        Ok(Placed {
            state: EventState {
                group: Some(after),
                new_groups,
                head: Some(current.id),
                resets,
            },
            changes,
            dropped,
        })
    }

    /// The event's auth events and the room's create event, as the rules
    /// read them (another room's events never count).
    async fn auth_events_of(
        &self,
        room: &Room,
        pdu: &RemotePdu,
    ) -> ServiceResult<HashMap<OwnedEventId, RemotePdu>> {
        let wanted: Vec<OwnedEventId> = pdu
            .auth_events
            .iter()
            .chain(&room.create)
            .cloned()
            .collect();
        let mut auth = HashMap::with_capacity(wanted.len());
        for event in self.store.get_events(&wanted).await? {
            if event.room_id == room.room_id {
                let id = event.event_id.clone();
                auth.insert(id.clone(), trusted(id, &event.pdu).map_err(reject)?);
            }
        }
        Ok(auth)
    }

    /// Keeps a refused (or soft-failed) event and gives its answer: an
    /// error for a rejection, accepted for a soft failure.
    async fn refuse(
        &self,
        room: &Room,
        pdu: &RemotePdu,
        soft_failed: bool,
        reason: String,
    ) -> (OwnedEventId, PduResult) {
        let kept = known_events::refused(pdu, soft_failed, &reason);
        self.keep_refused(room, vec![kept]).await;
        let answer = if soft_failed { Ok(()) } else { Err(reason) };
        (pdu.event_id.clone(), answer)
    }
}

/// A current-state row to set to `event_id`, or to drop.
fn reset(
    kind: String,
    state_key: String,
    event_id: OwnedEventId,
    membership: Option<ruma_events::room::member::MembershipState>,
    dropped: bool,
) -> StateReset {
    StateReset {
        entry: StateKeyed {
            kind,
            state_key,
            event_id,
        },
        membership,
        dropped,
    }
}
