//! Presence as users see it: online while syncing, unavailable when idle,
//! offline after the last sync ends, status messages, `m.presence` in the
//! `presence` section of co-members' syncs, and hiding it.
//!
//! The server runs with short idle and offline periods so the transitions
//! happen within seconds.

use std::time::Duration;

use serde_json::{json, Value};
use tern_tests::{
    assert_error, assert_ok, enc, eventually, next_batch, public_room, room_of_two, Client,
    ServerOptions, TestServer, V3,
};
use tokio::task::JoinHandle;

const IDLE_MS: u64 = 1_500;
const OFFLINE_MS: u64 = 1_500;

async fn start() -> TestServer {
    TestServer::start_with(ServerOptions {
        env: vec![
            ("TERN_PRESENCE_IDLE_MS".into(), IDLE_MS.to_string()),
            ("TERN_PRESENCE_OFFLINE_MS".into(), OFFLINE_MS.to_string()),
        ],
        ..ServerOptions::default()
    })
    .await
}

/// The latest `m.presence` content for `user` in a sync response.
fn presence_of(sync: &Value, user: &str) -> Option<Value> {
    sync["presence"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["type"] == "m.presence" && e["sender"] == user)
        .map(|e| e["content"].clone())
}

/// Keeps long-polling `/sync` for `client` (as an open app does) until aborted.
fn keep_syncing(client: &Client) -> JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut since = next_batch(&client.sync(None, 0, None).await);
        loop {
            since = next_batch(&client.sync(Some(&since), 400, None).await);
        }
    })
}

/// Long-polls as `watcher` until `user`'s presence matches `want`.
async fn wait_for_presence(
    watcher: &Client,
    since: &str,
    user: &str,
    want: impl Fn(&Value) -> bool,
) -> (Value, String) {
    let resp = watcher
        .sync_until(since, Duration::from_secs(15), None, |r| {
            presence_of(r, user).is_some_and(|c| want(&c))
        })
        .await;
    (presence_of(&resp, user).unwrap(), next_batch(&resp))
}

async fn status(client: &Client, user: &str) -> (u16, Value) {
    client
        .get(&format!("{V3}/presence/{}/status", enc(user)))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_then_unavailable_when_idle_then_offline_after_the_last_sync() {
    let server = start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let since = next_batch(&bob.sync(None, 0, None).await);

    // Alice opens her app: she is online, active just now.
    let syncing = keep_syncing(&alice);
    let (online, since) =
        wait_for_presence(&bob, &since, &alice.user_id, |c| c["presence"] == "online").await;
    assert_eq!(online["currently_active"], true, "{online}");
    assert!(
        online["last_active_ago"].as_i64().unwrap() < 5_000,
        "{online}"
    );
    let (_, body) = status(&bob, &alice.user_id).await;
    assert_eq!(body["presence"], "online", "{body}");

    // Still syncing but doing nothing: unavailable after the idle period.
    let (idle, since) = wait_for_presence(&bob, &since, &alice.user_id, |c| {
        c["presence"] == "unavailable"
    })
    .await;
    assert_eq!(idle["currently_active"], false, "{idle}");

    // Sending a message is activity: back online.
    alice.send_text(&room, "t1", "back").await;
    let (back, since) =
        wait_for_presence(&bob, &since, &alice.user_id, |c| c["presence"] == "online").await;
    assert_eq!(back["currently_active"], true, "{back}");

    // The app closes: offline once the grace period has passed, with her
    // last seen time still known.
    syncing.abort();
    let (offline, _) =
        wait_for_presence(&bob, &since, &alice.user_id, |c| c["presence"] == "offline").await;
    assert!(offline["last_active_ago"].as_i64().is_some(), "{offline}");
    let (_, body) = status(&alice, &alice.user_id).await;
    assert_eq!(body["presence"], "offline", "{body}");
    assert!(body["last_active_ago"].as_i64().unwrap() >= 0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_messages_and_who_may_see_them() {
    let server = start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let stranger = Client::register(&server, "stranger").await;
    public_room(&alice, &[&bob]).await;
    let since = next_batch(&bob.sync(None, 0, None).await);
    let stranger_since = next_batch(&stranger.sync(None, 0, None).await);

    let path = format!("{V3}/presence/{}/status", enc(&alice.user_id));
    let (code, body) = alice
        .put(
            &path,
            &json!({"presence": "online", "status_msg": "in a meeting"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    let (content, _) = wait_for_presence(&bob, &since, &alice.user_id, |c| {
        c["status_msg"] == "in a meeting"
    })
    .await;
    assert_eq!(content["presence"], "online");
    let (code, body) = status(&bob, &alice.user_id).await;
    assert_eq!(code, 200);
    assert_eq!(body["status_msg"], "in a meeting");
    assert_eq!(body["presence"], "online");

    // Someone who shares no room sees neither the status nor the events.
    assert_error(&status(&stranger, &alice.user_id).await, 403, "M_FORBIDDEN");
    let resp = stranger.sync(Some(&stranger_since), 1_000, None).await;
    assert_eq!(presence_of(&resp, &alice.user_id), None, "{resp}");

    // Only for oneself, and only the spec's states.
    assert_error(
        &bob.put(&path, &json!({"presence": "online"})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &alice.put(&path, &json!({"presence": "busy"})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.put(&path, &json!({"status_msg": "no state"})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &status(&alice, "not-a-user-id").await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice
            .get(&format!("{V3}/sync?timeout=0&set_presence=away"))
            .await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_presence_offline_sync_does_not_bring_a_user_online() {
    let server = start().await;
    let (alice, bob, _room) = room_of_two(&server).await;

    let (code, body) = alice
        .get(&format!("{V3}/sync?timeout=0&set_presence=offline"))
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, body) = status(&bob, &alice.user_id).await;
    assert_eq!(body["presence"], "offline", "{body}");

    let (code, body) = alice
        .get(&format!("{V3}/sync?timeout=0&set_presence=unavailable"))
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, body) = status(&bob, &alice.user_id).await;
    assert_eq!(body["presence"], "unavailable", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_can_hide_their_presence() {
    let server = start().await;
    let (alice, bob, _room) = room_of_two(&server).await;
    let since = next_batch(&bob.sync(None, 0, None).await);
    let syncing = keep_syncing(&alice);
    let (_, since) =
        wait_for_presence(&bob, &since, &alice.user_id, |c| c["presence"] == "online").await;

    let hide = format!(
        "{V3}/user/{}/account_data/tern.presence",
        enc(&alice.user_id)
    );
    let (code, body) = alice.put(&hide, &json!({"hidden": true})).await;
    assert_eq!(code, 200, "{body}");

    // Bob now sees her offline with no last seen, though she is syncing.
    let (content, _) =
        wait_for_presence(&bob, &since, &alice.user_id, |c| c["presence"] == "offline").await;
    assert_eq!(content, json!({"presence": "offline"}));
    let (_, body) = status(&bob, &alice.user_id).await;
    assert_eq!(body, json!({"presence": "offline"}));
    // A fresh sync of Bob's says nothing about her at all.
    let initial = bob.sync(None, 0, None).await;
    assert_eq!(presence_of(&initial, &alice.user_id), None, "{initial}");
    // She still sees her own.
    let (_, body) = status(&alice, &alice.user_id).await;
    assert_eq!(body["presence"], "online", "{body}");

    let (code, _) = alice.put(&hide, &json!({"hidden": false})).await;
    assert_eq!(code, 200);
    let (_, body) = status(&bob, &alice.user_id).await;
    assert_eq!(body["presence"], "online", "{body}");
    syncing.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_can_turn_presence_off() {
    let server = start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let _ = alice.sync(None, 0, None).await;

    let no_presence = r#"{"presence": {"not_types": ["*"]}}"#;
    let initial = bob.sync(None, 0, Some(no_presence)).await;
    assert_eq!(initial["presence"]["events"], json!([]), "{initial}");
    // With the default filter the same sync shows Alice online.
    let initial = bob.sync(None, 0, None).await;
    let content = presence_of(&initial, &alice.user_id).expect("alice's presence");
    assert_eq!(content["presence"], "online");

    // A message still arrives; presence stays out.
    let since = next_batch(&bob.sync(None, 0, Some(no_presence)).await);
    alice.send_text(&room, "t1", "hello").await;
    let resp = bob
        .sync_until(&since, Duration::from_secs(10), Some(no_presence), |r| {
            !r["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .is_none_or(|e| e.is_empty())
        })
        .await;
    assert_eq!(resp["presence"]["events"], json!([]), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_who_newly_share_a_room_see_each_others_presence() {
    let server = start().await;
    let u1 = Client::register(&server, "u1").await;
    let u2 = Client::register(&server, "u2").await;
    // u2 is online before u1 takes its token, and stays so.
    let syncing = keep_syncing(&u2);
    eventually("u2 online", async || {
        assert_ok(status(&u2, &u2.user_id).await)["presence"] == "online"
    })
    .await;
    let since = next_batch(&u1.sync(None, 0, None).await);
    assert!(presence_of(&u1.sync(None, 0, None).await, &u2.user_id).is_none());

    let room = u1
        .create_room(
            &json!({"is_direct": true, "invite": [u2.user_id], "preset": "trusted_private_chat"}),
        )
        .await;
    let (status, body) = u2.join(&room).await;
    assert_eq!(status, 200, "join: {body}");
    // u2's presence did not move after u1's token, yet u1 now learns it.
    let resp = u1
        .sync_until(&since, Duration::from_secs(10), None, |r| {
            presence_of(r, &u2.user_id).is_some()
        })
        .await;
    assert_eq!(
        presence_of(&resp, &u2.user_id).unwrap()["presence"],
        "online"
    );
    syncing.abort();
}
