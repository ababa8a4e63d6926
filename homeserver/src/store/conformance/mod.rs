//! The conformance suite every storage engine must pass (the Garage habit):
//! written once against the traits, run by each engine's tests.

use std::sync::Arc;

use serde_json::json;

mod push;
pub use push::push_store;

use super::{
    AccountStore, Direction, Ephemeral, NewEvent, NewReceipt, PresenceRecord, PresenceState,
    ReceiptStore, RoomStore, StoreError, StreamPos, UserRecord,
};

fn user(id: &str) -> UserRecord {
    UserRecord {
        user_id: id.into(),
        password_hash: Some("hash".into()),
        displayname: None,
        avatar_url: None,
        created_ts: 1,
    }
}

pub async fn account_store(store: Arc<dyn AccountStore>) {
    store.create_user(&user("@a:test")).await.unwrap();
    assert!(matches!(
        store.create_user(&user("@a:test")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.get_user("@a:test").await.unwrap().unwrap().user_id,
        "@a:test"
    );
    assert!(store.get_user("@nobody:test").await.unwrap().is_none());

    store
        .set_displayname("@a:test", Some("Alice"))
        .await
        .unwrap();
    store.set_password_hash("@a:test", "new").await.unwrap();
    let got = store.get_user("@a:test").await.unwrap().unwrap();
    assert_eq!(got.displayname.as_deref(), Some("Alice"));
    assert_eq!(got.password_hash.as_deref(), Some("new"));

    // Tokens: create, find, replace on re-login of the same device, delete.
    store
        .create_device_with_token("@a:test", "D1", None, "h1")
        .await
        .unwrap();
    store
        .create_device_with_token("@a:test", "D2", None, "h2")
        .await
        .unwrap();
    assert_eq!(
        store.find_token("h1").await.unwrap().unwrap().device_id,
        "D1"
    );
    store
        .create_device_with_token("@a:test", "D1", None, "h1b")
        .await
        .unwrap();
    assert!(store.find_token("h1").await.unwrap().is_none());
    store.delete_token("h1b").await.unwrap();
    assert!(store.find_token("h1b").await.unwrap().is_none());
    store
        .create_device_with_token("@a:test", "D3", None, "h3")
        .await
        .unwrap();
    let removed = store
        .delete_all_tokens("@a:test", Some("D3"))
        .await
        .unwrap();
    assert_eq!(removed, vec!["h2".to_string()]);
    assert!(store.find_token("h3").await.unwrap().is_some());

    // Filters get per-user ids and round-trip.
    let f0 = store
        .save_filter("@a:test", &json!({"room": {}}))
        .await
        .unwrap();
    let f1 = store
        .save_filter("@a:test", &json!({"presence": {}}))
        .await
        .unwrap();
    assert_ne!(f0, f1);
    assert_eq!(
        store.get_filter("@a:test", f1).await.unwrap(),
        Some(json!({"presence": {}}))
    );
    assert_eq!(store.get_filter("@b:test", f1).await.unwrap(), None);

    // Account data is stream-positioned: positions grow, `since` filters.
    let p1 = store
        .set_account_data("@a:test", None, "m.direct", &json!({"x": 1}))
        .await
        .unwrap();
    let p2 = store
        .set_account_data("@a:test", Some("!r:test"), "m.tag", &json!({"t": 1}))
        .await
        .unwrap();
    assert!(p2 > p1);
    let p3 = store
        .set_account_data("@a:test", None, "m.direct", &json!({"x": 2}))
        .await
        .unwrap();
    assert!(p3 > p2);
    let since = store.account_data_since("@a:test", p2).await.unwrap();
    assert_eq!(since.len(), 1);
    assert_eq!(since[0].content, json!({"x": 2}));
    assert_eq!(
        store.account_data_since("@a:test", 0).await.unwrap().len(),
        2
    );
    assert_eq!(store.account_data_position().await.unwrap(), p3);
    assert_eq!(
        store
            .get_account_data("@a:test", Some("!r:test"), "m.tag")
            .await
            .unwrap(),
        Some(json!({"t": 1}))
    );
}

fn event(room: &str, n: usize, state_key: Option<&str>, txn: Option<&str>) -> NewEvent {
    let kind = if state_key.is_some() {
        "m.room.member"
    } else {
        "m.room.message"
    };
    NewEvent {
        event_id: format!("${room}-{n}"),
        room_id: room.into(),
        sender: "@a:test".into(),
        kind: kind.into(),
        state_key: state_key.map(Into::into),
        pdu: Arc::new(json!({"type": kind, "content": {"membership": "join", "n": n}})),
        txn: txn.map(|t| ("D1".to_string(), t.to_string())),
        visibility: "shared".into(),
        membership: state_key.map(|_| "join".to_string()),
        redaction: None,
        built_on: None,
    }
}

/// A message of `room` (`$room-n`), for engines' own tests.
pub fn sample_message(room: &str, n: usize) -> NewEvent {
    event(room, n, None, None)
}

/// Appends a join and `count - 1` messages to `room`.
pub async fn append_sample(store: &dyn RoomStore, room: &str, count: usize) {
    store.create_room(room, "11", "@a:test").await.unwrap();
    let mut events = vec![event(room, 0, Some("@a:test"), None)];
    events.extend((1..count).map(|n| event(room, n, None, Some(&format!("t{n}")))));
    store.append(events).unwrap().await.unwrap();
}

/// Checks what [`append_sample`] wrote.
pub async fn check_sample(store: &dyn RoomStore, room: &str, count: usize) {
    let all = store
        .room_events(room, 0, Direction::Forward, 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), count);
    assert!(all.windows(2).all(|w| w[0].stream < w[1].stream));
    assert_eq!(
        store.events_position().await.unwrap(),
        all.last().unwrap().stream
    );
    assert_eq!(store.members(room).await.unwrap().len(), 1);
}

pub async fn room_store(store: Arc<dyn RoomStore>) {
    let store = store.as_ref();
    append_sample(store, "!r1:test", 5).await;
    check_sample(store, "!r1:test", 5).await;
    assert!(store.room_exists("!r1:test").await.unwrap());
    assert!(!store.room_exists("!nope:test").await.unwrap());

    // Concurrent appends all commit, in a gap-free order.
    let mut handles = Vec::new();
    for n in 0..50 {
        let ev = event("!r1:test", 100 + n, None, None);
        handles.push(async move { store.append(vec![ev]).unwrap().await.unwrap()[0] });
    }
    let mut positions = futures::future::join_all(handles).await;
    positions.sort();
    assert!(positions.windows(2).all(|w| w[1] == w[0] + 1));

    // A duplicate transaction id fails alone, the rest of the batch commits.
    let dup = store
        .append(vec![event("!r1:test", 999, None, Some("t1"))])
        .unwrap()
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict)));
    assert_eq!(
        store
            .find_txn("!r1:test", "@a:test", "D1", "t1")
            .await
            .unwrap()
            .as_deref(),
        Some("$!r1:test-1")
    );

    let found = store
        .find_txns(
            "!r1:test",
            &[
                ("@a:test".into(), "D1".into(), "t1".into()),
                ("@a:test".into(), "D1".into(), "nope".into()),
                ("@a:test".into(), "D2".into(), "t2".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![(
            ("@a:test".into(), "D1".into(), "t1".into()),
            "$!r1:test-1".into()
        )]
    );

    // Paging both ways.
    let head = store.events_position().await.unwrap();
    let back = store
        .room_events("!r1:test", head, Direction::Backward, 3)
        .await
        .unwrap();
    assert_eq!(back.len(), 3);
    assert!(back[0].stream > back[1].stream);
    let fwd = store
        .room_events("!r1:test", 0, Direction::Forward, 2)
        .await
        .unwrap();
    assert_eq!(fwd[0].event_id, "$!r1:test-0");

    // Multi-room recent events with a per-room limit and `limited`.
    append_sample(store, "!r2:test", 2).await;
    let rooms = vec![
        "!r1:test".to_string(),
        "!r2:test".to_string(),
        "!r3:test".to_string(),
    ];
    let head = store.events_position().await.unwrap();
    let slices = store.recent_events(&rooms, 0, head, 3).await.unwrap();
    assert_eq!(slices[0].1.events.len(), 3);
    assert!(slices[0].1.limited);
    assert_eq!(slices[1].1.events.len(), 2);
    assert!(!slices[1].1.limited);
    assert!(slices[2].1.events.is_empty());
    assert_eq!(slices[0].1.events.last().unwrap().stream, positions[49]);

    // State and membership views follow appends.
    let state = store.current_state_of_rooms(&rooms, 0, head).await.unwrap();
    assert_eq!(state.len(), 2);
    let mine = store.memberships_of_user("@a:test").await.unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!(
        store
            .membership_history("!r1:test", "@a:test")
            .await
            .unwrap(),
        vec![(1, "join".to_string())]
    );

    // Redaction replaces the stored PDU.
    let mut redaction = event("!r2:test", 50, None, None);
    redaction.redaction = Some((
        "$!r2:test-1".into(),
        json!({"type": "m.room.message", "content": {}}),
    ));
    store.append(vec![redaction]).unwrap().await.unwrap();
    let redacted = store.get_event("$!r2:test-1").await.unwrap().unwrap();
    assert_eq!(redacted.pdu["content"], json!({}));

    // Aliases and the public directory.
    store
        .set_alias("#a:test", "!r1:test", "@a:test")
        .await
        .unwrap();
    assert!(matches!(
        store.set_alias("#a:test", "!r2:test", "@a:test").await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.get_alias("#a:test").await.unwrap().unwrap().0,
        "!r1:test"
    );
    assert_eq!(
        store.aliases_of_room("!r1:test").await.unwrap(),
        vec!["#a:test".to_string()]
    );
    assert!(store.delete_alias("#a:test").await.unwrap());
    assert!(!store.delete_alias("#a:test").await.unwrap());
    store.set_room_public("!r2:test", true).await.unwrap();
    assert_eq!(
        store.public_rooms().await.unwrap(),
        vec!["!r2:test".to_string()]
    );

    // Every room's events after a position, in order and bounded: what a
    // cluster node reads to fill a gap.
    let p10 = store.events_position().await.unwrap();
    for n in 0..10 {
        let ev = event("!r1:test", 500 + n, None, None);
        store.append(vec![ev]).unwrap().await.unwrap();
    }
    append_sample(store, "!gap:test", 3).await;
    let head = store.events_position().await.unwrap();
    let after = store.events_after(p10, 1000).await.unwrap();
    let streams: Vec<StreamPos> = after.iter().map(|e| e.stream).collect();
    assert_eq!(streams, ((p10 + 1)..=head).collect::<Vec<_>>());
    assert!(after.iter().any(|e| e.room_id == "!gap:test"));
    assert_eq!(store.events_after(p10, 5).await.unwrap().len(), 5);
    assert!(store.events_after(head, 10).await.unwrap().is_empty());

    // Appends check the state they were authorized against: the room's
    // state head is its latest state event ("$!gap:test-0", the join).
    let built_on = |n: usize, state: Option<&str>, on: &str| NewEvent {
        built_on: Some(on.to_owned()),
        ..event("!gap:test", n, state, None)
    };
    let ok = store.append(vec![built_on(700, None, "$!gap:test-0")]);
    ok.unwrap().await.unwrap();
    let stale = store.append(vec![built_on(701, None, "$!gap:test-elsewhere")]);
    assert!(matches!(stale.unwrap().await, Err(StoreError::Stale)));
    // A state event moves the head; what was built on the old one is stale,
    // and in one append a later event may build on an earlier one.
    let moved = store.append(vec![
        built_on(702, Some("@b:test"), "$!gap:test-0"),
        built_on(703, None, "$!gap:test-702"),
    ]);
    moved.unwrap().await.unwrap();
    let old = store.append(vec![built_on(704, None, "$!gap:test-0")]);
    assert!(matches!(old.unwrap().await, Err(StoreError::Stale)));
    assert!(store.get_event("$!gap:test-701").await.unwrap().is_none());
    assert!(store.get_event("$!gap:test-704").await.unwrap().is_none());
}

pub async fn ephemeral(store: Arc<dyn Ephemeral>) {
    connections(store.as_ref()).await;
    rate_limits(store.as_ref()).await;
    let rooms = vec!["!r:test".to_string(), "!quiet:test".to_string()];
    let start = store.typing_position().await.unwrap();
    let p1 = store
        .set_typing("!r:test", "@a:test", Some(1_000))
        .await
        .unwrap()
        .unwrap();
    let p2 = store
        .set_typing("!r:test", "@b:test", Some(5_000))
        .await
        .unwrap()
        .unwrap();
    assert!(p1 > start && p2 > p1);
    // Renewing does not change who types, so it is no news.
    assert_eq!(
        store
            .set_typing("!r:test", "@a:test", Some(2_000))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.typing_position().await.unwrap(), p2);
    assert_eq!(
        store.typing_since(&rooms, start).await.unwrap(),
        vec![(
            "!r:test".to_string(),
            vec!["@a:test".to_string(), "@b:test".to_string()]
        )]
    );
    assert!(store.typing_since(&rooms, p2).await.unwrap().is_empty());
    assert_eq!(store.next_typing_expiry().await.unwrap(), Some(2_000));

    // Expiry drops @a and moves the stream; a stop is reported as news too.
    let expired = store.expire_typing(3_000).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert!(expired[0].1 > p2);
    let p3 = store
        .set_typing("!r:test", "@b:test", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.typing_since(&rooms, expired[0].1).await.unwrap(),
        vec![("!r:test".to_string(), vec![])]
    );
    assert_eq!(
        store.set_typing("!r:test", "@b:test", None).await.unwrap(),
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
    let users = vec!["@c1:test".to_string(), "@c2:test".to_string()];
    assert_eq!(store.connected_node("@c1:test").await.unwrap(), None);
    store.set_connected(&users, "node-a", 60_000).await.unwrap();
    assert_eq!(
        store.connected_node("@c2:test").await.unwrap().as_deref(),
        Some("node-a")
    );
    // A user who moves is where they connected last.
    store
        .set_connected(&users[..1], "node-b", 60_000)
        .await
        .unwrap();
    assert_eq!(
        store.connected_node("@c1:test").await.unwrap().as_deref(),
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
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert_eq!(store.connected_node("@c1:test").await.unwrap(), None);
    assert_eq!(store.connected_node("@c2:test").await.unwrap(), None);
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
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert_eq!(
        store.take_lapsed_connections(now(), 10).await.unwrap(),
        vec!["@c2:test".to_string()]
    );
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
        .set_presence("@a:test", record(PresenceState::Online, 7), true)
        .await
        .unwrap()
        .unwrap();
    assert!(p1 > start);
    assert_eq!(
        store.get_presence("@a:test").await.unwrap(),
        Some(record(PresenceState::Online, 7))
    );
    assert_eq!(store.get_presence("@b:test").await.unwrap(), None);

    // A silent update changes the record but not the stream.
    let silent = store
        .set_presence("@a:test", record(PresenceState::Online, 9), false)
        .await
        .unwrap();
    assert_eq!(silent, None);
    assert_eq!(store.presence_position().await.unwrap(), p1);
    assert_eq!(
        store
            .get_presence("@a:test")
            .await
            .unwrap()
            .unwrap()
            .last_active_ts,
        9
    );

    let p2 = store
        .set_presence("@b:test", record(PresenceState::Unavailable, 8), true)
        .await
        .unwrap()
        .unwrap();
    let p3 = store
        .set_presence("@a:test", record(PresenceState::Offline, 9), true)
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
            ("@b:test".to_string(), PresenceState::Unavailable),
            ("@a:test".to_string(), PresenceState::Offline)
        ]
    );
    assert_eq!(
        since(p2).await,
        vec![("@a:test".to_string(), PresenceState::Offline)]
    );
    assert!(since(p3).await.is_empty());
    assert_eq!(store.presence_since(start, 1).await.unwrap().len(), 1);

    let mut found = store
        .presences(&["@a:test".into(), "@b:test".into(), "@c:test".into()])
        .await
        .unwrap();
    found.sort_by(|x, y| x.0.cmp(&y.0));
    let users: Vec<&str> = found.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(users, ["@a:test", "@b:test"]);
}

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
