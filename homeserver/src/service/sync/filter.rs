//! The parts of the spec's sync `Filter` this server applies.

use ruma_common::RoomId;
use serde::Deserialize;

use crate::service::rooms::{present, RoomEventFilter};

/// Timeline length when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Largest timeline a filter may ask for.
const MAX_TIMELINE_LIMIT: usize = 1000;

/// The spec's `Filter`. Typed in full so that an upload the spec would not
/// accept is refused before it is stored (it is handed back verbatim).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub room: RoomFilter,
    #[serde(default)]
    pub account_data: RoomEventFilter,
    #[serde(default)]
    pub presence: RoomEventFilter,
    #[serde(default, deserialize_with = "present")]
    pub event_fields: Option<Vec<String>>,
    #[serde(default)]
    pub event_format: EventFormat,
}

/// How events are shaped; only `client` is served, `federation` is accepted
/// and answered in the client shape, as the spec lets a server do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    #[default]
    Client,
    Federation,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoomFilter {
    #[serde(default, deserialize_with = "present")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub not_rooms: Option<Vec<String>>,
    #[serde(default)]
    pub timeline: RoomEventFilter,
    #[serde(default)]
    pub state: RoomEventFilter,
    #[serde(default)]
    pub ephemeral: RoomEventFilter,
    #[serde(default)]
    pub account_data: RoomEventFilter,
    #[serde(default)]
    pub include_leave: bool,
}

impl Filter {
    pub(super) fn allows_room(&self, room_id: &RoomId) -> bool {
        let has = |l: &Option<Vec<String>>| l.as_ref().map(|l| l.iter().any(|r| room_id == r));
        has(&self.room.not_rooms) != Some(true)
            && has(&self.room.rooms) != Some(false)
            && self.room.timeline.allows_room(room_id)
    }

    pub(super) fn timeline_limit(&self) -> usize {
        match self.room.timeline.limit {
            Some(n) if n >= 1 => (n as usize).min(MAX_TIMELINE_LIMIT),
            _ => DEFAULT_TIMELINE_LIMIT,
        }
    }
}
