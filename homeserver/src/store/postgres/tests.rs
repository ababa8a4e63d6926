//! The conformance suite on PostgreSQL, each test in a database of its own,
//! plus what only a shared database can get wrong: two engine instances
//! (two nodes) appending at once. Needs `TERN_TEST_POSTGRES_URL` (a role that
//! may create databases; `scripts/test.sh` sets it); without it they fail.

use std::collections::BTreeSet;
use std::sync::Arc;

use ruma_common::{event_id, owned_user_id, room_id, user_id};
use ruma_common::{OwnedRoomId, RoomId};
use serde_json::json;

use super::test_db::TestDb;
use super::PgStore;
use crate::store::{
    conformance, AccountStore, Database, NewEvent, NewReceipt, ReceiptStore, RoomStore, StreamPos,
};

/// Runs `test` on a fresh store in a fresh database, then drops both.
macro_rules! on_fresh_store {
    (|$store:ident| $body:expr) => {{
        let db = TestDb::create().await;
        let $store = db.open().await;
        $body;
        $store.close().await;
        db.drop().await;
    }};
}

#[tokio::test]
async fn accounts_conformance() {
    on_fresh_store!(|store| conformance::account_store(store.clone()).await);
}

#[tokio::test]
async fn rooms_conformance() {
    on_fresh_store!(|store| conformance::room_store(store.clone()).await);
}

#[tokio::test]
async fn receipts_conformance() {
    on_fresh_store!(|store| conformance::receipt_store(store.clone(), store.clone()).await);
}

#[tokio::test]
async fn federation_conformance() {
    on_fresh_store!(|store| conformance::federation_store(store.clone(), store.clone()).await);
}

#[tokio::test]
async fn e2ee_conformance() {
    on_fresh_store!(
        |store| conformance::e2ee_store(store.clone(), store.clone(), store.clone()).await
    );
}

#[tokio::test]
async fn push_conformance() {
    on_fresh_store!(|store| conformance::push_store(store.clone()).await);
}

#[tokio::test]
async fn media_metadata_conformance() {
    on_fresh_store!(
        |store| crate::store::media::conformance::media_metadata_store(store.clone()).await
    );
}

#[tokio::test]
async fn appends_survive_reopen() {
    let db = TestDb::create().await;
    let store = db.open().await;
    conformance::append_sample(store.as_ref(), "!r:test", 5).await;
    store.close().await;
    let store = db.open().await;
    conformance::check_sample(store.as_ref(), "!r:test", 5).await;
    store.close().await;
    db.drop().await;
}

fn message(room: &RoomId, id: String) -> NewEvent {
    NewEvent {
        event_id: conformance::event(&id),
        room_id: room.to_owned(),
        sender: owned_user_id!("@a:test"),
        kind: "m.room.message".into(),
        state_key: None,
        pdu: Arc::new(json!({"type": "m.room.message", "content": {}})),
        txn: None,
        visibility: "shared".into(),
        membership: None,
        redaction: None,
        built_on: None,
        state: crate::store::EventState::default(),
    }
}

/// Every event visible in one statement (one snapshot), by stream position.
async fn visible_positions(store: &PgStore, rooms: &[OwnedRoomId]) -> Vec<StreamPos> {
    let slices = store
        .recent_events(rooms, 0, i64::MAX, 100_000)
        .await
        .unwrap();
    let mut positions: Vec<StreamPos> = slices
        .iter()
        .flat_map(|(_, s)| s.events.iter().map(|e| e.stream))
        .collect();
    positions.sort_unstable();
    positions
}

/// Two engine instances on one database, as two nodes: appends, receipts and
/// account data from both at once get unique, gap-free positions, and a
/// reader on either never sees a position without every one below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_gap_free_streams() {
    let db = TestDb::create().await;
    let nodes = [db.open().await, db.open().await];
    let rooms: Vec<OwnedRoomId> = (0..4)
        .map(|i| conformance::room(&format!("!r{i}:test")))
        .collect();
    for room in &rooms {
        nodes[0]
            .create_room(room, "11", user_id!("@a:test"))
            .await
            .unwrap();
    }

    const TASKS: usize = 4;
    const APPENDS: usize = 60;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::new();
    for node in &nodes {
        let (node, rooms, stop) = (node.clone(), rooms.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut checks = 0;
            while !stop.is_cancelled() {
                let head = node.events_position().await.unwrap();
                let seen = visible_positions(&node, &rooms).await;
                let expected: Vec<StreamPos> = (1..=seen.len() as StreamPos).collect();
                assert_eq!(seen, expected, "a reader must see a prefix of the stream");
                assert!(seen.len() as StreamPos >= head, "head {head} not visible");
                checks += 1;
            }
            checks
        }));
    }

    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for task in 0..TASKS {
            let (node, rooms) = (node.clone(), rooms.clone());
            writers.push(tokio::spawn(async move {
                let mut events = Vec::new();
                let mut receipts = Vec::new();
                let mut account_data = Vec::new();
                for i in 0..APPENDS {
                    let room = &rooms[(task + i) % rooms.len()];
                    let id = format!("$n{n}-t{task}-{i}");
                    // Two appends queued before either is awaited: queue
                    // order must be commit order.
                    let first = node.append(vec![message(room, id.clone())]).unwrap();
                    let second = node.append(vec![message(room, format!("{id}-b"))]).unwrap();
                    let (a, b) = (first.await.unwrap()[0], second.await.unwrap()[0]);
                    assert!(a < b, "queue order is commit order: {a} then {b}");
                    events.extend([a, b]);
                    let receipt = NewReceipt {
                        room_id: room.clone(),
                        user_id: conformance::user(&format!("@u{n}-{task}:test")),
                        receipt_type: "m.read".into(),
                        thread_id: None,
                        event_id: conformance::event(&id),
                        event_sender: owned_user_id!("@a:test"),
                        event_stream: b,
                        ts: 1,
                    };
                    let set = node.set_receipts(vec![receipt]).await.unwrap();
                    receipts.push(set[0].expect("a later event moves the receipt"));
                    let pos = node
                        .set_account_data(
                            &ruma_common::UserId::parse(format!("@u{n}-{task}:test")).unwrap(),
                            None,
                            "x",
                            &json!({"i": i}),
                        )
                        .await
                        .unwrap();
                    account_data.push(pos);
                }
                (events, receipts, account_data)
            }));
        }
    }
    let mut events = Vec::new();
    let mut receipts = Vec::new();
    let mut account_data = Vec::new();
    for writer in writers {
        let (e, r, a) = writer.await.unwrap();
        events.extend(e);
        receipts.extend(r);
        account_data.extend(a);
    }
    stop.cancel();
    for reader in readers {
        assert!(reader.await.unwrap() > 0, "a reader never ran");
    }

    let gap_free = |mut positions: Vec<StreamPos>, what: &str| {
        positions.sort_unstable();
        let expected: Vec<StreamPos> = (1..=positions.len() as StreamPos).collect();
        assert_eq!(positions, expected, "{what} positions unique and gap-free");
    };
    let total = nodes.len() * TASKS * APPENDS;
    assert_eq!(events.len(), total * 2);
    gap_free(events, "event");
    gap_free(receipts, "receipt");
    gap_free(account_data, "account data");
    for node in &nodes {
        assert_eq!(
            node.events_position().await.unwrap(),
            (total * 2) as StreamPos
        );
        assert_eq!(node.receipts_position().await.unwrap(), total as StreamPos);
        let seen: BTreeSet<StreamPos> = visible_positions(node, &rooms).await.into_iter().collect();
        assert_eq!(seen.len(), total * 2);
    }
    for node in nodes {
        node.close().await;
    }
    db.drop().await;
}

/// Jobs queued together share a batch; a conflict in one sends the batch
/// down the job-by-job path, where only that job fails. The room's head
/// column follows its last event.
#[tokio::test]
async fn a_conflict_in_a_batch_fails_alone_and_heads_follow() {
    let db = TestDb::create().await;
    let store = db.open().await;
    store
        .create_room(room_id!("!h:test"), "11", user_id!("@a:test"))
        .await
        .unwrap();
    let with_txn = |id: &str, txn: &str| NewEvent {
        txn: Some(("D1".into(), txn.into())),
        ..message(room_id!("!h:test"), id.into())
    };
    store
        .append(vec![with_txn("$first", "t1")])
        .unwrap()
        .await
        .unwrap();
    // Queued without awaiting: one batch of three jobs, the middle one a retry.
    let a = store.append(vec![with_txn("$a", "t2")]).unwrap();
    let dup = store.append(vec![with_txn("$again", "t1")]).unwrap();
    let b = store
        .append(vec![with_txn("$b", "t3"), with_txn("$c", "t4")])
        .unwrap();
    let (a, dup, b) = futures::join!(a, dup, b);
    assert!(matches!(dup, Err(crate::store::StoreError::Conflict)));
    assert_eq!(a.unwrap(), vec![2]);
    assert_eq!(b.unwrap(), vec![3, 4]);
    assert_eq!(store.events_position().await.unwrap(), 4);
    let head: (String, i64) =
        sqlx::query_as("SELECT last_event_id, last_stream FROM rooms WHERE room_id = '!h:test'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(head, ("$c".to_string(), 4));
    store.close().await;
    db.drop().await;
}

/// PostgreSQL text cannot hold NUL: such values are the client's fault
/// (`StoreError::Invalid`, a 400), and an append carrying one is refused
/// before it is queued, so it cannot fail the batch it would have joined.
#[tokio::test]
async fn nul_in_text_is_invalid_input_not_a_failed_batch() {
    let db = TestDb::create().await;
    let store = db.open().await;
    store
        .create_room(room_id!("!n:test"), "11", user_id!("@a:test"))
        .await
        .unwrap();
    let good = store
        .append(vec![message(room_id!("!n:test"), "$good".into())])
        .unwrap();
    let mut bad = message(room_id!("!n:test"), "$bad".into());
    bad.kind = "m.room\0message".into();
    assert!(matches!(
        store.append(vec![bad]),
        Err(crate::store::StoreError::Invalid(_))
    ));
    assert_eq!(good.await.unwrap(), vec![1]);
    let written = store
        .set_account_data(user_id!("@a:test"), None, "bad\0type", &json!({}))
        .await;
    assert!(
        matches!(written, Err(crate::store::StoreError::Invalid(_))),
        "{written:?}"
    );
    store.close().await;
    db.drop().await;
}

/// Within one batch, jobs are judged against the state head in queue order:
/// one built on a head an earlier job moved is stale and fails alone; one
/// built on the new head commits.
#[tokio::test]
async fn stale_jobs_in_a_batch_fail_alone() {
    let db = TestDb::create().await;
    let store = db.open().await;
    store
        .create_room(room_id!("!s:test"), "11", user_id!("@a:test"))
        .await
        .unwrap();
    let state = |id: &str, on: Option<&str>| {
        NewEvent {
            kind: "m.room.name".into(),
            state_key: Some(String::new()),
            built_on: on.map(conformance::event),
            ..message(room_id!("!s:test"), id.into())
        }
        .on_one_chain()
    };
    let plain = |id: &str, on: &str| NewEvent {
        built_on: Some(conformance::event(on)),
        ..message(room_id!("!s:test"), id.into())
    };
    store
        .append(vec![state("$s0", None)])
        .unwrap()
        .await
        .unwrap();
    // One batch: s1 moves the head from s0; m1 still builds on s0; m2 on s1.
    let s1 = store.append(vec![state("$s1", Some("$s0"))]).unwrap();
    let m1 = store.append(vec![plain("$m1", "$s0")]).unwrap();
    let m2 = store.append(vec![plain("$m2", "$s1")]).unwrap();
    let (s1, m1, m2) = futures::join!(s1, m1, m2);
    assert_eq!(s1.unwrap(), vec![2]);
    assert!(matches!(m1, Err(crate::store::StoreError::Stale)), "{m1:?}");
    assert_eq!(m2.unwrap(), vec![3], "positions stay gap-free");
    assert!(store.get_event(event_id!("$m1")).await.unwrap().is_none());
    let head: Option<String> =
        sqlx::query_scalar("SELECT state_head FROM rooms WHERE room_id = '!s:test'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(head.as_deref(), Some("$s1"));
    store.close().await;
    db.drop().await;
}
