//! Events in the client format: the fields a client reads are there with the
//! right types, and event ids have the room-version-4+ shape (`$` + 43 chars of
//! URL-safe unpadded base64 of the reference hash).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tern_tests::{assert_error, assert_ok, enc, room_of_two, Client, TestServer, V3};

/// `$` followed by exactly 43 characters of the URL-safe base64 alphabet.
fn is_v4_event_id(id: &str) -> bool {
    id.len() == 44
        && id.starts_with('$')
        && id[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

async fn get_event(client: &Client, room: &str, event_id: &str) -> (u16, Value) {
    client
        .get(&format!("{V3}/rooms/{}/event/{}", enc(room), enc(event_id)))
        .await
}

#[test]
fn event_id_shape_check_itself() {
    assert!(is_v4_event_id(
        "$acR1l0raoZnm60CBwAVgqbZqoO_mYU81xysh1u7XcJk"
    ));
    assert!(!is_v4_event_id("$abc:localhost"));
    assert!(!is_v4_event_id(
        "$acR1l0raoZnm60CBwAVgqbZqoO+mYU81xysh1u7XcJk"
    ));
    assert!(!is_v4_event_id(
        "acR1l0raoZnm60CBwAVgqbZqoO_mYU81xysh1u7XcJk="
    ));
}

#[tokio::test]
async fn fetched_event_has_the_client_format() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let before = now_ms();
    let event_id = alice.send_text(&room, "t1", "hello world").await;
    let after = now_ms();
    assert!(is_v4_event_id(&event_id), "event id shape: {event_id}");

    // Read by another member, as a client showing the message would.
    let event = assert_ok(get_event(&bob, &room, &event_id).await);
    assert_eq!(event["event_id"], event_id.as_str());
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["sender"], alice.user_id.as_str());
    assert_eq!(event["type"], "m.room.message");
    assert_eq!(
        event["content"],
        json!({"msgtype": "m.text", "body": "hello world"})
    );
    let ts = event["origin_server_ts"]
        .as_i64()
        .unwrap_or_else(|| panic!("origin_server_ts is an integer: {event}"));
    assert!(
        (before - 1000..=after + 1000).contains(&ts),
        "origin_server_ts {ts} not within the send ({before}..{after})"
    );
    let age = event["unsigned"]["age"]
        .as_i64()
        .unwrap_or_else(|| panic!("unsigned.age is an integer: {event}"));
    assert!(
        (0..60_000).contains(&age),
        "age {age} ms is implausible: {event}"
    );
    assert!(
        event.get("state_key").is_none(),
        "a message has no state_key"
    );
    // Federation-only fields stay out of the client format.
    for field in [
        "auth_events",
        "prev_events",
        "hashes",
        "signatures",
        "depth",
    ] {
        assert!(
            event.get(field).is_none(),
            "`{field}` leaked into the client format: {event}"
        );
    }
}

#[tokio::test]
async fn state_events_carry_their_state_key() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let room = alice.create_room(&json!({"name": "Room"})).await;
    let put = assert_ok(
        alice
            .put(
                &format!("{V3}/rooms/{}/state/m.room.topic/", enc(&room)),
                &json!({"topic": "t"}),
            )
            .await,
    );
    let event_id = put["event_id"].as_str().expect("event_id");
    let event = assert_ok(get_event(&alice, &room, event_id).await);
    assert_eq!(event["type"], "m.room.topic");
    assert_eq!(event["state_key"], "");
    assert_eq!(event["content"]["topic"], "t");
}

#[tokio::test]
async fn every_event_in_a_room_has_a_well_formed_unique_id() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let room = alice
        .create_room(&json!({"preset": "private_chat", "name": "Ids", "topic": "shapes"}))
        .await;
    for i in 0..5 {
        alice.send_text(&room, &format!("t{i}"), "same body").await;
    }
    let history = alice.room_history(&room).await;
    assert!(
        history.len() >= 10,
        "create, member, power levels, join rules, history visibility, name, topic, 5 messages: {}",
        history.len()
    );
    let mut seen = std::collections::HashSet::new();
    for event in &history {
        let id = event["event_id"].as_str().unwrap_or_default();
        assert!(is_v4_event_id(id), "bad event id {id:?} in {event}");
        assert!(seen.insert(id.to_owned()), "event id {id} appears twice");
        assert!(event["origin_server_ts"].is_i64(), "{event}");
    }
    assert_eq!(
        history[0]["type"], "m.room.create",
        "history starts at creation"
    );
}

#[tokio::test]
async fn unknown_event_is_404() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let room = alice.create_room(&json!({})).await;
    assert_error(
        &get_event(
            &alice,
            &room,
            "$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    // An event of another room is not found through this room either.
    let other = alice.create_room(&json!({})).await;
    let event_id = alice.send_text(&other, "t1", "elsewhere").await;
    assert_error(
        &get_event(&alice, &room, &event_id).await,
        404,
        "M_NOT_FOUND",
    );
}
