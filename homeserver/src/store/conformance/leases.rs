//! The `ConnectionLeases` part of the conformance suite.

use std::sync::Arc;

use ruma_common::{user_id, UserId};

use super::user;
use crate::store::ConnectionLeases;

/// Which user is connected to which node: renewed, moved, expired.
pub async fn connection_leases(store: Arc<dyn ConnectionLeases>) {
    let store = store.as_ref();
    let users = vec![user("@c1:test"), user("@c2:test")];
    assert_eq!(
        store.connected_node(user_id!("@c1:test")).await.unwrap(),
        None
    );
    store.set_connected(&users, "node-a", 60_000).await.unwrap();
    assert_eq!(
        store
            .connected_node(user_id!("@c2:test"))
            .await
            .unwrap()
            .as_deref(),
        Some("node-a")
    );
    // A user who moves is where they connected last.
    store
        .set_connected(&users[..1], "node-b", 60_000)
        .await
        .unwrap();
    assert_eq!(
        store
            .connected_node(user_id!("@c1:test"))
            .await
            .unwrap()
            .as_deref(),
        Some("node-b")
    );
    // Nobody's lease has lapsed yet.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    assert!(store
        .take_lapsed_connections(now(), 10)
        .await
        .unwrap()
        .is_empty());
    // Not renewed: gone.
    store.set_connected(&users, "node-b", 50).await.unwrap();
    lapsed(store, user_id!("@c1:test")).await;
    lapsed(store, user_id!("@c2:test")).await;
    // The lapsed are handed out once each, `limit` at a time.
    let first = store.take_lapsed_connections(now(), 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let mut all = first;
    all.extend(store.take_lapsed_connections(now(), 10).await.unwrap());
    all.sort();
    assert_eq!(all, users);
    assert!(store
        .take_lapsed_connections(now(), 10)
        .await
        .unwrap()
        .is_empty());
    // A renewed lease is not lapsed.
    store.set_connected(&users, "node-a", 50).await.unwrap();
    store
        .set_connected(&users[..1], "node-a", 60_000)
        .await
        .unwrap();
    lapsed(store, user_id!("@c2:test")).await;
    assert_eq!(
        store
            .connected_node(user_id!("@c1:test"))
            .await
            .unwrap()
            .as_deref(),
        Some("node-a")
    );
    assert_eq!(
        store.take_lapsed_connections(now(), 10).await.unwrap(),
        vec![user("@c2:test")]
    );
}

/// Waits until `user`'s lease has run out (leases lapse with time: the
/// condition is the lease, not a fixed pause).
async fn lapsed(store: &dyn ConnectionLeases, user: &UserId) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.connected_node(user).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "{user}'s lease never lapsed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
