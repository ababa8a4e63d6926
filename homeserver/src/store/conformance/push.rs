//! The `PushStore` part of the conformance suite: pushers and the outbox.

use std::sync::Arc;

use ruma_common::{device_id, owned_user_id, user_id};
use serde_json::json;

use crate::store::{OutboxPush, PushStore, PusherRecord};

fn pusher(user: &str, pushkey: &str, ts: i64) -> PusherRecord {
    PusherRecord {
        user_id: super::user(user),
        app_id: "org.example.app".into(),
        pushkey: pushkey.into(),
        kind: "http".into(),
        app_display_name: "App".into(),
        device_display_name: "Phone".into(),
        profile_tag: None,
        lang: "en".into(),
        data: serde_json::json!({"url": "https://push.example/_matrix/push/v1/notify"}),
        device_id: Some("DEV".into()),
        created_ts: ts,
    }
}

pub async fn push_store(store: Arc<dyn PushStore>) {
    store
        .set_pusher(pusher("@a:t", "k1", 1), false)
        .await
        .unwrap();
    store
        .set_pusher(pusher("@a:t", "k2", 2), false)
        .await
        .unwrap();
    assert_eq!(
        store.pushers(user_id!("@a:t")).await.unwrap(),
        vec![pusher("@a:t", "k1", 1), pusher("@a:t", "k2", 2)]
    );

    // Setting it again replaces it.
    let mut renamed = pusher("@a:t", "k1", 1);
    renamed.device_display_name = "Tablet".into();
    store.set_pusher(renamed.clone(), false).await.unwrap();
    assert_eq!(store.pushers(user_id!("@a:t")).await.unwrap()[0], renamed);

    // Without append, another user taking the same key takes it from @a.
    store
        .set_pusher(pusher("@b:t", "k1", 3), false)
        .await
        .unwrap();
    let keys: Vec<String> = store
        .pushers(user_id!("@a:t"))
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.pushkey)
        .collect();
    assert_eq!(keys, ["k2"]);
    // With append, both keep it.
    store
        .set_pusher(pusher("@a:t", "k1", 4), true)
        .await
        .unwrap();
    assert_eq!(store.pushers(user_id!("@a:t")).await.unwrap().len(), 2);
    assert_eq!(store.pushers(user_id!("@b:t")).await.unwrap().len(), 1);

    assert!(store
        .delete_pusher(user_id!("@a:t"), "org.example.app", "k2")
        .await
        .unwrap());
    assert!(!store
        .delete_pusher(user_id!("@a:t"), "org.example.app", "k2")
        .await
        .unwrap());
    assert_eq!(store.pushers(user_id!("@a:t")).await.unwrap().len(), 1);
    assert!(store
        .pushers(user_id!("@nobody:t"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.all_pushers().await.unwrap().len(), 2);
    store.delete_pushkey("org.example.app", "k1").await.unwrap();
    assert!(store.all_pushers().await.unwrap().is_empty());

    // Logging out removes the device's pushers (or all but one device's).
    let on = |key: &str, device: &str| {
        let mut p = pusher("@a:t", key, 5);
        p.device_id = Some(device.into());
        p
    };
    for (key, device) in [("p1", "D1"), ("p2", "D2"), ("p3", "D3")] {
        store.set_pusher(on(key, device), false).await.unwrap();
    }
    store
        .delete_device_pushers(user_id!("@a:t"), Some(device_id!("D1")), None)
        .await
        .unwrap();
    let keys = |list: Vec<PusherRecord>| list.into_iter().map(|p| p.pushkey).collect::<Vec<_>>();
    assert_eq!(
        keys(store.pushers(user_id!("@a:t")).await.unwrap()),
        ["p2", "p3"]
    );
    store
        .delete_device_pushers(user_id!("@a:t"), None, Some(device_id!("D3")))
        .await
        .unwrap();
    assert_eq!(keys(store.pushers(user_id!("@a:t")).await.unwrap()), ["p3"]);
    store
        .delete_device_pushers(user_id!("@a:t"), None, None)
        .await
        .unwrap();
    assert!(store.pushers(user_id!("@a:t")).await.unwrap().is_empty());

    // The outbox: queued, due, retried later, finished.
    let push = |n: i64| OutboxPush {
        user_id: owned_user_id!("@a:t"),
        app_id: "org.example.app".into(),
        pushkey: format!("k{n}"),
        url: "https://push.example/_matrix/push/v1/notify".into(),
        body: json!({"notification": {"n": n}}),
        due_ts: 100,
        unless_received: None,
    };
    // As read back once taken: due again when its lease ends.
    let leased = |push: OutboxPush, until: i64| OutboxPush {
        due_ts: until,
        ..push
    };
    assert_eq!(store.next_push_due().await.unwrap(), None);
    assert!(store
        .enqueue_pushes(7, vec![push(1), push(2)], 100)
        .await
        .unwrap());
    // The same event again queues nothing.
    assert!(!store.enqueue_pushes(7, vec![push(8)], 100).await.unwrap());
    assert_eq!(store.next_push_due().await.unwrap(), Some(100));
    assert!(store
        .claim_pushes(99, 1_000, 10, &[])
        .await
        .unwrap()
        .is_empty());
    let due = store.claim_pushes(100, 1_000, 10, &[]).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].push, leased(push(1), 1_000));
    assert_eq!(due[1].push, leased(push(2), 1_000));
    assert_eq!(due[0].attempts, 0);
    // Taken: leased until 1,000, so nobody else takes them before.
    assert!(store
        .claim_pushes(999, 2_000, 10, &[])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_push_due().await.unwrap(), Some(1_000));
    store.retry_push(due[0].id, 1, 500).await.unwrap();
    store.finish_push(due[1].id).await.unwrap();
    assert!(store
        .claim_pushes(499, 1_000, 10, &[])
        .await
        .unwrap()
        .is_empty());
    let again = store.claim_pushes(500, 1_000, 10, &[]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    store.finish_push(again[0].id).await.unwrap();
    assert_eq!(store.next_push_due().await.unwrap(), None);

    // Two senders taking at once never take the same notification.
    assert!(store
        .enqueue_pushes(8, (10..50).map(push).collect(), 100)
        .await
        .unwrap());
    assert!(store.enqueue_pushes(1, vec![push(99)], 100).await.unwrap());
    let (a, b) = tokio::join!(
        store.claim_pushes(100, 1_000, 25, &[]),
        store.claim_pushes(100, 1_000, 25, &[])
    );
    let mut ids: Vec<i64> = a.unwrap().iter().chain(&b.unwrap()).map(|q| q.id).collect();
    assert_eq!(ids.len(), 41);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 41, "a notification was taken twice");
    for id in ids {
        store.finish_push(id).await.unwrap();
    }

    // A destination with all the requests it may have is skipped, and its
    // notifications stay queued for later.
    let slow = push(60);
    let mut fast = push(61);
    fast.url = "https://other.example/_matrix/push/v1/notify".into();
    assert!(store
        .enqueue_pushes(9, vec![slow.clone(), fast.clone()], 100)
        .await
        .unwrap());
    let skipped = store
        .claim_pushes(100, 1_000, 10, std::slice::from_ref(&slow.url))
        .await
        .unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].push, leased(fast, 1_000));
    let rest = store.claim_pushes(100, 1_000, 10, &[]).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].push, leased(slow, 1_000));
    for q in skipped.iter().chain(&rest) {
        store.finish_push(q.id).await.unwrap();
    }

    // A held notification falls due at its own time and keeps what it is
    // held for; the event's others are due at once.
    let held = OutboxPush {
        due_ts: 3_000,
        unless_received: Some((super::room("!held:test"), 12)),
        ..push(70)
    };
    assert!(store
        .enqueue_pushes(10, vec![held.clone(), push(71)], 100)
        .await
        .unwrap());
    assert_eq!(store.next_push_due().await.unwrap(), Some(100));
    let now = store.claim_pushes(2_999, 5_000, 10, &[]).await.unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].push, leased(push(71), 5_000));
    let later = store.claim_pushes(3_000, 5_000, 10, &[]).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].push, leased(held, 5_000));
    for q in now.iter().chain(&later) {
        store.finish_push(q.id).await.unwrap();
    }

    // How far one node decided pushes: nothing saved, then the last saved.
    assert_eq!(store.pushes_decided_through().await.unwrap(), None);
    store.set_pushes_decided_through(41).await.unwrap();
    store.set_pushes_decided_through(57).await.unwrap();
    assert_eq!(store.pushes_decided_through().await.unwrap(), Some(57));
}
