//! Read receipts, private read receipts, read markers, and Tern's delivered
//! ticks with per-member message info, as clients see them.

use std::time::Duration;

use serde_json::{json, Value};
use tern_tests::{
    assert_error, assert_ok, enc, eventually, next_batch, public_room, room_of_two, Client,
    TestServer, V3,
};

/// Receipt content of `room` in a sync response, merged over its m.receipt events.
fn receipts_in(sync: &Value, room: &str) -> Value {
    let mut merged = json!({});
    for event in sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.receipt")
    {
        for (event_id, kinds) in event["content"].as_object().into_iter().flatten() {
            for (kind, users) in kinds.as_object().into_iter().flatten() {
                for (user, data) in users.as_object().into_iter().flatten() {
                    merged[event_id][kind][user] = data.clone();
                }
            }
        }
    }
    merged
}

async fn post_receipt(client: &Client, room: &str, kind: &str, event_id: &str) -> (u16, Value) {
    let path = format!("{V3}/rooms/{}/receipt/{kind}/{}", enc(room), enc(event_id));
    client.post(&path, &json!({})).await
}

async fn message_info(client: &Client, room: &str, event_id: &str) -> Value {
    let path = format!(
        "/_matrix/client/unstable/tern/rooms/{}/receipts/{}",
        enc(room),
        enc(event_id)
    );
    assert_ok(client.get(&path).await)
}

fn member<'a>(info: &'a Value, user: &str) -> &'a Value {
    info["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["user_id"] == user))
        .unwrap_or_else(|| panic!("{user} missing from message info: {info}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_reach_members_and_private_ones_stay_private() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let event = alice.send_text(&room, "t1", "hello").await;
    let since = next_batch(&alice.sync(None, 0, None).await);

    assert_ok(post_receipt(&bob, &room, "m.read", &event).await);
    let seen = alice
        .sync_until(&since, Duration::from_secs(10), None, |r| {
            !receipts_in(r, &room)[&event]["m.read"][&bob.user_id].is_null()
        })
        .await;
    assert!(receipts_in(&seen, &room)[&event]["m.read"][&bob.user_id]["ts"].is_i64());

    // A private read receipt: bob sees his own, alice never does.
    let second = alice.send_text(&room, "t2", "again").await;
    let bob_since = next_batch(&bob.sync(None, 0, None).await);
    let alice_since = next_batch(&seen);
    assert_ok(post_receipt(&bob, &room, "m.read.private", &second).await);
    bob.sync_until(&bob_since, Duration::from_secs(10), None, |r| {
        !receipts_in(r, &room)[&second]["m.read.private"][&bob.user_id].is_null()
    })
    .await;
    let alice_view = alice.sync(Some(&alice_since), 1_500, None).await;
    assert!(
        receipts_in(&alice_view, &room)[&second]["m.read.private"].is_null(),
        "a private receipt leaked: {alice_view}"
    );
    let full = alice.sync(None, 0, None).await;
    assert!(
        receipts_in(&full, &room)[&second]["m.read.private"].is_null(),
        "a private receipt leaked into a full sync: {full}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_can_neither_post_nor_see_receipts() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let eve = Client::register(&server, "eve").await;
    let room = public_room(&alice, &[&bob]).await;
    let event = alice.send_text(&room, "t1", "members only").await;

    assert_error(
        &post_receipt(&eve, &room, "m.read", &event).await,
        403,
        "M_FORBIDDEN",
    );
    let eve_since = next_batch(&eve.sync(None, 0, None).await);
    assert_ok(post_receipt(&bob, &room, "m.read", &event).await);
    let eve_view = eve.sync(Some(&eve_since), 1_000, None).await;
    assert!(eve_view["rooms"]["join"].get(&room).is_none(), "{eve_view}");
    let path = format!(
        "/_matrix/client/unstable/tern/rooms/{}/receipts/{}",
        enc(&room),
        enc(&event)
    );
    let (status, body) = eve.get(&path).await;
    assert!(
        status == 403 || status == 404,
        "eve read message info: {status} {body}"
    );

    assert_error(
        &post_receipt(&bob, &room, "m.bogus", &event).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &post_receipt(&bob, &room, "m.read", "$nope").await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_ticks_go_delivered_then_read() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let carol = Client::register(&server, "carol").await;
    let room = public_room(&alice, &[&bob, &carol]).await;
    let bob_since = next_batch(&bob.sync(None, 0, None).await);
    let carol_since = next_batch(&carol.sync(None, 0, None).await);
    let alice_since = next_batch(&alice.sync(None, 0, None).await);

    let event = alice.send_text(&room, "t1", "lunch?").await;
    let info = message_info(&alice, &room, &event).await;
    assert!(info["sent_ts"].is_i64());
    assert_eq!(info["delivered_to_all"], false, "{info}");
    assert!(member(&info, &bob.user_id)["delivered_ts"].is_null());

    // Each recipient's sync carries the message; its next sync proves receipt.
    for (client, since) in [(&bob, &bob_since), (&carol, &carol_since)] {
        let got = client
            .sync_until(since, Duration::from_secs(10), None, |r| {
                tern_tests::joined_timeline(r, &room)
                    .iter()
                    .any(|e| e["event_id"] == event.as_str())
            })
            .await;
        client.sync(Some(&next_batch(&got)), 0, None).await;
    }
    // Alice's devices get the delivered receipts like any other receipt.
    alice
        .sync_until(&alice_since, Duration::from_secs(10), None, |r| {
            let r = receipts_in(r, &room);
            !r[&event]["tern.delivered"][&bob.user_id].is_null()
        })
        .await;
    let info = eventually("delivered to all", async || {
        let info = message_info(&alice, &room, &event).await;
        if info["delivered_to_all"] == true {
            Ok(info)
        } else {
            Err(info)
        }
    })
    .await;
    assert_eq!(info["read_by_all"], false, "{info}");
    assert!(member(&info, &carol.user_id)["read_ts"].is_null());
    assert!(
        info["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["user_id"] != alice.user_id.as_str()),
        "the sender is not listed: {info}"
    );

    // Reading: bob by receipt, carol through read markers.
    assert_ok(post_receipt(&bob, &room, "m.read", &event).await);
    let path = format!("{V3}/rooms/{}/read_markers", enc(&room));
    assert_ok(
        carol
            .post(&path, &json!({"m.fully_read": event, "m.read": event}))
            .await,
    );
    let info = message_info(&alice, &room, &event).await;
    assert_eq!(info["read_by_all"], true, "{info}");
    let bob_info = member(&info, &bob.user_id);
    assert!(bob_info["read_ts"].as_i64().unwrap() >= bob_info["delivered_ts"].as_i64().unwrap());

    // The fully-read marker is room account data.
    let path = format!(
        "{V3}/user/{}/rooms/{}/account_data/m.fully_read",
        enc(&carol.user_id),
        enc(&room)
    );
    assert_eq!(
        assert_ok(carol.get(&path).await)["event_id"],
        event.as_str()
    );
}
