//! The room's state at every event, and state resolution where the room's
//! history forks.
//!
//! Every event stores the state group after it. A group is the room's full
//! state at some point, stored as the entries that differ from its parent
//! (a state event's group is its parent's plus the event) or, now and then,
//! in full; the store reads one back in a single recursive query, and the
//! groups read lately are kept here. Where an event names several
//! `prev_events` whose states differ, or the room has several forward
//! extremities, the states are resolved with `ruma-state-res` (state
//! resolution v2, and v2.1 from room version 12) into a group named by a
//! hash of the groups merged: the same merge, wherever and however often
//! it happens, is the same group.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;

use base64::Engine as _;
use lru::LruCache;
use parking_lot::Mutex;
use ruma_common::room_version_rules::{RoomVersionRules, StateResolutionVersion};
use ruma_common::{EventId, OwnedEventId, RoomId};
use ruma_events::StateEventType;
use ruma_state_res::utils::event_id_set::EventIdSet;
use ruma_state_res::StateMap;
use sha2::{Digest, Sha256};

use super::RoomService;
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::federation::event::{trusted, RemotePdu};
use crate::store::{NewStateGroup, StateKeyed};

/// A state map by event id: `(type, state_key) -> event_id`.
pub type StateIds = StateMap<OwnedEventId>;

/// State groups read lately, by id (they never change).
pub(super) struct GroupCache(Mutex<LruCache<OwnedEventId, Arc<StateIds>>>);

/// Groups kept: a group of a large room is one map of its members.
const CACHED_GROUPS: usize = 256;

impl Default for GroupCache {
    fn default() -> Self {
        let size = NonZeroUsize::new(CACHED_GROUPS).expect("non-zero");
        Self(Mutex::new(LruCache::new(size)))
    }
}

/// The state several groups resolve to: its group id and map, and the
/// group to store when it is new.
pub(super) struct Resolved {
    pub id: OwnedEventId,
    pub state: Arc<StateIds>,
    pub new_group: Option<NewStateGroup>,
}

impl RoomService {
    /// A state group's full state.
    pub(super) async fn group_state(&self, group: &EventId) -> ServiceResult<Arc<StateIds>> {
        if let Some(state) = self.groups.0.lock().get(group) {
            return Ok(state.clone());
        }
        let stored = self
            .store
            .state_group(group)
            .await?
            .ok_or_else(|| ServiceError::internal(format!("state group {group} is missing")))?;
        let state: StateIds = stored
            .entries
            .into_iter()
            .map(|e| ((StateEventType::from(e.kind), e.state_key), e.event_id))
            .collect();
        let state = Arc::new(state);
        self.groups.0.lock().put(group.to_owned(), state.clone());
        Ok(state)
    }

    /// Remembers a group just built, so the next event on it needs no read.
    pub(super) fn remember_group(&self, group: &EventId, state: Arc<StateIds>) {
        self.groups.0.lock().put(group.to_owned(), state);
    }

    /// The state that `groups` (of one room) resolve to. One group is
    /// itself; several are resolved by the room version's algorithm.
    /// `pending` is an event the groups may name that is not stored yet
    /// (the one being placed).
    pub(super) async fn resolve_groups(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        groups: &[OwnedEventId],
        pending: Option<&RemotePdu>,
    ) -> ServiceResult<Resolved> {
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        if let [only] = groups.as_slice() {
            let state = self.group_state(only).await?;
            let id = only.clone();
            return Ok(Resolved {
                id,
                state,
                new_group: None,
            });
        }
        let id = merged_group_id(&groups);
        if let Some(state) = self.groups.0.lock().get(&id) {
            let state = state.clone();
            return Ok(Resolved {
                id,
                state,
                new_group: None,
            });
        }
        let mut maps = Vec::with_capacity(groups.len());
        for group in &groups {
            maps.push(self.group_state(group).await?);
        }
        let resolved = self.resolve_maps(rules, &maps, pending).await?;
        // Stored as what differs from the first state merged.
        let entries = resolved
            .iter()
            .filter(|(key, event_id)| maps[0].get(*key) != Some(*event_id))
            .map(|((kind, state_key), event_id)| StateKeyed {
                kind: kind.to_string(),
                state_key: state_key.clone(),
                event_id: event_id.clone(),
            })
            .collect();
        let state = Arc::new(resolved);
        self.remember_group(&id, state.clone());
        Ok(Resolved {
            new_group: Some(NewStateGroup {
                id: id.clone(),
                room_id: room_id.to_owned(),
                parent: Some(groups[0].clone()),
                snapshot: false,
                entries,
            }),
            id,
            state,
        })
    }

    /// State resolution over `maps`, with the events they name and their
    /// auth chains read from the store.
    async fn resolve_maps(
        &self,
        rules: &RoomVersionRules,
        maps: &[Arc<StateIds>],
        pending: Option<&RemotePdu>,
    ) -> ServiceResult<StateIds> {
        let StateResolutionVersion::V2(res_rules) = &rules.state_res else {
            return Err(ServiceError::internal(
                "state resolution v1 is not supported",
            ));
        };
        let start: Vec<OwnedEventId> = maps.iter().flat_map(|m| m.values().cloned()).collect();
        let events = self.events_and_auth_chains(start, pending).await?;
        let auth_chains: Vec<EventIdSet<OwnedEventId>> = maps
            .iter()
            .map(|map| auth_chain_of(map.values(), &events))
            .collect();
        let fetch = |id: &EventId| events.get(id).cloned();
        let subgraph = |conflicted: &StateMap<Vec<OwnedEventId>>| {
            Some(conflicted_subgraph(conflicted, &events))
        };
        ruma_state_res::resolve(
            &rules.authorization,
            res_rules,
            maps.iter().map(|m| m.as_ref()),
            auth_chains,
            fetch,
            subgraph,
        )
        .map_err(|err| ServiceError::internal(format!("state resolution failed: {err}")))
    }

    /// The events `start` names and all their auth events, transitively,
    /// read a generation per query.
    async fn events_and_auth_chains(
        &self,
        start: Vec<OwnedEventId>,
        pending: Option<&RemotePdu>,
    ) -> ServiceResult<HashMap<OwnedEventId, RemotePdu>> {
        let mut events: HashMap<OwnedEventId, RemotePdu> = HashMap::new();
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut next = start;
        if let Some(pdu) = pending {
            seen.insert(pdu.event_id.clone());
            next.extend(pdu.auth_events.iter().cloned());
            events.insert(pdu.event_id.clone(), pdu.clone());
        }
        while !next.is_empty() {
            next.retain(|id| seen.insert(id.clone()));
            if next.is_empty() {
                break;
            }
            let found = self.store.get_events(&next).await?;
            let mut read: Vec<(OwnedEventId, Arc<serde_json::Value>)> =
                found.into_iter().map(|e| (e.event_id, e.pdu)).collect();
            if read.len() < next.len() {
                // The rest may be outliers (a joined room's auth chain).
                let have: HashSet<&OwnedEventId> = read.iter().map(|(id, _)| id).collect();
                let rest: Vec<OwnedEventId> = next
                    .iter()
                    .filter(|id| !have.contains(id))
                    .cloned()
                    .collect();
                let outliers = self.store.outliers(&rest).await?;
                // A rejected event counts for nothing; a soft-failed one
                // is part of the room's history.
                let usable = outliers
                    .into_iter()
                    .filter(|o| !matches!(o.refused, Some((false, _))));
                read.extend(usable.map(|o| (o.event_id, o.pdu)));
            }
            next = Vec::new();
            for (event_id, json) in read {
                let pdu =
                    trusted(event_id, &json).map_err(|e| ServiceError::internal(e.to_string()))?;
                next.extend(pdu.auth_events.iter().cloned());
                events.insert(pdu.event_id.clone(), pdu);
            }
        }
        Ok(events)
    }
}

/// The group a resolution of `groups` (sorted, distinct) makes, named by a
/// hash of them in event-id form so it fits wherever a group id goes.
fn merged_group_id(groups: &[OwnedEventId]) -> OwnedEventId {
    let mut hasher = Sha256::new();
    hasher.update(b"tern state resolution");
    for group in groups {
        hasher.update([0]);
        hasher.update(group.as_str().as_bytes());
    }
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hasher.finalize());
    OwnedEventId::try_from(format!("${hash}")).expect("a valid event id")
}

/// The full auth chain of `ids` within `events`.
fn auth_chain_of<'a>(
    ids: impl Iterator<Item = &'a OwnedEventId>,
    events: &HashMap<OwnedEventId, RemotePdu>,
) -> EventIdSet<OwnedEventId> {
    let mut chain = EventIdSet::new();
    let mut next: Vec<&OwnedEventId> = ids
        .filter_map(|id| events.get(id))
        .flat_map(|e| e.auth_events.iter())
        .collect();
    while let Some(id) = next.pop() {
        if chain.insert(id.clone()) {
            if let Some(event) = events.get(id) {
                next.extend(event.auth_events.iter());
            }
        }
    }
    chain
}

/// The conflicted state subgraph of state resolution v2.1: the events on
/// an auth-event path from one conflicted state event to another (both
/// ends included).
fn conflicted_subgraph(
    conflicted: &StateMap<Vec<OwnedEventId>>,
    events: &HashMap<OwnedEventId, RemotePdu>,
) -> EventIdSet<OwnedEventId> {
    let ends: HashSet<&OwnedEventId> = conflicted.values().flatten().collect();
    // Whether an event reaches a conflicted event by its auth events
    // (itself included), memoized.
    let mut reaches: HashMap<&OwnedEventId, bool> = HashMap::new();
    fn reaches_end<'a>(
        id: &'a OwnedEventId,
        ends: &HashSet<&OwnedEventId>,
        events: &'a HashMap<OwnedEventId, RemotePdu>,
        memo: &mut HashMap<&'a OwnedEventId, bool>,
    ) -> bool {
        if let Some(known) = memo.get(id) {
            return *known;
        }
        memo.insert(id, false); // an auth cycle (malformed) ends here
        let found = ends.contains(id)
            || events.get(id).is_some_and(|e| {
                e.auth_events
                    .iter()
                    .any(|a| reaches_end(a, ends, events, memo))
            });
        memo.insert(id, found);
        found
    }
    let mut subgraph = EventIdSet::new();
    let mut next: Vec<&OwnedEventId> = ends.iter().copied().collect();
    let mut visited: HashSet<&OwnedEventId> = HashSet::new();
    while let Some(id) = next.pop() {
        if !visited.insert(id) {
            continue;
        }
        if reaches_end(id, &ends, events, &mut reaches) {
            subgraph.insert(id.clone());
        }
        if let Some(event) = events.get(id) {
            next.extend(event.auth_events.iter());
        }
    }
    subgraph
}
