//! The `RoomStore` part of the conformance suite: appends, timelines,
//! state and memberships; and the sample rooms engines' own tests use.

use std::sync::Arc;

use ruma_common::{
    device_id, event_id, owned_event_id, owned_user_id, room_alias_id, room_id, user_id,
};
use ruma_events::room::member::MembershipState;
use serde_json::json;

use crate::store::{Direction, EventState, NewEvent, RoomStore, StoreError, StreamPos};

fn event(room: &str, n: usize, state_key: Option<&str>, txn: Option<&str>) -> NewEvent {
    let kind = if state_key.is_some() {
        "m.room.member"
    } else {
        "m.room.message"
    };
    NewEvent {
        event_id: super::event(&format!("${room}-{n}")),
        room_id: super::room(room),
        sender: owned_user_id!("@a:test"),
        kind: kind.into(),
        state_key: state_key.map(Into::into),
        pdu: Arc::new(json!({"type": kind, "content": {"membership": "join", "n": n}})),
        txn: txn.map(|t| ("D1".into(), t.to_string())),
        visibility: "shared".into(),
        membership: state_key.map(|_| MembershipState::Join),
        redaction: None,
        built_on: None,
        state: EventState::default(),
    }
    .on_one_chain()
}

/// A message of `room` (`$room-n`), for engines' own tests.
pub fn sample_message(room: &str, n: usize) -> NewEvent {
    event(room, n, None, None)
}

/// Appends a join and `count - 1` messages to `room`.
pub async fn append_sample(store: &dyn RoomStore, room: &str, count: usize) {
    store
        .create_room(&super::room(room), "11", user_id!("@a:test"))
        .await
        .unwrap();
    let mut events = vec![event(room, 0, Some("@a:test"), None)];
    events.extend((1..count).map(|n| event(room, n, None, Some(&format!("t{n}")))));
    store.append(events).unwrap().await.unwrap();
}

/// Checks what [`append_sample`] wrote.
pub async fn check_sample(store: &dyn RoomStore, room: &str, count: usize) {
    let all = store
        .room_events(&super::room(room), 0, Direction::Forward, 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), count);
    assert!(all.windows(2).all(|w| w[0].stream < w[1].stream));
    assert_eq!(
        store.events_position().await.unwrap(),
        all.last().unwrap().stream
    );
    assert_eq!(store.members(&super::room(room)).await.unwrap().len(), 1);
}

pub async fn room_store(store: Arc<dyn RoomStore>) {
    let store = store.as_ref();
    append_sample(store, "!r1:test", 5).await;
    check_sample(store, "!r1:test", 5).await;
    assert!(store.room_exists(room_id!("!r1:test")).await.unwrap());
    assert!(!store.room_exists(room_id!("!nope:test")).await.unwrap());

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
            .find_txn(
                room_id!("!r1:test"),
                user_id!("@a:test"),
                device_id!("D1"),
                "t1"
            )
            .await
            .unwrap()
            .as_deref(),
        Some(event_id!("$!r1:test-1"))
    );

    let found = store
        .find_txns(
            room_id!("!r1:test"),
            &[
                (owned_user_id!("@a:test"), "D1".into(), "t1".into()),
                (owned_user_id!("@a:test"), "D1".into(), "nope".into()),
                (owned_user_id!("@a:test"), "D2".into(), "t2".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![(
            (owned_user_id!("@a:test"), "D1".into(), "t1".into()),
            owned_event_id!("$!r1:test-1")
        )]
    );

    // Paging both ways.
    let head = store.events_position().await.unwrap();
    let back = store
        .room_events(room_id!("!r1:test"), head, Direction::Backward, 3)
        .await
        .unwrap();
    assert_eq!(back.len(), 3);
    assert!(back[0].stream > back[1].stream);
    let fwd = store
        .room_events(room_id!("!r1:test"), 0, Direction::Forward, 2)
        .await
        .unwrap();
    assert_eq!(fwd[0].event_id, "$!r1:test-0");

    // Multi-room recent events with a per-room limit and `limited`.
    append_sample(store, "!r2:test", 2).await;
    let rooms = ["!r1:test", "!r2:test", "!r3:test"].map(super::room);
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
    let mine = store
        .memberships_of_user(user_id!("@a:test"))
        .await
        .unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!(
        store
            .membership_history(room_id!("!r1:test"), user_id!("@a:test"))
            .await
            .unwrap(),
        vec![(1, MembershipState::Join)]
    );

    // Redaction replaces the stored PDU.
    let mut redaction = event("!r2:test", 50, None, None);
    redaction.redaction = Some((
        owned_event_id!("$!r2:test-1"),
        json!({"type": "m.room.message", "content": {}}),
    ));
    store.append(vec![redaction]).unwrap().await.unwrap();
    let redacted = store
        .get_event(event_id!("$!r2:test-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(redacted.pdu["content"], json!({}));
    let mut several = store
        .get_events(&[
            owned_event_id!("$!r2:test-1"),
            owned_event_id!("$!nowhere:test"),
            owned_event_id!("$!r1:test-1"),
        ])
        .await
        .unwrap();
    several.sort_by_key(|e| e.stream);
    let ids: Vec<&str> = several.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        ["$!r1:test-1", "$!r2:test-1"],
        "the stored ones, unknown ids left out"
    );
    assert_eq!(several[1].pdu["content"], json!({}), "as stored: redacted");

    // Aliases and the public directory.
    store
        .set_alias(
            room_alias_id!("#a:test"),
            room_id!("!r1:test"),
            user_id!("@a:test"),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_alias(
                room_alias_id!("#a:test"),
                room_id!("!r2:test"),
                user_id!("@a:test")
            )
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store
            .get_alias(room_alias_id!("#a:test"))
            .await
            .unwrap()
            .unwrap()
            .0,
        "!r1:test"
    );
    assert_eq!(
        store.aliases_of_room(room_id!("!r1:test")).await.unwrap(),
        vec!["#a:test".to_string()]
    );
    assert!(store.delete_alias(room_alias_id!("#a:test")).await.unwrap());
    assert!(!store.delete_alias(room_alias_id!("#a:test")).await.unwrap());
    store
        .set_room_public(room_id!("!r2:test"), true)
        .await
        .unwrap();
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
    let built_on = |n: usize, state: Option<&str>, on: &str| {
        NewEvent {
            built_on: Some(super::event(on)),
            ..event("!gap:test", n, state, None)
        }
        .on_one_chain()
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
    assert!(store
        .get_event(event_id!("$!gap:test-701"))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_event(event_id!("$!gap:test-704"))
        .await
        .unwrap()
        .is_none());

    super::state_groups::state_groups(store).await;
}
