//! The `FederationStore` part of the conformance suite.

use std::sync::Arc;

use ruma_common::{owned_server_name, room_id, server_name};

use crate::store::{FederationStore, RoomDestination, RoomStore};

pub async fn federation_store(store: Arc<dyn FederationStore>, rooms: Arc<dyn RoomStore>) {
    // A room of ours (test) with two users of other.example and one of
    // far.example joined, and one of gone.example who left.
    let ours = server_name!("test");
    super::append_sample(rooms.as_ref(), "!f:test", 2).await;
    let join = |n: usize, user: &str, membership: &str| {
        let mut event = super::sample_message("!f:test", 10 + n);
        event.kind = "m.room.member".into();
        event.state_key = Some(user.into());
        event.membership = Some(membership.into());
        event
    };
    let events = vec![
        join(0, "@b:other.example", "join"),
        join(1, "@c:other.example", "join"),
        join(2, "@d:far.example", "join"),
        join(3, "@e:gone.example", "join"),
        join(4, "@e:gone.example", "leave"),
    ];
    let at = rooms.append(events).unwrap().await.unwrap();

    let mut found = store.destinations(ours).await.unwrap();
    found.sort_by(|a, b| a.server.cmp(&b.server));
    let expected = |server: &str, joined_at, sent_upto| RoomDestination {
        room_id: room_id!("!f:test").to_owned(),
        server: server.try_into().unwrap(),
        joined_at,
        sent_upto,
    };
    assert_eq!(
        found,
        vec![
            expected("far.example", at[2], None),
            expected("other.example", at[0], None),
        ]
    );

    // Progress only moves forward.
    let other = owned_server_name!("other.example");
    let room = room_id!("!f:test");
    store.set_sent(&other, &[(room, at[3])]).await.unwrap();
    store.set_sent(&other, &[(room, at[1])]).await.unwrap();
    let found = store.destinations(ours).await.unwrap();
    let other_row = found.iter().find(|d| d.server == other).unwrap();
    assert_eq!(other_row.sent_upto, Some(at[3]));
    store.set_sent(&other, &[(room, at[4])]).await.unwrap();
    let found = store.destinations(ours).await.unwrap();
    let other_row = found.iter().find(|d| d.server == other).unwrap();
    assert_eq!(other_row.sent_upto, Some(at[4]));

    // Where @a:test's presence goes: the servers of its rooms' other
    // joined members (not one that left, not our own).
    let mut sharing = store
        .servers_sharing_with(ruma_common::user_id!("@a:test"), ours)
        .await
        .unwrap();
    sharing.sort();
    assert_eq!(
        sharing,
        vec![
            owned_server_name!("far.example"),
            owned_server_name!("other.example")
        ]
    );
    assert!(store
        .servers_sharing_with(ruma_common::user_id!("@nobody:test"), ours)
        .await
        .unwrap()
        .is_empty());
}
