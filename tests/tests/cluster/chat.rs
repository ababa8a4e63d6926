//! Users on three nodes chat: a group and a one-to-one chat across nodes,
//! one order everywhere, typing, read receipts and presence between nodes.

use std::time::Duration;

use serde_json::{json, Value};
use tern_tests::{assert_ok, enc, joined_timeline, message_bodies, next_batch, Client, V3, WAIT};

use crate::stack::{history_ids, ids, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_three_nodes_chat_with_receipts_typing_and_presence() {
    let stack = Stack::start("chat");
    let nodes = stack.nodes().await;
    let alice = Client::register(&nodes[0], "alice").await;
    let bob = Client::register(&nodes[1], "bob").await;
    let carol = Client::register(&nodes[2], "carol").await;

    // A group made on node 1, joined through nodes 2 and 3.
    let room = alice
        .create_room(&json!({"preset": "private_chat",
                             "invite": [&bob.user_id, &carol.user_id]}))
        .await;
    assert_ok(bob.join(&room).await);
    assert_ok(carol.join(&room).await);
    let since: Vec<String> = [&alice, &bob, &carol]
        .iter()
        .map(|c| async move { next_batch(&c.sync(None, 0, None).await) })
        .collect::<futures::future::JoinAll<_>>()
        .await;

    alice.send_text(&room, "a1", "from node 1").await;
    bob.send_text(&room, "b1", "from node 2").await;
    carol.send_text(&room, "c1", "from node 3").await;

    // Each sees all three, on their own node, in the same order.
    let mut orders = Vec::new();
    for (client, since) in [&alice, &bob, &carol].iter().zip(&since) {
        let mut seen: Vec<Value> = Vec::new();
        client
            .sync_until(since, WAIT, None, |r| {
                seen.extend(joined_timeline(r, &room));
                ids(&seen).len() >= 3
            })
            .await;
        let bodies = message_bodies(&seen);
        assert_eq!(bodies.len(), 3, "{}: {bodies:?}", client.user_id);
        orders.push(ids(&seen));
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
    for client in [&alice, &bob, &carol] {
        assert_eq!(history_ids(client, &room).await, orders[0]);
    }

    // Typing on node 2 reaches node 3; a read receipt on node 3 reaches node 1.
    let fresh = next_batch(&carol.sync(None, 0, None).await);
    let typing = format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id));
    assert_ok(
        bob.put(&typing, &json!({"typing": true, "timeout": 20_000}))
            .await,
    );
    carol
        .sync_until(&fresh, Duration::from_secs(10), None, |r| {
            r["rooms"]["join"][&room]["ephemeral"]["events"]
                .to_string()
                .contains(&bob.user_id)
        })
        .await;
    let alice_at = next_batch(&alice.sync(None, 0, None).await);
    let last = orders[0].last().unwrap().clone();
    assert_ok(
        carol
            .post(
                &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&last)),
                &json!({}),
            )
            .await,
    );
    alice
        .sync_until(&alice_at, Duration::from_secs(10), None, |r| {
            let receipts = r["rooms"]["join"][&room]["ephemeral"]["events"].to_string();
            receipts.contains("m.read") && receipts.contains(&carol.user_id)
        })
        .await;

    // Presence: Carol, syncing on node 3, is online for Alice on node 1.
    let status = assert_ok(
        alice
            .get(&format!("{V3}/presence/{}/status", enc(&carol.user_id)))
            .await,
    );
    assert_eq!(status["presence"], "online", "{status}");

    // A one-to-one chat between nodes 1 and 3, both ways.
    let dave = Client::register(&nodes[0], "dave").await;
    let erin = Client::register(&nodes[2], "erin").await;
    let dm = dave
        .create_room(&json!({"preset": "trusted_private_chat", "is_direct": true,
                             "invite": [&erin.user_id]}))
        .await;
    assert_ok(erin.join(&dm).await);
    let erin_at = next_batch(&erin.sync(None, 0, None).await);
    dave.send_text(&dm, "d1", "hi erin").await;
    erin.sync_until(&erin_at, Duration::from_secs(10), None, |r| {
        message_bodies(&joined_timeline(r, &dm)) == ["hi erin"]
    })
    .await;
    let dave_at = next_batch(&dave.sync(None, 0, None).await);
    erin.send_text(&dm, "e1", "hi dave").await;
    // Dave's token may predate Erin's join reaching node 1, so the answer
    // may carry more than the new message; it must carry it.
    dave.sync_until(&dave_at, Duration::from_secs(10), None, |r| {
        message_bodies(&joined_timeline(r, &dm)).contains(&"hi dave".to_string())
    })
    .await;
}
