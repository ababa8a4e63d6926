//! Two Tern servers sharing a room: a join through the other, messages,
//! delivered ticks and typing both ways, an invite, and a leave.

use super::*;

/// Waits until a fresh sync of `client` shows `body` in `room`'s timeline.
async fn sees_message(client: &Client, room: &str, body: &str) {
    eventually(&format!("{} sees {body:?}", client.user_id), async || {
        let sync = client.sync(None, 0, None).await;
        let timeline = &sync["rooms"]["join"][room]["timeline"]["events"];
        timeline
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["content"]["body"] == body)
            .then_some(())
            .ok_or(sync["rooms"].clone())
    })
    .await;
}

#[tokio::test]
async fn two_tern_servers_share_a_room() {
    let one = FederatingTern::start().await;
    let two = FederatingTern::start().await;
    let alice = Client::register(&one.server, "alice").await;
    let bob = Client::register(&two.server, "bob").await;
    let carol = Client::register(&two.server, "carol").await;
    let room = alice
        .create_room(&json!({"preset": "public_chat", "name": "Shared"}))
        .await;
    alice.send_text(&room, "a0", "first").await;

    let (status, joined) = join_through(&bob, &room, &one.name).await;
    assert_eq!(
        status,
        200,
        "{joined}\none:\n{}\ntwo:\n{}",
        one.server.log_tail(3000),
        two.server.log_tail(3000)
    );
    let name = assert_ok(
        bob.get(&format!("{V3}/rooms/{}/state/m.room.name", enc(&room)))
            .await,
    );
    assert_eq!(name["name"], "Shared");

    let alice_since = next_batch(&alice.sync(None, 0, None).await);
    let bob_since = next_batch(&bob.sync(None, 0, None).await);
    let hello = alice.send_text(&room, "a1", "hello two").await;
    let got = bob
        .sync_until(&bob_since, WAIT, None, |resp| {
            resp["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["content"]["body"] == "hello two")
        })
        .await;
    // Bob's next sync proves his device holds it: alice gets the tick from
    // the other server.
    bob.sync(Some(&next_batch(&got)), 0, None).await;
    alice
        .sync_until(&alice_since, WAIT, None, |resp| {
            resp["rooms"]["join"][&room]["ephemeral"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    e["type"] == "m.receipt"
                        && e["content"][&hello]["tern.delivered"][&bob.user_id]["ts"].is_i64()
                })
        })
        .await;
    bob.send_text(&room, "b1", "hello one").await;
    sees_message(&alice, &room, "hello one").await;

    // Typing crosses too.
    let typing = format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id));
    assert_ok(
        bob.put(&typing, &json!({"typing": true, "timeout": 30000}))
            .await,
    );
    eventually("one shows bob typing", async || {
        let sync = alice.sync(None, 0, None).await;
        sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["type"] == "m.typing"
                    && e["content"]["user_ids"]
                        .as_array()
                        .is_some_and(|ids| ids.contains(&json!(bob.user_id)))
            })
            .then_some(())
            .ok_or(sync["rooms"]["join"].clone())
    })
    .await;

    // Alice invites carol of the other server, who accepts.
    assert_ok(alice.invite(&room, &carol.user_id).await);
    eventually("carol's sync shows the invite", async || {
        let sync = carol.sync(None, 0, None).await;
        sync["rooms"]["invite"][&room]
            .is_object()
            .then_some(())
            .ok_or(sync)
    })
    .await;
    assert_ok(carol.join(&room).await);
    sees_message(&carol, &room, "hello one").await;

    // Bob leaves; alice's next message still reaches carol.
    assert_ok(bob.leave(&room).await);
    shows_membership(&alice, &room, &bob.user_id, "leave").await;
    alice.send_text(&room, "a2", "still here, carol?").await;
    sees_message(&carol, &room, "still here, carol?").await;
}

#[tokio::test]
async fn a_server_fetches_the_events_it_never_got() {
    let mut one = FederatingTern::start().await;
    let mut two = FederatingTern::start().await;
    let alice = Client::register(&one.server, "alice").await;
    let bob = Client::register(&two.server, "bob").await;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await;
    assert_ok(join_through(&bob, &room, &one.name).await);

    // Two is down while alice talks, and one restarts meanwhile: what one
    // had queued for two is gone (its queue is in memory).
    two.server.stop().await;
    for n in 0..3 {
        alice
            .send_text(&room, &format!("m{n}"), &format!("missed {n}"))
            .await;
    }
    one.server.restart().await;
    two.server.restart().await;

    // Alice's next event names the last one two never got: two asks one
    // for the gap (get_missing_events) and shows everything, in order.
    alice.send_text(&room, "a1", "after the gap").await;
    eventually("two shows the gap filled, in order", async || {
        let bodies: Vec<String> = bob
            .room_history(&room)
            .await
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect();
        let tail: Vec<&str> = bodies
            .iter()
            .rev()
            .take(4)
            .rev()
            .map(String::as_str)
            .collect();
        (tail == ["missed 0", "missed 1", "missed 2", "after the gap"])
            .then_some(())
            .ok_or(bodies)
    })
    .await;
}
