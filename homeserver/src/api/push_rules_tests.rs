//! Router tests of the push rules endpoints.

use axum::http::StatusCode;
use axum::Router;
use serde_json::{json, Value};

use super::tests::{app, call, register};

const RULES: &str = "/_matrix/client/v3/pushrules/global";

fn ids(rules: &Value) -> Vec<String> {
    rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn put(app: &Router, token: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    call(app, "PUT", uri, Some(token), Some(&body.to_string())).await
}

#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["errcode"], errcode, "{}", got.1);
    assert!(got.1["error"].is_string(), "{}", got.1);
}

#[tokio::test]
async fn default_ruleset_is_served_on_v3_and_r0() {
    let (_dir, app) = app().await;
    let token = register(&app, "alice").await;
    for prefix in ["/_matrix/client/v3", "/_matrix/client/r0"] {
        let (status, json) = call(
            &app,
            "GET",
            &format!("{prefix}/pushrules/"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let overrides = ids(&json["global"]["override"]);
        assert_eq!(overrides[0], ".m.rule.master");
        for id in [
            ".m.rule.suppress_notices",
            ".m.rule.is_user_mention",
            ".m.rule.roomnotif",
        ] {
            assert!(overrides.contains(&id.to_owned()), "{id}");
        }
        assert!(ids(&json["global"]["underride"]).contains(&".m.rule.message".to_owned()));
        assert_eq!(json["global"]["room"], json!([]));
        assert_eq!(json["global"]["sender"], json!([]));
    }
    let (status, json) = call(&app, "GET", &format!("{RULES}/"), Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["content"][0]["pattern"], "alice");
    let got = call(&app, "GET", "/_matrix/client/v3/pushrules/", None, None).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn rules_are_created_ordered_toggled_and_deleted() {
    let (_dir, app) = app().await;
    let token = register(&app, "alice").await;
    let rule = json!({
        "actions": ["notify"],
        "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "cake*"}],
    });
    let ok = put(&app, &token, &format!("{RULES}/override/a"), rule.clone()).await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);
    let ok = put(
        &app,
        &token,
        &format!("{RULES}/override/b?before=a"),
        rule.clone(),
    )
    .await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);
    let ok = put(
        &app,
        &token,
        &format!("{RULES}/override/c?after=a"),
        rule.clone(),
    )
    .await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);
    let (_, json) = call(&app, "GET", &format!("{RULES}/"), Some(&token), None).await;
    assert_eq!(
        ids(&json["override"])[..4],
        [".m.rule.master", "b", "a", "c"]
    );

    let (status, json) = call(
        &app,
        "GET",
        &format!("{RULES}/override/a"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["rule_id"], "a");
    assert_eq!(json["default"], false);
    assert_eq!(json["enabled"], true);
    assert_eq!(json["conditions"][0]["pattern"], "cake*");

    let uri = format!("{RULES}/override/a/enabled");
    assert_eq!(
        put(&app, &token, &uri, json!({"enabled": false})).await.0,
        StatusCode::OK
    );
    let (_, json) = call(&app, "GET", &uri, Some(&token), None).await;
    assert_eq!(json, json!({"enabled": false}));

    let uri = format!("{RULES}/override/a/actions");
    let actions = json!(["notify", {"set_tweak": "sound", "value": "bing"}]);
    assert_eq!(
        put(&app, &token, &uri, json!({"actions": actions})).await.0,
        StatusCode::OK
    );
    let (_, json) = call(&app, "GET", &uri, Some(&token), None).await;
    assert_eq!(json, json!({"actions": actions}));

    // Default rules: actions and enabled can change.
    let uri = format!("{RULES}/override/.m.rule.master/enabled");
    assert_eq!(
        put(&app, &token, &uri, json!({"enabled": true})).await.0,
        StatusCode::OK
    );
    let uri = format!("{RULES}/underride/.m.rule.message/actions");
    assert_eq!(
        put(&app, &token, &uri, json!({"actions": []})).await.0,
        StatusCode::OK
    );

    let uri = format!("{RULES}/override/a");
    let (status, _) = call(&app, "DELETE", &uri, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let got = call(&app, "GET", &uri, Some(&token), None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let got = call(&app, "DELETE", &uri, Some(&token), None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Room and sender rules name their room or user.
    let room_rule = format!("{RULES}/room/{}", "%21abc%3Atern.test");
    assert_eq!(
        put(&app, &token, &room_rule, json!({"actions": []}))
            .await
            .0,
        StatusCode::OK
    );
    let (_, json) = call(&app, "GET", &format!("{RULES}/"), Some(&token), None).await;
    assert_eq!(ids(&json["room"]), ["!abc:tern.test"]);
    assert!(ids(&json["override"]).contains(&"b".to_owned()));
    assert_eq!(json["override"][0]["enabled"], true, "master enabled");
}

#[tokio::test]
async fn bad_requests_get_matrix_errors() {
    let (_dir, app) = app().await;
    let token = register(&app, "alice").await;
    let notify = json!({"actions": ["notify"]});
    let cases: Vec<(&str, &str, Option<Value>, StatusCode, &str)> = vec![
        (
            "GET",
            "/override/nope",
            None,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            "GET",
            "/override/nope/enabled",
            None,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            "GET",
            "/override/nope/actions",
            None,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            "GET",
            "/bogus/x",
            None,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/bogus/x",
            Some(notify.clone()),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "DELETE",
            "/bogus/x",
            None,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "DELETE",
            "/override/.m.rule.master",
            None,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/override/.mine",
            Some(notify.clone()),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/override/a%2Fb",
            Some(notify.clone()),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/override/x?before=nope",
            Some(notify.clone()),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/override/x?after=.m.rule.master",
            Some(notify.clone()),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/override/x",
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAM",
        ),
        (
            "PUT",
            "/override/x",
            Some(json!({"actions": ["boom"]})),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            "/override/x",
            Some(json!({"actions": [], "conditions": [{"kind": "event_match"}]})),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            "/content/x",
            Some(notify.clone()),
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAM",
        ),
        (
            "PUT",
            "/room/not-a-room",
            Some(notify.clone()),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/sender/bob",
            Some(notify.clone()),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/override/nope/enabled",
            Some(json!({"enabled": true})),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            "PUT",
            "/override/.m.rule.master/enabled",
            Some(json!({"enabled": "yes"})),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            "/override/.m.rule.master/actions",
            Some(json!({"actions": "notify"})),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            "/override/.m.rule.master/actions",
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
    ];
    for (method, path, body, status, errcode) in cases {
        let body = body.map(|b| b.to_string());
        let got = call(
            &app,
            method,
            &format!("{RULES}{path}"),
            Some(&token),
            body.as_deref(),
        )
        .await;
        assert_eq!(got.0, status, "{method} {path}: {}", got.1);
        assert_eq!(got.1["errcode"], errcode, "{method} {path}: {}", got.1);
    }
    let got = call(
        &app,
        "PUT",
        &format!("{RULES}/override/x"),
        Some(&token),
        Some("{nope"),
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    let got = call(
        &app,
        "GET",
        "/_matrix/client/v3/pushrules/device/",
        Some(&token),
        None,
    )
    .await;
    assert_error(&got, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    // The ruleset only changes through /pushrules.
    let uri = "/_matrix/client/v3/user/@alice:localhost/account_data/m.push_rules";
    let got = put(&app, &token, uri, json!({"global": {}})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}
