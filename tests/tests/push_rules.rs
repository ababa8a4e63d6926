//! Push rules over HTTP: the default ruleset, creating, ordering, toggling,
//! changing and deleting rules, the errors, and the change reaching `/sync`
//! as `m.push_rules` account data.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tern_tests::{assert_error, assert_ok, enc, next_batch, Client, TestServer, V3};

fn rules_path(kind: &str, rule_id: &str) -> String {
    format!("{V3}/pushrules/global/{kind}/{}", enc(rule_id))
}

fn rule_ids(rules: &Value) -> Vec<String> {
    rules
        .as_array()
        .unwrap_or_else(|| panic!("not a rule list: {rules}"))
        .iter()
        .filter_map(|r| r["rule_id"].as_str().map(str::to_owned))
        .collect()
}

/// The `m.push_rules` content in a sync response's global account data, if any.
fn push_rules_in(sync: &Value) -> Option<Value> {
    sync["account_data"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["type"] == "m.push_rules")
        .map(|e| e["content"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_ruleset_has_the_predefined_rules() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let all = assert_ok(alice.get(&format!("{V3}/pushrules/")).await);
    let global = &all["global"];
    let overrides = rule_ids(&global["override"]);
    assert_eq!(overrides[0], ".m.rule.master");
    for id in [
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.contains_display_name",
        ".m.rule.is_room_mention",
        ".m.rule.roomnotif",
        ".m.rule.reaction",
    ] {
        assert!(
            overrides.iter().any(|o| o == id),
            "{id} missing: {overrides:?}"
        );
    }
    let underrides = rule_ids(&global["underride"]);
    for id in [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ] {
        assert!(
            underrides.iter().any(|u| u == id),
            "{id} missing: {underrides:?}"
        );
    }
    assert_eq!(global["room"], json!([]));
    assert_eq!(global["sender"], json!([]));
    let master = assert_ok(alice.get(&rules_path("override", ".m.rule.master")).await);
    assert_eq!(master["default"], true);
    assert_eq!(master["enabled"], false);
    let same = assert_ok(alice.get(&format!("{V3}/pushrules/global/")).await);
    assert_eq!(&same, global);

    // The account data view of the same ruleset; it changes only through /pushrules.
    let account_data = format!(
        "{V3}/user/{}/account_data/m.push_rules",
        enc(&alice.user_id)
    );
    assert_eq!(&assert_ok(alice.get(&account_data).await)["global"], global);
    assert_error(
        &alice.put(&account_data, &json!({"global": {}})).await,
        400,
        "M_BAD_JSON",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_can_be_added_ordered_toggled_changed_and_deleted() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let rule = json!({
        "actions": ["notify", {"set_tweak": "highlight"}],
        "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "cake*lie"}],
    });
    assert_ok(alice.put(&rules_path("override", "first"), &rule).await);
    let before = format!("{}?before=first", rules_path("override", "second"));
    assert_ok(alice.put(&before, &rule).await);
    let after = format!("{}?after=first", rules_path("override", "third"));
    assert_ok(alice.put(&after, &rule).await);
    let global = assert_ok(alice.get(&format!("{V3}/pushrules/global/")).await);
    let overrides = rule_ids(&global["override"]);
    assert_eq!(
        overrides[..4],
        [".m.rule.master", "second", "first", "third"]
    );

    let rule_back = assert_ok(alice.get(&rules_path("override", "first")).await);
    assert_eq!(rule_back["rule_id"], "first");
    assert_eq!(rule_back["enabled"], true);
    assert_eq!(rule_back["default"], false);
    assert_eq!(rule_back["conditions"], rule["conditions"]);

    let enabled = format!("{}/enabled", rules_path("override", "first"));
    assert_ok(alice.put(&enabled, &json!({"enabled": false})).await);
    assert_eq!(
        assert_ok(alice.get(&enabled).await),
        json!({"enabled": false})
    );

    let actions = format!("{}/actions", rules_path("underride", ".m.rule.message"));
    assert_ok(alice.put(&actions, &json!({"actions": []})).await);
    assert_eq!(assert_ok(alice.get(&actions).await), json!({"actions": []}));

    let (status, body) = alice
        .request(Method::DELETE, &rules_path("override", "first"), None)
        .await;
    assert_eq!(status, 200, "delete: {body}");
    assert_error(
        &alice.get(&rules_path("override", "first")).await,
        404,
        "M_NOT_FOUND",
    );
    let content = json!({"actions": ["notify"], "pattern": "cake"});
    assert_ok(alice.put(&rules_path("content", "cake"), &content).await);
    let cake = assert_ok(alice.get(&rules_path("content", "cake")).await);
    assert_eq!(cake["pattern"], "cake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let notify = json!({"actions": ["notify"]});
    assert_error(
        &alice.get(&rules_path("override", "unknown")).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice
            .request(
                Method::DELETE,
                &rules_path("override", ".m.rule.master"),
                None,
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice
            .request(Method::DELETE, &rules_path("override", "unknown"), None)
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice
            .put(&rules_path("override", ".m.rule.mine"), &notify)
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.get(&rules_path("nonsense", "x")).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.put(&rules_path("nonsense", "x"), &notify).await,
        400,
        "M_INVALID_PARAM",
    );
    let orphan = format!("{}?before=missing", rules_path("override", "x"));
    assert_error(&alice.put(&orphan, &notify).await, 400, "M_INVALID_PARAM");
    assert_error(
        &alice.put(&rules_path("override", "x"), &json!({})).await,
        400,
        "M_MISSING_PARAM",
    );
    let enabled = format!("{}/enabled", rules_path("override", "missing"));
    assert_error(
        &alice.put(&enabled, &json!({"enabled": true})).await,
        404,
        "M_NOT_FOUND",
    );
    let anonymous = alice.with_token(None);
    assert_error(
        &anonymous.get(&format!("{V3}/pushrules/")).await,
        401,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_sync_as_account_data() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let since = next_batch(&alice.sync(None, 0, None).await);

    let enabled = format!("{}/enabled", rules_path("override", ".m.rule.master"));
    assert_ok(alice.put(&enabled, &json!({"enabled": true})).await);
    let resp = alice
        .sync_until(&since, Duration::from_secs(10), None, |r| {
            push_rules_in(r).is_some()
        })
        .await;
    let content = push_rules_in(&resp).unwrap();
    let master = &content["global"]["override"][0];
    assert_eq!(master["rule_id"], ".m.rule.master");
    assert_eq!(master["enabled"], true);

    // An initial sync carries it too, and it survives a restart.
    let mut server = server;
    server.restart().await;
    let initial = alice.sync(None, 0, None).await;
    let content = push_rules_in(&initial).expect("m.push_rules in initial sync");
    assert_eq!(content["global"]["override"][0]["enabled"], true);
    let rule = assert_ok(alice.get(&enabled).await);
    assert_eq!(rule, json!({"enabled": true}));
}
