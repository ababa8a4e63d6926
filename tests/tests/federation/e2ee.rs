//! Encryption across servers, with Synapse: each side's users' device keys
//! queried and one-time keys claimed through the other server, to-device
//! messages both ways, and device-list changes heard across.

use base64::Engine;
use ruma_signatures::Ed25519KeyPair;

use super::resident::{started_again, stopped};
use super::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Uploads signed device keys and two one-time keys for `client`'s
/// device; returns the device keys.
async fn upload_keys(client: &Client) -> Value {
    let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), client.device_id.clone())
        .expect("a key pair");
    let device = &client.device_id;
    let mut keys: CanonicalJsonObject = serde_json::from_value(json!({
        "user_id": client.user_id, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("ed25519:{device}"): b64(&pair.public_key()),
            format!("curve25519:{device}"): b64(&[7; 32]),
        },
    }))
    .unwrap();
    ruma_signatures::sign_json(&client.user_id, &pair, &mut keys).unwrap();
    let keys = serde_json::to_value(keys).unwrap();
    let one_time = |n: u8| {
        let mut key: CanonicalJsonObject =
            serde_json::from_value(json!({"key": b64(&[n; 32])})).unwrap();
        ruma_signatures::sign_json(&client.user_id, &pair, &mut key).unwrap();
        serde_json::to_value(key).unwrap()
    };
    let body = json!({
        "device_keys": keys,
        "one_time_keys": {
            "signed_curve25519:AAAAAQ": one_time(1),
            "signed_curve25519:AAAAAg": one_time(2),
        },
    });
    let answer = assert_ok(client.post(&format!("{V3}/keys/upload"), &body).await);
    assert_eq!(
        answer["one_time_key_counts"]["signed_curve25519"], 2,
        "{answer}"
    );
    keys
}

/// `user`'s devices as `client` learns them through `/keys/query`.
async fn queried(client: &Client, user: &str) -> Value {
    let body = json!({"device_keys": {user: []}});
    let answer = assert_ok(client.post(&format!("{V3}/keys/query"), &body).await);
    assert_eq!(answer["failures"], json!({}), "{answer}");
    answer["device_keys"][user].clone()
}

async fn claimed(client: &Client, user: &str, device: &str) -> Value {
    let body = json!({"one_time_keys": {user: {device: "signed_curve25519"}}});
    let answer = assert_ok(client.post(&format!("{V3}/keys/claim"), &body).await);
    assert_eq!(answer["failures"], json!({}), "{answer}");
    answer["one_time_keys"][user][device].clone()
}

async fn send_to_device(from: &Client, to: &Client, txn: &str, secret: &str) {
    let body = json!({"messages": {&to.user_id: {&to.device_id: {"secret": secret}}}});
    let path = format!("{V3}/sendToDevice/m.tern.test/{txn}");
    assert_ok(from.put(&path, &body).await);
}

/// Syncs `client` from `since` until its device gets the message.
async fn receives(client: &Client, since: &str, secret: &str) {
    client
        .sync_until(since, WAIT, None, |resp| {
            resp["to_device"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["content"]["secret"] == secret)
        })
        .await;
}

async fn hears_devices_change(client: &Client, since: &str, user: &str) {
    client
        .sync_until(since, WAIT, None, |resp| {
            resp["device_lists"]["changed"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|u| u == user)
        })
        .await;
}

#[tokio::test]
async fn keys_and_to_device_messages_cross_between_tern_and_synapse() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    let room = bob.create_room(&json!({"preset": "public_chat"})).await;
    let (status, joined) = join_through(&alice, &room, &synapse.name).await;
    assert_eq!(status, 200, "{joined}\n{}", tern.server.log_tail(3000));
    shows_membership(&bob, &room, &alice.user_id, "join").await;

    let alice_keys = upload_keys(&alice).await;
    let bob_keys = upload_keys(&bob).await;
    let alice_since = next_batch(&alice.sync(None, 0, None).await);
    let bob_since = next_batch(&bob.sync(None, 0, None).await);

    // Synapse asks Tern for Alice's keys, Tern asks Synapse for Bob's.
    let seen_by_bob = queried(&bob, &alice.user_id).await;
    assert_eq!(
        seen_by_bob[&alice.device_id]["keys"], alice_keys["keys"],
        "{seen_by_bob}"
    );
    assert_eq!(
        seen_by_bob[&alice.device_id]["signatures"],
        alice_keys["signatures"]
    );
    let seen_by_alice = queried(&alice, &bob.user_id).await;
    assert_eq!(
        seen_by_alice[&bob.device_id]["keys"], bob_keys["keys"],
        "{seen_by_alice}"
    );

    // One-time keys, claimed across, each once.
    let from_tern = claimed(&bob, &alice.user_id, &alice.device_id).await;
    let from_synapse = claimed(&alice, &bob.user_id, &bob.device_id).await;
    assert_eq!(
        from_tern.as_object().map(|k| k.len()),
        Some(1),
        "{from_tern}"
    );
    assert_eq!(
        from_synapse.as_object().map(|k| k.len()),
        Some(1),
        "{from_synapse}"
    );
    let again = claimed(&bob, &alice.user_id, &alice.device_id).await;
    assert_ne!(again, from_tern, "a one-time key was handed out twice");

    // To-device messages each way.
    send_to_device(&alice, &bob, "t1", "from tern").await;
    receives(&bob, &bob_since, "from tern").await;
    send_to_device(&bob, &alice, "s1", "from synapse").await;
    receives(&alice, &alice_since, "from synapse").await;

    // A new device on each side is heard of on the other.
    let alice_tablet = Client::login(&tern.server, &alice.user_id, PASSWORD).await;
    upload_keys(&alice_tablet).await;
    hears_devices_change(&bob, &bob_since, &alice.user_id).await;
    eventually("synapse lists alice's new device", async || {
        let devices = queried(&bob, &alice.user_id).await;
        devices
            .get(&alice_tablet.device_id)
            .map(|_| ())
            .ok_or(devices)
    })
    .await;
    let bob_laptop = Client::login_at(&synapse.client_url, &bob.user_id, PASSWORD).await;
    upload_keys(&bob_laptop).await;
    hears_devices_change(&alice, &alice_since, &bob.user_id).await;
    let devices = queried(&alice, &bob.user_id).await;
    assert!(devices.get(&bob_laptop.device_id).is_some(), "{devices}");
}

/// A to-device message for a Synapse user, acknowledged while Synapse is
/// down, survives Tern's crash: it is sent once both are back.
#[tokio::test]
async fn a_to_device_message_for_another_server_survives_a_crash() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let mut tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    let bob_since = next_batch(&bob.sync(None, 0, None).await);

    let synapse = stopped(synapse).await;
    send_to_device(&alice, &bob, "crash1", "kept through a crash").await;
    tern.server.kill_hard();
    tern.server.restart().await;
    let _synapse = started_again(synapse).await;
    receives(&bob, &bob_since, "kept through a crash").await;
}
