//! Evaluating rulesets against one event for many recipients.
//!
//! The event is flattened once (`FlattenedJson`) and the room's power-level
//! context is built once; only the recipient's ruleset, user id and display
//! name change per recipient. Conditions are ruma's, except
//! `contains_display_name`: ruma treats `*` and `?` in a display name as
//! wildcards (a user named `*` would be highlighted by every message), so it
//! is matched here literally, on word boundaries, as Synapse does.

use std::collections::{BTreeMap, HashMap};

use js_int::{Int, UInt};
use ruma_common::power_levels::NotificationPowerLevels;
use ruma_common::push::{
    Action, AnyPushRuleRef, ConditionalPushRule, FlattenedJson, PushCondition,
    PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset,
};
use ruma_common::room_version_rules::{AuthorizationRules, RoomPowerLevelsRules};
use ruma_common::serde::Raw;
use ruma_common::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::Value;

use super::defaults::{CONTAINS_DISPLAY_NAME, ROOM_NOTIF};

/// What the rules decided for one recipient of one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// The event counts as a notification (unread badge, push).
    pub notify: bool,
    /// The event should be highlighted (mention).
    pub highlight: bool,
    /// The sound tweak, e.g. `"default"` or `"ring"`.
    pub sound: Option<String>,
}

impl PushOutcome {
    /// Tweaks only count on a notifying rule (as in Synapse): a rule of
    /// `[{"set_tweak": "highlight"}]` alone neither notifies nor highlights.
    pub fn from_actions(actions: &[Action]) -> Self {
        if !actions.iter().any(Action::should_notify) {
            return Self::default();
        }
        Self {
            notify: true,
            highlight: actions.iter().any(Action::is_highlight),
            sound: actions
                .iter()
                .find_map(Action::sound)
                .map(|sound| sound.as_str().to_owned()),
        }
    }
}

/// The room facts push conditions read, as of the event.
#[derive(Debug, Clone)]
pub struct RoomPushContext {
    pub room_id: OwnedRoomId,
    /// Joined members (`room_member_count`).
    pub member_count: u64,
    /// `None` when the room has no `m.room.power_levels`: conditions on the
    /// sender's power (`@room`) then never match.
    pub power_levels: Option<PushPowerLevels>,
}

/// The parts of `m.room.power_levels` that `sender_notification_permission` reads.
#[derive(Debug, Clone)]
pub struct PushPowerLevels {
    pub users: HashMap<String, i64>,
    pub users_default: i64,
    /// `notifications.room`, the level needed for `@room` (default 50).
    pub notifications_room: i64,
}

impl PushPowerLevels {
    /// Reads an `m.room.power_levels` content, with the spec's defaults.
    pub fn from_content(content: &Value) -> Self {
        let users = content
            .get("users")
            .and_then(Value::as_object)
            .map(|users| {
                users
                    .iter()
                    .filter_map(|(user, level)| level.as_i64().map(|l| (user.clone(), l)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            users,
            users_default: content
                .get("users_default")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            notifications_room: content
                .pointer("/notifications/room")
                .and_then(Value::as_i64)
                .unwrap_or(50),
        }
    }
}

/// One event prepared for evaluation against any number of rulesets.
pub struct PreparedEvent {
    flat: FlattenedJson,
    sender: Option<String>,
    body: Option<String>,
    has_mentions: bool,
    room_id: Option<OwnedRoomId>,
    member_count: UInt,
    power_levels: Option<PushConditionPowerLevelsCtx>,
}

impl PreparedEvent {
    /// Flattens the event and builds the room context once.
    pub fn new(event: &Value, room: &RoomPushContext) -> Self {
        let flat = match Raw::<Value>::new(event) {
            Ok(raw) => FlattenedJson::from_raw(&raw),
            Err(_) => FlattenedJson::from_raw(&Raw::<Value>::new(&Value::Null).expect("null")),
        };
        let sender = flat.get_str("sender").map(str::to_owned);
        let body = flat.get_str("content.body").map(str::to_owned);
        let has_mentions = flat.contains_mentions();
        let power_levels = room.power_levels.as_ref().map(|pl| {
            // Only the sender's level is ever read: copy just that one.
            let users: BTreeMap<OwnedUserId, Int> = sender
                .as_deref()
                .and_then(|s| OwnedUserId::try_from(s).ok())
                .and_then(|s| {
                    let level = *pl.users.get(s.as_str())?;
                    Some((s, Int::new_saturating(level)))
                })
                .into_iter()
                .collect();
            let mut notifications = NotificationPowerLevels::new();
            notifications.room = Int::new_saturating(pl.notifications_room);
            PushConditionPowerLevelsCtx::new(
                users,
                Int::new_saturating(pl.users_default),
                notifications,
                RoomPowerLevelsRules::new(&AuthorizationRules::V11, []),
            )
        });
        Self {
            flat,
            sender,
            body,
            has_mentions,
            room_id: OwnedRoomId::try_from(room.room_id.as_str()).ok(),
            member_count: UInt::new_saturating(room.member_count),
            power_levels,
        }
    }

    /// The first matching rule's actions for `user_id`, as an outcome.
    pub async fn evaluate(
        &self,
        ruleset: &Ruleset,
        user_id: &UserId,
        display_name: &str,
    ) -> PushOutcome {
        let Some(room_id) = &self.room_id else {
            return PushOutcome::default();
        };
        if self.sender.as_deref() == Some(user_id.as_str()) {
            return PushOutcome::default();
        }
        let mut ctx = PushConditionRoomCtx::new(
            room_id.clone(),
            self.member_count,
            user_id.to_owned(),
            display_name.to_owned(),
        );
        if let Some(power_levels) = &self.power_levels {
            ctx = ctx.with_power_levels(power_levels.clone());
        }
        for rule in ruleset.iter() {
            if self.applies(rule, &ctx, display_name).await {
                return PushOutcome::from_actions(rule.actions());
            }
        }
        PushOutcome::default()
    }

    async fn applies(
        &self,
        rule: AnyPushRuleRef<'_>,
        ctx: &PushConditionRoomCtx,
        display_name: &str,
    ) -> bool {
        match rule {
            AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r)
                if r.conditions.iter().any(is_display_name_condition) =>
            {
                self.conditional_applies(r, ctx, display_name).await
            }
            other => other.applies(&self.flat, ctx).await,
        }
    }

    /// `ConditionalPushRule::applies` with our `contains_display_name`.
    async fn conditional_applies(
        &self,
        rule: &ConditionalPushRule,
        ctx: &PushConditionRoomCtx,
        display_name: &str,
    ) -> bool {
        if !rule.enabled {
            return false;
        }
        // The legacy mention rules step aside once a client sends `m.mentions`.
        let legacy = rule.rule_id == CONTAINS_DISPLAY_NAME || rule.rule_id == ROOM_NOTIF;
        if legacy && self.has_mentions {
            return false;
        }
        for condition in &rule.conditions {
            let holds = if is_display_name_condition(condition) {
                self.body
                    .as_deref()
                    .is_some_and(|body| contains_word(body, display_name))
            } else {
                condition.applies(&self.flat, ctx).await
            };
            if !holds {
                return false;
            }
        }
        true
    }
}

#[allow(deprecated)] // the legacy condition is deprecated in ruma, still in the spec
fn is_display_name_condition(condition: &PushCondition) -> bool {
    matches!(condition, PushCondition::ContainsDisplayName)
}

/// Whether `needle` occurs in `haystack` as a whole word, ignoring case.
pub fn contains_word(haystack: &str, needle: &str) -> bool {
    let needle = needle.trim().to_lowercase();
    if needle.is_empty() {
        return false;
    }
    let haystack = haystack.to_lowercase();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(found) = haystack[from..].find(&needle) {
        let start = from + found;
        let end = start + needle.len();
        let before_ok = haystack[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_word(c));
        let after_ok = haystack[end..].chars().next().is_none_or(|c| !is_word(c));
        if before_ok && after_ok {
            return true;
        }
        from = start + haystack[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}
