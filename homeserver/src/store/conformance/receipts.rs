//! The `ReceiptStore` part of the conformance suite.

use std::sync::Arc;

use ruma_common::{owned_room_id, owned_user_id, room_id, user_id};

use crate::store::{NewReceipt, ReceiptStore, RoomStore, StreamPos};

fn receipt(user: &str, kind: &str, event_stream: StreamPos, ts: i64) -> NewReceipt {
    NewReceipt {
        room_id: owned_room_id!("!rr:test"),
        user_id: super::user(user),
        receipt_type: kind.into(),
        thread_id: None,
        event_id: super::event(&format!("$e{event_stream}")),
        event_sender: owned_user_id!("@s:t"),
        event_stream,
        ts,
    }
}

pub async fn receipt_store(store: Arc<dyn ReceiptStore>, _rooms: Arc<dyn RoomStore>) {
    let rooms = vec![super::room("!rr:test")];
    let start = store.receipts_position().await.unwrap();
    let set = store
        .set_receipts(vec![
            receipt("@a:t", "m.read", 5, 100),
            receipt("@b:t", "tern.delivered", 5, 110),
        ])
        .await
        .unwrap();
    assert!(set.iter().all(Option::is_some));
    let p2 = set[1].unwrap();
    assert_eq!(store.receipts_position().await.unwrap(), p2);

    // Receipts only move forward.
    let back = store
        .set_receipts(vec![receipt("@a:t", "m.read", 3, 120)])
        .await
        .unwrap();
    assert_eq!(back, vec![None]);
    let same = store
        .set_receipts(vec![receipt("@a:t", "m.read", 5, 120)])
        .await
        .unwrap();
    assert_eq!(same, vec![None]);
    let ahead = store
        .set_receipts(vec![receipt("@a:t", "m.read", 9, 130)])
        .await
        .unwrap();
    let p3 = ahead[0].unwrap();
    assert!(p3 > p2);

    let all = store.receipts_since(&rooms, start).await.unwrap();
    assert_eq!(all.len(), 2, "one row per user and type: {all:?}");
    let newer = store.receipts_since(&rooms, p2).await.unwrap();
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0].receipt.event_stream, 9);
    // Of every room, bounded: a cluster node's gap filling.
    assert_eq!(store.receipts_after(start, 100).await.unwrap().len(), 2);
    assert_eq!(store.receipts_after(p2, 100).await.unwrap(), newer);
    assert_eq!(store.receipts_after(start, 1).await.unwrap().len(), 1);
    assert!(store.receipts_after(p3, 100).await.unwrap().is_empty());
    assert!(store
        .receipts_since(&[owned_room_id!("!other:test")], start)
        .await
        .unwrap()
        .is_empty());

    // When did each receipt first cover event 4 (both did at first) and 7 (only a's later one)?
    let mut at4 = store.receipt_times(room_id!("!rr:test"), 4).await.unwrap();
    at4.sort();
    assert_eq!(
        at4,
        vec![
            (owned_user_id!("@a:t"), "m.read".into(), 100),
            (owned_user_id!("@b:t"), "tern.delivered".into(), 110)
        ]
    );
    assert_eq!(
        store.receipt_times(room_id!("!rr:test"), 7).await.unwrap(),
        vec![(owned_user_id!("@a:t"), "m.read".into(), 130)]
    );

    // Read positions: the later of m.read and m.read.private; delivered
    // receipts do not count as reading.
    store
        .set_receipts(vec![receipt("@a:t", "m.read.private", 11, 140)])
        .await
        .unwrap();
    let both = vec![super::room("!rr:test"), super::room("!other:test")];
    assert_eq!(
        store.read_positions(user_id!("@a:t"), &both).await.unwrap(),
        vec![(super::room("!rr:test"), 11)]
    );
    assert!(store
        .read_positions(user_id!("@b:t"), &both)
        .await
        .unwrap()
        .is_empty());

    // Received: delivered or read, whichever covers more; nothing for a
    // user with neither or a room without any.
    let rr = room_id!("!rr:test");
    assert_eq!(
        store.received_upto(user_id!("@a:t"), rr).await.unwrap(),
        Some(11)
    );
    assert_eq!(
        store.received_upto(user_id!("@b:t"), rr).await.unwrap(),
        Some(5)
    );
    assert_eq!(
        store.received_upto(user_id!("@c:t"), rr).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .received_upto(user_id!("@a:t"), room_id!("!other:test"))
            .await
            .unwrap(),
        None
    );
}
