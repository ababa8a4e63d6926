//! Evaluation of the default rules and of custom rules, without storage.

use std::collections::HashMap;

use ruma_common::push::{NewConditionalPushRule, NewPushRule, NewSimplePushRule, Ruleset};
use ruma_common::{owned_room_id, owned_server_name, owned_user_id, user_id};
use ruma_common::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::{json, Value};

use super::*;

const ROOM: &str = "!room:tern.test";

fn alice() -> &'static UserId {
    user_id!("@alice:tern.test")
}

fn bob() -> &'static UserId {
    user_id!("@bob:tern.test")
}

fn defaults(user: &UserId) -> Ruleset {
    PushRuleService::server_default(user)
}

fn room(member_count: u64) -> RoomPushContext {
    RoomPushContext {
        room_id: owned_room_id!("!room:tern.test"),
        member_count,
        power_levels: Some(PushPowerLevels {
            users: HashMap::from([(alice().to_string(), 100)]),
            users_default: 0,
            notifications_room: 50,
        }),
    }
}

fn message(sender: &UserId, content: Value) -> Value {
    json!({
        "type": "m.room.message", "sender": sender, "room_id": ROOM,
        "event_id": "$e", "origin_server_ts": 1, "content": content,
    })
}

fn text(sender: &UserId, body: &str) -> Value {
    message(sender, json!({"msgtype": "m.text", "body": body}))
}

async fn outcome(ruleset: &Ruleset, event: &Value, room: &RoomPushContext) -> PushOutcome {
    PreparedEvent::new(event, room)
        .evaluate(ruleset, bob(), "Bobby Tables")
        .await
}

#[test]
fn default_ruleset_has_the_spec_rules_in_order() {
    let rules = defaults(bob());
    let overrides: Vec<&str> = rules.override_.iter().map(|r| r.rule_id.as_str()).collect();
    assert_eq!(
        &overrides[..9],
        [
            ".m.rule.master",
            ".m.rule.suppress_notices",
            ".m.rule.invite_for_me",
            ".m.rule.member_event",
            ".m.rule.is_user_mention",
            ".m.rule.contains_display_name",
            ".m.rule.is_room_mention",
            ".m.rule.roomnotif",
            ".m.rule.tombstone",
        ]
    );
    assert!(overrides.contains(&".m.rule.reaction"));
    let underrides: Vec<&str> = rules.underride.iter().map(|r| r.rule_id.as_str()).collect();
    for id in [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ] {
        assert!(underrides.contains(&id), "{id} missing");
    }
    let content = rules.content.get(".m.rule.contains_user_name").unwrap();
    assert_eq!(content.pattern, "bob");
    let json = ruleset_json(&rules);
    for kind in ["override", "content", "room", "sender", "underride"] {
        assert!(json[kind].is_array(), "{kind} missing: {json}");
    }
}

#[tokio::test]
async fn group_message_notifies_without_sound() {
    let got = outcome(&defaults(bob()), &text(alice(), "hello all"), &room(5)).await;
    assert_eq!(
        got,
        PushOutcome {
            notify: true,
            highlight: false,
            sound: None
        }
    );
}

#[tokio::test]
async fn one_to_one_message_notifies_with_sound() {
    let got = outcome(&defaults(bob()), &text(alice(), "hi"), &room(2)).await;
    assert!(got.notify && !got.highlight);
    assert_eq!(got.sound.as_deref(), Some("default"));
    let encrypted = json!({"type": "m.room.encrypted", "sender": alice(), "content": {}});
    let got = outcome(&defaults(bob()), &encrypted, &room(2)).await;
    assert_eq!(got.sound.as_deref(), Some("default"));
    let got = outcome(&defaults(bob()), &encrypted, &room(3)).await;
    assert!(got.notify && got.sound.is_none());
}

#[tokio::test]
async fn user_mention_highlights() {
    let event = message(
        alice(),
        json!({"msgtype": "m.text", "body": "look", "m.mentions": {"user_ids": [bob()]}}),
    );
    let got = outcome(&defaults(bob()), &event, &room(5)).await;
    assert!(got.notify && got.highlight);
    assert_eq!(got.sound.as_deref(), Some("default"));
    // Someone else mentioned: a plain message.
    let other = message(
        alice(),
        json!({"msgtype": "m.text", "body": "look", "m.mentions": {"user_ids": ["@carol:tern.test"]}}),
    );
    let got = outcome(&defaults(bob()), &other, &room(5)).await;
    assert!(got.notify && !got.highlight);
}

#[tokio::test]
async fn display_name_and_user_name_mentions_highlight() {
    let got = outcome(
        &defaults(bob()),
        &text(alice(), "hey bobby tables!"),
        &room(5),
    )
    .await;
    assert!(got.highlight, "display name: {got:?}");
    let got = outcome(&defaults(bob()), &text(alice(), "ping bob"), &room(5)).await;
    assert!(got.highlight, "user name: {got:?}");
    let got = outcome(
        &defaults(bob()),
        &text(alice(), "Bobby Tablesque"),
        &room(5),
    )
    .await;
    assert!(!got.highlight, "partial word: {got:?}");
    // With m.mentions present, the legacy body rules step aside.
    let event = message(
        alice(),
        json!({"msgtype": "m.text", "body": "bobby tables", "m.mentions": {}}),
    );
    let got = outcome(&defaults(bob()), &event, &room(5)).await;
    assert!(got.notify && !got.highlight);
}

#[tokio::test]
async fn display_name_is_matched_literally() {
    let event = text(alice(), "just a message");
    let got = PreparedEvent::new(&event, &room(5))
        .evaluate(&defaults(bob()), bob(), "*")
        .await;
    assert!(!got.highlight);
    assert!(contains_word("hi (star*)!", "star*"));
    assert!(!contains_word("anything", ""));
}

#[tokio::test]
async fn notices_do_not_notify() {
    let notice = message(alice(), json!({"msgtype": "m.notice", "body": "bot"}));
    let got = outcome(&defaults(bob()), &notice, &room(2)).await;
    assert_eq!(got, PushOutcome::default());
}

#[tokio::test]
async fn room_mention_needs_power() {
    let event = |sender: &UserId| {
        message(
            sender,
            json!({"msgtype": "m.text", "body": "all", "m.mentions": {"room": true}}),
        )
    };
    let got = outcome(&defaults(bob()), &event(alice()), &room(5)).await;
    assert!(got.highlight, "power 100: {got:?}");
    let got = outcome(
        &defaults(bob()),
        &event(user_id!("@carol:tern.test")),
        &room(5),
    )
    .await;
    assert!(!got.highlight, "power 0: {got:?}");
    // Legacy `@room` in the body, no m.mentions.
    let got = outcome(&defaults(bob()), &text(alice(), "@room hi"), &room(5)).await;
    assert!(got.highlight, "legacy @room: {got:?}");
    let got = outcome(
        &defaults(bob()),
        &text(user_id!("@carol:tern.test"), "@room hi"),
        &room(5),
    )
    .await;
    assert!(!got.highlight, "legacy @room without power: {got:?}");
}

#[tokio::test]
async fn muted_room_does_not_notify() {
    let mut rules = defaults(bob());
    let room_id = OwnedRoomId::try_from(ROOM).unwrap();
    rules
        .insert(
            NewPushRule::Room(NewSimplePushRule::new(room_id, vec![])),
            None,
            None,
        )
        .unwrap();
    let got = outcome(&rules, &text(alice(), "hello"), &room(5)).await;
    assert_eq!(got, PushOutcome::default());
    // dont_notify (legacy) is the same as no actions.
    let body = json!({"actions": ["dont_notify"]});
    let actions = parse_actions(&body["actions"]).unwrap();
    rules.set_actions(RuleKind::Room, ROOM, actions).unwrap();
    let got = outcome(&rules, &text(alice(), "hello"), &room(5)).await;
    assert_eq!(got, PushOutcome::default());
}

#[tokio::test]
async fn master_rule_silences_everything() {
    let mut rules = defaults(bob());
    rules
        .set_enabled(RuleKind::Override, ".m.rule.master", true)
        .unwrap();
    let mention = message(
        alice(),
        json!({"msgtype": "m.text", "body": "x", "m.mentions": {"user_ids": [bob()]}}),
    );
    for event in [text(alice(), "hello"), mention] {
        let got = outcome(&rules, &event, &room(2)).await;
        assert_eq!(got, PushOutcome::default());
    }
}

#[tokio::test]
async fn own_events_never_notify() {
    let got = PreparedEvent::new(&text(bob(), "bob"), &room(2))
        .evaluate(&defaults(bob()), bob(), "Bobby")
        .await;
    assert_eq!(got, PushOutcome::default());
}

fn custom_override(rules: &mut Ruleset, id: &str, conditions: Value, actions: Value) {
    let rule = NewConditionalPushRule::new(
        id.to_owned(),
        serde_json::from_value(conditions).unwrap(),
        parse_actions(&actions).unwrap(),
    );
    rules
        .insert(NewPushRule::Override(rule), None, None)
        .unwrap();
}

#[tokio::test]
async fn event_property_conditions_on_custom_rules() {
    let mut rules = defaults(bob());
    custom_override(
        &mut rules,
        "flagged",
        json!([{"kind": "event_property_is", "key": "content.urgent", "value": true}]),
        json!(["notify", {"set_tweak": "highlight"}, {"set_tweak": "sound", "value": "alarm"}]),
    );
    custom_override(
        &mut rules,
        "tagged",
        json!([{"kind": "event_property_contains", "key": "content.tags", "value": "red"}]),
        json!(["notify", {"set_tweak": "sound", "value": "bell"}]),
    );
    let urgent = message(
        alice(),
        json!({"msgtype": "m.text", "body": "x", "urgent": true}),
    );
    let got = outcome(&rules, &urgent, &room(5)).await;
    assert!(got.highlight);
    assert_eq!(got.sound.as_deref(), Some("alarm"));
    let not_urgent = message(
        alice(),
        json!({"msgtype": "m.text", "body": "x", "urgent": "true"}),
    );
    assert!(!outcome(&rules, &not_urgent, &room(5)).await.highlight);
    let tagged = message(
        alice(),
        json!({"msgtype": "m.text", "body": "x", "tags": ["blue", "red"]}),
    );
    let got = outcome(&rules, &tagged, &room(5)).await;
    assert_eq!(got.sound.as_deref(), Some("bell"));
}

#[tokio::test]
async fn glob_and_member_count_conditions_on_custom_rules() {
    let mut rules = defaults(bob());
    custom_override(
        &mut rules,
        "cake",
        json!([
            {"kind": "event_match", "key": "content.body", "pattern": "cake*lie"},
            {"kind": "room_member_count", "is": ">3"},
        ]),
        json!(["notify", {"set_tweak": "highlight"}]),
    );
    custom_override(
        &mut rules,
        "bots",
        json!([{"kind": "event_match", "key": "sender", "pattern": "@bot_?:*"}]),
        json!([]),
    );
    let got = outcome(&rules, &text(alice(), "the cakeisalie"), &room(5)).await;
    assert!(got.highlight, "glob: {got:?}");
    let got = outcome(&rules, &text(alice(), "the cakeisalie"), &room(3)).await;
    assert!(!got.highlight, "member count: {got:?}");
    let got = outcome(
        &rules,
        &text(user_id!("@bot_1:tern.test"), "hello"),
        &room(5),
    )
    .await;
    assert_eq!(got, PushOutcome::default(), "sender glob");
    let got = outcome(
        &rules,
        &text(user_id!("@bot_12:tern.test"), "hello"),
        &room(5),
    )
    .await;
    assert!(got.notify, "? matches one character: {got:?}");
}

#[test]
fn actions_are_checked() {
    assert!(parse_actions(&json!(["notify", {"set_tweak": "highlight"}])).is_ok());
    assert!(parse_actions(&json!(["explode"])).is_err());
    assert!(parse_actions(&json!([{"value": 1}])).is_err());
    assert!(parse_actions(&json!({"notify": true})).is_err());
    assert!(parse_actions(&json!([{"set_tweak": "sound"}])).is_err());
}

#[test]
fn unknown_kinds_are_invalid() {
    assert!(parse_kind("override").is_ok());
    let err = parse_kind("postcontent").unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidParam);
}

#[test]
fn stored_rulesets_pick_up_new_defaults() {
    let user = bob().to_owned();
    let mut stored = defaults(bob());
    stored.override_.shift_remove(".m.rule.roomnotif");
    stored
        .set_enabled(RuleKind::Override, ".m.rule.master", true)
        .unwrap();
    let merged =
        PushRuleService::merge_stored(&user, Some(json!({"global": ruleset_json(&stored)})));
    assert!(merged.override_.get(".m.rule.roomnotif").is_some());
    assert!(merged.override_.get(".m.rule.master").unwrap().enabled);
    let broken = PushRuleService::merge_stored(&user, Some(json!({"global": 7})));
    assert!(!broken.override_.get(".m.rule.master").unwrap().enabled);
}

#[tokio::test]
async fn service_stores_rules_and_evaluates_members() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::config::Config {
        data_dir: dir.path().to_owned(),
        server_name: owned_server_name!("tern.test"),
        ..Default::default()
    };
    let (services, _database) =
        crate::build_services(config, tokio_util::sync::CancellationToken::new())
            .await
            .unwrap();
    for name in ["bob", "carol"] {
        services
            .accounts
            .register(Some(name), Some("pw"), None, None, true)
            .await
            .unwrap();
    }
    let rules = &services.push_rules;
    let recipients = [
        (bob().to_owned(), "Bob".to_owned()),
        (owned_user_id!("@carol:tern.test"), "Carol".to_owned()),
    ];
    let event = text(alice(), "hello");
    let notify_of = |outcomes: Vec<(OwnedUserId, PushOutcome)>| -> Vec<bool> {
        outcomes.into_iter().map(|(_, o)| o.notify).collect()
    };
    let got = rules
        .evaluate_for_members(&event, &room(5), &recipients)
        .await;
    assert_eq!(notify_of(got), [true, true]);

    // Bob mutes the room: stored, cached anew, and only Bob is silenced.
    rules
        .set_rule(
            bob(),
            "room",
            ROOM,
            &json!({"actions": []}),
            RulePosition::default(),
        )
        .await
        .unwrap();
    let got = rules
        .evaluate_for_members(&event, &room(5), &recipients)
        .await;
    assert_eq!(notify_of(got), [false, true]);
    let stored = services
        .accounts
        .get_account_data(bob(), None, PUSH_RULES_TYPE)
        .await
        .unwrap()
        .expect("m.push_rules stored");
    assert_eq!(stored["global"]["room"][0]["rule_id"], ROOM);

    // A fresh service (empty cache) reads the stored ruleset.
    let sqlite = crate::store::sqlite::SqliteStore::open(&dir.path().join("tern.db"))
        .await
        .unwrap();
    let fresh = PushRuleService::new(
        std::sync::Arc::new(sqlite),
        std::sync::Arc::new(crate::store::memory::MemoryBus::new(16)),
    );
    let got = fresh
        .evaluate_for_members(&event, &room(5), &recipients)
        .await;
    assert_eq!(notify_of(got), [false, true]);

    rules.delete_rule(bob(), "room", ROOM).await.unwrap();
    let got = rules
        .evaluate_for_members(&event, &room(5), &recipients)
        .await;
    assert_eq!(notify_of(got), [true, true]);
    let err = rules.delete_rule(bob(), "room", ROOM).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
}
