//! Two nodes, each with its own PostgreSQL engine on one database.

use axum::http::StatusCode;
use serde_json::Value;

use super::*;

/// Two nodes, each with its own PostgreSQL engine (pool and writer) on one
/// database, as two processes would run: a send on one wakes a sync on the
/// other, and both nodes writing at once (positions interleaving between
/// them) leaves each with the whole history, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_their_own_postgres_engines() {
    use crate::store::Database;

    let db = crate::store::postgres::test_db::TestDb::create().await;
    let shared = shared().await;
    let (pg_a, pg_b) = (db.open().await, db.open().await);
    let hub = MemoryCluster::default();
    let a = node_on(&shared, &Stores::of(pg_a.clone()), hub.join(1)).await;
    let b = node_on(&shared, &Stores::of(pg_b.clone()), hub.join(2)).await;
    let alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    let room = shared_room(&a, &b, &alice, &bob).await;

    let first = sync(&b, &bob, None, 0).await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let waiting = {
        let (b, bob, since) = (b.clone(), bob.clone(), since.clone());
        tokio::spawn(async move { sync(&b, &bob, Some(&since), 20_000).await })
    };
    assert_still_waiting(&b, &bob, &since, &waiting).await;
    send(&a, &alice, &room, "t0", "hello from A").await;
    let woken = waiting.await.unwrap();
    assert_eq!(bodies(&woken, &room), vec!["hello from A"]);

    // A second room, made on B; then both nodes send at once, each into
    // its own room, so their positions interleave in the shared stream.
    let (status, created) = call(
        &b,
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&bob),
        Some(r#"{"preset":"private_chat","invite":["@alice:localhost"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room_b = created["room_id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &a,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room_b}/join"),
        Some(&alice),
        Some("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Tokens from before the sends; fewer sends per room than a sync's
    // timeline limit (10), so no response is `limited`.
    let next_batch = |v: Value| v["next_batch"].as_str().unwrap().to_owned();
    let since_a = next_batch(sync(&a, &alice, None, 0).await);
    let since_b = next_batch(sync(&b, &bob, None, 0).await);
    const EACH: usize = 8;
    let on_a = {
        let (a, alice, room) = (a.clone(), alice.clone(), room.clone());
        tokio::spawn(async move {
            for n in 0..EACH {
                send(&a, &alice, &room, &format!("a{n}"), &format!("a{n}")).await;
            }
        })
    };
    let on_b = {
        let (b, bob, room_b) = (b.clone(), bob.clone(), room_b.clone());
        tokio::spawn(async move {
            for n in 0..EACH {
                send(&b, &bob, &room_b, &format!("b{n}"), &format!("b{n}")).await;
            }
        })
    };
    on_a.await.unwrap();
    on_b.await.unwrap();

    // Each node's syncs bring both rooms' messages, in order, once.
    let want_a: Vec<String> = (0..EACH).map(|n| format!("a{n}")).collect();
    let want_b: Vec<String> = (0..EACH).map(|n| format!("b{n}")).collect();
    for (app, token, since) in [(&a, &alice, since_a), (&b, &bob, since_b)] {
        let mut since = since;
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        eventually("both rooms' messages", async || {
            let next = sync(app, token, Some(&since), 1_000).await;
            got_a.extend(
                bodies(&next, &room)
                    .into_iter()
                    .filter(|b| b.starts_with('a')),
            );
            got_b.extend(bodies(&next, &room_b));
            since = next["next_batch"].as_str().unwrap().to_owned();
            (got_a.len() >= EACH && got_b.len() >= EACH).then_some(())
        })
        .await;
        assert_eq!((&got_a, &got_b), (&want_a, &want_b));
    }
    pg_a.close().await;
    pg_b.close().await;
    db.drop().await;
}
