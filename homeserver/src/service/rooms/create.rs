//! `createRoom`: the whole initial state goes out as one atomic append.

use ruma_common::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use ruma_events::room::member::MembershipState;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{EventRequest, Requester, RoomService};
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::service::identifiers::is_valid_localpart;
use crate::service::pdu::ROOM_VERSION;

#[derive(Debug, Default, Deserialize)]
pub struct InitialStateEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub state_key: String,
    pub content: Value,
}

/// The body of `POST /createRoom` (unknown fields are ignored, as the spec allows).
#[derive(Debug, Default, Deserialize)]
pub struct CreateRoomRequest {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub preset: Option<String>,
    #[serde(default)]
    pub invite: Vec<String>,
    #[serde(default)]
    pub is_direct: bool,
    #[serde(default)]
    pub initial_state: Vec<InitialStateEvent>,
    pub power_level_content_override: Option<Map<String, Value>>,
    pub room_alias_name: Option<String>,
    pub visibility: Option<String>,
    pub room_version: Option<String>,
    pub creation_content: Option<Map<String, Value>>,
}

fn state(kind: &str, key: &str, content: Value) -> EventRequest {
    EventRequest {
        kind: kind.into(),
        state_key: Some(key.into()),
        content,
    }
}

impl RoomService {
    /// Creates a room with its initial state and invites; returns its id.
    pub async fn create_room(
        &self,
        who: &Requester,
        request: CreateRoomRequest,
    ) -> ServiceResult<OwnedRoomId> {
        if let Some(version) = &request.room_version {
            if version != ROOM_VERSION {
                return Err(ServiceError::new(
                    ErrorKind::UnsupportedRoomVersion,
                    format!("Only room version {ROOM_VERSION} is supported"),
                ));
            }
        }
        let public = match request.visibility.as_deref() {
            None | Some("private") => false,
            Some("public") => true,
            Some(_) => {
                return Err(ServiceError::bad_json(
                    "visibility must be public or private",
                ))
            }
        };
        let preset = match request.preset.as_deref() {
            Some(p @ ("private_chat" | "public_chat" | "trusted_private_chat")) => p,
            Some(_) => return Err(ServiceError::bad_json("Unknown preset")),
            None if public => "public_chat",
            None => "private_chat",
        };
        let invite = request
            .invite
            .iter()
            .map(|user| {
                UserId::parse(user.as_str()).map_err(|_| {
                    ServiceError::invalid_param(format!("'{user}' is not a valid user id"))
                })
            })
            .collect::<ServiceResult<Vec<_>>>()?;
        let alias = match &request.room_alias_name {
            Some(name) => Some(
                RoomAliasId::parse(format!("#{name}:{}", self.server_name))
                    .ok()
                    .filter(|_| is_valid_localpart(name))
                    .ok_or_else(|| ServiceError::invalid_param("Invalid room alias name"))?,
            ),
            None => None,
        };

        // Room version 11 ids: `!` + 18 random alphanumerics + `:server`.
        let room_id = RoomId::new_v1(&self.server_name);
        if let Some(alias) = &alias {
            self.store
                .set_alias(alias, &room_id, &who.user_id)
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::Conflict => {
                        ServiceError::new(ErrorKind::RoomInUse, "Room alias already taken")
                    }
                    other => other.into(),
                })?;
        }
        self.store
            .create_room(&room_id, ROOM_VERSION, &who.user_id)
            .await?;
        if public {
            self.store.set_room_public(&room_id, true).await?;
        }

        let events = self
            .initial_events(who, &request, &invite, preset, alias.as_deref())
            .await?;
        self.submit(&room_id, &who.user_id, events, None, true)
            .await?;
        Ok(room_id)
    }

    async fn initial_events(
        &self,
        who: &Requester,
        request: &CreateRoomRequest,
        invite: &[OwnedUserId],
        preset: &str,
        alias: Option<&RoomAliasId>,
    ) -> ServiceResult<Vec<EventRequest>> {
        let creator = &who.user_id;
        let mut create = request.creation_content.clone().unwrap_or_default();
        create.insert("room_version".into(), json!(ROOM_VERSION));
        create.remove("creator");
        let mut events = vec![state("m.room.create", "", Value::Object(create))];

        let profile = self.accounts.get_user(creator).await?;
        let mut join = json!({"membership": MembershipState::Join});
        if let Some(p) = &profile {
            if let Some(name) = &p.displayname {
                join["displayname"] = json!(name);
            }
            if let Some(url) = &p.avatar_url {
                join["avatar_url"] = json!(url);
            }
        }
        events.push(state("m.room.member", creator.as_str(), join));

        let mut users = Map::new();
        users.insert(creator.to_string(), json!(100));
        if preset == "trusted_private_chat" {
            for invitee in invite {
                users.insert(invitee.to_string(), json!(100));
            }
        }
        let mut levels = json!({
            "users": users, "users_default": 0, "events_default": 0, "state_default": 50,
            "ban": 50, "kick": 50, "redact": 50, "invite": 0,
            "events": {
                "m.room.name": 50, "m.room.power_levels": 100,
                "m.room.history_visibility": 100, "m.room.canonical_alias": 50,
                "m.room.avatar": 50, "m.room.tombstone": 100, "m.room.server_acl": 100,
                "m.room.encryption": 100
            },
            "notifications": {"room": 50}
        });
        if let Some(overrides) = &request.power_level_content_override {
            for (key, value) in overrides {
                levels[key] = value.clone();
            }
        }
        events.push(state("m.room.power_levels", "", levels));
        if let Some(alias) = alias {
            events.push(state("m.room.canonical_alias", "", json!({"alias": alias})));
        }
        let join_rule = if preset == "public_chat" {
            "public"
        } else {
            "invite"
        };
        events.push(state(
            "m.room.join_rules",
            "",
            json!({"join_rule": join_rule}),
        ));
        events.push(state(
            "m.room.history_visibility",
            "",
            json!({"history_visibility": "shared"}),
        ));
        let guest = if preset == "public_chat" {
            "forbidden"
        } else {
            "can_join"
        };
        events.push(state(
            "m.room.guest_access",
            "",
            json!({"guest_access": guest}),
        ));
        for initial in &request.initial_state {
            if initial.kind == "m.room.member" || initial.kind == "m.room.create" {
                return Err(ServiceError::bad_json(
                    "initial_state cannot set membership or m.room.create",
                ));
            }
            events.push(state(
                &initial.kind,
                &initial.state_key,
                initial.content.clone(),
            ));
        }
        if let Some(name) = &request.name {
            events.push(state("m.room.name", "", json!({"name": name})));
        }
        if let Some(topic) = &request.topic {
            events.push(state("m.room.topic", "", json!({"topic": topic})));
        }
        for invitee in invite {
            if invitee == creator {
                continue;
            }
            if invitee.server_name() == self.server_name
                && self.accounts.get_user(invitee).await?.is_none()
            {
                return Err(ServiceError::not_found(format!(
                    "User {invitee} does not exist"
                )));
            }
            let mut content = json!({"membership": MembershipState::Invite});
            if request.is_direct {
                content["is_direct"] = json!(true);
            }
            events.push(state("m.room.member", invitee.as_str(), content));
        }
        Ok(events)
    }
}
