//! The server-default push rules: ruma's predefined set plus the three legacy
//! mention rules (`.m.rule.contains_display_name`, `.m.rule.roomnotif`,
//! `.m.rule.contains_user_name`) that ruma 0.20 no longer lists but that spec
//! v1.16 and Synapse still ship, so clients that send no `m.mentions` still
//! highlight.

use ruma_common::power_levels::NotificationPowerLevelsKey;
use ruma_common::push::{
    Action, ConditionalPushRule, ConditionalPushRuleInit, EventMatchConditionData,
    HighlightTweakValue, PatternedPushRule, PatternedPushRuleInit, PushCondition, Ruleset,
    SenderNotificationPermissionConditionData, SoundTweakValue, Tweak,
};
use ruma_common::UserId;

pub const CONTAINS_DISPLAY_NAME: &str = ".m.rule.contains_display_name";
pub const ROOM_NOTIF: &str = ".m.rule.roomnotif";
pub const CONTAINS_USER_NAME: &str = ".m.rule.contains_user_name";

fn highlight_actions(sound: bool) -> Vec<Action> {
    let mut actions = vec![Action::Notify];
    if sound {
        actions.push(Action::SetTweak(Tweak::Sound(SoundTweakValue::Default)));
    }
    actions.push(Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes)));
    actions
}

#[allow(deprecated)] // the legacy condition is deprecated in ruma, still in the spec
fn contains_display_name() -> ConditionalPushRule {
    ConditionalPushRuleInit {
        actions: highlight_actions(true),
        default: true,
        enabled: true,
        rule_id: CONTAINS_DISPLAY_NAME.to_owned(),
        conditions: vec![PushCondition::ContainsDisplayName],
    }
    .into()
}

fn room_notif() -> ConditionalPushRule {
    ConditionalPushRuleInit {
        actions: highlight_actions(false),
        default: true,
        enabled: true,
        rule_id: ROOM_NOTIF.to_owned(),
        conditions: vec![
            PushCondition::EventMatch(EventMatchConditionData::new(
                "content.body".to_owned(),
                "@room".to_owned(),
            )),
            PushCondition::SenderNotificationPermission(
                SenderNotificationPermissionConditionData::new(NotificationPowerLevelsKey::Room),
            ),
        ],
    }
    .into()
}

fn contains_user_name(user_id: &UserId) -> PatternedPushRule {
    PatternedPushRuleInit {
        actions: highlight_actions(true),
        default: true,
        enabled: true,
        rule_id: CONTAINS_USER_NAME.to_owned(),
        pattern: user_id.localpart().to_owned(),
    }
    .into()
}

/// The spec's predefined rules for `user_id`, in the spec's order.
pub fn server_default(user_id: &UserId) -> Ruleset {
    let mut rules = Ruleset::server_default(user_id);
    // Spec order: ... is_user_mention, contains_display_name, is_room_mention,
    // roomnotif, tombstone ...
    let after = |rules: &Ruleset, id: &str| {
        rules
            .override_
            .get_index_of(id)
            .map_or(rules.override_.len(), |i| i + 1)
    };
    let at = after(&rules, ".m.rule.is_user_mention");
    rules.override_.shift_insert(at, contains_display_name());
    let at = after(&rules, ".m.rule.is_room_mention");
    rules.override_.shift_insert(at, room_notif());
    rules.content.insert(contains_user_name(user_id));
    rules
}
