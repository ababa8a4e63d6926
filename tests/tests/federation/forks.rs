//! Where a room's history forks: two events built on the same state by
//! different hands (a demotion and a rename by the one demoted) reach two
//! servers in opposite orders. Each server keeps the state the spec's
//! state resolution gives, and both end the same. The peer is played with
//! a real server's key, so the order of arrival is the test's to choose.

use super::*;

/// The content of `room`'s `(kind, key)` state as `client` sees it.
async fn state_content(client: &Client, room: &str, kind: &str) -> Value {
    let path = format!("{V3}/rooms/{}/state/{kind}/", enc(room));
    assert_ok(client.get(&path).await)
}

#[tokio::test]
async fn a_demotion_against_a_rename_resolves_alike_whatever_the_order() {
    let (a, b, c) = tokio::join!(
        FederatingTern::start(),
        FederatingTern::start(),
        FederatingTern::start()
    );
    let alice = Client::register(&a.server, "alice").await;
    let carol = Client::register(&a.server, "carol").await;
    let bob = Client::register(&b.server, "bob").await;
    let dave = Client::register(&c.server, "dave").await;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await;
    assert_ok(carol.join(&room).await);
    let name_path = format!("{V3}/rooms/{}/state/m.room.name/", enc(&room));
    assert_ok(alice.put(&name_path, &json!({"name": "Original"})).await);
    let power_path = format!("{V3}/rooms/{}/state/m.room.power_levels/", enc(&room));
    let mut power = assert_ok(alice.get(&power_path).await);
    power["users"][&carol.user_id] = json!(50);
    assert_ok(alice.put(&power_path, &power).await);
    assert_ok(join_through(&bob, &room, &a.name).await);
    assert_ok(join_through(&dave, &room, &a.name).await);
    // Both peers hold the same history up to dave's join.
    shows_membership(&bob, &room, &dave.user_id, "join").await;
    let latest = |client: &Client| {
        let client = client.clone();
        let room = room.clone();
        async move { client.messages(&room, "b", None, 1).await["chunk"][0]["event_id"].clone() }
    };
    let head = latest(&dave).await;
    eventually("both peers at dave's join", async || {
        let on_b = latest(&bob).await;
        (on_b == head).then_some(()).ok_or(on_b)
    })
    .await;

    // On that head, alice demotes carol while carol renames the room.
    let state = assert_ok(alice.get(&format!("{V3}/rooms/{}/state", enc(&room))).await);
    let (create, levels) = (
        id_in(&state, "m.room.create", ""),
        id_in(&state, "m.room.power_levels", ""),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let as_a = Impersonator::of(&a);
    let mut demoted = power.clone();
    demoted["users"]
        .as_object_mut()
        .unwrap()
        .remove(&carol.user_id);
    let (demotion_id, demotion) = as_a.sign_pdu(json!({
        "type": "m.room.power_levels", "state_key": "", "room_id": room,
        "sender": alice.user_id, "content": demoted,
        "prev_events": [head], "depth": 100, "origin_server_ts": now,
        "auth_events": [create, levels, id_in(&state, "m.room.member", &alice.user_id)],
    }));
    let (rename_id, rename) = as_a.sign_pdu(json!({
        "type": "m.room.name", "state_key": "", "room_id": room,
        "sender": carol.user_id, "content": {"name": "Renamed"},
        "prev_events": [head], "depth": 100, "origin_server_ts": now + 1,
        "auth_events": [create, levels, id_in(&state, "m.room.member", &carol.user_id)],
    }));
    // And on her rename, she sets a topic the room never had.
    let (topic_id, topic) = as_a.sign_pdu(json!({
        "type": "m.room.topic", "state_key": "", "room_id": room,
        "sender": carol.user_id, "content": {"topic": "carol's"},
        "prev_events": [rename_id], "depth": 101, "origin_server_ts": now + 2,
        "auth_events": [create, levels, id_in(&state, "m.room.member", &carol.user_id)],
    }));
    let send = async |to: &FederatingTern, txn: &str, pdus: &[&Value]| {
        let transaction = json!({"origin": a.name, "origin_server_ts": now, "pdus": pdus});
        let uri = format!("/_matrix/federation/v1/send/{txn}");
        let (status, answer) = as_a.put(to, &uri, &transaction).await;
        assert_eq!(status, 200, "{answer}");
        for id in [&rename_id, &topic_id, &demotion_id] {
            // Soft-failing is not refusing: each is answered as accepted.
            assert!(answer["pdus"][id]["error"].is_null(), "{answer}");
        }
    };
    // B takes carol's side first: she may, and the room is renamed and
    // given a topic.
    send(&b, "fork-1", &[&rename, &topic]).await;
    let name = state_content(&bob, &room, "m.room.name").await;
    assert_eq!(name["name"], "Renamed");
    let topic_now = state_content(&bob, &room, "m.room.topic").await;
    assert_eq!(topic_now["topic"], "carol's");
    // Then the demotion, on the same head: a fork, resolved. The demotion
    // by the room's admin comes first, and what carol did with the power
    // it took no longer holds: the name goes back, the topic goes.
    send(&b, "fork-2", &[&demotion]).await;
    // C takes them the other way round: carol's events arrive after the
    // demotion, allowed by the state before them but not by the room's
    // current state: soft-failed, never shown.
    send(&c, "fork-1", &[&demotion]).await;
    send(&c, "fork-2", &[&rename, &topic]).await;

    // A later message of alice's names both sides and is the barrier.
    let (after_id, after) = as_a.sign_pdu(json!({
        "type": "m.room.message", "room_id": room, "sender": alice.user_id,
        "content": {"msgtype": "m.text", "body": "settled"},
        "prev_events": [demotion_id, topic_id], "depth": 102, "origin_server_ts": now + 3,
        "auth_events": [create, demotion_id, id_in(&state, "m.room.member", &alice.user_id)],
    }));
    for (server, txn) in [(&b, "fork-3"), (&c, "fork-3")] {
        send(server, txn, &[&after]).await;
    }
    for client in [&bob, &dave] {
        let path = format!("{V3}/rooms/{}/event/{}", enc(&room), enc(after_id.as_str()));
        assert_ok(client.get(&path).await);
        let name = state_content(client, &room, "m.room.name").await;
        assert_eq!(name["name"], "Original", "{}", client.user_id);
        let levels = state_content(client, &room, "m.room.power_levels").await;
        assert!(levels["users"][&carol.user_id].is_null(), "{levels}");
        let path = format!("{V3}/rooms/{}/state/m.room.topic/", enc(&room));
        assert_eq!(client.get(&path).await.0, 404, "{}", client.user_id);
    }
    let path = format!(
        "{V3}/rooms/{}/event/{}",
        enc(&room),
        enc(rename_id.as_str())
    );
    assert_eq!(
        dave.get(&path).await.0,
        404,
        "a soft-failed event is never shown"
    );
    // The servers answer the same state at the barrier, as another server
    // joining there would be told.
    let state_ids = async |tern: &FederatingTern| {
        let uri = format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            enc(&room),
            enc(after_id.as_str())
        );
        let (status, answer) = as_a.get(tern, &uri).await;
        assert_eq!(status, 200, "{answer}");
        let mut ids: Vec<String> = serde_json::from_value(answer["pdu_ids"].clone()).unwrap();
        ids.sort();
        ids
    };
    let (on_b, on_c) = (state_ids(&b).await, state_ids(&c).await);
    assert!(on_b.contains(&demotion_id), "{on_b:?}");
    assert!(!on_b.contains(&rename_id), "{on_b:?}");
    assert!(!on_b.contains(&topic_id), "{on_b:?}");
    assert_eq!(on_b, on_c);
}

#[tokio::test]
async fn an_event_authorized_by_state_from_before_the_join_is_accepted() {
    let (a, b) = tokio::join!(FederatingTern::start(), FederatingTern::start());
    let alice = Client::register(&a.server, "alice").await;
    let bob = Client::register(&b.server, "bob").await;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await;
    let state_path = format!("{V3}/rooms/{}/state", enc(&room));
    let before = assert_ok(alice.get(&state_path).await);
    let old_levels = id_in(&before, "m.room.power_levels", "");
    // The power levels change before bob's server joins: it gets the old
    // ones only in the join's auth chain, never in the room's timeline.
    let power_path = format!("{V3}/rooms/{}/state/m.room.power_levels/", enc(&room));
    let mut power = assert_ok(alice.get(&power_path).await);
    power["events_default"] = json!(0);
    power["users_default"] = json!(0);
    power["state_default"] = json!(60);
    assert_ok(alice.put(&power_path, &power).await);
    assert_ok(join_through(&bob, &room, &a.name).await);

    // An event of alice's built by a server that had not seen the change:
    // its auth events name the old power levels.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let latest = bob.messages(&room, "b", None, 1).await["chunk"][0]["event_id"].clone();
    let (id, pdu) = Impersonator::of(&a).sign_pdu(json!({
        "type": "m.room.message", "room_id": room, "sender": alice.user_id,
        "content": {"msgtype": "m.text", "body": "from before your time"},
        "prev_events": [latest], "depth": 50, "origin_server_ts": now,
        "auth_events": [
            id_in(&before, "m.room.create", ""),
            old_levels,
            id_in(&before, "m.room.member", &alice.user_id),
        ],
    }));
    let transaction = json!({"origin": a.name, "origin_server_ts": now, "pdus": [pdu]});
    let (status, answer) = Impersonator::of(&a)
        .put(&b, "/_matrix/federation/v1/send/old-auth", &transaction)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["pdus"][&id]["error"].is_null(), "{answer}");
    let path = format!("{V3}/rooms/{}/event/{}", enc(&room), enc(id.as_str()));
    assert_eq!(
        assert_ok(bob.get(&path).await)["content"]["body"],
        "from before your time"
    );
}
