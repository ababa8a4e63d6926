//! Router tests of devices, keys, to-device messages and key backups:
//! what a client sees, bad input included. Keys and cross-signing here;
//! devices, to-device inboxes, device lists and backups in `inboxes.rs`.

mod inboxes;

use axum::http::StatusCode;
use axum::Router;
use base64::Engine;
use ruma_common::CanonicalJsonObject;
use ruma_signatures::Ed25519KeyPair;
use serde_json::{json, Value};

use super::tests::{app, call, post, register};

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
