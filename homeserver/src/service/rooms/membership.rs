//! Membership changes and state updates requested by clients.

use ruma_common::{
    OwnedEventId, OwnedRoomId, OwnedServerName, RoomAliasId, RoomId, RoomOrAliasId, UserId,
};
use ruma_events::room::member::MembershipState;
use serde_json::{json, Value};

use super::{EventRequest, Requester, RoomService};
use crate::service::error::{ServiceError, ServiceResult};

impl RoomService {
    /// The room an id or alias names, and servers that hold it (those a
    /// remote alias names).
    async fn resolve_room_and_servers(
        &self,
        room: &RoomOrAliasId,
    ) -> ServiceResult<(OwnedRoomId, Vec<OwnedServerName>)> {
        match (<&RoomAliasId>::try_from(room), &self.federation) {
            (Ok(alias), Some(federation)) if alias.server_name() != self.server_name => {
                federation.query_alias(alias).await
            }
            _ => Ok((self.resolve_room(room).await?, Vec::new())),
        }
    }

    /// Resolves `#alias:server` or returns the room id unchanged.
    pub async fn resolve_room(&self, room: &RoomOrAliasId) -> ServiceResult<OwnedRoomId> {
        match <&RoomId>::try_from(room) {
            Ok(room_id) => Ok(room_id.to_owned()),
            Err(alias) => {
                let (room_id, _) = self
                    .store
                    .get_alias(alias)
                    .await?
                    .ok_or_else(|| ServiceError::not_found("Room alias not found"))?;
                Ok(room_id)
            }
        }
    }

    async fn member_content(
        &self,
        user_id: &UserId,
        membership: MembershipState,
        reason: Option<&str>,
    ) -> ServiceResult<Value> {
        let join = membership == MembershipState::Join;
        let mut content = json!({ "membership": membership });
        if join {
            if let Some(profile) = self.accounts.get_user(user_id).await? {
                if let Some(name) = profile.displayname {
                    content["displayname"] = json!(name);
                }
                if let Some(url) = profile.avatar_url {
                    content["avatar_url"] = json!(url);
                }
            }
        }
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        Ok(content)
    }

    async fn set_membership(
        &self,
        who: &Requester,
        room_id: &RoomId,
        target: &UserId,
        membership: MembershipState,
        reason: Option<&str>,
        extra: Option<(&str, Value)>,
    ) -> ServiceResult<OwnedEventId> {
        let mut content = self.member_content(target, membership, reason).await?;
        if let Some((key, value)) = extra {
            content[key] = value;
        }
        let request = EventRequest {
            kind: "m.room.member".into(),
            state_key: Some(target.to_string()),
            content,
        };
        self.send_event(who, room_id, request, None).await
    }

    /// Joins a room by id or alias; joining a room one is in again is a no-op.
    /// Joins `who` to a room (by id or alias). A room this server does not
    /// hold is joined through another server: `via`, the alias's server, or
    /// the room id's.
    pub async fn join(
        &self,
        who: &Requester,
        room: &RoomOrAliasId,
        reason: Option<&str>,
        via: &[OwnedServerName],
    ) -> ServiceResult<OwnedRoomId> {
        let (room_id, mut servers) = self.resolve_room_and_servers(room).await?;
        if self.federation.is_some() && !self.holds(&room_id).await? {
            servers.extend(via.iter().cloned());
            return self.join_remote(who, &room_id, servers).await;
        }
        let state = self.known_state(&room_id).await?;
        if state.is_joined(&who.user_id) {
            return Ok(room_id);
        }
        self.set_membership(
            who,
            &room_id,
            &who.user_id,
            MembershipState::Join,
            reason,
            None,
        )
        .await?;
        Ok(room_id)
    }

    pub async fn invite(
        &self,
        who: &Requester,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<&str>,
    ) -> ServiceResult<()> {
        if target.server_name() == self.server_name
            && self.accounts.get_user(target).await?.is_none()
        {
            return Err(ServiceError::not_found("Unknown user"));
        }
        let is_direct = self.is_direct_room(room_id, &who.user_id).await?;
        if target.server_name() != self.server_name && self.federation.is_some() {
            let mut content = self
                .member_content(target, MembershipState::Invite, reason)
                .await?;
            if is_direct {
                content["is_direct"] = json!(true);
            }
            return self.invite_remote(who, room_id, target, content).await;
        }
        let extra = is_direct.then_some(("is_direct", json!(true)));
        self.set_membership(who, room_id, target, MembershipState::Invite, reason, extra)
            .await?;
        Ok(())
    }

    /// A room counts as direct for invites if the inviter's own membership says so.
    async fn is_direct_room(&self, room_id: &RoomId, user_id: &UserId) -> ServiceResult<bool> {
        let state = self.state_snapshot(room_id).await?;
        Ok(state
            .and_then(|s| s.get("m.room.member", user_id.as_str()).cloned())
            .and_then(|e| e.content.get("is_direct").and_then(Value::as_bool))
            .unwrap_or(false))
    }

    pub async fn leave(
        &self,
        who: &Requester,
        room_id: &RoomId,
        reason: Option<&str>,
    ) -> ServiceResult<()> {
        let state = self.known_state(room_id).await?;
        let held = state.get("m.room.create", "").is_some();
        match state.membership(&who.user_id) {
            // Leaving a room one already left succeeds quietly, as in Synapse.
            None | Some(MembershipState::Leave) => Ok(()),
            // Invited to a room we do not hold: the answer goes through
            // the inviter's server.
            Some(_) if !held && self.federation.is_some() => self.leave_remote(who, room_id).await,
            _ => {
                let leave = MembershipState::Leave;
                self.set_membership(who, room_id, &who.user_id, leave, reason, None)
                    .await?;
                Ok(())
            }
        }
    }

    pub async fn kick(
        &self,
        who: &Requester,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<&str>,
    ) -> ServiceResult<()> {
        let state = self.known_state(room_id).await?;
        use MembershipState::{Invite, Join, Knock};
        if !matches!(state.membership(target), Some(Join | Invite | Knock)) {
            return Err(ServiceError::forbidden("The user is not in the room"));
        }
        self.set_membership(who, room_id, target, MembershipState::Leave, reason, None)
            .await?;
        Ok(())
    }

    pub async fn ban(
        &self,
        who: &Requester,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<&str>,
    ) -> ServiceResult<()> {
        self.set_membership(who, room_id, target, MembershipState::Ban, reason, None)
            .await?;
        Ok(())
    }

    pub async fn unban(
        &self,
        who: &Requester,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<&str>,
    ) -> ServiceResult<()> {
        let state = self.known_state(room_id).await?;
        if state.membership(target) != Some(MembershipState::Ban) {
            return Err(ServiceError::forbidden("The user is not banned"));
        }
        self.set_membership(who, room_id, target, MembershipState::Leave, reason, None)
            .await?;
        Ok(())
    }

    /// `POST /forget`: a room the user left (or was banned from) is hidden
    /// from their syncs and history reads until they are invited or join
    /// again. Nothing to do for a room they were never in.
    pub async fn forget(&self, who: &Requester, room_id: &RoomId) -> ServiceResult<()> {
        let history = self.store.membership_history(room_id, &who.user_id).await?;
        match history.last() {
            Some((_, MembershipState::Leave | MembershipState::Ban)) | None => {}
            Some(_) => {
                return Err(ServiceError::invalid_param(
                    "You must leave the room before forgetting it",
                ))
            }
        }
        if let Some((stream, _)) = history.last() {
            self.accounts
                .forget_room(&who.user_id, room_id, *stream)
                .await?;
        }
        Ok(())
    }

    /// Sends a state event (`PUT /state/{type}/{stateKey}`).
    pub async fn set_state(
        &self,
        who: &Requester,
        room_id: &RoomId,
        kind: &str,
        state_key: &str,
        content: Value,
    ) -> ServiceResult<OwnedEventId> {
        if kind == "m.room.create" {
            return Err(ServiceError::forbidden("m.room.create cannot be sent"));
        }
        if kind == "m.room.member" && UserId::parse(state_key).is_err() {
            return Err(ServiceError::invalid_param(format!(
                "'{state_key}' is not a valid user id"
            )));
        }
        if kind == "m.room.canonical_alias" {
            self.check_canonical_alias(room_id, &content).await?;
        }
        let request = EventRequest {
            kind: kind.into(),
            state_key: Some(state_key.into()),
            content,
        };
        self.send_event(who, room_id, request, None).await
    }

    async fn check_canonical_alias(&self, room_id: &RoomId, content: &Value) -> ServiceResult<()> {
        let mut aliases: Vec<&str> = Vec::new();
        if let Some(alias) = content.get("alias") {
            aliases.push(
                alias
                    .as_str()
                    .ok_or_else(|| ServiceError::bad_json("alias must be a string"))?,
            );
        }
        let not_here = |alias: &str| {
            ServiceError::bad_json(format!("Alias {alias} does not point to this room"))
        };
        if let Some(alts) = content.get("alt_aliases") {
            let alts = alts
                .as_array()
                .ok_or_else(|| ServiceError::bad_json("alt_aliases must be a list"))?;
            for alt in alts {
                aliases.push(
                    alt.as_str()
                        .ok_or_else(|| ServiceError::bad_json("alt_aliases must be strings"))?,
                );
            }
        }
        for alias in aliases {
            let parsed = <&RoomAliasId>::try_from(alias).map_err(|_| not_here(alias))?;
            match self.store.get_alias(parsed).await? {
                Some((target, _)) if target == room_id => {}
                _ => return Err(not_here(alias)),
            }
        }
        Ok(())
    }

    /// Re-sends the user's join events with a new profile in every joined room.
    pub async fn update_profile_in_rooms(&self, who: &Requester) -> ServiceResult<()> {
        let rooms = self.store.memberships_of_user(&who.user_id).await?;
        let joined = rooms
            .into_iter()
            .filter(|m| m.membership == MembershipState::Join);
        for room in joined {
            let join = MembershipState::Join;
            let content = self.member_content(&who.user_id, join, None).await?;
            let request = EventRequest {
                kind: "m.room.member".into(),
                state_key: Some(who.user_id.to_string()),
                content,
            };
            if let Err(err) = self.send_event(who, &room.room_id, request, None).await {
                tracing::warn!(room = %room.room_id, error = %err, "profile update not sent");
            }
        }
        Ok(())
    }

    /// Leaves every room the user is in or invited to, as a deactivated
    /// account must; a room that refuses is logged, the rest still go.
    pub async fn part_all(&self, who: &Requester) -> ServiceResult<()> {
        let rooms = self.store.memberships_of_user(&who.user_id).await?;
        let current = rooms.into_iter().filter(|m| {
            matches!(
                m.membership,
                MembershipState::Join | MembershipState::Invite | MembershipState::Knock
            )
        });
        for room in current {
            if let Err(err) = self.leave(who, &room.room_id, None).await {
                tracing::warn!(room = %room.room_id, error = %err, "deactivated user not parted");
            }
        }
        Ok(())
    }
}
