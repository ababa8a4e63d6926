//! Router tests of devices, keys, to-device messages and key backups:
//! what a client sees, bad input included.

use axum::http::StatusCode;
use axum::Router;
use base64::Engine;
use ruma_common::CanonicalJsonObject;
use ruma_signatures::Ed25519KeyPair;
use serde_json::{json, Value};

use super::tests::{app, call, register};

const V3: &str = "/_matrix/client/v3";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// A fresh ed25519 key named `version` (a device id, or a public key).
fn key_pair(version: &str) -> Ed25519KeyPair {
    Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version.to_owned()).unwrap()
}

/// `object` signed by `signer` with `pair`.
fn signed(signer: &str, pair: &Ed25519KeyPair, object: Value) -> Value {
    let mut object: CanonicalJsonObject = serde_json::from_value(object).unwrap();
    ruma_signatures::sign_json(signer, pair, &mut object).unwrap();
    serde_json::to_value(object).unwrap()
}

/// Who a token belongs to: (user id, device id).
async fn whoami(app: &Router, token: &str) -> (String, String) {
    let (_, who) = call(
        app,
        "GET",
        &format!("{V3}/account/whoami"),
        Some(token),
        None,
    )
    .await;
    (
        who["user_id"].as_str().unwrap().to_owned(),
        who["device_id"].as_str().unwrap().to_owned(),
    )
}

/// Device keys of the token's device, signed by its own key.
async fn device_keys(app: &Router, token: &str) -> (Value, Ed25519KeyPair) {
    let (user, device) = whoami(app, token).await;
    let pair = key_pair(&device);
    let keys = signed(
        &user,
        &pair,
        json!({
            "user_id": user, "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("ed25519:{device}"): b64(&pair.public_key()),
                format!("curve25519:{device}"): "Y3VydmU",
            },
        }),
    );
    (keys, pair)
}

async fn post(app: &Router, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    call(
        app,
        "POST",
        &format!("{V3}{path}"),
        Some(token),
        Some(&body.to_string()),
    )
    .await
}

async fn sync(app: &Router, token: &str, since: Option<&str>) -> Value {
    let uri = match since {
        Some(since) => format!("{V3}/sync?timeout=0&since={since}"),
        None => format!("{V3}/sync?timeout=0"),
    };
    let (status, body) = call(app, "GET", &uri, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn login(app: &Router, user: &str) -> String {
    let body = json!({"type": "m.login.password", "user": user, "password": "pw"});
    let (status, body) = call(
        app,
        "POST",
        &format!("{V3}/login"),
        None,
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn device_keys_are_the_uploaders_own_and_signed() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let (keys, _) = device_keys(&app, &alice).await;

    // Bob cannot upload them as his, nor tamper with them.
    let (status, body) = post(&app, "/keys/upload", &bob, json!({"device_keys": keys})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let mut forged = keys.clone();
    forged["algorithms"] = json!(["m.olm.v1.curve25519-aes-sha2"]);
    let (status, body) = post(&app, "/keys/upload", &alice, json!({"device_keys": forged})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("signature"),
        "{body}"
    );
    for bad in [json!("x"), json!({"user_id": 5})] {
        let (status, body) = post(&app, "/keys/upload", &alice, json!({"device_keys": bad})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (status, body) = post(
        &app,
        "/keys/upload",
        &alice,
        json!({"one_time_keys": {"nocolon": "k"}}),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
        "{body}"
    );

    let (status, body) = post(&app, "/keys/upload", &alice, json!({"device_keys": keys})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (user, device) = whoami(&app, &alice).await;
    let (status, found) = post(
        &app,
        "/keys/query",
        &bob,
        json!({"device_keys": {&user: []}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let got = &found["device_keys"][&user][&device];
    assert_eq!(got["keys"], keys["keys"]);
    assert_eq!(got["signatures"], keys["signatures"]);
    assert_eq!(got["unsigned"]["device_display_name"], Value::Null);
    // Someone unknown has no devices; a malformed user id is refused.
    let (_, none) = post(
        &app,
        "/keys/query",
        &bob,
        json!({"device_keys": {"@nobody:localhost": []}}),
    )
    .await;
    assert_eq!(none["device_keys"]["@nobody:localhost"], json!({}));
    let (status, _) = post(
        &app,
        "/keys/query",
        &bob,
        json!({"device_keys": {"nobody": []}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A signed one-time key's shape (the server stores, not checks, its signature).
fn signed_otk(key: &str) -> Value {
    json!({"key": key, "signatures": {"@alice:localhost": {"ed25519:DEV": "c2ln"}}})
}

#[tokio::test]
async fn one_time_keys_are_claimed_once_then_the_fallback_key() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let (user, device) = whoami(&app, &alice).await;
    let upload = json!({
        "one_time_keys": {"signed_curve25519:AAA": signed_otk("a"), "signed_curve25519:BBB": signed_otk("b")},
        "fallback_keys": {"signed_curve25519:FFF": {"key": "f", "fallback": true, "signatures": {}}},
    });
    let (status, body) = post(&app, "/keys/upload", &alice, upload.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 2);
    // The same keys again are fine; another key under a used id is not.
    let (status, _) = post(&app, "/keys/upload", &alice, upload).await;
    assert_eq!(status, StatusCode::OK);
    let clash = json!({"one_time_keys": {"signed_curve25519:AAA": signed_otk("other")}});
    let (status, _) = post(&app, "/keys/upload", &alice, clash).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A signed key needs its signatures.
    let clash = json!({"one_time_keys": {"signed_curve25519:CCC": {"key": "c"}}});
    let (status, _) = post(&app, "/keys/upload", &alice, clash).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let first = sync(&app, &alice, None).await;
    assert_eq!(first["device_one_time_keys_count"]["signed_curve25519"], 2);
    assert_eq!(
        first["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    let claim = json!({"one_time_keys": {&user: {&device: "signed_curve25519"}}});
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let (status, body) = post(&app, "/keys/claim", &bob, claim.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let keys = body["one_time_keys"][&user][&device]
            .as_object()
            .unwrap()
            .clone();
        claimed.extend(keys.keys().cloned());
    }
    claimed[..2].sort();
    assert_eq!(
        claimed,
        [
            "signed_curve25519:AAA",
            "signed_curve25519:BBB",
            "signed_curve25519:FFF"
        ]
    );
    let after = sync(&app, &alice, None).await;
    assert_eq!(after["device_one_time_keys_count"], json!({}));
    assert_eq!(after["device_unused_fallback_key_types"], json!([]));
}

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
async fn cross_signing_keys_and_signatures() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let (user, device) = whoami(&app, &alice).await;
    let (keys, _) = device_keys(&app, &alice).await;
    post(&app, "/keys/upload", &alice, json!({"device_keys": keys})).await;
    let (master_named, master_pub) = named_by_public_key();
    let (ssk_named, ssk_pub) = named_by_public_key();
    let master_key = json!({"user_id": &user, "usage": ["master"],
                            "keys": {format!("ed25519:{master_pub}"): &master_pub}});
    let ssk_key = signed(
        &user,
        &master_named,
        json!({"user_id": &user, "usage": ["self_signing"],
                            "keys": {format!("ed25519:{ssk_pub}"): &ssk_pub}}),
    );
    // Not signed by the master key: refused.
    let unsigned = json!({"user_id": &user, "usage": ["self_signing"],
                          "keys": {format!("ed25519:{ssk_pub}"): &ssk_pub}});
    let (status, _) = post(
        &app,
        "/keys/device_signing/upload",
        &alice,
        json!({"master_key": master_key, "self_signing_key": unsigned}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The first keys need no password.
    let (status, body) = post(
        &app,
        "/keys/device_signing/upload",
        &alice,
        json!({"master_key": master_key, "self_signing_key": ssk_key}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Replacing them does.
    let (_, other_pub) = named_by_public_key();
    let replacement = json!({"user_id": &user, "usage": ["master"],
                             "keys": {format!("ed25519:{other_pub}"): &other_pub}});
    let (status, _) = post(
        &app,
        "/keys/device_signing/upload",
        &alice,
        json!({"master_key": replacement}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The self-signing key signs the device; a forged signature is reported.
    let (_, found) = post(
        &app,
        "/keys/query",
        &alice,
        json!({"device_keys": {&user: []}}),
    )
    .await;
    let mut device_copy = found["device_keys"][&user][&device].clone();
    device_copy.as_object_mut().unwrap().remove("unsigned");
    let by_ssk = signed(&user, &ssk_named, device_copy.clone());
    let (status, body) = post(
        &app,
        "/keys/signatures/upload",
        &alice,
        json!({&user: {&device: by_ssk}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["failures"], json!({}));
    let impostor = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), ssk_pub.clone()).unwrap();
    let by_stranger = signed(&user, &impostor, device_copy);
    let (_, body) = post(
        &app,
        "/keys/signatures/upload",
        &alice,
        json!({&user: {&device: by_stranger}}),
    )
    .await;
    assert_eq!(
        body["failures"][&user][&device]["errcode"], "M_INVALID_SIGNATURE",
        "{body}"
    );

    let (_, found) = post(
        &app,
        "/keys/query",
        &alice,
        json!({"device_keys": {&user: []}}),
    )
    .await;
    assert_eq!(found["master_keys"][&user]["keys"], master_key["keys"]);
    assert_eq!(
        found["self_signing_keys"][&user]["usage"],
        json!(["self_signing"])
    );
    let sigs = &found["device_keys"][&user][&device]["signatures"][&user];
    assert!(sigs.get(format!("ed25519:{ssk_pub}")).is_some(), "{found}");
}

/// A fresh cross-signing key, named (as they are) by its public key.
fn named_by_public_key() -> (Ed25519KeyPair, String) {
    let document = Ed25519KeyPair::generate();
    let public = b64(&Ed25519KeyPair::from_der(&document, "x".into())
        .unwrap()
        .public_key());
    (
        Ed25519KeyPair::from_der(&document, public.clone()).unwrap(),
        public,
    )
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
