//! The `TypingStore` part of the conformance suite.

use std::sync::Arc;

use ruma_common::{room_id, user_id};

use super::{room, user};
use crate::store::TypingStore;

pub async fn typing_store(store: Arc<dyn TypingStore>) {
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
}
