//! Push straight to Firebase Cloud Messaging (HTTP v1) for the apps named in
//! `[[push.fcm]]`, against a local fake of Google's token endpoint and FCM's
//! send endpoint that verifies the signed JWT and the bearer token.

use std::time::Duration;

use serde_json::{json, Value};
use tern_tests::{
    assert_error, assert_ok, eventually, Client, FakeFcm, ServerOptions, TestServer, V3,
};

const APP: &str = "org.example.tern.android";
const PROJECT: &str = "tern-test-project";
const EMAIL: &str = "tern-push@tern-test-project.iam.gserviceaccount.com";
const PRIVATE_KEY: &str = include_str!("../fixtures/fcm-test-key.pem");
const PUBLIC_KEY: &str = include_str!("../fixtures/fcm-test-key.pub.pem");
const WAIT: Duration = Duration::from_secs(15);

/// A server with one FCM app whose key points at Google's token URL; the
/// config's `token_url` redirects it to the fake (so the override works).
async fn start(fcm: &FakeFcm, dir: &std::path::Path) -> TestServer {
    let key = json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "test-key-1",
        "private_key": PRIVATE_KEY,
        "client_email": EMAIL,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let key_path = dir.join("fcm-service-account.json");
    std::fs::write(&key_path, key.to_string()).unwrap();
    let config = format!(
        "[[push.fcm]]\napp_id = \"{APP}\"\nservice_account_file = \"{}\"\nbase_url = \"{}\"\ntoken_url = \"{}\"\n",
        key_path.display(),
        fcm.base_url(),
        fcm.token_url()
    );
    TestServer::start_with(ServerOptions {
        config_toml: Some(config),
        ..ServerOptions::default()
    })
    .await
}

fn pusher(pushkey: &str) -> Value {
    json!({
        "kind": "http", "app_id": APP, "pushkey": pushkey,
        "app_display_name": "Tern", "device_display_name": "Pixel", "lang": "en",
        "data": {},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_members_get_fcm_messages_signed_for_their_tokens() {
    let fcm = FakeFcm::start(PUBLIC_KEY, EMAIL, PROJECT).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&fcm, dir.path()).await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let carol = Client::register(&server, "carol").await;
    let room = alice
        .create_room(&json!({"preset": "public_chat", "name": "Lunch"}))
        .await;
    assert_ok(bob.join(&room).await);
    assert_ok(carol.join(&room).await);

    // FCM apps need no gateway URL; other apps still do.
    assert_ok(
        bob.post(&format!("{V3}/pushers/set"), &pusher("fcm-bob"))
            .await,
    );
    assert_ok(
        bob.post(&format!("{V3}/pushers/set"), &pusher("fcm-bob-flaky"))
            .await,
    );
    assert_ok(
        carol
            .post(&format!("{V3}/pushers/set"), &pusher("fcm-carol-dead"))
            .await,
    );
    let other = json!({
        "kind": "http", "app_id": "org.example.other", "pushkey": "k",
        "app_display_name": "x", "device_display_name": "y", "lang": "en", "data": {},
    });
    assert_error(
        &bob.post(&format!("{V3}/pushers/set"), &other).await,
        400,
        "M_MISSING_PARAM",
    );
    fcm.unregister("fcm-carol-dead");
    fcm.fail("fcm-bob-flaky", 2);

    let event = alice.send_text(&room, "t1", "soup today").await;
    let sent = fcm.wait_for("fcm-bob", &event, WAIT).await;
    let message = &sent["message"];
    let data = &message["data"];
    assert_eq!(data["room_id"], room.as_str());
    assert_eq!(data["sender"], alice.user_id.as_str());
    assert_eq!(data["type"], "m.room.message");
    assert_eq!(data["room_name"], "Lunch");
    assert_eq!(data["unread"], "1");
    let content: Value = serde_json::from_str(data["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["body"], "soup today");
    // A plain group message: normal priority, no highlight.
    assert_eq!(message["android"]["priority"], "NORMAL");
    assert!(data.get("highlight").is_none(), "{sent}");

    // 503 twice, then delivered: retried with backoff.
    fcm.wait_for("fcm-bob-flaky", &event, WAIT).await;
    assert_eq!(fcm.attempts("fcm-bob-flaky"), 3);

    // FCM said carol's token is dead: her pusher is gone.
    eventually("the dead token's pusher removed", async || {
        carol.pushers().await.is_empty()
    })
    .await;
    assert_eq!(fcm.attempts("fcm-carol-dead"), 1);

    // A mention is highlighted and sent at high priority; unread counts on.
    let (status, body) = alice
        .put(
            &format!(
                "{V3}/rooms/{}/send/m.room.message/t2",
                tern_tests::enc(&room)
            ),
            &json!({"msgtype": "m.text", "body": "bob: you in?",
                    "m.mentions": {"user_ids": [bob.user_id]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mention = body["event_id"].as_str().unwrap();
    let sent = fcm.wait_for("fcm-bob", mention, WAIT).await;
    assert_eq!(sent["message"]["android"]["priority"], "HIGH");
    assert_eq!(sent["message"]["data"]["highlight"], "true");
    assert_eq!(sent["message"]["data"]["unread"], "2");

    // One signed JWT bought one access token, reused for every send; none
    // was refused.
    let (token_requests, bad, unauthorized) = fcm.auth_counts();
    assert_eq!(token_requests, 1, "access tokens are cached");
    assert_eq!((bad, unauthorized), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_service_account_key_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("broken.json");
    std::fs::write(&key_path, "{\"type\": \"service_account\"}").unwrap();
    let config = format!(
        "[[push.fcm]]\napp_id = \"{APP}\"\nservice_account_file = \"{}\"\n",
        key_path.display()
    );
    let config_path = dir.path().join("tern.toml");
    std::fs::write(&config_path, config).unwrap();
    let output = std::process::Command::new(tern_tests::server_binary())
        .arg("--config")
        .arg(&config_path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run homeserver");
    assert!(!output.status.success(), "started with a broken key");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("push.fcm") && stderr.contains("broken.json"),
        "{stderr}"
    );
}
