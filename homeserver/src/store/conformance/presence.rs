//! The `PresenceStore` part of the conformance suite.

use std::sync::Arc;

use ruma_common::{owned_user_id, user_id};

use super::user;
use crate::store::{PresenceRecord, PresenceState, PresenceStore};

pub async fn presence_store(store: Arc<dyn PresenceStore>) {
    let store = store.as_ref();
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
