//! Pushers: a client registers, lists, replaces and deletes its push
//! targets; bad requests get Matrix errors.

use serde_json::{json, Value};
use tern_tests::{assert_error, assert_ok, Client, TestServer, V3};

fn pusher(pushkey: &str, url: &str) -> Value {
    json!({
        "pushkey": pushkey,
        "kind": "http",
        "app_id": "org.example.chat",
        "app_display_name": "Example Chat",
        "device_display_name": "Alice's phone",
        "lang": "en",
        "data": {"url": url, "format": "event_id_only"},
    })
}

const GATEWAY: &str = "https://push.example.org/_matrix/push/v1/notify";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_registers_replaces_and_deletes_pushers() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    assert!(alice.pushers().await.is_empty());

    let set = format!("{V3}/pushers/set");
    assert_ok(alice.post(&set, &pusher("key-1", GATEWAY)).await);
    let listed = alice.pushers().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["pushkey"], "key-1");
    assert_eq!(listed[0]["kind"], "http");
    assert_eq!(listed[0]["app_id"], "org.example.chat");
    assert_eq!(listed[0]["device_display_name"], "Alice's phone");
    assert_eq!(listed[0]["data"]["url"], GATEWAY);
    assert_eq!(listed[0]["data"]["format"], "event_id_only");
    // Bob sees only his own.
    assert!(bob.pushers().await.is_empty());

    // The same app and key again replaces it.
    let mut renamed = pusher("key-1", GATEWAY);
    renamed["device_display_name"] = json!("Alice's tablet");
    assert_ok(alice.post(&set, &renamed).await);
    let listed = alice.pushers().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["device_display_name"], "Alice's tablet");

    // Bob registering the same key takes it over, unless he appends.
    assert_ok(bob.post(&set, &pusher("key-1", GATEWAY)).await);
    assert!(alice.pushers().await.is_empty());
    assert_ok(alice.post(&set, &pusher("key-2", GATEWAY)).await);
    let mut appended = pusher("key-2", GATEWAY);
    appended["append"] = json!(true);
    assert_ok(bob.post(&set, &appended).await);
    assert_eq!(alice.pushers().await.len(), 1);
    assert_eq!(bob.pushers().await.len(), 2);

    // kind: null deletes.
    let delete = json!({"pushkey": "key-2", "app_id": "org.example.chat", "kind": null});
    assert_ok(alice.post(&set, &delete).await);
    assert!(alice.pushers().await.is_empty());
    assert_eq!(bob.pushers().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushers_are_refused() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let set = format!("{V3}/pushers/set");

    let mut no_key = pusher("k", GATEWAY);
    no_key.as_object_mut().unwrap().remove("pushkey");
    assert_error(&alice.post(&set, &no_key).await, 400, "M_MISSING_PARAM");

    let mut no_url = pusher("k", GATEWAY);
    no_url["data"] = json!({});
    assert_error(&alice.post(&set, &no_url).await, 400, "M_MISSING_PARAM");

    let wrong_path = pusher("k", "https://push.example.org/notify");
    assert_error(&alice.post(&set, &wrong_path).await, 400, "M_INVALID_PARAM");

    let mut email = pusher("k", GATEWAY);
    email["kind"] = json!("email");
    assert_error(&alice.post(&set, &email).await, 400, "M_INVALID_PARAM");

    let mut format = pusher("k", GATEWAY);
    format["data"]["format"] = json!("full");
    assert_error(&alice.post(&set, &format).await, 400, "M_INVALID_PARAM");

    let long_key = pusher(&"k".repeat(513), GATEWAY);
    assert_error(&alice.post(&set, &long_key).await, 400, "M_INVALID_PARAM");

    let mut bad_append = pusher("k", GATEWAY);
    bad_append["append"] = json!("yes");
    assert_error(&alice.post(&set, &bad_append).await, 400, "M_BAD_JSON");

    assert_error(&alice.post(&set, &json!([1, 2])).await, 400, "M_BAD_JSON");
    let anon = Client::anonymous(&server);
    assert_error(
        &anon.get(&format!("{V3}/pushers")).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert!(alice.pushers().await.is_empty(), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_removes_that_devices_pushers() {
    let server = TestServer::start().await;
    let phone = Client::register(&server, "alice").await;
    let laptop = Client::login(&server, &phone.user_id, tern_tests::PASSWORD).await;
    let set = format!("{V3}/pushers/set");
    assert_ok(phone.post(&set, &pusher("phone-key", GATEWAY)).await);
    assert_ok(laptop.post(&set, &pusher("laptop-key", GATEWAY)).await);
    assert_eq!(laptop.pushers().await.len(), 2);

    // The phone logs out: only its pusher goes.
    assert_ok(phone.post(&format!("{V3}/logout"), &json!({})).await);
    let left = laptop.pushers().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["pushkey"], "laptop-key");

    // Logging out everywhere removes the rest.
    assert_ok(laptop.post(&format!("{V3}/logout/all"), &json!({})).await);
    let again = Client::login(&server, &laptop.user_id, tern_tests::PASSWORD).await;
    assert!(again.pushers().await.is_empty());
}
