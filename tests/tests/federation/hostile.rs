//! A remote server is as untrusted as a client: forged events are refused,
//! events changed on the way are kept redacted, a server speaks only for
//! its own users, and a room's server ACL is obeyed. The peer is played
//! with a real server's key.

use super::*;

#[tokio::test]
async fn forged_changed_and_foreign_events_are_handled_as_the_spec_says() {
    let (a, b) = tokio::join!(FederatingTern::start(), FederatingTern::start());
    let alice = Client::register(&a.server, "alice").await;
    let bob = Client::register(&b.server, "bob").await;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await;
    assert_ok(join_through(&bob, &room, &a.name).await);

    // Alice's next event, as server A would build it, on what B holds.
    let state = assert_ok(alice.get(&format!("{V3}/rooms/{}/state", enc(&room))).await);
    let state_id = |kind: &str, key: &str| id_in(&state, kind, key);
    let auth = json!([
        state_id("m.room.create", ""),
        state_id("m.room.power_levels", ""),
        state_id("m.room.member", &alice.user_id),
    ]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let latest = bob.messages(&room, "b", None, 1).await["chunk"][0]["event_id"].clone();
    let message = |body: &str| {
        json!({
            "type": "m.room.message", "room_id": room, "sender": alice.user_id,
            "content": {"msgtype": "m.text", "body": body},
            "prev_events": [latest], "auth_events": auth, "depth": 100,
            "origin_server_ts": now,
        })
    };
    let as_a = Impersonator::of(&a);

    // Signed, then changed in a signed field: the signature fails.
    let (_, mut forged) = as_a.sign_pdu(message("forged"));
    forged["origin_server_ts"] = json!(now + 1);
    let forged_id = event_id(&forged);
    // Signed, then its content changed: the signature (over the redacted
    // form) holds, the content hash does not.
    let (changed_id, mut changed) = as_a.sign_pdu(message("original"));
    changed["content"]["body"] = json!("changed on the way");
    let (genuine_id, genuine) = as_a.sign_pdu(message("genuine"));
    let transaction = json!({
        "origin": a.name, "origin_server_ts": now,
        "pdus": [forged, changed, genuine],
    });
    let (status, answer) = as_a
        .put(&b, "/_matrix/federation/v1/send/hostile-1", &transaction)
        .await;
    assert_eq!(status, 200, "{answer}");
    let error = |id: &str| answer["pdus"][id]["error"].clone();
    assert!(
        error(&forged_id)
            .as_str()
            .is_some_and(|e| e.contains("signature")),
        "{answer}"
    );
    assert!(error(&changed_id).is_null(), "{answer}");
    assert!(error(&genuine_id).is_null(), "{answer}");

    // Bob sees the genuine one, the changed one redacted, never the forged.
    let event = |id: String| {
        let bob = &bob;
        let room = &room;
        async move {
            bob.get(&format!("{V3}/rooms/{}/event/{}", enc(room), enc(&id)))
                .await
        }
    };
    let (status, shown) = event(genuine_id.clone()).await;
    assert_eq!(
        (status, &shown["content"]["body"]),
        (200, &json!("genuine"))
    );
    let (status, shown) = event(changed_id.clone()).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["content"], json!({}), "kept redacted: {shown}");
    let (status, _) = event(forged_id.clone()).await;
    assert_eq!(status, 404);

    // The same transaction again gets the same answer and changes nothing.
    let (status, again) = as_a
        .put(&b, "/_matrix/federation/v1/send/hostile-1", &transaction)
        .await;
    assert_eq!((status, &again), (200, &answer));

    // Server B sending alice's (genuinely signed) event to A: B does not
    // speak for A's users.
    let as_b = Impersonator::of(&b);
    let (foreign_id, foreign) = as_a.sign_pdu(message("not yours to send"));
    let transaction = json!({
        "origin": b.name, "origin_server_ts": now, "pdus": [foreign],
    });
    let (status, answer) = as_b
        .put(&a, "/_matrix/federation/v1/send/hostile-2", &transaction)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["pdus"][&foreign_id]["error"]
            .as_str()
            .is_some_and(|e| e.contains("is not a user of")),
        "{answer}"
    );
    let (status, _) = alice
        .get(&format!(
            "{V3}/rooms/{}/event/{}",
            enc(&room),
            enc(&foreign_id)
        ))
        .await;
    assert_eq!(status, 404);

    // A room's server ACL shuts B out: bob's (genuinely signed) event is
    // refused by A.
    let acl = json!({"allow": ["*"], "deny": ["localhost"], "allow_ip_literals": false});
    let path = format!("{V3}/rooms/{}/state/m.room.server_acl/", enc(&room));
    assert_ok(alice.put(&path, &acl).await);
    let mut from_bob = message("denied");
    from_bob["sender"] = json!(bob.user_id);
    from_bob["auth_events"] = json!([
        state_id("m.room.create", ""),
        state_id("m.room.power_levels", ""),
        state_id("m.room.member", &bob.user_id),
    ]);
    let (denied_id, denied) = as_b.sign_pdu(from_bob);
    let transaction = json!({
        "origin": b.name, "origin_server_ts": now, "pdus": [denied],
    });
    let (status, answer) = as_b
        .put(&a, "/_matrix/federation/v1/send/hostile-3", &transaction)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["pdus"][&denied_id]["error"]
            .as_str()
            .is_some_and(|e| e.contains("server ACL")),
        "{answer}"
    );
}

/// One transaction carries a ban and then a message of the banned user:
/// the PDUs of a room are authorized in order against the state each
/// accepted one moves, so the message (allowed by its own auth events,
/// which predate the ban) is soft-failed, never shown, while the other
/// room's message in the same transaction lands.
#[tokio::test]
async fn a_transaction_is_authorized_in_order_as_its_state_changes() {
    let (a, b) = tokio::join!(FederatingTern::start(), FederatingTern::start());
    let alice = Client::register(&a.server, "alice").await;
    let carol = Client::register(&a.server, "carol").await;
    let bob = Client::register(&b.server, "bob").await;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await;
    let other = alice.create_room(&json!({"preset": "public_chat"})).await;
    assert_ok(carol.join(&room).await);
    assert_ok(join_through(&bob, &room, &a.name).await);
    assert_ok(join_through(&bob, &other, &a.name).await);
    shows_membership(&bob, &room, &carol.user_id, "join").await;

    let state_of = |room: &str| {
        let alice = alice.clone();
        let path = format!("{V3}/rooms/{}/state", enc(room));
        async move { assert_ok(alice.get(&path).await) }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let latest = |room: &str| {
        let bob = bob.clone();
        let room = room.to_owned();
        async move { bob.messages(&room, "b", None, 1).await["chunk"][0]["event_id"].clone() }
    };
    let state = state_of(&room).await;
    let (create, power) = (
        id_in(&state, "m.room.create", ""),
        id_in(&state, "m.room.power_levels", ""),
    );
    let (alice_member, carol_member) = (
        id_in(&state, "m.room.member", &alice.user_id),
        id_in(&state, "m.room.member", &carol.user_id),
    );
    let as_a = Impersonator::of(&a);
    let (ban_id, ban) = as_a.sign_pdu(json!({
        "type": "m.room.member", "state_key": carol.user_id, "room_id": room,
        "sender": alice.user_id, "content": {"membership": "ban"},
        "prev_events": [latest(&room).await], "depth": 100, "origin_server_ts": now,
        "auth_events": [create, power, alice_member, carol_member],
    }));
    let (banned_id, banned) = as_a.sign_pdu(json!({
        "type": "m.room.message", "room_id": room, "sender": carol.user_id,
        "content": {"msgtype": "m.text", "body": "after my ban"},
        "prev_events": [ban_id], "depth": 101, "origin_server_ts": now,
        "auth_events": [create, power, carol_member],
    }));
    let other_state = state_of(&other).await;
    let (elsewhere_id, elsewhere) = as_a.sign_pdu(json!({
        "type": "m.room.message", "room_id": other, "sender": alice.user_id,
        "content": {"msgtype": "m.text", "body": "meanwhile, elsewhere"},
        "prev_events": [latest(&other).await], "depth": 100, "origin_server_ts": now,
        "auth_events": [
            id_in(&other_state, "m.room.create", ""),
            id_in(&other_state, "m.room.power_levels", ""),
            id_in(&other_state, "m.room.member", &alice.user_id),
        ],
    }));
    let (after_id, after) = as_a.sign_pdu(json!({
        "type": "m.room.message", "room_id": room, "sender": alice.user_id,
        "content": {"msgtype": "m.text", "body": "carol is out"},
        "prev_events": [ban_id], "depth": 101, "origin_server_ts": now,
        "auth_events": [create, power, alice_member],
    }));
    let transaction = json!({
        "origin": a.name, "origin_server_ts": now,
        "pdus": [ban, elsewhere, banned, after],
    });
    let (status, answer) = as_a
        .put(&b, "/_matrix/federation/v1/send/in-order-1", &transaction)
        .await;
    assert_eq!(status, 200, "{answer}");
    for id in [&ban_id, &banned_id, &elsewhere_id, &after_id] {
        // Soft-failing is not refusing: every one is answered as accepted.
        assert!(answer["pdus"][id]["error"].is_null(), "{id}: {answer}");
    }

    // Bob's server holds the ban and both rooms' messages, not the banned
    // user's message: the later message is the barrier.
    let shown = |room: &str, id: &str| {
        let bob = bob.clone();
        let path = format!("{V3}/rooms/{}/event/{}", enc(room), enc(id));
        async move { bob.get(&path).await.0 }
    };
    assert_eq!(shown(&room, &after_id).await, 200);
    assert_eq!(shown(&other, &elsewhere_id).await, 200);
    assert_eq!(shown(&room, &ban_id).await, 200);
    shows_membership(&bob, &room, &carol.user_id, "ban").await;
    assert_eq!(shown(&room, &banned_id).await, 404);
}
