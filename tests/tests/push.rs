//! Push notifications end to end: a fake push gateway in the test receives
//! what the server sends. An offline recipient gets one; a connected one
//! only for what none of their devices received within a grace (also right
//! after closing the app), at once after saying they are offline; a muted
//! room sends none; a mention is highlighted; rejected pushkeys
//! are removed; failures are retried; the outbox survives `kill -9`, and so
//! does an acknowledged message whose pushes were not decided yet; a gateway
//! that hangs holds up nobody else's notifications.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tern_tests::{
    assert_ok, enc, eventually, eventually_within, next_batch, public_room, public_room_with, text,
    Client, FakeGateway, GatewayMode, ServerOptions, TestServer, V3, WAIT,
};

const OFFLINE_MS: u64 = 300;

async fn start() -> TestServer {
    TestServer::start_with(ServerOptions {
        env: vec![("TERN_PRESENCE_OFFLINE_MS".into(), OFFLINE_MS.to_string())],
        ..ServerOptions::default()
    })
    .await
}

/// `user`'s presence as `viewer` sees it.
async fn presence_of(viewer: &Client, user: &Client) -> String {
    let path = format!("{V3}/presence/{}/status", enc(&user.user_id));
    let status = assert_ok(viewer.get(&path).await);
    status["presence"].as_str().unwrap_or_default().to_owned()
}

async fn add_pusher(client: &Client, pushkey: &str, url: &str) {
    let body = json!({
        "pushkey": pushkey, "kind": "http", "app_id": "org.example.chat",
        "app_display_name": "Chat", "device_display_name": "Phone", "lang": "en",
        "data": {"url": url},
    });
    assert_ok(client.post(&format!("{V3}/pushers/set"), &body).await);
}

/// A room "Team" of alice, bob and carol, Bob with a pusher to `gateway`.
async fn setup(server: &TestServer, gateway: &FakeGateway) -> (Client, Client, String) {
    let alice = Client::register(server, "alice").await;
    let bob = Client::register(server, "bob").await;
    let carol = Client::register(server, "carol").await;
    let room = public_room_with(&alice, &[&bob, &carol], json!({"name": "Team"})).await;
    add_pusher(&bob, "bob-phone", &gateway.url()).await;
    (alice, bob, room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_is_pushed_and_a_mention_is_highlighted() {
    let server = start().await;
    let gateway = FakeGateway::start(GatewayMode::Accept).await;
    let (alice, bob, room) = setup(&server, &gateway).await;

    let event_id = alice.send(&room, "t1", &text("lunch?")).await;
    let n = gateway.wait_for(&event_id, Duration::from_secs(10)).await;
    assert_eq!(n["room_id"], room);
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], alice.user_id);
    assert_eq!(n["content"]["body"], "lunch?");
    assert_eq!(n["room_name"], "Team");
    assert_eq!(n["counts"]["unread"], 1);
    assert_eq!(n["prio"], "low", "a plain group message: {n}");
    let device = &n["devices"][0];
    assert_eq!(device["pushkey"], "bob-phone");
    assert_eq!(device["app_id"], "org.example.chat");
    assert!(device["data"].get("url").is_none(), "url is not sent: {n}");

    let mention = alice.send(&room, "t2", &json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}}))
    .await;
    let n = gateway.wait_for(&mention, Duration::from_secs(10)).await;
    assert_eq!(n["devices"][0]["tweaks"]["highlight"], true, "{n}");
    assert_eq!(n["prio"], "high");
    assert_eq!(n["counts"]["unread"], 2);
    // Only Bob has a pusher, and nobody is pushed their own message.
    assert!(gateway
        .received()
        .iter()
        .all(|n| n["devices"][0]["pushkey"] == "bob-phone"));
    assert_eq!(gateway.received().len(), 2);
}

/// A server with the default offline period (30 s), so a user who just
/// closed the app still counts as connected, and `grace_ms` for devices to
/// receive a connected user's messages.
async fn start_with_grace(grace_ms: u64) -> TestServer {
    TestServer::start_with(ServerOptions {
        env: vec![("TERN_PUSH_DELIVERY_GRACE_MS".into(), grace_ms.to_string())],
        ..ServerOptions::default()
    })
    .await
}

/// Bob's app in the foreground: long-polling, each sync proving receipt of
/// the one before; returns once `alice` sees him online.
async fn keep_syncing(bob: &Client, alice: &Client) -> tokio::task::JoinHandle<()> {
    let syncing = {
        let bob = bob.clone();
        tokio::spawn(async move {
            let mut since = next_batch(&bob.sync(None, 0, None).await);
            loop {
                since = next_batch(&bob.sync(Some(&since), 200, None).await);
            }
        })
    };
    eventually("bob online", async || {
        presence_of(alice, bob).await == "online"
    })
    .await;
    syncing
}

/// Whether the tern message-info of `event_id` shows it delivered to `user`.
async fn delivered_to(viewer: &Client, room: &str, event_id: &str, user: &Client) -> bool {
    let path = format!(
        "/_matrix/client/unstable/tern/rooms/{}/receipts/{}",
        enc(room),
        enc(event_id)
    );
    let info = assert_ok(viewer.get(&path).await);
    info["members"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["user_id"] == user.user_id.as_str() && m["delivered_ts"].is_i64())
}

/// WhatsApp's rule: what reached one of the user's devices is not pushed,
/// what reached none is, also when the app closed seconds before (the user
/// still counts as connected for presence, and was once dropped for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_message_is_not_pushed_and_a_muted_room_is_silent() {
    let server = start_with_grace(2_000).await;
    let gateway = FakeGateway::start(GatewayMode::Accept).await;
    let (alice, bob, room) = setup(&server, &gateway).await;

    let syncing = keep_syncing(&bob, &alice).await;
    let seen_live = alice.send(&room, "t1", &text("you are here")).await;
    eventually("the message delivered to bob's app", async || {
        delivered_to(&alice, &room, &seen_live, &bob).await
    })
    .await;
    // An invite gets no delivered receipt (ticks are for messages), but a
    // client that showed it and acknowledged it has it: not pushed either.
    let private = alice
        .create_room(&json!({"preset": "private_chat", "name": "Secret"}))
        .await;
    let since = next_batch(&bob.sync(None, 0, None).await);
    assert_ok(alice.invite(&private, &bob.user_id).await);
    let shown = bob
        .sync_until(&since, WAIT, None, |sync| {
            sync["rooms"]["invite"].get(private.as_str()).is_some()
        })
        .await;
    bob.sync(Some(&next_batch(&shown)), 0, None).await;

    // He closes the app; the next message reaches no device of his and is
    // pushed, although he was syncing a moment ago. That push is also the
    // barrier: the message his app received fell due (and was settled)
    // before it, so had it been pushed it would be there by now.
    syncing.abort();
    let after = alice.send(&room, "t2", &text("now you are gone")).await;
    gateway.wait_for(&after, WAIT).await;
    assert!(!delivered_to(&alice, &room, &after, &bob).await);
    let received = gateway.received();
    assert!(received.iter().all(|n| n["event_id"] != seen_live));
    assert!(
        received.iter().all(|n| n["room_id"] != private.as_str()),
        "the invite his app had was pushed: {received:?}"
    );

    // A muted room sends nothing.
    let rule = format!("{V3}/pushrules/global/room/{}", enc(&room));
    assert_ok(bob.put(&rule, &json!({"actions": []})).await);
    let muted = alice.send(&room, "t3", &text("muted")).await;
    let probe = alice.send(&room, "t4", &text("still muted")).await;
    // The barrier: unmuted, the next message is pushed, after any the
    // muted ones would have caused.
    assert_ok(bob.request(Method::DELETE, &rule, None).await);
    let barrier = alice.send(&room, "t5", &text("unmuted")).await;
    gateway.wait_for(&barrier, WAIT).await;
    let received = gateway.received();
    assert!(
        received
            .iter()
            .all(|n| n["event_id"] != muted && n["event_id"] != probe),
        "{received:?}"
    );
}

/// Closing the app with presence set to offline counts as disconnected at
/// once: pushed without waiting for a device (the grace here is ten
/// minutes, so only that rule can push it in time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_offline_is_pushed_at_once() {
    let server = start_with_grace(600_000).await;
    let gateway = FakeGateway::start(GatewayMode::Accept).await;
    let (alice, bob, room) = setup(&server, &gateway).await;

    let syncing = keep_syncing(&bob, &alice).await;
    syncing.abort();
    let path = format!("{V3}/presence/{}/status", enc(&bob.user_id));
    assert_ok(bob.put(&path, &json!({"presence": "offline"})).await);
    let event_id = alice.send(&room, "t1", &text("are you there?")).await;
    gateway.wait_for(&event_id, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_pushkeys_are_removed_and_failures_retried() {
    let server = start().await;
    let gateway = FakeGateway::start(GatewayMode::Fail).await;
    let (alice, bob, room) = setup(&server, &gateway).await;

    // The gateway fails at first: the server tries again until it accepts.
    let event_id = alice.send(&room, "t1", &text("retry me")).await;
    gateway.wait_for(&event_id, Duration::from_secs(10)).await;
    gateway.set_mode(GatewayMode::Accept);
    eventually("a retry of the failed notification", async || {
        let tries = gateway
            .received()
            .iter()
            .filter(|n| n["event_id"] == event_id)
            .count();
        tries >= 2
    })
    .await;

    // The gateway says the key is dead: the pusher goes.
    gateway.set_mode(GatewayMode::Reject(vec!["bob-phone".into()]));
    let dead = alice.send(&room, "t2", &text("to a dead phone")).await;
    gateway.wait_for(&dead, Duration::from_secs(10)).await;
    eventually("the rejected pusher removed", async || {
        let listed = assert_ok(bob.get(&format!("{V3}/pushers")).await);
        if listed["pushers"].as_array().is_some_and(|p| p.is_empty()) {
            Ok(())
        } else {
            Err(listed)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_notification_survives_kill_9() {
    let mut server = start().await;
    let gateway = FakeGateway::start(GatewayMode::Fail).await;
    let (alice, _bob, room) = setup(&server, &gateway).await;

    let event_id = alice.send(&room, "t1", &text("do not lose me")).await;
    // Queued and tried once (the gateway failed), then the server dies,
    // before or after it noted the failure.
    gateway.wait_for(&event_id, WAIT).await;
    server.kill_hard();
    gateway.set_mode(GatewayMode::Accept);
    let tried_before = gateway.received().len();

    // Sent again after the restart: at once if the failure was noted (a
    // retry is due in a second), else when the try's lease runs out (30 s).
    server.restart().await;
    eventually_within(
        Duration::from_secs(60),
        "the queued notification sent after the restart",
        async || gateway.received().len() > tried_before,
    )
    .await;
    let last = gateway.received().pop().unwrap();
    assert_eq!(last["event_id"], event_id);
}

/// The server dies right after acknowledging a burst of messages, before
/// it could decide all their pushes: on start it decides the rest, so every
/// acknowledged message reaches the offline member's phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_acknowledged_before_a_crash_are_all_pushed() {
    let mut server = start().await;
    let gateway = FakeGateway::start(GatewayMode::Accept).await;
    let (alice, _bob, room) = setup(&server, &gateway).await;

    // Eight senders at once: group commits outpace the decider, which
    // takes one event at a time, so some are undecided when the server dies.
    let sends = (0..8).map(|sender| {
        let (alice, room) = (&alice, &room);
        async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                let txn = format!("burst-{sender}-{i}");
                ids.push(alice.send(room, &txn, &text(&txn)).await);
            }
            ids
        }
    });
    let acked: std::collections::HashSet<String> = futures::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(acked.len(), 320);
    server.kill_hard();
    let pushed = |gateway: &FakeGateway| -> std::collections::HashSet<String> {
        gateway
            .received()
            .iter()
            .filter_map(|n| n["event_id"].as_str().map(str::to_owned))
            .collect()
    };
    eprintln!(
        "{} of {} acknowledged messages pushed before the crash",
        pushed(&gateway).intersection(&acked).count(),
        acked.len()
    );

    server.restart().await;
    // Notifications taken for sending when the server died go out when
    // their lease (30 s) runs out.
    eventually_within(
        Duration::from_secs(60),
        "every acknowledged message pushed",
        async || {
            let missing: Vec<_> = acked.difference(&pushed(&gateway)).cloned().collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} missing, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(3)]
                ))
            }
        },
    )
    .await;
    // Only the room's messages were pushed, none of them invented.
    assert!(pushed(&gateway).is_subset(&acked));
}

/// A gateway that stops answering holds some of the server's sending slots,
/// never all: another user's notification goes out while it hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_gateway_does_not_hold_up_other_users_pushes() {
    let server = start().await;
    let hanging = FakeGateway::start(GatewayMode::Hang).await;
    let healthy = FakeGateway::start(GatewayMode::Accept).await;
    let (alice, _bob, room) = setup(&server, &hanging).await;
    let dave = Client::register(&server, "dave").await;
    let other_room = public_room(&alice, &[&dave]).await;
    add_pusher(&dave, "dave-phone", &healthy.url()).await;

    // More notifications for Bob's hanging gateway than the server has
    // requests in flight at once (64).
    for i in 0..80 {
        alice.send(&room, &format!("h{i}"), &text("hello?")).await;
    }
    // It holds every request the server allows one destination (16).
    eventually(
        "the hanging gateway holding its share of the slots",
        async || hanging.received().len() >= 16,
    )
    .await;

    // Its requests wait 10 s for an answer; Dave's goes out long before.
    let event_id = alice.send(&other_room, "d1", &text("are you there?")).await;
    let notification = healthy.wait_for(&event_id, Duration::from_secs(3)).await;
    assert_eq!(notification["devices"][0]["pushkey"], "dave-phone");
    eprintln!(
        "the hanging gateway holds {} requests",
        hanging.received().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifications_list_pages_filters_and_marks_read() {
    let server = start().await;
    let gateway = FakeGateway::start(GatewayMode::Accept).await;
    let (alice, bob, room) = setup(&server, &gateway).await;

    let first = alice.send(&room, "t1", &text("one")).await;
    alice
        .send(&room, "t2", &json!({"msgtype": "m.notice", "body": "bot"}))
        .await;
    let mention = alice.send(&room, "t3", &json!({"msgtype": "m.text", "body": "bob?", "m.mentions": {"user_ids": [bob.user_id]}}))
    .await;
    let last = alice.send(&room, "t4", &text("three")).await;
    bob.send(&room, "b1", &text("my own")).await;

    // Newest first; the notice and Bob's own message are not notifications.
    let list = assert_ok(bob.get(&format!("{V3}/notifications")).await);
    let ids: Vec<&str> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [last.as_str(), mention.as_str(), first.as_str()],
        "{list}"
    );
    let n = &list["notifications"][1];
    assert_eq!(n["room_id"], room);
    assert_eq!(n["read"], false);
    assert!(n["ts"].as_i64().unwrap() > 0);
    assert!(n["actions"]
        .as_array()
        .unwrap()
        .contains(&json!({"set_tweak": "highlight"})));

    // Paging: one at a time, following next_token.
    let page = assert_ok(bob.get(&format!("{V3}/notifications?limit=1")).await);
    assert_eq!(page["notifications"][0]["event"]["event_id"], last);
    let token = page["next_token"].as_str().unwrap().to_owned();
    let page = assert_ok(
        bob.get(&format!("{V3}/notifications?limit=1&from={token}"))
            .await,
    );
    assert_eq!(page["notifications"][0]["event"]["event_id"], mention);

    // Only highlights.
    let highlights = assert_ok(bob.get(&format!("{V3}/notifications?only=highlight")).await);
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(highlights["notifications"][0]["event"]["event_id"], mention);

    // Reading up to the mention marks it and the older one read.
    let receipt = format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&mention));
    assert_ok(bob.post(&receipt, &json!({})).await);
    eventually(
        "the mention and the one before it marked read",
        async || {
            let list = assert_ok(bob.get(&format!("{V3}/notifications")).await);
            let read: Vec<bool> = list["notifications"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["read"].as_bool().unwrap())
                .collect();
            if read == [false, true, true] {
                Ok(())
            } else {
                Err(read)
            }
        },
    )
    .await;

    tern_tests::assert_error(
        &bob.get(&format!("{V3}/notifications?only=everything"))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    tern_tests::assert_error(
        &bob.get(&format!("{V3}/notifications?from=abc")).await,
        400,
        "M_INVALID_PARAM",
    );
}
