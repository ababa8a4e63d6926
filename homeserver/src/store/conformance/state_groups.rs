//! State groups: the state after each event, stored as differences with a
//! snapshot now and then, read back whole; and current state a resolution
//! moves back to an older event.

use std::sync::Arc;

use ruma_common::{owned_user_id, room_id, user_id};
use ruma_events::room::member::MembershipState;
use serde_json::json;

use super::{event, room};
use crate::store::{
    EventState, NewEvent, NewStateGroup, Refused, RoomStore, StateKeyed, StateReset,
};

fn keyed(kind: &str, key: &str, id: &str) -> StateKeyed {
    StateKeyed {
        kind: kind.into(),
        state_key: key.into(),
        event_id: event(id),
    }
}

fn new_event(id: &str, kind: &str, key: Option<&str>, on: Option<&str>) -> NewEvent {
    NewEvent {
        event_id: event(id),
        room_id: room("!sg:test"),
        sender: owned_user_id!("@sg:test"),
        kind: kind.into(),
        state_key: key.map(Into::into),
        pdu: Arc::new(json!({"type": kind, "content": {"membership": "join"}})),
        txn: None,
        visibility: "shared".into(),
        membership: (kind == "m.room.member").then_some(MembershipState::Join),
        redaction: None,
        built_on: on.map(event),
        state: EventState::default(),
    }
    .on_one_chain()
}

pub async fn state_groups(store: &dyn RoomStore) {
    store
        .create_room(room_id!("!sg:test"), "11", user_id!("@sg:test"))
        .await
        .unwrap();
    // create (a snapshot), a join, a message, a name: each state event's
    // group is its parent's plus itself.
    let events = vec![
        new_event("$c", "m.room.create", Some(""), None),
        new_event("$j", "m.room.member", Some("@sg:test"), Some("$c")),
        new_event("$m", "m.room.message", None, Some("$j")),
        new_event("$n1", "m.room.name", Some(""), Some("$j")),
    ];
    store.append(events).unwrap().await.unwrap();
    let mut groups = store
        .state_groups_of(&[event("$c"), event("$m"), event("$n1"), event("$none")])
        .await
        .unwrap();
    groups.sort();
    assert_eq!(
        groups,
        vec![
            (event("$c"), event("$c")),
            (event("$m"), event("$j")),
            (event("$n1"), event("$n1"))
        ]
    );
    let n1 = store.state_group(&event("$n1")).await.unwrap().unwrap();
    assert_eq!(n1.parent, Some(event("$j")));
    let mut entries = n1.entries;
    entries.sort_by(|a, b| a.kind.cmp(&b.kind));
    assert_eq!(
        entries,
        vec![
            keyed("m.room.create", "", "$c"),
            keyed("m.room.member", "@sg:test", "$j"),
            keyed("m.room.name", "", "$n1"),
        ]
    );
    assert!(store.state_group(&event("$nope")).await.unwrap().is_none());
    // $n1 -> $j -> $c, the snapshot.
    assert_eq!(
        store.state_group_deltas(&event("$n1")).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        store.state_group_deltas(&event("$c")).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        store.state_group_deltas(&event("$nope")).await.unwrap(),
        None
    );

    // A second name on a fork, and a snapshot on top of it: the nearest
    // entry of a key wins, and a snapshot ends the walk.
    let topic = new_event("$t", "m.room.topic", Some(""), Some("$n1"));
    store.append(vec![topic]).unwrap().await.unwrap();
    let mut n2 = new_event("$n2", "m.room.name", Some(""), Some("$t"));
    n2.state.new_groups.push(NewStateGroup {
        id: event("$snap"),
        room_id: room("!sg:test"),
        parent: Some(event("$n2")),
        snapshot: true,
        entries: vec![
            keyed("m.room.create", "", "$c"),
            keyed("m.room.name", "", "$n1"),
        ],
    });
    // The resolution chose the first name: current state goes back to it,
    // and a reset membership takes its membership from the reset.
    n2.state.head = Some(event("$snap"));
    n2.state.resets = vec![
        StateReset {
            entry: keyed("m.room.name", "", "$n1"),
            membership: None,
            dropped: false,
        },
        StateReset {
            entry: keyed("m.room.member", "@sg:test", "$j"),
            membership: Some(MembershipState::Leave),
            dropped: false,
        },
        // And it left the topic out: the row goes.
        StateReset {
            entry: keyed("m.room.topic", "", "$t"),
            membership: None,
            dropped: true,
        },
    ];
    store.append(vec![n2]).unwrap().await.unwrap();
    let snap = store.state_group(&event("$snap")).await.unwrap().unwrap();
    assert_eq!(
        snap.entries.len(),
        2,
        "a snapshot holds all, alone: {snap:?}"
    );
    let n2_group = store.state_group(&event("$n2")).await.unwrap().unwrap();
    assert!(n2_group.entries.contains(&keyed("m.room.name", "", "$n2")));
    assert!(!n2_group.entries.contains(&keyed("m.room.name", "", "$n1")));
    let current = store.current_state(room_id!("!sg:test")).await.unwrap();
    let name = current.iter().find(|e| e.kind == "m.room.name").unwrap();
    assert_eq!(name.event_id, event("$n1"));
    assert!(
        !current.iter().any(|e| e.kind == "m.room.topic"),
        "{current:?}"
    );
    let members = store.members(room_id!("!sg:test")).await.unwrap();
    assert_eq!(members[0].membership, MembershipState::Leave);
    assert_eq!(
        store.state_head(room_id!("!sg:test")).await.unwrap(),
        Some(event("$snap"))
    );
    // Storing the same group again (another import resolved the same
    // states) keeps the first.
    let mut again = new_event("$m2", "m.room.message", None, Some("$snap"));
    again.state.new_groups.push(NewStateGroup {
        id: event("$snap"),
        room_id: room("!sg:test"),
        parent: None,
        snapshot: true,
        entries: vec![keyed("m.room.create", "", "$c")],
    });
    store.append(vec![again]).unwrap().await.unwrap();
    let snap = store.state_group(&event("$snap")).await.unwrap().unwrap();
    assert_eq!(snap.entries.len(), 2);

    // Outliers: kept for authorization, or refused with why; the first
    // answer stands.
    let room_id = room_id!("!sg:test");
    let pdu = Arc::new(json!({"type": "m.room.member"}));
    store
        .add_outliers(room_id, &[(event("$o1"), pdu.clone())])
        .await
        .unwrap();
    let refused = |id: &str, soft_failed: bool| Refused {
        event_id: event(id),
        pdu: pdu.clone(),
        soft_failed,
        reason: format!("{id} refused"),
    };
    store
        .add_refused(room_id, &[refused("$o2", true), refused("$o3", false)])
        .await
        .unwrap();
    store
        .add_refused(room_id, &[refused("$o1", false), refused("$o2", false)])
        .await
        .unwrap();
    let mut found = store
        .outliers(&[event("$o1"), event("$o2"), event("$o3"), event("$c")])
        .await
        .unwrap();
    found.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    let answers: Vec<_> = found
        .iter()
        .map(|o| (o.event_id.as_str(), o.refused.clone()))
        .collect();
    assert_eq!(
        answers,
        vec![
            ("$o1", None),
            ("$o2", Some((true, "$o2 refused".to_owned()))),
            ("$o3", Some((false, "$o3 refused".to_owned()))),
        ]
    );
    assert_eq!(found[0].room_id, room_id);
    assert_eq!(*found[0].pdu, *pdu);
}
