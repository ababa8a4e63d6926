//! Rooms as their members see them: presets decide who may join, power levels
//! decide who may kick and ban, state can be read and written, outsiders cannot
//! read a "joined"-visibility room, aliases resolve, redactions strip content.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use tern_tests::{
    assert_error, assert_ok, enc, errcode, public_room, room_of_two, Client, TestServer, V3,
};

fn room_path(room: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}{rest}", enc(room))
}

/// The membership of `user` in `room` as `viewer` sees the member state event.
async fn membership(viewer: &Client, room: &str, user: &str) -> String {
    let path = room_path(room, &format!("/state/m.room.member/{}", enc(user)));
    let body = assert_ok(viewer.get(&path).await);
    body["membership"].as_str().unwrap_or_default().to_owned()
}

/// Sorted user ids from a `/members` response.
fn member_ids(body: &Value) -> BTreeSet<String> {
    body["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk in {body}"))
        .iter()
        .map(|e| e["state_key"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn private_chat_needs_an_invite() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let room = alice.create_room(&json!({"preset": "private_chat"})).await;

    assert_error(&bob.join(&room).await, 403, "M_FORBIDDEN");

    assert_ok(alice.invite(&room, &bob.user_id).await);
    assert_eq!(membership(&alice, &room, &bob.user_id).await, "invite");
    let joined = assert_ok(bob.join(&room).await);
    assert_eq!(joined["room_id"], room.as_str());

    let members = assert_ok(bob.get(&room_path(&room, "/joined_members")).await);
    let joined: BTreeSet<String> = members["joined"]
        .as_object()
        .unwrap_or_else(|| panic!("no joined map in {members}"))
        .keys()
        .cloned()
        .collect();
    assert_eq!(joined, set(&[&alice.user_id, &bob.user_id]));
}

#[tokio::test]
async fn public_chat_can_be_joined_and_used() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await;

    let joined = assert_ok(bob.join(&room).await);
    assert_eq!(joined["room_id"], room.as_str());
    let event_id = bob.send_text(&room, "t1", "hi alice").await;

    let page = alice.messages(&room, "b", None, 10).await;
    let newest = &page["chunk"][0];
    assert_eq!(newest["event_id"], event_id.as_str(), "{page}");
    assert_eq!(newest["sender"], bob.user_id.as_str());
    assert_eq!(newest["content"]["body"], "hi alice");

    // Joining twice is harmless.
    assert_ok(bob.join(&room).await);
}

#[tokio::test]
async fn kick_and_ban_need_power_and_bans_stick() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let carol = Client::register(&server, "carol").await;
    let room = public_room(&alice, &[&bob, &carol]).await;

    // An ordinary member (power 0) can neither kick nor ban.
    let kick = room_path(&room, "/kick");
    let ban = room_path(&room, "/ban");
    let unban = room_path(&room, "/unban");
    assert_error(
        &bob.post(&kick, &json!({"user_id": carol.user_id})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.post(&ban, &json!({"user_id": carol.user_id})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(membership(&alice, &room, &carol.user_id).await, "join");

    // The creator can kick; a kicked user may come back to a public room.
    assert_ok(
        alice
            .post(
                &kick,
                &json!({"user_id": carol.user_id, "reason": "calm down"}),
            )
            .await,
    );
    let path = room_path(
        &room,
        &format!("/state/m.room.member/{}", enc(&carol.user_id)),
    );
    let member = assert_ok(alice.get(&path).await);
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["reason"], "calm down");
    assert_ok(carol.join(&room).await);

    // A banned user cannot rejoin until unbanned.
    assert_ok(alice.post(&ban, &json!({"user_id": bob.user_id})).await);
    assert_eq!(membership(&alice, &room, &bob.user_id).await, "ban");
    // The spec asks for 403 with "a meaningful errcode", not a particular one.
    let (status, body) = bob.join(&room).await;
    assert!(
        status == 403 && errcode(&body).starts_with("M_"),
        "banned user joins: {status} {body}"
    );
    let (status, _) = try_send(&bob, &room).await;
    assert_eq!(status, 403, "a banned user cannot send");

    assert_ok(alice.post(&unban, &json!({"user_id": bob.user_id})).await);
    assert_eq!(membership(&alice, &room, &bob.user_id).await, "leave");
    assert_ok(bob.join(&room).await);
    assert_eq!(membership(&alice, &room, &bob.user_id).await, "join");
}

/// A send attempt whose outcome the caller checks.
async fn try_send(client: &Client, room: &str) -> (u16, Value) {
    client
        .put(
            &room_path(room, "/send/m.room.message/banned-try"),
            &json!({"msgtype": "m.text", "body": "let me in"}),
        )
        .await
}

#[tokio::test]
async fn state_events_can_be_set_and_read() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;

    let topic_path = room_path(&room, "/state/m.room.topic/");
    assert_error(&alice.get(&topic_path).await, 404, "M_NOT_FOUND");

    let name_path = room_path(&room, "/state/m.room.name/");
    let put = assert_ok(alice.put(&name_path, &json!({"name": "Lounge"})).await);
    assert!(put["event_id"].is_string(), "{put}");
    assert_ok(alice.put(&topic_path, &json!({"topic": "Chairs"})).await);

    assert_eq!(
        assert_ok(bob.get(&name_path).await),
        json!({"name": "Lounge"})
    );
    assert_eq!(
        assert_ok(bob.get(&topic_path).await),
        json!({"topic": "Chairs"})
    );

    // A member without power cannot rename the room (state_default is 50).
    assert_error(
        &bob.put(&name_path, &json!({"name": "Mine now"})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(assert_ok(bob.get(&name_path).await)["name"], "Lounge");

    // The full state has both, as state events.
    let state = assert_ok(bob.get(&room_path(&room, "/state")).await);
    let state = state
        .as_array()
        .unwrap_or_else(|| panic!("state is a list: {state}"));
    let has = |ty: &str, key: &str, value: &str| {
        state
            .iter()
            .any(|e| e["type"] == ty && e["state_key"] == "" && e["content"][key] == value)
    };
    assert!(has("m.room.name", "name", "Lounge"), "{state:?}");
    assert!(has("m.room.topic", "topic", "Chairs"), "{state:?}");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
}

#[tokio::test]
async fn outsiders_cannot_read_a_joined_only_room() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let eve = Client::register(&server, "eve").await;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await;
    assert_ok(
        alice
            .put(
                &room_path(&room, "/state/m.room.history_visibility/"),
                &json!({"history_visibility": "joined"}),
            )
            .await,
    );
    let event_id = alice.send_text(&room, "t1", "members only").await;

    assert_error(
        &eve.get(&room_path(&room, "/messages?dir=b&limit=10")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &eve.get(&room_path(&room, "/state")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &eve.get(&room_path(&room, "/state/m.room.create/")).await,
        403,
        "M_FORBIDDEN",
    );
    let (status, body) = eve
        .get(&room_path(&room, &format!("/event/{}", enc(&event_id))))
        .await;
    assert!(
        (status == 403 || status == 404) && body["content"].is_null(),
        "an outsider must not fetch the event: {status} {body}"
    );
}

#[tokio::test]
async fn members_can_be_filtered_by_membership() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let carol = Client::register(&server, "carol").await;
    let room = alice.create_room(&json!({"preset": "private_chat"})).await;
    assert_ok(alice.invite(&room, &bob.user_id).await);
    assert_ok(bob.join(&room).await);
    assert_ok(alice.invite(&room, &carol.user_id).await);

    let (a, b, c) = (&*alice.user_id, &*bob.user_id, &*carol.user_id);
    let all = assert_ok(alice.get(&room_path(&room, "/members")).await);
    assert_eq!(member_ids(&all), set(&[a, b, c]));
    let joined = assert_ok(
        alice
            .get(&room_path(&room, "/members?membership=join"))
            .await,
    );
    assert_eq!(member_ids(&joined), set(&[a, b]));
    let invited = assert_ok(
        alice
            .get(&room_path(&room, "/members?membership=invite"))
            .await,
    );
    assert_eq!(member_ids(&invited), set(&[c]));
    let not_joined = assert_ok(
        alice
            .get(&room_path(&room, "/members?not_membership=join"))
            .await,
    );
    assert_eq!(member_ids(&not_joined), set(&[c]));

    let jm = assert_ok(alice.get(&room_path(&room, "/joined_members")).await);
    let keys: BTreeSet<String> = jm["joined"]
        .as_object()
        .unwrap_or_else(|| panic!("{jm}"))
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, set(&[a, b]));
}

#[tokio::test]
async fn aliases_resolve_and_can_be_joined() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;

    // An alias made at creation time.
    let lobby = alice
        .create_room(&json!({"preset": "public_chat", "room_alias_name": "lobby"}))
        .await;
    let found = assert_ok(
        bob.get(&format!("{V3}/directory/room/{}", enc("#lobby:localhost")))
            .await,
    );
    assert_eq!(found["room_id"], lobby.as_str());
    assert!(
        found["servers"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "localhost")),
        "servers should list localhost: {found}"
    );

    // An alias added later; taking it twice conflicts.
    let hall = alice.create_room(&json!({"preset": "public_chat"})).await;
    let alias_path = format!("{V3}/directory/room/{}", enc("#hall:localhost"));
    assert_ok(alice.put(&alias_path, &json!({"room_id": hall})).await);
    let (status, body) = alice.put(&alias_path, &json!({"room_id": lobby})).await;
    assert_eq!(status, 409, "alias already taken: {body}");
    assert_eq!(
        assert_ok(bob.get(&alias_path).await)["room_id"],
        hall.as_str()
    );

    let joined = assert_ok(bob.join("#hall:localhost").await);
    assert_eq!(joined["room_id"], hall.as_str());
    assert_eq!(membership(&alice, &hall, &bob.user_id).await, "join");

    let missing = format!("{V3}/directory/room/{}", enc("#nowhere:localhost"));
    assert_error(&bob.get(&missing).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn redaction_strips_message_content() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let secret = alice.send_text(&room, "t1", "my password is hunter2").await;

    // Bob has no power to redact someone else's message.
    let bob_redact = room_path(&room, &format!("/redact/{}/r0", enc(&secret)));
    assert_error(&bob.put(&bob_redact, &json!({})).await, 403, "M_FORBIDDEN");

    let redact = room_path(&room, &format!("/redact/{}/r1", enc(&secret)));
    let resp = assert_ok(alice.put(&redact, &json!({"reason": "oops"})).await);
    let redaction_id = resp["event_id"].as_str().expect("redaction event_id");

    let event = assert_ok(
        bob.get(&room_path(&room, &format!("/event/{}", enc(&secret))))
            .await,
    );
    assert_eq!(event["content"], json!({}), "redacted content: {event}");
    assert_eq!(
        event["unsigned"]["redacted_because"]["event_id"], redaction_id,
        "redacted events point at their redaction: {event}"
    );

    let page = bob.messages(&room, "b", None, 20).await;
    let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
    let in_history = chunk
        .iter()
        .find(|e| e["event_id"] == secret.as_str())
        .unwrap_or_else(|| panic!("redacted event still listed in history: {page}"));
    assert!(
        !in_history.to_string().contains("hunter2"),
        "history must not leak the redacted body: {in_history}"
    );
    assert!(
        chunk.iter().any(|e| e["type"] == "m.room.redaction"
            && (e["redacts"] == secret.as_str() || e["content"]["redacts"] == secret.as_str())),
        "the redaction event itself is in history: {page}"
    );
}

/// `POST /forget`: refused while a member; once forgotten, a left room
/// leaves `include_leave` syncs and its history can no longer be read,
/// until the user joins again.
#[tokio::test]
async fn a_forgotten_room_is_hidden_until_joined_again() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let room = public_room(&alice, &[&bob]).await;
    let kept = public_room(&alice, &[&bob]).await;
    alice.send_text(&room, "t1", "before bob left").await;
    let forget = |room: &str| {
        let bob = bob.clone();
        let path = room_path(room, "/forget");
        async move { bob.post(&path, &json!({})).await }
    };
    assert_error(&forget(&room).await, 400, "M_INVALID_PARAM");

    assert_ok(bob.leave(&room).await);
    assert_ok(bob.leave(&kept).await);
    let with_leave = r#"{"room":{"include_leave":true}}"#;
    let left = |sync: &Value| -> BTreeSet<String> {
        sync["rooms"]["leave"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        left(&bob.sync(None, 0, Some(with_leave)).await),
        set(&[&room, &kept])
    );
    assert_eq!(
        bob.messages(&room, "b", None, 10).await["chunk"][0]["type"],
        "m.room.member"
    );

    assert_ok(forget(&room).await);
    assert_eq!(
        left(&bob.sync(None, 0, Some(with_leave)).await),
        set(&[&kept])
    );
    let path = room_path(&room, "/messages?dir=b&limit=10");
    assert_error(&bob.get(&path).await, 403, "M_FORBIDDEN");

    // Joining again makes it his again.
    assert_ok(bob.join(&room).await);
    let sync = bob.sync(None, 0, Some(with_leave)).await;
    assert!(sync["rooms"]["join"].get(room.as_str()).is_some(), "{sync}");
    assert_ok(bob.get(&path).await);
}
