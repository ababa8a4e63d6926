//! Unread counts (`unread_notifications` in `/sync`): they rise with
//! messages the user's push rules notify for, highlight mentions, drop when
//! the user reads, honour muted rooms and survive a restart.

use std::time::Duration;

use serde_json::{json, Value};
use tern_tests::{enc, next_batch, public_room_with, text, Client, TestServer, V3};

/// `(notification_count, highlight_count)` of `room` in a sync response.
fn counts(sync: &Value, room: &str) -> Option<(i64, i64)> {
    let unread = &sync["rooms"]["join"][room]["unread_notifications"];
    Some((
        unread["notification_count"].as_i64()?,
        unread["highlight_count"].as_i64()?,
    ))
}

/// Long-polls until `room`'s counts are `want`; returns the next token.
async fn wait_counts(client: &Client, since: &str, room: &str, want: (i64, i64)) -> String {
    let resp = client
        .sync_until(since, Duration::from_secs(10), None, |r| {
            counts(r, room) == Some(want)
        })
        .await;
    next_batch(&resp)
}

async fn read_up_to(client: &Client, room: &str, kind: &str, event_id: &str) {
    let path = format!("{V3}/rooms/{}/receipt/{kind}/{}", enc(room), enc(event_id));
    let (status, body) = client.post(&path, &json!({})).await;
    assert_eq!(status, 200, "receipt: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_rise_with_messages_highlight_mentions_and_drop_on_read() {
    let mut server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let carol = Client::register(&server, "carol").await;
    let room = public_room_with(&alice, &[&bob, &carol], json!({"name": "group"})).await;
    let initial = bob.sync(None, 0, None).await;
    assert_eq!(counts(&initial, &room), Some((0, 0)), "{initial}");
    let since = next_batch(&initial);

    let first = alice.send(&room, "t1", &text("one")).await;
    alice.send(&room, "t2", &text("two")).await;
    // Notices (bots) do not count.
    alice
        .send(&room, "t3", &json!({"msgtype": "m.notice", "body": "bot"}))
        .await;
    let since = wait_counts(&bob, &since, &room, (2, 0)).await;

    // A mention of Bob is highlighted.
    let mention = alice
        .send(
            &room,
            "t4",
            &json!({"msgtype": "m.text", "body": "bob: look",
               "m.mentions": {"user_ids": [bob.user_id]}}),
        )
        .await;
    let since = wait_counts(&bob, &since, &room, (3, 1)).await;
    // Carol was not mentioned: three plain messages for her.
    assert_eq!(
        counts(&carol.sync(None, 0, None).await, &room),
        Some((3, 0))
    );

    // Reading the first message leaves two, the mention among them.
    read_up_to(&bob, &room, "m.read", &first).await;
    let since = wait_counts(&bob, &since, &room, (2, 1)).await;
    // A private receipt counts as reading too.
    read_up_to(&bob, &room, "m.read.private", &mention).await;
    wait_counts(&bob, &since, &room, (0, 0)).await;

    // Bob's own messages never count for him.
    bob.send(&room, "b1", &text("mine")).await;
    alice.send(&room, "t5", &text("after")).await;

    // After a restart the counts are rebuilt from receipts and history.
    server.restart().await;
    let fresh = bob.sync(None, 0, None).await;
    assert_eq!(counts(&fresh, &room), Some((1, 0)), "{fresh}");
    let carol_fresh = carol.sync(None, 0, None).await;
    assert_eq!(counts(&carol_fresh, &room), Some((5, 0)), "{carol_fresh}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_room_does_not_count_and_direct_chats_do() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let room = public_room_with(&alice, &[&bob], json!({"name": "group"})).await;
    let since = next_batch(&bob.sync(None, 0, None).await);

    // Two members: the one-to-one rule notifies.
    alice.send(&room, "t1", &text("hi")).await;
    let since = wait_counts(&bob, &since, &room, (1, 0)).await;

    // Bob mutes the room with a room rule that does not notify.
    let rule = format!("{V3}/pushrules/global/room/{}", enc(&room));
    let (status, body) = bob.put(&rule, &json!({"actions": []})).await;
    assert_eq!(status, 200, "mute: {body}");
    alice.send(&room, "t2", &text("still here")).await;
    let resp = bob
        .sync_until(&since, Duration::from_secs(10), None, |r| {
            r["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["content"]["body"] == "still here"))
        })
        .await;
    assert_eq!(counts(&resp, &room), Some((1, 0)), "{resp}");
}
