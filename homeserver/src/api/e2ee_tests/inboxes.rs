//! Router tests of devices, to-device inboxes, device lists and key
//! backups.

use axum::http::StatusCode;
use serde_json::json;

use super::{call, device_keys, login, post, register, sync, whoami, V3};
use crate::api::tests::app;

#[tokio::test]
async fn to_device_messages_arrive_once_and_go_when_acknowledged() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let (bob_id, _) = whoami(&app, &bob).await;
    let start = sync(&app, &bob, None).await;
    let since = start["next_batch"].as_str().unwrap().to_owned();

    let path = format!("{V3}/sendToDevice/m.test/txn1");
    let body = json!({"messages": {&bob_id: {"*": {"n": 1}}}}).to_string();
    for _ in 0..2 {
        let (status, answer) = call(&app, "PUT", &path, Some(&alice), Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let bad = json!({"messages": {&bob_id: {"*": "not an object"}}}).to_string();
    let bad_path = format!("{V3}/sendToDevice/m.test/txn2");
    let (status, _) = call(&app, "PUT", &bad_path, Some(&alice), Some(&bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let got = sync(&app, &bob, Some(&since)).await;
    let events = got["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{got}");
    assert_eq!(events[0]["type"], "m.test");
    assert_eq!(events[0]["content"], json!({"n": 1}));
    assert_eq!(events[0]["sender"], whoami(&app, &alice).await.0);
    // The same token again (a retried request) gets the message again...
    let again = sync(&app, &bob, Some(&since)).await;
    assert_eq!(again["to_device"]["events"].as_array().unwrap().len(), 1);
    // ...until a later token acknowledges it: then it is gone for good.
    let next = again["next_batch"].as_str().unwrap();
    let later = sync(&app, &bob, Some(next)).await;
    assert!(later["to_device"]["events"].as_array().unwrap().is_empty());
    let replay = sync(&app, &bob, Some(&since)).await;
    assert!(
        replay["to_device"]["events"].as_array().unwrap().is_empty(),
        "{replay}"
    );
}

#[tokio::test]
async fn deleting_a_device_needs_the_password_and_takes_its_token() {
    let (_dir, app) = app().await;
    let first = register(&app, "alice").await;
    let second = login(&app, "alice").await;
    let (_, device) = whoami(&app, &second).await;
    // Where each device was last seen is written in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, listed) =
            call(&app, "GET", &format!("{V3}/devices"), Some(&first), None).await;
        assert_eq!(status, StatusCode::OK);
        let devices = listed["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 2, "{listed}");
        if devices
            .iter()
            .all(|d| d["last_seen_ip"] == "127.0.0.1" && d["last_seen_ts"].is_i64())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last seen never recorded: {listed}"
        );
        tokio::task::yield_now().await;
    }

    let path = format!("{V3}/devices/{device}");
    let (status, rename) = call(
        &app,
        "PUT",
        &path,
        Some(&first),
        Some(r#"{"display_name": "Old phone"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rename}");
    let (_, one) = call(&app, "GET", &path, Some(&first), None).await;
    assert_eq!(one["display_name"], "Old phone");

    let (status, flows) = call(&app, "DELETE", &path, Some(&first), Some("{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{flows}");
    assert_eq!(flows["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = flows["session"].as_str().unwrap();
    let wrong = json!({"auth": {"type": "m.login.password", "session": session, "password": "nope",
                       "identifier": {"type": "m.id.user", "user": "alice"}}});
    let (status, body) = call(
        &app,
        "DELETE",
        &path,
        Some(&first),
        Some(&wrong.to_string()),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_FORBIDDEN")),
        "{body}"
    );
    assert_eq!(body["session"], session);
    // A session is the user's own: bob cannot use alice's.
    let bob = register(&app, "bob").await;
    let stolen = json!({"auth": {"session": session}});
    let (status, _) = call(
        &app,
        "POST",
        &format!("{V3}/delete_devices"),
        Some(&bob),
        Some(&json!({"devices": [], "auth": stolen["auth"]}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let right = json!({"auth": {"type": "m.login.password", "session": session, "password": "pw",
                       "identifier": {"type": "m.id.user", "user": "alice"}}});
    let (status, body) = call(
        &app,
        "DELETE",
        &path,
        Some(&first),
        Some(&right.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(
        &app,
        "GET",
        &format!("{V3}/account/whoami"),
        Some(&second),
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN"))
    );
    let (_, listed) = call(&app, "GET", &format!("{V3}/devices"), Some(&first), None).await;
    assert_eq!(listed["devices"].as_array().unwrap().len(), 1);
    let (status, _) = call(&app, "GET", &path, Some(&first), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn device_list_changes_reach_those_who_share_a_room() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let (alice_id, _) = whoami(&app, &alice).await;
    let (_, room) = post(
        &app,
        "/createRoom",
        &alice,
        json!({"preset": "public_chat"}),
    )
    .await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let (status, _) = post(&app, &format!("/rooms/{room}/join"), &bob, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let bob_since = sync(&app, &bob, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let carol_since = sync(&app, &carol, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let (keys, _) = device_keys(&app, &alice).await;
    let (status, _) = post(&app, "/keys/upload", &alice, json!({"device_keys": keys})).await;
    assert_eq!(status, StatusCode::OK);
    let seen = sync(&app, &bob, Some(&bob_since)).await;
    assert_eq!(
        seen["device_lists"]["changed"],
        json!([&alice_id]),
        "{seen}"
    );
    // carol shares no room with alice: nothing, yet her token moved on.
    let unseen = sync(&app, &carol, Some(&carol_since)).await;
    assert_eq!(unseen["device_lists"]["changed"], json!([]));

    let (status, changes) = call(
        &app,
        "GET",
        &format!(
            "{V3}/keys/changes?from={bob_since}&to={}",
            seen["next_batch"].as_str().unwrap()
        ),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changes}");
    assert_eq!(changes["changed"], json!([&alice_id]));

    let next = seen["next_batch"].as_str().unwrap().to_owned();
    let (status, _) = post(&app, &format!("/rooms/{room}/leave"), &alice, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let parted = sync(&app, &bob, Some(&next)).await;
    assert_eq!(
        parted["device_lists"]["left"],
        json!([&alice_id]),
        "{parted}"
    );
    let (status, _) = call(
        &app,
        "GET",
        &format!("{V3}/keys/changes?from=x&to=y"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn key_backups_keep_the_better_copy_of_each_session() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let (status, body) = call(
        &app,
        "GET",
        &format!("{V3}/room_keys/version"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
    let create = json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abc"}});
    let (_, v1) = post(&app, "/room_keys/version", &alice, create.clone()).await;
    let (_, v2) = post(&app, "/room_keys/version", &alice, create).await;
    let (v1, v2) = (
        v1["version"].as_str().unwrap().to_owned(),
        v2["version"].as_str().unwrap().to_owned(),
    );
    let data = |index: u64| {
        json!({"first_message_index": index, "forwarded_count": 0,
                                   "is_verified": false, "session_data": {"ciphertext": index.to_string()}})
    };
    let session = |version: &str| format!("{V3}/room_keys/keys/!r:localhost/s1?version={version}");
    let (status, body) = call(
        &app,
        "PUT",
        &session(&v1),
        Some(&alice),
        Some(&data(5).to_string()),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_WRONG_ROOM_KEYS_VERSION"))
    );
    assert_eq!(body["current_version"], v2);
    let (status, body) = call(
        &app,
        "PUT",
        &session(&v2),
        Some(&alice),
        Some(&data(5).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 1);
    // A worse copy (a later first index) does not replace the stored one.
    call(
        &app,
        "PUT",
        &session(&v2),
        Some(&alice),
        Some(&data(9).to_string()),
    )
    .await;
    let (_, got) = call(&app, "GET", &session(&v2), Some(&alice), None).await;
    assert_eq!(got["first_message_index"], 5);
    let (_, info) = call(
        &app,
        "GET",
        &format!("{V3}/room_keys/version"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        (info["version"].as_str(), info["count"].as_i64()),
        (Some(v2.as_str()), Some(1))
    );
    assert!(info["etag"].is_string(), "{info}");
    let (status, _) = call(
        &app,
        "PUT",
        &session(&v2),
        Some(&alice),
        Some(r#"{"first_message_index": 1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, all) = call(
        &app,
        "GET",
        &format!("{V3}/room_keys/keys?version={v2}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        all["rooms"]["!r:localhost"]["sessions"]["s1"]["first_message_index"],
        5
    );
    let (status, _) = call(
        &app,
        "DELETE",
        &format!("{V3}/room_keys/version/{v2}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, info) = call(
        &app,
        "GET",
        &format!("{V3}/room_keys/version"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(info["version"], v1.as_str());
    let (status, _) = call(
        &app,
        "GET",
        &format!("{V3}/room_keys/version/nonsense"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
