//! Reading rooms: single events, history pages, context, state and members,
//! each filtered by what the reader may see.

use ruma_common::{EventId, OwnedRoomId, RoomId, UserId};
use ruma_events::room::member::MembershipState;
use serde::Deserialize;
use serde_json::Value;

use super::visibility::Viewer;
use super::RoomService;
use crate::service::error::{ServiceError, ServiceResult};
use crate::store::{Direction, MembershipRecord, StoredEvent, StreamPos};

/// The spec's `RoomEventFilter`. Every field is typed, including those not
/// applied yet, so a filter that is stored and later handed back is one a
/// client can parse; `null` is refused where the spec says list or flag.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoomEventFilter {
    #[serde(default, deserialize_with = "present")]
    pub limit: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    pub types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub not_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub senders: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub not_senders: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub not_rooms: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub contains_url: Option<bool>,
    #[serde(default)]
    pub lazy_load_members: bool,
    #[serde(default)]
    pub include_redundant_members: bool,
    #[serde(default)]
    pub unread_thread_notifications: bool,
}

/// An optional field that, when given, must hold a value (`null` is refused).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Matches `pattern` with `*` wildcards, as filters allow in `types`.
fn glob_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((prefix, rest)) => {
            value.starts_with(prefix)
                && (0..=value.len() - prefix.len()).any(|i| {
                    value.is_char_boundary(prefix.len() + i)
                        && glob_match(rest, &value[prefix.len() + i..])
                })
        }
    }
}

impl RoomEventFilter {
    pub fn matches(&self, event: &StoredEvent) -> bool {
        self.matches_parts(&event.kind, event.sender.as_str())
    }

    /// Whether events of type `kind` pass the filter (whoever sent them).
    pub fn allows_type(&self, kind: &str) -> bool {
        let any = |list: &Option<Vec<String>>| {
            list.as_ref().map(|l| l.iter().any(|p| glob_match(p, kind)))
        };
        any(&self.not_types) != Some(true) && any(&self.types) != Some(false)
    }

    /// Whether an event of type `kind` from `sender` passes the filter.
    pub fn matches_parts(&self, kind: &str, sender: &str) -> bool {
        if !self.allows_type(kind) {
            return false;
        }
        let has = |list: &Option<Vec<String>>, value: &str| {
            list.as_ref().map(|l| l.iter().any(|v| v == value))
        };
        !(has(&self.not_senders, sender) == Some(true) || has(&self.senders, sender) == Some(false))
    }

    pub fn allows_room(&self, room_id: &RoomId) -> bool {
        let has =
            |list: &Option<Vec<String>>| list.as_ref().map(|l| l.iter().any(|r| room_id == r));
        has(&self.not_rooms) != Some(true) && has(&self.rooms) != Some(false)
    }
}

/// Where a `/messages` page starts and how far it may go.
pub struct PageRequest {
    pub from: Option<StreamPos>,
    pub to: Option<StreamPos>,
    pub dir: Direction,
    pub limit: usize,
}

/// One page of `/messages`.
pub struct MessagesPage {
    pub events: Vec<StoredEvent>,
    pub start: StreamPos,
    /// Where the next page starts; `None` at the end of the room's history.
    pub end: Option<StreamPos>,
    pub state: Vec<StoredEvent>,
}

impl RoomService {
    pub async fn viewer<'a>(
        &self,
        room_id: &RoomId,
        user_id: &'a UserId,
    ) -> ServiceResult<Viewer<'a>> {
        let mut history = self.store.membership_history(room_id, user_id).await?;
        // A former member who forgot the room reads it as a stranger.
        if let Some(&(stream, MembershipState::Leave | MembershipState::Ban)) = history.last() {
            let forgotten = self.accounts.forgotten_rooms(user_id).await?;
            if forgotten.contains(&(room_id.to_owned(), stream)) {
                history.clear();
            }
        }
        Ok(Viewer { user_id, history })
    }

    /// Refuses readers who never were in the room, unless it is world readable.
    pub(super) async fn reader<'a>(
        &self,
        room_id: &RoomId,
        user_id: &'a UserId,
    ) -> ServiceResult<Viewer<'a>> {
        let viewer = self.viewer(room_id, user_id).await?;
        if viewer.ever_member() {
            return Ok(viewer);
        }
        let state = self.state_snapshot(room_id).await?;
        match state {
            Some(s) if s.history_visibility() == "world_readable" => Ok(viewer),
            _ => Err(ServiceError::forbidden(
                "You are not allowed to view this room",
            )),
        }
    }

    pub async fn get_event(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> ServiceResult<StoredEvent> {
        let viewer = self.reader(room_id, user_id).await?;
        let event = self
            .store
            .get_event(event_id)
            .await?
            .filter(|e| e.room_id == room_id)
            .ok_or_else(|| ServiceError::not_found("Event not found"))?;
        if !viewer.can_see(&event) {
            return Err(ServiceError::not_found("Event not found"));
        }
        Ok(event)
    }

    /// A page of history from `from` in `dir`, skipping what the reader may
    /// not see. `from` is a stream position; pages never overlap.
    pub async fn messages(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        page: PageRequest,
        filter: &RoomEventFilter,
    ) -> ServiceResult<MessagesPage> {
        let PageRequest {
            from,
            to,
            dir,
            limit,
        } = page;
        let viewer = self.reader(room_id, user_id).await?;
        let head = self.store.events_position().await?;
        let start = from.unwrap_or(match dir {
            Direction::Backward => head,
            Direction::Forward => 0,
        });
        let mut events = Vec::with_capacity(limit);
        let mut cursor = start;
        let mut end = None;
        // Events the reader may not see are skipped; keep reading until the
        // page is full or history runs out, a bounded number of rounds.
        for _ in 0..8 {
            let batch = self
                .store
                .room_events(room_id, cursor, dir, limit.max(1) * 2)
                .await?;
            let exhausted = batch.len() < limit.max(1) * 2;
            let mut full = false;
            for event in batch {
                let past_to = match (dir, to) {
                    (Direction::Backward, Some(to)) => event.stream <= to,
                    (Direction::Forward, Some(to)) => event.stream > to,
                    _ => false,
                };
                if past_to {
                    full = true;
                    end = None;
                    break;
                }
                cursor = match dir {
                    Direction::Backward => event.stream - 1,
                    Direction::Forward => event.stream,
                };
                if viewer.can_see(&event) && filter.matches(&event) {
                    events.push(event);
                }
                end = Some(cursor);
                if events.len() >= limit {
                    full = true;
                    break;
                }
            }
            if full {
                break;
            }
            if exhausted {
                // No more history in this direction.
                end = match dir {
                    Direction::Backward => None,
                    Direction::Forward => Some(cursor),
                };
                break;
            }
        }
        if dir == Direction::Forward && events.is_empty() {
            end = None;
        }
        Ok(MessagesPage {
            events,
            start,
            end,
            state: Vec::new(),
        })
    }

    /// Events around `event_id`: `(before newest first, event, after oldest first)`.
    pub async fn context(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        limit: usize,
    ) -> ServiceResult<(Vec<StoredEvent>, StoredEvent, Vec<StoredEvent>)> {
        let event = self.get_event(user_id, room_id, event_id).await?;
        let viewer = self.viewer(room_id, user_id).await?;
        let half = limit / 2 + limit % 2;
        let mut before = self
            .store
            .room_events(room_id, event.stream - 1, Direction::Backward, half)
            .await?;
        before.retain(|e| viewer.can_see(e));
        let mut after = self
            .store
            .room_events(room_id, event.stream, Direction::Forward, limit / 2)
            .await?;
        after.retain(|e| viewer.can_see(e));
        Ok((before, event, after))
    }

    pub async fn state_event(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        kind: &str,
        state_key: &str,
    ) -> ServiceResult<Value> {
        let state = self.room_state(user_id, room_id).await?;
        state
            .into_iter()
            .find(|e| e.kind == kind && e.state_key.as_deref() == Some(state_key))
            .map(|e| e.pdu.get("content").cloned().unwrap_or(Value::Null))
            .ok_or_else(|| ServiceError::not_found("State event not found"))
    }

    pub async fn member_events(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> ServiceResult<Vec<StoredEvent>> {
        let state = self.room_state(user_id, room_id).await?;
        Ok(state
            .into_iter()
            .filter(|e| e.kind == "m.room.member")
            .collect())
    }

    pub async fn memberships_of(&self, user_id: &UserId) -> ServiceResult<Vec<MembershipRecord>> {
        Ok(self.store.memberships_of_user(user_id).await?)
    }

    pub async fn joined_rooms(&self, user_id: &UserId) -> ServiceResult<Vec<OwnedRoomId>> {
        let mut rooms: Vec<OwnedRoomId> = self
            .store
            .memberships_of_user(user_id)
            .await?
            .into_iter()
            .filter(|m| m.membership == MembershipState::Join)
            .map(|m| m.room_id)
            .collect();
        rooms.sort();
        Ok(rooms)
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_filters_expect() {
        assert!(glob_match("m.room.*", "m.room.message"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("m.room.*", "m.call.invite"));
        assert!(glob_match("m.*.message", "m.room.message"));
    }
}
