//! `/sync` as a client relies on it: long-polls wake on new events, old
//! `since` tokens resume without gaps (also across restarts and crashes),
//! timelines are cut with `limited`/`prev_batch`, and invites, leaves and
//! transaction ids show up where they should.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tern_tests::{
    enc, joined_timeline, message_bodies, next_batch, room_of_two, Client, TestServer, V3,
};

/// A filter whose timeline limit is far above what these tests send.
const BIG_TIMELINE: &str = r#"{"room":{"timeline":{"limit":100}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_up_when_another_user_sends() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let since = next_batch(&alice.sync(None, 0, None).await);

    let waiting = {
        let (alice, since) = (alice.clone(), since.clone());
        tokio::spawn(async move {
            let resp = alice.sync(Some(&since), 30_000, None).await;
            (resp, Instant::now())
        })
    };
    // The barrier: a 1 s long-poll from the same token, begun after that
    // one, runs to its timeout with nothing to report; the first one, with
    // nothing to report either, must still be waiting.
    let idle_since = Instant::now();
    let idle = alice.sync(Some(&since), 1_000, None).await;
    let idled = idle_since.elapsed();
    assert!(
        joined_timeline(&idle, &room).is_empty() && idled >= Duration::from_millis(900),
        "an idle long-poll with timeout=1000 returned after {idled:?}: {idle}"
    );
    assert!(
        !waiting.is_finished(),
        "sync with timeout=30000 returned before anything happened"
    );

    let sent_at = Instant::now();
    let event_id = bob.send_text(&room, "wake", "wake up").await;
    let (resp, returned_at) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("long-poll did not return within 10 s of the send")
        .expect("sync task panicked");
    let latency = returned_at.saturating_duration_since(sent_at);
    assert!(
        latency < Duration::from_secs(2),
        "long-poll took {latency:?} to wake"
    );
    let timeline = joined_timeline(&resp, &room);
    assert!(
        timeline.iter().any(|e| e["event_id"] == event_id.as_str()),
        "woken sync does not carry the new event: {resp}"
    );
}

#[tokio::test]
async fn old_since_token_resumes_across_graceful_restart_and_sigkill() {
    let mut server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let start = next_batch(&alice.sync(None, 0, Some(BIG_TIMELINE)).await);

    let mut sent = Vec::new();
    for i in 1..=4 {
        bob.send_text(&room, &format!("a{i}"), &format!("m{i}"))
            .await;
        sent.push(format!("m{i}"));
    }
    let middle = next_batch(&alice.sync(Some(&start), 0, Some(BIG_TIMELINE)).await);

    let status = server.stop().await;
    assert!(
        status.success(),
        "SIGTERM should exit cleanly, got {status}"
    );
    server.restart().await;
    for i in 5..=8 {
        bob.send_text(&room, &format!("a{i}"), &format!("m{i}"))
            .await;
        sent.push(format!("m{i}"));
    }

    server.kill_hard();
    server.restart().await;
    for i in 9..=10 {
        bob.send_text(&room, &format!("a{i}"), &format!("m{i}"))
            .await;
        sent.push(format!("m{i}"));
    }

    // From the very first token: every message, in order, nothing cut.
    let resp = alice.sync(Some(&start), 0, Some(BIG_TIMELINE)).await;
    let timeline = joined_timeline(&resp, &room);
    assert_eq!(message_bodies(&timeline), sent, "resume from first token");
    assert_ne!(
        resp["rooms"]["join"][&room]["timeline"]["limited"], true,
        "10 events under a limit of 100 must not be limited"
    );

    // From the token taken before the graceful restart: exactly the rest.
    let resp = alice.sync(Some(&middle), 0, Some(BIG_TIMELINE)).await;
    let timeline = joined_timeline(&resp, &room);
    assert_eq!(message_bodies(&timeline), &sent[4..], "resume from middle");

    // And a token issued now sees nothing new.
    let now = next_batch(&resp);
    let resp = alice.sync(Some(&now), 0, Some(BIG_TIMELINE)).await;
    assert!(
        message_bodies(&joined_timeline(&resp, &room)).is_empty(),
        "nothing new since the latest token: {resp}"
    );
}

#[tokio::test]
async fn timeline_over_filter_limit_is_limited_with_prev_batch() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let room = alice.create_room(&json!({"preset": "private_chat"})).await;
    let since = next_batch(&alice.sync(None, 0, None).await);
    for i in 1..=5 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }

    let resp = alice
        .sync(
            Some(&since),
            0,
            Some(r#"{"room":{"timeline":{"limit":2}}}"#),
        )
        .await;
    let timeline = &resp["rooms"]["join"][&room]["timeline"];
    let events = timeline["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        message_bodies(&events),
        ["m4", "m5"],
        "the newest two: {timeline}"
    );
    assert_eq!(events.len(), 2, "limit 2 means 2 events: {timeline}");
    assert_eq!(timeline["limited"], true, "{timeline}");
    let prev_batch = timeline["prev_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("no prev_batch in limited timeline {timeline}"));

    // prev_batch continues right before the cut.
    let page = alice.messages(&room, "b", Some(prev_batch), 10).await;
    let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
    let older = message_bodies(&chunk);
    assert_eq!(
        older,
        ["m3", "m2", "m1"],
        "/messages from prev_batch going back: {page}"
    );
}

#[tokio::test]
async fn invite_appears_in_rooms_invite_with_stripped_state() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let room = alice
        .create_room(&json!({"preset": "private_chat", "name": "Secret"}))
        .await;
    let since = next_batch(&bob.sync(None, 0, None).await);

    let (status, body) = alice.invite(&room, &bob.user_id).await;
    assert_eq!(status, 200, "invite: {body}");

    let resp = bob
        .sync_until(&since, Duration::from_secs(10), None, |r| {
            r["rooms"]["invite"].get(&room).is_some()
        })
        .await;
    let events = resp["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "invite"
            && e["sender"] == alice.user_id.as_str()),
        "invite_state must carry bob's invite member event: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Secret"),
        "invite_state should carry the room name so the invite can be shown: {events:?}"
    );
    assert!(
        resp["rooms"]["join"].get(&room).is_none(),
        "an invited room is not joined"
    );
}

#[tokio::test]
async fn leave_appears_in_rooms_leave() {
    let server = TestServer::start().await;
    let (_alice, bob, room) = room_of_two(&server).await;
    let since = next_batch(&bob.sync(None, 0, None).await);

    let (status, body) = bob.leave(&room).await;
    assert_eq!(status, 200, "leave: {body}");

    let resp = bob
        .sync_until(&since, Duration::from_secs(10), None, |r| {
            r["rooms"]["leave"].get(&room).is_some()
        })
        .await;
    let events = resp["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "leave"),
        "the left room's timeline should end with bob's leave event: {}",
        resp["rooms"]["leave"][&room]
    );
    assert!(
        resp["rooms"]["join"].get(&room).is_none(),
        "a left room is no longer joined: {resp}"
    );
}

/// Whether the event `event_id` appears in `room`'s timeline, and its unsigned.
fn find_unsigned(sync: &Value, room: &str, event_id: &str) -> Option<Value> {
    joined_timeline(sync, room)
        .into_iter()
        .find(|e| e["event_id"] == event_id)
        .map(|e| e["unsigned"].clone())
}

#[tokio::test]
async fn transaction_id_only_echoed_to_the_sending_device() {
    let server = TestServer::start().await;
    let phone = Client::register(&server, "alice").await;
    let laptop = Client::login(&server, "alice", tern_tests::PASSWORD).await;
    assert_ne!(phone.device_id, laptop.device_id);
    let room = phone.create_room(&json!({"preset": "private_chat"})).await;
    let phone_since = next_batch(&phone.sync(None, 0, None).await);
    let laptop_since = next_batch(&laptop.sync(None, 0, None).await);

    let event_id = phone.send_text(&room, "my-txn-42", "hello").await;

    let on_phone = phone
        .sync_until(&phone_since, Duration::from_secs(10), None, |r| {
            find_unsigned(r, &room, &event_id).is_some()
        })
        .await;
    let unsigned = find_unsigned(&on_phone, &room, &event_id).unwrap();
    assert_eq!(
        unsigned["transaction_id"], "my-txn-42",
        "the sending device must see its transaction id: {unsigned}"
    );

    let on_laptop = laptop
        .sync_until(&laptop_since, Duration::from_secs(10), None, |r| {
            find_unsigned(r, &room, &event_id).is_some()
        })
        .await;
    let unsigned = find_unsigned(&on_laptop, &room, &event_id).unwrap();
    assert!(
        unsigned.get("transaction_id").is_none(),
        "another device of the same user must not see the transaction id: {unsigned}"
    );
}

#[tokio::test]
async fn sync_filter_id_from_filter_upload_works() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let room = alice.create_room(&json!({"preset": "private_chat"})).await;
    for i in 1..=3 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let (status, body) = alice
        .post(
            &format!("{V3}/user/{}/filter", enc(&alice.user_id)),
            &json!({"room": {"timeline": {"limit": 1}}}),
        )
        .await;
    assert_eq!(status, 200, "upload filter: {body}");
    let filter_id = body["filter_id"].as_str().expect("filter_id").to_owned();

    let (status, stored) = alice
        .get(&format!(
            "{V3}/user/{}/filter/{}",
            enc(&alice.user_id),
            enc(&filter_id)
        ))
        .await;
    assert_eq!(status, 200, "get filter: {stored}");
    assert_eq!(stored["room"]["timeline"]["limit"], 1);

    let resp = alice.sync(None, 0, Some(&filter_id)).await;
    let timeline = joined_timeline(&resp, &room);
    assert_eq!(timeline.len(), 1, "filter id limits the timeline: {resp}");
    assert_eq!(message_bodies(&timeline), ["m3"]);
}

/// A filter is returned as it was stored, so a flag of the wrong type is
/// refused on upload rather than served back against the spec's schema.
#[tokio::test]
async fn a_filter_flag_of_the_wrong_type_is_refused() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let path = format!("{V3}/user/{}/filter", enc(&alice.user_id));
    let bad = json!({"room": {"state": {"lazy_load_members": {"x": 1}}}});
    let (status, body) = alice.post(&path, &bad).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errcode"], "M_BAD_JSON");
    let good = json!({"room": {"state": {"lazy_load_members": true}}});
    let (status, body) = alice.post(&path, &good).await;
    assert_eq!(status, 200, "{body}");
}
