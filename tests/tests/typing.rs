//! Typing notifications: start, stop, expiry, stop-by-sending, and who may
//! set them, as members see them in the `ephemeral` section of `/sync`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tern_tests::{
    assert_error, enc, next_batch, public_room, room_of_two, typing_in, Client, TestServer, V3,
};

async fn set_typing(client: &Client, room: &str, typing: bool, timeout: u64) -> (u16, Value) {
    let path = format!("{V3}/rooms/{}/typing/{}", enc(room), enc(&client.user_id));
    client
        .put(&path, &json!({"typing": typing, "timeout": timeout}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_typing_start_and_stop() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let since = next_batch(&bob.sync(None, 0, None).await);

    let (status, body) = set_typing(&alice, &room, true, 30_000).await;
    assert_eq!(status, 200, "typing: {body}");
    let resp = bob
        .sync_until(&since, Duration::from_secs(10), None, |r| {
            typing_in(r, &room).is_some_and(|ids| ids == [alice.user_id.clone()])
        })
        .await;
    let since = next_batch(&resp);

    let (status, body) = set_typing(&alice, &room, false, 0).await;
    assert_eq!(status, 200, "stop typing: {body}");
    bob.sync_until(&since, Duration::from_secs(10), None, |r| {
        typing_in(r, &room).is_some_and(|ids| ids.is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_expires_after_its_timeout() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let since = next_batch(&bob.sync(None, 0, None).await);

    let started = Instant::now();
    let (status, body) = set_typing(&alice, &room, true, 500).await;
    assert_eq!(status, 200, "typing: {body}");
    let resp = bob
        .sync_until(&since, Duration::from_secs(10), None, |r| {
            typing_in(r, &room).is_some_and(|ids| !ids.is_empty())
        })
        .await;
    // Nobody says stop: the server must, once the 500 ms run out.
    bob.sync_until(&next_batch(&resp), Duration::from_secs(10), None, |r| {
        typing_in(r, &room).is_some_and(|ids| ids.is_empty())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "typing ended before its timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_a_message_stops_typing() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let since = next_batch(&bob.sync(None, 0, None).await);

    assert_eq!(set_typing(&alice, &room, true, 60_000).await.0, 200);
    let resp = bob
        .sync_until(&since, Duration::from_secs(10), None, |r| {
            typing_in(r, &room).is_some_and(|ids| !ids.is_empty())
        })
        .await;
    alice.send_text(&room, "t1", "done typing").await;
    bob.sync_until(&next_batch(&resp), Duration::from_secs(10), None, |r| {
        typing_in(r, &room).is_some_and(|ids| ids.is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_type_and_only_for_themselves() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let eve = Client::register(&server, "eve").await;
    let room = public_room(&alice, &[&bob]).await;

    // A non-member may not type in the room.
    assert_error(
        &set_typing(&eve, &room, true, 1_000).await,
        403,
        "M_FORBIDDEN",
    );
    // A member may not type on someone else's behalf.
    let path = format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id));
    let resp = alice
        .put(&path, &json!({"typing": true, "timeout": 1_000}))
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");

    // Non-members do not see members typing.
    let eve_since = next_batch(&eve.sync(None, 0, None).await);
    assert_eq!(set_typing(&bob, &room, true, 30_000).await.0, 200);
    let eve_view = eve.sync(Some(&eve_since), 1_000, None).await;
    assert!(
        eve_view["rooms"]["join"].get(&room).is_none(),
        "a non-member saw the room: {eve_view}"
    );
    // Bad input is a Matrix error.
    let resp = bob.put(&path, &json!({"typing": "yes"})).await;
    assert_error(&resp, 400, "M_BAD_JSON");
}
