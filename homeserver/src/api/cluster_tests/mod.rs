//! Two nodes in one process sharing one store, one ephemeral engine and an
//! in-process cluster bus: what crosses nodes, and that a node which misses
//! the bus catches up from the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::connect_info::MockConnectInfo;
use axum::http::StatusCode;
use axum::Router;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::tests::{call, register};
use crate::config::Config;
use crate::service::keys::ServerKey;
use crate::service::{Backends, Services};
use crate::store::cluster::{ClusterBus, ClusterTransport, MemoryCluster};
use crate::store::memory::MemoryEphemeral;
use crate::store::sqlite::SqliteStore;
use crate::store::Ephemeral;

/// The relational engine as the traits a node uses: one engine shared by
/// both nodes, or (PostgreSQL) one engine per node on one database.
#[derive(Clone)]
struct Stores {
    accounts: Arc<dyn crate::store::AccountStore>,
    rooms: Arc<dyn crate::store::RoomStore>,
    receipts: Arc<dyn crate::store::ReceiptStore>,
    push: Arc<dyn crate::store::PushStore>,
    media_metadata: Arc<dyn crate::store::media::MediaMetadataStore>,
}

impl Stores {
    fn of<S>(engine: Arc<S>) -> Self
    where
        S: crate::store::AccountStore
            + crate::store::RoomStore
            + crate::store::ReceiptStore
            + crate::store::PushStore
            + crate::store::media::MediaMetadataStore
            + 'static,
    {
        Self {
            accounts: engine.clone(),
            rooms: engine.clone(),
            receipts: engine.clone(),
            push: engine.clone(),
            media_metadata: engine,
        }
    }
}

struct Shared {
    dir: tempfile::TempDir,
    store: Stores,
    ephemeral: Arc<dyn Ephemeral>,
}

async fn shared() -> Shared {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("tern.db"))
            .await
            .unwrap(),
    );
    Shared {
        dir,
        store: Stores::of(store),
        ephemeral: Arc::new(MemoryEphemeral::default()),
    }
}

async fn node(shared: &Shared, transport: Arc<dyn ClusterTransport>) -> Router {
    node_with_services(shared, transport).await.0
}

async fn node_with_services(
    shared: &Shared,
    transport: Arc<dyn ClusterTransport>,
) -> (Router, Arc<Services>) {
    node_configured(shared, transport, true).await
}

/// A node on `stores`, with the shared data directory (signing key) and
/// ephemeral engine.
async fn node_on(shared: &Shared, stores: &Stores, transport: Arc<dyn ClusterTransport>) -> Router {
    node_on_stores(shared, stores, transport, true).await.0
}

async fn node_configured(
    shared: &Shared,
    transport: Arc<dyn ClusterTransport>,
    disable_rate_limits: bool,
) -> (Router, Arc<Services>) {
    node_on_stores(
        shared,
        &shared.store.clone(),
        transport,
        disable_rate_limits,
    )
    .await
}

async fn node_on_stores(
    shared: &Shared,
    stores: &Stores,
    transport: Arc<dyn ClusterTransport>,
    disable_rate_limits: bool,
) -> (Router, Arc<Services>) {
    let config = Config {
        data_dir: shared.dir.path().to_owned(),
        allow_registration: true,
        disable_rate_limits,
        ..Config::default()
    };
    let bus = Arc::new(ClusterBus::new(transport));
    let backends = Backends {
        accounts: stores.accounts.clone(),
        rooms: stores.rooms.clone(),
        bus: bus.clone(),
        cluster: Some(bus),
        ephemeral: shared.ephemeral.clone(),
        receipts: stores.receipts.clone(),
        push: stores.push.clone(),
        media: crate::store::media::open(&config).await.unwrap(),
        media_metadata: stores.media_metadata.clone(),
    };
    let key = ServerKey::load_or_generate(shared.dir.path()).unwrap();
    let services = Services::new(config, backends, key, CancellationToken::new())
        .await
        .unwrap();
    let app = super::router(services.clone())
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
    (app, services)
}

/// A room made by `alice` on `a` that `bob` joined through `b`.
async fn shared_room(a: &Router, b: &Router, alice: &str, bob: &str) -> String {
    let (status, created) = call(
        a,
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(alice),
        Some(r#"{"preset":"private_chat","invite":["@bob:localhost"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (status, joined) = call(
        b,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(bob),
        Some("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    room
}

async fn sync(app: &Router, token: &str, since: Option<&str>, timeout_ms: u64) -> Value {
    let mut uri = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
    if let Some(since) = since {
        uri.push_str(&format!("&since={since}"));
    }
    let (status, body) = call(app, "GET", &uri, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn bodies(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

async fn send(app: &Router, token: &str, room: &str, txn: &str, body: &str) -> String {
    let (status, sent) = call(
        app,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        Some(&json!({"msgtype": "m.text", "body": body}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    sent["event_id"].as_str().unwrap().to_owned()
}

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
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = call(
            &b,
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&alice),
            None,
        )
        .await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still accepts a logged-out token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < sent.len() && Instant::now() < deadline {
        let next = sync(&b, &bob, Some(&since), 3_000).await;
        seen.extend(bodies(&next, &room));
        since = next["next_batch"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen, sent);

    // A token from A that is ahead of B's cache never makes B repeat events.
    send(&a, &alice, &room, "late", "late").await;
    let alice_sync = sync(&a, &alice, None, 0).await;
    let ahead = alice_sync["next_batch"].as_str().unwrap().to_owned();
    let at_b = sync(&b, &alice, Some(&ahead), 0).await;
    assert!(bodies(&at_b, &room).is_empty(), "{at_b}");
    let after = sync(&b, &alice, at_b["next_batch"].as_str(), 2_500).await;
    assert!(bodies(&after, &room).is_empty(), "repeated: {after}");
}

/// Nodes race on one room's state: B never hears of A's changes (a deaf
/// bus), so only the store's check stands between B's stale view and an
/// event the room's authorization rules forbid.
#[tokio::test]
async fn a_stale_node_cannot_commit_what_the_current_state_forbids() {
    let shared = shared().await;
    let a = node(&shared, MemoryCluster::default().join(1)).await;
    let b = node(&shared, MemoryCluster::default().join(2)).await;
    let alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    let room = shared_room(&a, &b, &alice, &bob).await;
    let put_state = |app: &Router, token: &str, kind: &str, content: Value| {
        let app = app.clone();
        let token = token.to_owned();
        let uri = format!("/_matrix/client/v3/rooms/{room}/state/{kind}/");
        async move { call(&app, "PUT", &uri, Some(&token), Some(&content.to_string())).await }
    };
    // Bob may rename the room (power 50); his node loads that view.
    let levels = json!({"users": {"@alice:localhost": 100, "@bob:localhost": 50},
                        "state_default": 50, "events_default": 0});
    let (status, body) = put_state(&a, &alice, "m.room.power_levels", levels).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = put_state(&b, &bob, "m.room.name", json!({"name": "by bob"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Alice demotes Bob on A; B still believes he may rename.
    let demoted = json!({"users": {"@alice:localhost": 100}, "state_default": 50,
                         "events_default": 0});
    let (status, _) = put_state(&a, &alice, "m.room.power_levels", demoted).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = put_state(&b, &bob, "m.room.name", json!({"name": "stale"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    // Messages are still his to send: the retry authorizes against the new state.
    send(&b, &bob, &room, "m1", "still here").await;

    // Kicked on A, Bob can no longer send through B.
    let (status, _) = call(
        &a,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/kick"),
        Some(&alice),
        Some(r#"{"user_id":"@bob:localhost"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &b,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/m2"),
        Some(&bob),
        Some(r#"{"msgtype":"m.text","body":"after the kick"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // What the room holds: the name Bob set while allowed, nothing after.
    let (status, name) = call(
        &a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(name["name"], "by bob");
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
    assert!(!services_a.presence.is_connected("@bob:localhost").await);
    sync(&b, &bob, None, 0).await;
    assert!(services_a.presence.is_connected("@bob:localhost").await);
    assert!(!services_a.presence.is_connected("@alice:localhost").await);
}

/// Every node hears of every event, but an event's pushes are decided once
/// for the cluster: one queued notification per pusher, not one per node.
#[tokio::test]
async fn an_event_is_pushed_once_however_many_nodes_hear_of_it() {
    let shared = shared().await;
    let hub = MemoryCluster::default();
    let a = node(&shared, hub.join(1)).await;
    let b = node(&shared, hub.join(2)).await;
    let alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    let room = shared_room(&a, &b, &alice, &bob).await;
    set_unreachable_pusher(&b, &bob).await;
    // Both nodes know the pusher once its change crossed the bus.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let on_a = send(&a, &alice, &room, "p1", "from A").await;
    let on_b = send(&b, &alice, &room, "p2", "from B").await;
    let mut queued = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(queued.contains(&on_a) && queued.contains(&on_b)) {
        assert!(Instant::now() < deadline, "pushes not queued: {queued:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        queued.extend(take_queued(&shared).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    queued.extend(take_queued(&shared).await);
    queued.sort();
    let mut expected = vec![on_a, on_b];
    expected.sort();
    assert_eq!(queued, expected);
}

/// Gives `user` a pusher on `app` to a gateway nobody listens on (port 9):
/// its notifications stay queued, for the test to read.
async fn set_unreachable_pusher(app: &Router, user: &str) {
    let pusher = json!({
        "pushkey": "phone", "kind": "http", "app_id": "org.example.chat",
        "app_display_name": "Chat", "device_display_name": "Phone", "lang": "en",
        "data": {"url": "http://127.0.0.1:9/_matrix/push/v1/notify"},
    });
    let path = "/_matrix/client/v3/pushers/set";
    let (status, body) = call(app, "POST", path, Some(user), Some(&pusher.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Everything in the outbox (leased or not), by event id, emptied.
async fn take_queued(shared: &Shared) -> Vec<String> {
    let mut queued = Vec::new();
    for q in shared
        .store
        .push
        .claim_pushes(i64::MAX, i64::MAX, 100, &[])
        .await
        .unwrap()
    {
        queued.push(
            q.push.body["notification"]["event_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        shared.store.push.finish_push(q.id).await.unwrap();
    }
    queued
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
    let a = node(&shared, lonely.join(1)).await;
    let b = node(&shared, hub.join(2)).await;
    let alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    let room = shared_room(&a, &b, &alice, &bob).await;
    set_unreachable_pusher(&b, &bob).await;

    let first = send(&a, &alice, &room, "t1", "hello?").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(take_queued(&shared).await.is_empty(), "A pushed after all");
    // The retry on B finds the committed event and answers with its id.
    let again = send(&b, &alice, &room, "t1", "hello?").await;
    assert_eq!(again, first);
    let mut queued = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !queued.contains(&first) {
        assert!(
            Instant::now() < deadline,
            "the retried event was never pushed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        queued.extend(take_queued(&shared).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    queued.extend(take_queued(&shared).await);
    assert_eq!(queued, vec![first], "pushed more than once");
}

#[tokio::test]
async fn spreading_sends_over_nodes_buys_no_extra_rate() {
    let shared = shared().await;
    let hub = MemoryCluster::default();
    let (a, _) = node_configured(&shared, hub.join(1), false).await;
    let (b, _) = node_configured(&shared, hub.join(2), false).await;
    let alice = register(&a, "alice").await;
    let (status, created) = call(
        &a,
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        Some("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    // The message budget is a burst of 50: alternate nodes until refused.
    let mut refused = None;
    let started = Instant::now();
    for n in 0..100 {
        let app = if n % 2 == 0 { &a } else { &b };
        let (status, body) = call(
            app,
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/r{n}"),
            Some(&alice),
            Some(r#"{"msgtype":"m.text","body":"x"}"#),
        )
        .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
            refused = Some(n);
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let refused = refused.expect("never limited across two nodes");
    // One shared bucket: 50 plus what refilled meanwhile (10/s). Two
    // buckets, one per node, would have taken 100.
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        refused >= 50 && refused <= 51 + refilled && refused < 100,
        "limited after {refused} sends ({refilled} refilled)"
    );
}

/// Two nodes, each with its own PostgreSQL engine (pool and writer) on one
/// database, as two processes would run: a send on one wakes a sync on the
/// other, and both nodes writing at once (positions interleaving between
/// them) leaves each with the whole history, in order.
#[cfg(feature = "postgres")]
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
    tokio::time::sleep(Duration::from_millis(200)).await;
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
        let mut since = Some(since);
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(10);
        while (got_a.len() < EACH || got_b.len() < EACH) && Instant::now() < deadline {
            let next = sync(app, token, since.as_deref(), 2_000).await;
            got_a.extend(
                bodies(&next, &room)
                    .into_iter()
                    .filter(|b| b.starts_with('a')),
            );
            got_b.extend(bodies(&next, &room_b));
            since = next["next_batch"].as_str().map(str::to_owned);
        }
        assert_eq!((&got_a, &got_b), (&want_a, &want_b));
    }
    pg_a.close().await;
    pg_b.close().await;
    db.drop().await;
}
