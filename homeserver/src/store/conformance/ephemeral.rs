//! The `Ephemeral` part of the conformance suite: typing, rate limits,
//! connections and presence.

use std::sync::Arc;

use ruma_common::UserId;
use ruma_common::{owned_user_id, room_id, user_id};

use super::{room, user};
use crate::store::{Ephemeral, PresenceRecord, PresenceState};

pub async fn ephemeral(store: Arc<dyn Ephemeral>) {
    connections(store.as_ref()).await;
    rate_limits(store.as_ref()).await;
    let rooms = vec![room("!r:test"), room("!quiet:test")];
    let start = store.typing_position().await.unwrap();
    let p1 = store
        .set_typing(room_id!("!r:test"), user_id!("@a:test"), Some(1_000))
        .await
        .unwrap()
        .unwrap();
    let p2 = store
        .set_typing(room_id!("!r:test"), user_id!("@b:test"), Some(5_000))
        .await
        .unwrap()
        .unwrap();
    assert!(p1 > start && p2 > p1);
    // Renewing does not change who types, so it is no news.
    assert_eq!(
        store
            .set_typing(room_id!("!r:test"), user_id!("@a:test"), Some(2_000))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.typing_position().await.unwrap(), p2);
    assert_eq!(
        store.typing_since(&rooms, start).await.unwrap(),
        vec![(room("!r:test"), vec![user("@a:test"), user("@b:test")])]
    );
    assert!(store.typing_since(&rooms, p2).await.unwrap().is_empty());
    assert_eq!(store.next_typing_expiry().await.unwrap(), Some(2_000));

    // Expiry drops @a and moves the stream; a stop is reported as news too.
    let expired = store.expire_typing(3_000).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert!(expired[0].1 > p2);
    let p3 = store
        .set_typing(room_id!("!r:test"), user_id!("@b:test"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.typing_since(&rooms, expired[0].1).await.unwrap(),
        vec![(room("!r:test"), vec![])]
    );
    assert_eq!(
        store
            .set_typing(room_id!("!r:test"), user_id!("@b:test"), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.typing_position().await.unwrap(), p3);
    assert_eq!(store.next_typing_expiry().await.unwrap(), None);

    presence(store.as_ref()).await;
}

/// A shared token bucket: the burst, then a refusal with the wait, per key.
async fn rate_limits(store: &dyn Ephemeral) {
    let key = format!("conf-{}", std::process::id());
    for _ in 0..3 {
        assert_eq!(store.take_token(&key, 3.0, 0.5).await.unwrap(), None);
    }
    let wait = store.take_token(&key, 3.0, 0.5).await.unwrap();
    assert!(wait.is_some_and(|ms| ms > 0 && ms <= 2_000), "{wait:?}");
    assert_eq!(
        store
            .take_token(&format!("{key}-other"), 3.0, 0.5)
            .await
            .unwrap(),
        None
    );
}

/// Which user is connected to which node: renewed, moved, expired.
async fn connections(store: &dyn Ephemeral) {
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
async fn lapsed(store: &dyn Ephemeral, user: &UserId) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.connected_node(user).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "{user}'s lease never lapsed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn presence(store: &dyn Ephemeral) {
    let record = |state, ts| PresenceRecord {
        state,
        status_msg: Some("hi".into()),
        last_active_ts: ts,
        hidden: false,
    };
    let start = store.presence_position().await.unwrap();
    let p1 = store
        .set_presence(user_id!("@a:test"), record(PresenceState::Online, 7), true)
        .await
        .unwrap()
        .unwrap();
    assert!(p1 > start);
    assert_eq!(
        store.get_presence(user_id!("@a:test")).await.unwrap(),
        Some(record(PresenceState::Online, 7))
    );
    assert_eq!(store.get_presence(user_id!("@b:test")).await.unwrap(), None);

    // A silent update changes the record but not the stream.
    let silent = store
        .set_presence(user_id!("@a:test"), record(PresenceState::Online, 9), false)
        .await
        .unwrap();
    assert_eq!(silent, None);
    assert_eq!(store.presence_position().await.unwrap(), p1);
    assert_eq!(
        store
            .get_presence(user_id!("@a:test"))
            .await
            .unwrap()
            .unwrap()
            .last_active_ts,
        9
    );

    let p2 = store
        .set_presence(
            user_id!("@b:test"),
            record(PresenceState::Unavailable, 8),
            true,
        )
        .await
        .unwrap()
        .unwrap();
    let p3 = store
        .set_presence(user_id!("@a:test"), record(PresenceState::Offline, 9), true)
        .await
        .unwrap()
        .unwrap();
    assert!(p3 > p2 && p2 > p1);
    assert_eq!(store.presence_position().await.unwrap(), p3);

    // Each user once, at their latest change, oldest first.
    let since = |pos| async move {
        store
            .presence_since(pos, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(user, r)| (user, r.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        since(start).await,
        vec![
            (user("@b:test"), PresenceState::Unavailable),
            (user("@a:test"), PresenceState::Offline)
        ]
    );
    assert_eq!(
        since(p2).await,
        vec![(user("@a:test"), PresenceState::Offline)]
    );
    assert!(since(p3).await.is_empty());
    assert_eq!(store.presence_since(start, 1).await.unwrap().len(), 1);

    let mut found = store
        .presences(&[
            owned_user_id!("@a:test"),
            owned_user_id!("@b:test"),
            owned_user_id!("@c:test"),
        ])
        .await
        .unwrap();
    found.sort_by(|x, y| x.0.cmp(&y.0));
    let users: Vec<&str> = found.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(users, ["@a:test", "@b:test"]);
}
