//! The `/sync` response. Sections a client expects are always present,
//! empty if need be; only the joined rooms' unread counts are Tern's to
//! compute, the rest is the spec's shape.

use std::collections::BTreeMap;

use ruma_common::{OwnedRoomId, OwnedUserId};
use serde::Serialize;
use serde_json::Value;

use crate::service::e2ee::to_device::ToDeviceEvent;
use crate::service::presence::PresenceEvent;
use crate::service::unread::UnreadCounts;

#[derive(Debug, Default, Serialize)]
pub struct SyncResponse {
    pub next_batch: String,
    pub rooms: Rooms,
    pub account_data: Events,
    pub presence: Events<PresenceEvent>,
    pub to_device: Events<ToDeviceEvent>,
    pub device_lists: DeviceLists,
    pub device_one_time_keys_count: BTreeMap<String, u64>,
    pub device_unused_fallback_key_types: Vec<String>,
}

/// Rooms by id; `knock` stays empty (Tern has no knocking).
#[derive(Debug, Default, Serialize)]
pub struct Rooms {
    pub join: BTreeMap<OwnedRoomId, JoinedRoom>,
    pub invite: BTreeMap<OwnedRoomId, InvitedRoom>,
    pub leave: BTreeMap<OwnedRoomId, LeftRoom>,
    pub knock: BTreeMap<OwnedRoomId, Value>,
}

/// `{"events": [...]}`: client-format events unless `T` says otherwise.
#[derive(Debug, Serialize)]
pub struct Events<T = Value> {
    pub events: Vec<T>,
}

impl<T> Default for Events<T> {
    fn default() -> Self {
        Self { events: Vec::new() }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct DeviceLists {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

#[derive(Debug, Default, Serialize)]
pub struct JoinedRoom {
    pub timeline: Timeline,
    pub state: Events,
    pub ephemeral: Events,
    pub account_data: Events,
    pub unread_notifications: UnreadCounts,
}

#[derive(Debug, Default, Serialize)]
pub struct Timeline {
    pub events: Vec<Value>,
    pub limited: bool,
    pub prev_batch: String,
}

#[derive(Debug, Serialize)]
pub struct InvitedRoom {
    pub invite_state: Events<StrippedState>,
}

/// A state event of an invite, stripped to what a client shows it by.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct StrippedState {
    #[serde(rename = "type")]
    pub kind: String,
    pub state_key: Option<String>,
    pub sender: OwnedUserId,
    pub content: Value,
}

#[derive(Debug, Default, Serialize)]
pub struct LeftRoom {
    pub timeline: Timeline,
    pub state: Events,
    pub account_data: Events,
}
