//! Rooms across servers: a Tern user joins Synapse's rooms, messages
//! flow both ways.

use super::*;

/// A Tern user joins a room Synapse holds, in the given room version.
async fn tern_user_joins_a_synapse_room(version: Option<&str>) {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    let mut create = json!({"preset": "public_chat", "name": "Over there", "topic": "far away"});
    if let Some(version) = version {
        create["room_version"] = json!(version);
    }
    let room = bob.create_room(&create).await;

    // A version 12 room id names no server: the client says which to ask.
    let (status, joined) = alice
        .post(
            &format!("{V3}/join/{}?via={}", enc(&room), enc(&synapse.name)),
            &json!({}),
        )
        .await;
    assert_eq!(
        status,
        200,
        "{joined}\ntern log:\n{}\nsynapse log:\n{}",
        tern.server.log_tail(4000),
        synapse.log_tail()
    );
    assert_eq!(joined["room_id"], room.as_str());

    // Synapse accepted our signed join: bob sees alice in the room.
    let members = assert_ok(
        bob.get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
            .await,
    );
    assert!(members["joined"][&alice.user_id].is_object(), "{members}");

    // Alice's sync holds the room with its state from Synapse.
    let sync = alice.sync(None, 0, None).await;
    let joined_room = &sync["rooms"]["join"][&room];
    assert!(joined_room.is_object(), "{sync}");
    let events: Vec<&Value> = joined_room["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            joined_room["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .collect();
    let name = events
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .expect("the room's name");
    assert_eq!(name["content"]["name"], "Over there");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()),
        "bob's membership: {joined_room}"
    );
    let state = assert_ok(
        alice
            .get(&format!("{V3}/rooms/{}/state/m.room.topic", enc(&room)))
            .await,
    );
    assert_eq!(state["topic"], "far away");

    // Messages each way: Synapse's reach Tern's sync, Tern's reach Synapse.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    bob.send_text(&room, "b1", "hello from Synapse").await;
    alice
        .sync_until(&since, WAIT, None, |resp| {
            timeline_has(&resp["rooms"]["join"][&room], "hello from Synapse")
        })
        .await;
    alice.send_text(&room, "a1", "hello from Tern").await;
    eventually("Synapse shows Tern's message", async || {
        let page = bob
            .get(&format!(
                "{V3}/rooms/{}/messages?dir=b&limit=20",
                enc(&room)
            ))
            .await
            .1;
        page["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["content"]["body"] == "hello from Tern" && e["sender"] == alice.user_id.as_str()
            })
            .then_some(())
            .ok_or(page)
    })
    .await;
}

/// Whether a joined room's timeline in a sync holds a message with `body`.
fn timeline_has(room: &Value, body: &str) -> bool {
    room["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["content"]["body"] == body)
}

#[tokio::test]
async fn a_tern_user_joins_a_synapse_room_of_version_12() {
    tern_user_joins_a_synapse_room(None).await;
}

#[tokio::test]
async fn a_tern_user_joins_a_synapse_room_of_version_11() {
    tern_user_joins_a_synapse_room(Some("11")).await;
}

/// Waits until `client`'s sync lists an invite to `room`; returns it.
async fn invite_in_sync(client: &Client, room: &str) -> Value {
    eventually("the invite in the invitee's sync", async || {
        let sync = client.sync(None, 0, None).await;
        let invite = sync["rooms"]["invite"][room].clone();
        invite.is_object().then_some(invite).ok_or(sync)
    })
    .await
}

#[tokio::test]
async fn tern_users_accept_or_reject_invites_from_synapse() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let carl = Client::register(&tern.server, "carl").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    let room = bob
        .create_room(&json!({"preset": "private_chat", "name": "Bob's den"}))
        .await;

    // Synapse asks Tern to countersign each invite; Tern's users see them
    // with the room's name, from the state Synapse showed.
    for invitee in [&alice, &carl] {
        let (status, invited) = bob.invite(&room, &invitee.user_id).await;
        assert_eq!(
            status,
            200,
            "inviting {}: {invited}\ntern log:\n{}\nsynapse log:\n{}",
            invitee.user_id,
            tern.server.log_tail(4000),
            synapse.log_tail()
        );
        let invite = invite_in_sync(invitee, &room).await;
        let shown = invite["invite_state"]["events"].as_array().unwrap();
        assert!(
            shown
                .iter()
                .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Bob's den"),
            "{invite}"
        );
        assert!(
            shown.iter().any(|e| e["type"] == "m.room.member"
                && e["state_key"] == invitee.user_id.as_str()
                && e["content"]["membership"] == "invite"),
            "{invite}"
        );
    }

    // Carl rejects: a leave through Synapse, which Synapse shows.
    let (status, left) = carl.leave(&room).await;
    assert_eq!(
        status,
        200,
        "{left}\ntern log:\n{}",
        tern.server.log_tail(4000)
    );
    shows_membership(&bob, &room, &carl.user_id, "leave").await;

    // Alice accepts: she joins through Synapse and they talk.
    let (status, joined) = alice.join(&room).await;
    assert_eq!(
        status,
        200,
        "{joined}\ntern log:\n{}",
        tern.server.log_tail(4000)
    );
    let members = assert_ok(
        bob.get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
            .await,
    );
    assert!(members["joined"][&alice.user_id].is_object(), "{members}");
    let sync = alice.sync(None, 0, None).await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    bob.send_text(&room, "b1", "glad you came").await;
    alice
        .sync_until(&since, WAIT, None, |resp| {
            timeline_has(&resp["rooms"]["join"][&room], "glad you came")
        })
        .await;
}

#[tokio::test]
async fn tern_down_gets_what_synapse_sent_meanwhile() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let mut tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    let room = bob.create_room(&json!({"preset": "public_chat"})).await;
    assert_ok(join_through(&alice, &room, &synapse.name).await);

    // Tern is down (restarting) while bob talks: Synapse keeps trying.
    tern.server.stop().await;
    for n in 0..3 {
        bob.send_text(&room, &format!("m{n}"), &format!("missed {n}"))
            .await;
    }
    tern.server.restart().await;
    // Tern talks to Synapse, which then knows it is back.
    alice.send_text(&room, "a1", "back again").await;

    // Tern shows all three, in order.
    eventually("Tern shows what it missed, in order", async || {
        let bodies: Vec<String> = alice
            .room_history(&room)
            .await
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .filter(|body| body.starts_with("missed"))
            .collect();
        (bodies == ["missed 0", "missed 1", "missed 2"])
            .then_some(())
            .ok_or(bodies)
    })
    .await;
}
