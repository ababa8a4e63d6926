//! Two nodes in one process sharing one store, one ephemeral engine and an
//! in-process cluster bus. This file is the harness (nodes, a shared room,
//! sync and send, [`eventually`]); the tests are by subject:
//!
//! - `crossing`: what crosses nodes (messages, receipts, typing, logouts,
//!   who is connected), and that a node which misses the bus catches up
//!   from the store.
//! - `authorization`: a node with a stale view of a room cannot commit
//!   what the current state forbids.
//! - `push`: an event is pushed once for the cluster, also when a retry is
//!   answered from the store.
//! - `rate_limits`: the budget is one for the cluster, not one per node.
//! - `postgres`: two nodes each with its own PostgreSQL engine.

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

mod authorization;
mod crossing;
#[cfg(feature = "postgres")]
mod postgres;
mod push;
mod rate_limits;

/// The relational engine as the traits a node uses: one engine shared by
/// both nodes, or (PostgreSQL) one engine per node on one database.
#[derive(Clone)]
struct Stores {
    accounts: Arc<dyn crate::store::AccountStore>,
    rooms: Arc<dyn crate::store::RoomStore>,
    receipts: Arc<dyn crate::store::ReceiptStore>,
    push: Arc<dyn crate::store::PushStore>,
    federation: Arc<dyn crate::store::FederationStore>,
    e2ee: Arc<dyn crate::store::E2eeStore>,
    media_metadata: Arc<dyn crate::store::media::MediaMetadataStore>,
}

impl Stores {
    fn of<S>(engine: Arc<S>) -> Self
    where
        S: crate::store::AccountStore
            + crate::store::RoomStore
            + crate::store::ReceiptStore
            + crate::store::PushStore
            + crate::store::FederationStore
            + crate::store::E2eeStore
            + crate::store::media::MediaMetadataStore
            + 'static,
    {
        Self {
            accounts: engine.clone(),
            rooms: engine.clone(),
            receipts: engine.clone(),
            push: engine.clone(),
            federation: engine.clone(),
            e2ee: engine.clone(),
            media_metadata: engine,
        }
    }
}

struct Shared {
    dir: tempfile::TempDir,
    store: Stores,
    ephemeral: Arc<MemoryEphemeral>,
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
        typing: shared.ephemeral.clone(),
        presence: shared.ephemeral.clone(),
        leases: Some(shared.ephemeral.clone()),
        rate_limits: Some(shared.ephemeral.clone()),
        receipts: stores.receipts.clone(),
        push: stores.push.clone(),
        federation: stores.federation.clone(),
        e2ee: stores.e2ee.clone(),
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

/// Polls `condition` every 20 ms until it gives `Some`; panics naming
/// `what` after 10 s. Tests wait for conditions, never for a while.
async fn eventually<T>(what: &str, mut condition: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(done) = condition().await {
            return done;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Shows that `waiting`, a long-poll from `since` started before, is still
/// waiting: another from the same token, begun after it, runs to its
/// (short) timeout with nothing to report, and the first has not returned.
async fn assert_still_waiting<T>(
    app: &Router,
    token: &str,
    since: &str,
    waiting: &tokio::task::JoinHandle<T>,
) {
    let started = Instant::now();
    let idle = sync(app, token, Some(since), 300).await;
    assert!(started.elapsed() >= Duration::from_millis(250), "{idle}");
    let rooms = idle["rooms"]["join"].as_object().into_iter().flatten();
    let mut events = rooms.flat_map(|(_, room)| room["timeline"]["events"].as_array());
    assert!(events.all(|list| list.is_empty()), "{idle}");
    assert!(
        !waiting.is_finished(),
        "the long-poll returned with nothing to say"
    );
}
