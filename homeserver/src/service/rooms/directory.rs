//! Room aliases and the public room directory.

use ruma_common::{OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, UserId};
use ruma_events::room::member::MembershipState;
use serde::Serialize;
use serde_json::Value;

use super::{Requester, RoomService};
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::store::StoreError;

/// A room of the public directory, as `/publicRooms` lists it. The texts
/// are the state events' as given, absent when unset.
#[derive(Serialize)]
pub struct PublicRoom {
    pub room_id: OwnedRoomId,
    pub num_joined_members: usize,
    pub world_readable: bool,
    pub guest_can_join: bool,
    pub join_rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_alias: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<Value>,
}

impl RoomService {
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> ServiceResult<OwnedRoomId> {
        self.store
            .get_alias(alias)
            .await?
            .map(|(room_id, _)| room_id)
            .ok_or_else(|| ServiceError::not_found("Room alias not found"))
    }

    /// Any member of a room may point a local alias at it.
    pub async fn create_alias(
        &self,
        who: &Requester,
        alias: &RoomAliasId,
        room_id: &RoomId,
    ) -> ServiceResult<()> {
        if alias.server_name() != self.server_name {
            return Err(ServiceError::invalid_param("Alias must be on this server"));
        }
        let state = self.known_state(room_id).await?;
        if !state.is_joined(&who.user_id) {
            return Err(ServiceError::forbidden("You are not joined to this room"));
        }
        self.store
            .set_alias(alias, room_id, &who.user_id)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => {
                    ServiceError::new(ErrorKind::RoomInUse, "Room alias already exists")
                }
                other => other.into(),
            })
    }

    /// The alias creator or a room moderator may delete an alias.
    pub async fn delete_alias(&self, who: &Requester, alias: &RoomAliasId) -> ServiceResult<()> {
        let (room_id, creator) = self
            .store
            .get_alias(alias)
            .await?
            .ok_or_else(|| ServiceError::not_found("Room alias not found"))?;
        if creator != who.user_id {
            let state = self.state_snapshot(&room_id).await?.unwrap_or_default();
            let levels = state.power_levels();
            if levels.user_level(&who.user_id) < levels.event_level("m.room.canonical_alias", true)
            {
                return Err(ServiceError::forbidden("You may not delete this alias"));
            }
        }
        self.store.delete_alias(alias).await?;
        Ok(())
    }

    pub async fn room_aliases(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> ServiceResult<Vec<OwnedRoomAliasId>> {
        self.room_state(user_id, room_id).await?;
        Ok(self.store.aliases_of_room(room_id).await?)
    }

    /// One page of the public directory and the total number of public rooms.
    pub async fn public_rooms(
        &self,
        offset: usize,
        limit: usize,
    ) -> ServiceResult<(Vec<PublicRoom>, usize)> {
        let rooms = self.store.public_rooms().await?;
        let total = rooms.len();
        let mut chunk = Vec::new();
        for room_id in rooms.into_iter().skip(offset).take(limit) {
            let Some(state) = self.state_snapshot(&room_id).await? else {
                continue;
            };
            let text = |kind: &str, key: &str| {
                state
                    .get(kind, "")
                    .and_then(|e| e.content.get(key))
                    .filter(|v| !v.is_null())
                    .cloned()
            };
            chunk.push(PublicRoom {
                num_joined_members: state.members_with(MembershipState::Join).len(),
                world_readable: state.history_visibility() == "world_readable",
                guest_can_join: text("m.room.guest_access", "guest_access")
                    .is_some_and(|v| v == "can_join"),
                join_rule: state.join_rule().to_owned(),
                name: text("m.room.name", "name"),
                topic: text("m.room.topic", "topic"),
                canonical_alias: text("m.room.canonical_alias", "alias"),
                avatar_url: text("m.room.avatar", "url"),
                room_id,
            });
        }
        Ok((chunk, total))
    }

    /// Whether the room is listed in the public directory; `M_NOT_FOUND`
    /// for a room this server does not know.
    pub async fn is_listed(&self, room_id: &RoomId) -> ServiceResult<bool> {
        if self.state_snapshot(room_id).await?.is_none() {
            return Err(ServiceError::not_found("Unknown room"));
        }
        Ok(self
            .store
            .public_rooms()
            .await?
            .iter()
            .any(|r| r == room_id))
    }

    /// Lists or unlists a room: a joined member with the power to name the
    /// room's canonical alias may, as for the alias itself.
    pub async fn set_listed(
        &self,
        who: &Requester,
        room_id: &RoomId,
        public: bool,
    ) -> ServiceResult<()> {
        let state = self
            .state_snapshot(room_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Unknown room"))?;
        if !state.is_joined(&who.user_id) {
            return Err(ServiceError::forbidden("You are not joined to this room"));
        }
        let levels = state.power_levels();
        if levels.user_level(&who.user_id) < levels.event_level("m.room.canonical_alias", true) {
            return Err(ServiceError::forbidden(
                "You may not change this room's listing",
            ));
        }
        Ok(self.store.set_room_public(room_id, public).await?)
    }
}
