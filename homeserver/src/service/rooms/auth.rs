//! The room-version-11 authorization rules, applied to every event this
//! server creates before it is signed and stored.

use ruma_common::UserId;
use ruma_events::room::member::MembershipState;
use serde_json::Value;

use super::state::{membership_of, PowerLevels, RoomState};
use crate::service::error::{ServiceError, ServiceResult};

/// The parts of a proposed event the rules look at.
pub struct Proposed<'a> {
    pub kind: &'a str,
    pub sender: &'a UserId,
    pub state_key: Option<&'a str>,
    pub content: &'a Value,
}

fn deny(reason: impl Into<String>) -> ServiceError {
    ServiceError::forbidden(reason)
}

/// Allows or refuses `event` against the room's current `state`.
pub fn authorize(state: &RoomState, event: &Proposed<'_>) -> ServiceResult<()> {
    if event.kind == "m.room.create" {
        return if state.is_empty() {
            Ok(())
        } else {
            Err(deny("The room already exists"))
        };
    }
    if state.get("m.room.create", "").is_none() {
        return Err(deny("The room has no create event"));
    }
    if event.kind == "m.room.member" {
        return authorize_membership(state, event);
    }
    if !state.is_joined(event.sender) {
        return Err(deny("You are not joined to this room"));
    }
    let levels = state.power_levels();
    let sender_level = levels.user_level(event.sender);
    let is_state = event.state_key.is_some();
    let required = levels.event_level(event.kind, is_state);
    if sender_level < required {
        return Err(deny(format!(
            "You need power level {required} to send {} events",
            event.kind
        )));
    }
    if let Some(key) = event.state_key {
        if key.starts_with('@') && key != event.sender.as_str() {
            return Err(deny("You cannot set state keyed by another user id"));
        }
    }
    if event.kind == "m.room.power_levels" {
        authorize_power_levels(&levels, sender_level, event)?;
    }
    Ok(())
}

fn authorize_membership(state: &RoomState, event: &Proposed<'_>) -> ServiceResult<()> {
    use MembershipState::{Ban, Invite, Join, Knock, Leave};
    let target = event
        .state_key
        .ok_or_else(|| ServiceError::bad_json("Membership events need a state_key"))?;
    let target = <&UserId>::try_from(target)
        .map_err(|_| ServiceError::bad_json("A membership's state_key must be a user id"))?;
    let membership = membership_of(event.content)
        .ok_or_else(|| ServiceError::bad_json("Membership events need content.membership"))?;
    let current = state.membership(target).unwrap_or(Leave);
    let sender_joined = state.is_joined(event.sender);
    let levels = state.power_levels();
    let sender_level = levels.user_level(event.sender);
    let target_level = levels.user_level(target);

    match membership {
        Join => {
            if event.sender != target {
                return Err(deny("You can only join on your own behalf"));
            }
            // The creator's own first join, right after the create event.
            if state.creator() == Some(target)
                && state.get("m.room.member", target.as_str()).is_none()
            {
                return Ok(());
            }
            match (current, state.join_rule()) {
                (Ban, _) => Err(deny("You are banned from this room")),
                (_, "public") | (Invite | Join, _) => Ok(()),
                _ => Err(deny("You are not invited to this room")),
            }
        }
        Invite => {
            if !sender_joined {
                return Err(deny("You are not joined to this room"));
            }
            match current {
                Ban => Err(deny("The user is banned from this room")),
                Join => Err(deny("The user is already in the room")),
                _ if sender_level < levels.invite => {
                    Err(deny("You do not have permission to invite"))
                }
                _ => Ok(()),
            }
        }
        Leave if event.sender == target => match current {
            Join | Invite | Knock => Ok(()),
            Ban => Err(deny("You are banned from this room")),
            _ => Err(deny("You are not in this room")),
        },
        Leave => {
            if !sender_joined {
                return Err(deny("You are not joined to this room"));
            }
            if current == Ban && sender_level < levels.ban {
                return Err(deny("You do not have permission to unban"));
            }
            if current != Ban && (sender_level < levels.kick || target_level >= sender_level) {
                return Err(deny("You do not have permission to kick this user"));
            }
            Ok(())
        }
        Ban => {
            if !sender_joined {
                return Err(deny("You are not joined to this room"));
            }
            if sender_level < levels.ban || target_level >= sender_level {
                return Err(deny("You do not have permission to ban this user"));
            }
            Ok(())
        }
        other => Err(deny(format!("Membership '{other}' is not supported"))),
    }
}

/// Power can only be handed out up to one's own level, and only taken from
/// users below it.
fn authorize_power_levels(
    old: &PowerLevels,
    sender_level: i64,
    event: &Proposed<'_>,
) -> ServiceResult<()> {
    let content = event.content;
    for key in [
        "users_default",
        "events_default",
        "state_default",
        "ban",
        "kick",
        "invite",
        "redact",
    ] {
        if let Some(v) = content.get(key) {
            if !v.is_i64() {
                return Err(ServiceError::bad_json(format!("{key} must be an integer")));
            }
        }
    }
    for key in ["users", "events", "notifications"] {
        if let Some(map) = content.get(key) {
            let ok = map
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_i64));
            if !ok {
                return Err(ServiceError::bad_json(format!(
                    "{key} must map to integers"
                )));
            }
        }
    }
    let new = PowerLevels::from_content(content);
    let pairs = [
        (old.users_default, new.users_default),
        (old.events_default, new.events_default),
        (old.state_default, new.state_default),
        (old.ban, new.ban),
        (old.kick, new.kick),
        (old.invite, new.invite),
        (old.redact, new.redact),
    ];
    for (before, after) in pairs {
        if before != after && (before > sender_level || after > sender_level) {
            return Err(deny("You cannot change a level above your own"));
        }
    }
    let event_keys = old.events.keys().chain(new.events.keys());
    for kind in event_keys {
        let (before, after) = (old.events.get(kind), new.events.get(kind));
        if before != after
            && (before.is_some_and(|&b| b > sender_level)
                || after.is_some_and(|&a| a > sender_level))
        {
            return Err(deny("You cannot change an event level above your own"));
        }
    }
    let user_keys = old.users.keys().chain(new.users.keys());
    for user in user_keys {
        let (before, after) = (old.users.get(user), new.users.get(user));
        if before == after {
            continue;
        }
        if user != event.sender && before.is_some_and(|&b| b >= sender_level) {
            return Err(deny(
                "You cannot change the level of a user at or above yours",
            ));
        }
        if after.is_some_and(|&a| a > sender_level) {
            return Err(deny("You cannot grant a level above your own"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::service::rooms::state::StateEntry;
    use ruma_common::user_id;

    fn room(join_rule: &str) -> RoomState {
        let mut state = RoomState::default();
        let put =
            |state: &mut RoomState, kind: &str, key: &str, sender: &UserId, content: Value| {
                state.insert(
                    kind,
                    key,
                    StateEntry {
                        event_id: ruma_common::EventId::parse(format!("${kind}{key}")).unwrap(),
                        sender: sender.into(),
                        content,
                    },
                )
            };
        put(
            &mut state,
            "m.room.create",
            "",
            user_id!("@admin:t"),
            json!({"room_version": "11"}),
        );
        put(
            &mut state,
            "m.room.member",
            "@admin:t",
            user_id!("@admin:t"),
            json!({"membership": "join"}),
        );
        put(
            &mut state,
            "m.room.member",
            "@mod:t",
            user_id!("@mod:t"),
            json!({"membership": "join"}),
        );
        put(
            &mut state,
            "m.room.member",
            "@user:t",
            user_id!("@user:t"),
            json!({"membership": "join"}),
        );
        put(
            &mut state,
            "m.room.member",
            "@banned:t",
            user_id!("@admin:t"),
            json!({"membership": "ban"}),
        );
        put(
            &mut state,
            "m.room.power_levels",
            "",
            user_id!("@admin:t"),
            json!({"users": {"@admin:t": 100, "@mod:t": 50}, "events": {"m.room.name": 50}}),
        );
        put(
            &mut state,
            "m.room.join_rules",
            "",
            user_id!("@admin:t"),
            json!({"join_rule": join_rule}),
        );
        state
    }

    fn member(sender: &UserId, target: &str, membership: &str) -> ServiceResult<()> {
        member_in(&room("invite"), sender, target, membership)
    }

    fn member_in(
        state: &RoomState,
        sender: &UserId,
        target: &str,
        membership: &str,
    ) -> ServiceResult<()> {
        let content = json!({"membership": membership});
        authorize(
            state,
            &Proposed {
                kind: "m.room.member",
                sender,
                state_key: Some(target),
                content: &content,
            },
        )
    }

    #[test]
    fn joins_follow_join_rules_and_bans() {
        assert!(member(user_id!("@new:t"), "@new:t", "join").is_err());
        assert!(member_in(&room("public"), user_id!("@new:t"), "@new:t", "join").is_ok());
        assert!(member_in(&room("public"), user_id!("@banned:t"), "@banned:t", "join").is_err());
        assert!(member(user_id!("@user:t"), "@new:t", "join").is_err());
    }

    #[test]
    fn kicks_and_bans_need_power_over_the_target() {
        assert!(member(user_id!("@user:t"), "@mod:t", "leave").is_err());
        assert!(member(user_id!("@mod:t"), "@user:t", "leave").is_ok());
        assert!(member(user_id!("@mod:t"), "@admin:t", "ban").is_err());
        assert!(member(user_id!("@admin:t"), "@mod:t", "ban").is_ok());
        assert!(member(user_id!("@user:t"), "@banned:t", "leave").is_err());
        assert!(member(user_id!("@mod:t"), "@banned:t", "leave").is_ok());
        assert!(member(user_id!("@user:t"), "@user:t", "leave").is_ok());
        assert!(member(user_id!("@banned:t"), "@banned:t", "leave").is_err());
    }

    #[test]
    fn invites_need_a_joined_sender() {
        assert!(member(user_id!("@user:t"), "@new:t", "invite").is_ok());
        assert!(member(user_id!("@outsider:t"), "@new:t", "invite").is_err());
        assert!(member(user_id!("@user:t"), "@banned:t", "invite").is_err());
    }

    #[test]
    fn state_and_messages_need_levels() {
        let state = room("invite");
        let content = json!({"name": "x"});
        let name = |sender| Proposed {
            kind: "m.room.name",
            sender,
            state_key: Some(""),
            content: &content,
        };
        assert!(authorize(&state, &name(user_id!("@user:t"))).is_err());
        assert!(authorize(&state, &name(user_id!("@mod:t"))).is_ok());
        let body = json!({"body": "hi"});
        let msg = |sender| Proposed {
            kind: "m.room.message",
            sender,
            state_key: None,
            content: &body,
        };
        assert!(authorize(&state, &msg(user_id!("@user:t"))).is_ok());
        assert!(authorize(&state, &msg(user_id!("@outsider:t"))).is_err());
    }

    #[test]
    fn power_cannot_exceed_the_sender() {
        let state = room("invite");
        let grant = json!({"users": {"@admin:t": 100, "@mod:t": 50, "@user:t": 100}});
        let ev = Proposed {
            kind: "m.room.power_levels",
            sender: user_id!("@mod:t"),
            state_key: Some(""),
            content: &grant,
        };
        assert!(authorize(&state, &ev).is_err());
        let ok = json!({"users": {"@admin:t": 100, "@mod:t": 50, "@user:t": 50}, "events": {"m.room.name": 50}, "state_default": 50});
        let ev = Proposed {
            kind: "m.room.power_levels",
            sender: user_id!("@admin:t"),
            state_key: Some(""),
            content: &ok,
        };
        assert!(authorize(&state, &ev).is_ok());
    }
}
