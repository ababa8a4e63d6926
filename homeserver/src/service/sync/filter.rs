//! The parts of the spec's sync `Filter` this server applies.

use ruma_common::RoomId;
use serde::Deserialize;

use crate::service::rooms::RoomEventFilter;

/// Timeline length when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Largest timeline a filter may ask for.
const MAX_TIMELINE_LIMIT: usize = 1000;

/// The spec's `Filter` (the parts this server applies).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub room: RoomFilter,
    #[serde(default)]
    pub account_data: RoomEventFilter,
    #[serde(default)]
    pub presence: RoomEventFilter,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoomFilter {
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Option<Vec<String>>,
    #[serde(default)]
    pub timeline: RoomEventFilter,
    #[serde(default)]
    pub state: RoomEventFilter,
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
