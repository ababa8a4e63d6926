//! What crosses nodes: messages (waking a long-poll), receipts, typing, a
//! logout, who is connected; and a node that misses the bus catches up
//! from the store without repeating anything.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use ruma_common::user_id;

use super::*;

#[tokio::test]
async fn messages_receipts_typing_and_logouts_cross_nodes() {
    let shared = shared().await;
    let hub = MemoryCluster::default();
    let a = node(&shared, hub.join(1)).await;
    let b = node(&shared, hub.join(2)).await;
    let alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    let room = shared_room(&a, &b, &alice, &bob).await;

    let first = sync(&b, &bob, None, 0).await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    // Bob's long-poll on B is woken by Alice's send on A, well before its timeout.
    let waiting = {
        let b = b.clone();
        let bob = bob.clone();
        let since = since.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (
                sync(&b, &bob, Some(&since), 20_000).await,
                started.elapsed(),
            )
        })
    };
    assert_still_waiting(&b, &bob, &since, &waiting).await;
    let event_id = send(&a, &alice, &room, "t1", "hello from A").await;
    let (woken, waited) = waiting.await.unwrap();
    assert_eq!(bodies(&woken, &room), vec!["hello from A"]);
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    let since_b = woken["next_batch"].as_str().unwrap().to_owned();

    // Bob reads it on B: Alice sees the receipt on A, and Bob's own unread
    // count is zero on both nodes.
    let alice_first = sync(&a, &alice, None, 0).await;
    let since_a = alice_first["next_batch"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &b,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}"),
        Some(&bob),
        Some("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let at_a = sync(&a, &alice, Some(&since_a), 5_000).await;
    let receipts = at_a["rooms"]["join"][&room]["ephemeral"]["events"].to_string();
    assert!(
        receipts.contains("m.read") && receipts.contains("@bob:localhost"),
        "{at_a}"
    );

    // Typing on A reaches Bob's sync on B.
    let (status, _) = call(
        &a,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/typing/@alice:localhost"),
        Some(&alice),
        Some(r#"{"typing":true,"timeout":10000}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let typing = sync(&b, &bob, Some(&since_b), 5_000).await;
    assert!(
        typing["rooms"]["join"][&room]["ephemeral"]["events"]
            .to_string()
            .contains("@alice:localhost"),
        "{typing}"
    );

    // A token used on B (and cached there) dies on B when it logs out on A.
    let (status, _) = call(
        &b,
        "GET",
        "/_matrix/client/v3/account/whoami",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &a,
        "POST",
        "/_matrix/client/v3/logout",
        Some(&alice),
        Some("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    eventually("B refusing the logged-out token", async || {
        let (status, body) = call(
            &b,
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&alice),
            None,
        )
        .await;
        (status == StatusCode::UNAUTHORIZED).then(|| assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN"))
    })
    .await;
}

#[tokio::test]
async fn a_node_that_misses_the_bus_catches_up_from_the_store() {
    let shared = shared().await;
    let hub = MemoryCluster::default();
    let a = node(&shared, hub.join(1)).await;
    // B listens on a hub nobody talks on: every message is lost to it.
    let deaf = MemoryCluster::default();
    let b = node(&shared, deaf.join(2)).await;
    let alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    let room = shared_room(&a, &b, &alice, &bob).await;
    let first = sync(&b, &bob, None, 0).await;
    let mut since = first["next_batch"].as_str().unwrap().to_owned();

    let mut sent = Vec::new();
    for n in 0..5 {
        let body = format!("m{n}");
        send(&a, &alice, &room, &format!("t{n}"), &body).await;
        sent.push(body);
    }
    // Every message arrives, in order, once, within a few checks.
    let mut seen = Vec::new();
    eventually("every message on B", async || {
        let next = sync(&b, &bob, Some(&since), 1_000).await;
        seen.extend(bodies(&next, &room));
        since = next["next_batch"].as_str().unwrap().to_owned();
        (seen.len() >= sent.len()).then_some(())
    })
    .await;
    assert_eq!(seen, sent);

    // A token from A that is ahead of B's cache never makes B repeat events.
    send(&a, &alice, &room, "late", "late").await;
    // A's token is ahead only once A's cache has passed bob's join, which
    // B committed and A (hearing nobody) fills from the store: until then
    // A hands out a token from before it, and B rightly serves what
    // follows. Wait for A's sync to show "late".
    let ahead = eventually("A's sync reaching \"late\"", async || {
        let alice_sync = sync(&a, &alice, None, 0).await;
        bodies(&alice_sync, &room)
            .contains(&"late".to_owned())
            .then(|| alice_sync["next_batch"].as_str().unwrap().to_owned())
    })
    .await;
    let at_b = sync(&b, &alice, Some(&ahead), 0).await;
    assert!(
        bodies(&at_b, &room).is_empty(),
        "since {ahead} from A, B answered {at_b}"
    );
    // The barrier: a later message, which B serves after "late" had it
    // been going to repeat it.
    send(&a, &alice, &room, "barrier", "barrier").await;
    let mut since = at_b["next_batch"].as_str().unwrap().to_owned();
    let mut after = Vec::new();
    eventually("the barrier on B", async || {
        let next = sync(&b, &alice, Some(&since), 1_000).await;
        after.extend(bodies(&next, &room));
        since = next["next_batch"].as_str().unwrap().to_owned();
        after.contains(&"barrier".to_owned()).then_some(())
    })
    .await;
    assert_eq!(after, ["barrier"], "repeated");
}

#[tokio::test]
async fn a_user_syncing_on_one_node_counts_as_connected_on_the_other() {
    let shared = shared().await;
    let hub = MemoryCluster::default();
    let (a, services_a) = node_with_services(&shared, hub.join(1)).await;
    let b = node(&shared, hub.join(2)).await;
    let _alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    // Push decisions on A skip users who are syncing, wherever they sync.
    assert!(
        !services_a
            .presence
            .is_connected(user_id!("@bob:localhost"))
            .await
    );
    sync(&b, &bob, None, 0).await;
    assert!(
        services_a
            .presence
            .is_connected(user_id!("@bob:localhost"))
            .await
    );
    assert!(
        !services_a
            .presence
            .is_connected(user_id!("@alice:localhost"))
            .await
    );
}

/// A to-device message and a device-list change made on A wake Bob's
/// long-polls on B at once.
#[tokio::test]
async fn to_device_messages_and_device_lists_wake_syncs_on_the_other_node() {
    let shared = shared().await;
    let hub = MemoryCluster::default();
    let a = node(&shared, hub.join(1)).await;
    let b = node(&shared, hub.join(2)).await;
    let alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    shared_room(&a, &b, &alice, &bob).await;
    let since = sync(&b, &bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let long_poll = |since: String| {
        let (b, bob) = (b.clone(), bob.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            (
                sync(&b, &bob, Some(&since), 20_000).await,
                started.elapsed(),
            )
        })
    };
    let waiting = long_poll(since.clone());
    assert_still_waiting(&b, &bob, &since, &waiting).await;
    let body = json!({"messages": {"@bob:localhost": {"*": {"secret": "room key"}}}});
    let (status, _) = call(
        &a,
        "PUT",
        "/_matrix/client/v3/sendToDevice/m.room_key/t1",
        Some(&alice),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (woken, waited) = waiting.await.unwrap();
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    assert_eq!(
        woken["to_device"]["events"][0]["content"]["secret"], "room key",
        "{woken}"
    );

    let since = woken["next_batch"].as_str().unwrap().to_owned();
    let waiting = long_poll(since.clone());
    assert_still_waiting(&b, &bob, &since, &waiting).await;
    let (status, _) = call(
        &a,
        "PUT",
        &format!(
            "/_matrix/client/v3/devices/{}",
            whoami_device(&a, &alice).await
        ),
        Some(&alice),
        Some(r#"{"display_name": "Alice's phone"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (woken, waited) = waiting.await.unwrap();
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    assert_eq!(
        woken["device_lists"]["changed"],
        json!(["@alice:localhost"]),
        "{woken}"
    );
}

async fn whoami_device(app: &Router, token: &str) -> String {
    let (_, who) = call(
        app,
        "GET",
        "/_matrix/client/v3/account/whoami",
        Some(token),
        None,
    )
    .await;
    who["device_id"].as_str().unwrap().to_owned()
}
