//! A room's current state held in memory: what authorization, membership and
//! history-visibility decisions read on every send.

use std::collections::HashMap;

use ruma_common::{OwnedEventId, OwnedServerName, OwnedUserId, ServerName, UserId};
use ruma_events::room::member::MembershipState;
use serde_json::Value;

/// One current state entry.
#[derive(Debug, Clone)]
pub struct StateEntry {
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    pub content: Value,
}

/// Current state keyed by `(type, state_key)`.
#[derive(Debug, Clone, Default)]
pub struct RoomState {
    entries: HashMap<(String, String), StateEntry>,
}

/// `m.room.power_levels` with the spec's defaults filled in.
#[derive(Debug, Clone)]
pub struct PowerLevels {
    pub users: HashMap<String, i64>,
    pub users_default: i64,
    pub events: HashMap<String, i64>,
    pub events_default: i64,
    pub state_default: i64,
    pub ban: i64,
    pub kick: i64,
    pub invite: i64,
    pub redact: i64,
}

fn int_field(content: &Value, key: &str, default: i64) -> i64 {
    content.get(key).and_then(Value::as_i64).unwrap_or(default)
}

fn int_map(content: &Value, key: &str) -> HashMap<String, i64> {
    content
        .get(key)
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_i64().map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default()
}

impl PowerLevels {
    pub fn from_content(content: &Value) -> Self {
        Self {
            users: int_map(content, "users"),
            users_default: int_field(content, "users_default", 0),
            events: int_map(content, "events"),
            events_default: int_field(content, "events_default", 0),
            state_default: int_field(content, "state_default", 50),
            ban: int_field(content, "ban", 50),
            kick: int_field(content, "kick", 50),
            invite: int_field(content, "invite", 0),
            redact: int_field(content, "redact", 50),
        }
    }

    pub fn user_level(&self, user_id: &UserId) -> i64 {
        self.users
            .get(user_id.as_str())
            .copied()
            .unwrap_or(self.users_default)
    }

    /// Level needed to send an event of `kind`.
    pub fn event_level(&self, kind: &str, is_state: bool) -> i64 {
        self.events.get(kind).copied().unwrap_or(if is_state {
            self.state_default
        } else {
            self.events_default
        })
    }
}

impl RoomState {
    pub fn get(&self, kind: &str, state_key: &str) -> Option<&StateEntry> {
        self.entries.get(&(kind.to_owned(), state_key.to_owned()))
    }

    pub fn insert(&mut self, kind: &str, state_key: &str, entry: StateEntry) {
        self.entries
            .insert((kind.to_owned(), state_key.to_owned()), entry);
    }

    pub fn remove(&mut self, kind: &str, state_key: &str) {
        self.entries
            .remove(&(kind.to_owned(), state_key.to_owned()));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&(String, String), &StateEntry)> {
        self.entries.iter()
    }

    fn content_str(&self, kind: &str, key: &str) -> Option<&str> {
        self.get(kind, "")?.content.get(key)?.as_str()
    }

    pub fn membership(&self, user_id: &UserId) -> Option<MembershipState> {
        membership_of(&self.get("m.room.member", user_id.as_str())?.content)
    }

    pub fn is_joined(&self, user_id: &UserId) -> bool {
        self.membership(user_id) == Some(MembershipState::Join)
    }

    /// In room version 11 the creator is the sender of `m.room.create`.
    pub fn creator(&self) -> Option<&UserId> {
        self.get("m.room.create", "").map(|e| e.sender.as_ref())
    }

    pub fn join_rule(&self) -> &str {
        self.content_str("m.room.join_rules", "join_rule")
            .unwrap_or("invite")
    }

    pub fn history_visibility(&self) -> &str {
        self.content_str("m.room.history_visibility", "history_visibility")
            .unwrap_or("shared")
    }

    pub fn power_levels(&self) -> PowerLevels {
        match self.get("m.room.power_levels", "") {
            Some(entry) => PowerLevels::from_content(&entry.content),
            // Before any power levels event the creator alone has power 100.
            None => {
                let mut levels = PowerLevels::from_content(&Value::Null);
                if let Some(creator) = self.creator() {
                    levels.users.insert(creator.to_string(), 100);
                }
                levels
            }
        }
    }

    /// User ids with the given membership.
    pub fn members_with(&self, membership: MembershipState) -> Vec<OwnedUserId> {
        self.entries
            .iter()
            .filter(|((kind, _), e)| {
                kind == "m.room.member" && membership_of(&e.content).as_ref() == Some(&membership)
            })
            .filter_map(|((_, key), _)| UserId::parse(key.as_str()).ok())
            .collect()
    }

    /// The room version its create event names ("1" when it names none).
    pub fn room_version(&self) -> &str {
        self.get("m.room.create", "")
            .and_then(|create| create.content.get("room_version"))
            .and_then(Value::as_str)
            .unwrap_or("1")
    }

    /// Whether the room's server ACL (`m.room.server_acl`) lets `server`
    /// take part; a room without one, or with one that does not parse,
    /// lets every server.
    pub fn server_allowed(&self, server: &ServerName) -> bool {
        self.get("m.room.server_acl", "")
            .and_then(|acl| {
                serde_json::from_value::<ruma_events::room::server_acl::RoomServerAclEventContent>(
                    acl.content.clone(),
                )
                .ok()
            })
            .is_none_or(|acl| acl.is_allowed(server))
    }

    /// The servers of the room's joined members other than `ours`: where
    /// its new events must go.
    pub fn other_servers(&self, ours: &ServerName) -> Vec<OwnedServerName> {
        let mut servers: Vec<OwnedServerName> = self
            .members_with(MembershipState::Join)
            .into_iter()
            .map(|user| user.server_name().to_owned())
            .filter(|server| server != ours)
            .collect();
        servers.sort();
        servers.dedup();
        servers
    }

    /// The `auth_events` of a new event, as room versions 10 and 11 select
    /// them; from version 12 the create event is implied, not listed.
    pub fn auth_event_ids(
        &self,
        kind: &str,
        sender: &UserId,
        state_key: Option<&str>,
        content: &Value,
    ) -> Vec<OwnedEventId> {
        if kind == "m.room.create" {
            return Vec::new();
        }
        let mut keys: Vec<(&str, &str)> = vec![
            ("m.room.create", ""),
            ("m.room.power_levels", ""),
            ("m.room.member", sender.as_str()),
        ];
        if kind == "m.room.member" {
            if let Some(target) = state_key {
                keys.push(("m.room.member", target));
                if matches!(
                    membership_of(content),
                    Some(MembershipState::Join | MembershipState::Invite)
                ) {
                    keys.push(("m.room.join_rules", ""));
                }
            }
        }
        if self.room_version() == "12" {
            keys.retain(|key| *key != ("m.room.create", ""));
        }
        let mut ids: Vec<OwnedEventId> = Vec::with_capacity(keys.len());
        for (k, s) in keys {
            if let Some(entry) = self.get(k, s) {
                if !ids.contains(&entry.event_id) {
                    ids.push(entry.event_id.clone());
                }
            }
        }
        ids
    }
}

/// The `membership` of an `m.room.member` event's content.
pub fn membership_of(content: &Value) -> Option<MembershipState> {
    content
        .get("membership")?
        .as_str()
        .map(MembershipState::from)
}
