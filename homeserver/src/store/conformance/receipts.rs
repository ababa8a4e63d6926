//! The `ReceiptStore` part of the conformance suite.

use std::sync::Arc;

use crate::store::{NewReceipt, ReceiptStore, RoomStore, StreamPos};

fn receipt(user: &str, kind: &str, event_stream: StreamPos, ts: i64) -> NewReceipt {
    NewReceipt {
        room_id: "!rr:test".into(),
        user_id: user.into(),
        receipt_type: kind.into(),
        thread_id: None,
        event_id: format!("$e{event_stream}"),
        event_sender: "@s:t".into(),
        event_stream,
        ts,
    }
}

pub async fn receipt_store(store: Arc<dyn ReceiptStore>, _rooms: Arc<dyn RoomStore>) {
    let rooms = vec!["!rr:test".to_string()];
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
        .receipts_since(&["!other:test".to_string()], start)
        .await
        .unwrap()
        .is_empty());

    // When did each receipt first cover event 4 (both did at first) and 7 (only a's later one)?
    let mut at4 = store.receipt_times("!rr:test", 4).await.unwrap();
    at4.sort();
    assert_eq!(
        at4,
        vec![
            ("@a:t".into(), "m.read".into(), 100),
            ("@b:t".into(), "tern.delivered".into(), 110)
        ]
    );
    assert_eq!(
        store.receipt_times("!rr:test", 7).await.unwrap(),
        vec![("@a:t".into(), "m.read".into(), 130)]
    );

    // Read positions: the later of m.read and m.read.private; delivered
    // receipts do not count as reading.
    store
        .set_receipts(vec![receipt("@a:t", "m.read.private", 11, 140)])
        .await
        .unwrap();
    let both = vec!["!rr:test".to_string(), "!other:test".to_string()];
    assert_eq!(
        store.read_positions("@a:t", &both).await.unwrap(),
        vec![("!rr:test".to_string(), 11)]
    );
    assert!(store
        .read_positions("@b:t", &both)
        .await
        .unwrap()
        .is_empty());
}
