//! Pushes on a cluster: every node hears of every event, but an event's
//! pushes are decided once, also when a retried send is answered from the
//! store by another node. The notifications go to a gateway nobody listens
//! on, so they stay in the outbox for the test to read.

use axum::http::StatusCode;
use ruma_common::user_id;
use serde_json::json;

use super::*;

/// Every node hears of every event, but an event's pushes are decided once
/// for the cluster: one queued notification per pusher, not one per node.
#[tokio::test]
async fn an_event_is_pushed_once_however_many_nodes_hear_of_it() {
    let shared = shared().await;
    let hub = MemoryCluster::default();
    let (a, services_a) = node_with_services(&shared, hub.join(1)).await;
    let b = node(&shared, hub.join(2)).await;
    let alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    let room = shared_room(&a, &b, &alice, &bob).await;
    set_unreachable_pusher(&b, &bob, "phone").await;
    eventually("A knowing the pusher set on B", async || {
        (!services_a
            .pushers
            .pushers_of(user_id!("@bob:localhost"))
            .is_empty())
        .then_some(())
    })
    .await;

    let on_a = send(&a, &alice, &room, "p1", "from A").await;
    let on_b = send(&b, &alice, &room, "p2", "from B").await;
    // The barrier: one more event through each node, decided by each after
    // the first two.
    let later_a = send(&a, &alice, &room, "p3", "later from A").await;
    let later_b = send(&b, &alice, &room, "p4", "later from B").await;
    let mut queued = Vec::new();
    eventually("every push queued", async || {
        queued.extend(for_pushkey(&take_queued(&shared).await, "phone"));
        (queued.contains(&later_a) && queued.contains(&later_b)).then_some(())
    })
    .await;
    queued.sort();
    let mut expected = vec![on_a, on_b, later_a, later_b];
    expected.sort();
    assert_eq!(queued, expected);
}

/// Gives `user` a pusher on `app` to a gateway nobody listens on (port 9):
/// its notifications stay queued, for the test to read.
async fn set_unreachable_pusher(app: &Router, user: &str, pushkey: &str) {
    let pusher = json!({
        "pushkey": pushkey, "kind": "http", "app_id": "org.example.chat",
        "app_display_name": "Chat", "device_display_name": "Phone", "lang": "en",
        "data": {"url": "http://127.0.0.1:9/_matrix/push/v1/notify"},
    });
    let path = "/_matrix/client/v3/pushers/set";
    let (status, body) = call(app, "POST", path, Some(user), Some(&pusher.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Everything in the outbox (leased or not) as `(pushkey, event id)`,
/// emptied.
async fn take_queued(shared: &Shared) -> Vec<(String, String)> {
    let mut queued = Vec::new();
    for q in shared
        .store
        .push
        .claim_pushes(i64::MAX, i64::MAX, 100, &[])
        .await
        .unwrap()
    {
        let notification = &q.push.body["notification"];
        let field = |value: &serde_json::Value| value.as_str().unwrap().to_owned();
        queued.push((
            field(&notification["devices"][0]["pushkey"]),
            field(&notification["event_id"]),
        ));
        shared.store.push.finish_push(q.id).await.unwrap();
    }
    queued
}

/// The event ids among `queued` for `pushkey`.
fn for_pushkey(queued: &[(String, String)], pushkey: &str) -> Vec<String> {
    queued
        .iter()
        .filter(|(key, _)| key == pushkey)
        .map(|(_, event_id)| event_id.clone())
        .collect()
}

/// A send that one node committed but never got to push (here A never
/// heard of the pusher, as if it died right after its commit) is pushed
/// once its client retries the transaction on another node: the answer
/// from the store puts the event on the bus again.
#[tokio::test]
async fn a_retry_answered_from_the_store_is_pushed() {
    let shared = shared().await;
    let hub = MemoryCluster::default();
    // A talks to nobody and hears nobody.
    let lonely = MemoryCluster::default();
    let (a, services_a) = node_with_services(&shared, lonely.join(1)).await;
    let b = node(&shared, hub.join(2)).await;
    let alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    let room = shared_room(&a, &b, &alice, &bob).await;
    set_unreachable_pusher(&b, &bob, "phone").await;
    // The precondition, checked rather than waited for: A never heard of
    // the pusher, so whatever A decides for its own send pushes nobody.
    assert!(
        !services_a.pushers.anyone_has_pushers(),
        "A learned of bob's pusher"
    );

    let first = send(&a, &alice, &room, "t1", "hello?").await;
    // The retry on B finds the committed event and answers with its id.
    let again = send(&b, &alice, &room, "t1", "hello?").await;
    assert_eq!(again, first);
    // The barrier: B decides a later send of its own after the retried one.
    let later = send(&b, &alice, &room, "t2", "still there?").await;
    let mut queued = Vec::new();
    eventually("the retried event pushed", async || {
        queued.extend(for_pushkey(&take_queued(&shared).await, "phone"));
        queued.contains(&later).then_some(())
    })
    .await;
    queued.sort();
    let mut expected = vec![first, later];
    expected.sort();
    assert_eq!(queued, expected, "pushed more than once");
}
