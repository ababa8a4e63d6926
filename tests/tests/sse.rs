//! Sync as a Server-Sent Events stream, as a browser's EventSource uses it:
//! the stream's shape, resuming by `Last-Event-ID` after a disconnect and
//! after a restart (nothing lost, nothing twice), the token in the query,
//! keep-alives and closed clients, a slow consumer, and delivered ticks.

use std::time::Duration;

use serde_json::{json, Value};
use tern_tests::{
    assert_ok, enc, eventually, joined_timeline, message_bodies, next_batch, public_room,
    room_of_two, Client, ServerOptions, SseEvent, SseRequest, SseStream, TestServer, V3,
};

const WAIT: Duration = Duration::from_secs(10);
const MSC2108: &str = "/_matrix/client/unstable/org.matrix.msc2108/sync/stream";

fn stream_request(client: &Client, path: &str) -> SseRequest {
    SseRequest {
        path: path.to_owned(),
        bearer: client.access_token.clone(),
        accept_stream: true,
        ..SseRequest::default()
    }
}

/// Message bodies of `room` in one sync event's data.
fn bodies(data: &Value, room: &str) -> Vec<String> {
    message_bodies(&joined_timeline(data, room))
}

/// Reads events until `room` shows a message; returns the bodies seen in
/// that event and the event itself.
async fn next_messages(stream: &mut SseStream, room: &str) -> (Vec<String>, SseEvent) {
    loop {
        let (event, data) = stream.next_sync(WAIT).await;
        let found = bodies(&data, room);
        if !found.is_empty() {
            return (found, event);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_has_the_sync_shape_and_follows_changes() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    alice.send_text(&room, "t0", "before the stream").await;

    let mut stream =
        SseStream::open(server.port(), stream_request(&bob, &format!("{V3}/sync"))).await;
    assert_eq!(stream.status, 200);
    assert!(
        stream
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        stream.headers
    );
    // The first event is the initial sync, with its token as the event id.
    let (first, data) = stream.next_sync(WAIT).await;
    assert_eq!(first.id.as_deref(), Some(next_batch(&data).as_str()));
    assert!(
        first.retry.is_some(),
        "the first event sets the reconnect delay"
    );
    assert_eq!(bodies(&data, &room), vec!["before the stream"]);
    // An initial sync: the room from its creation, in state or timeline.
    let joined = &data["rooms"]["join"][&room];
    let has_create = ["state", "timeline"].iter().any(|section| {
        joined[section]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == "m.room.create"))
    });
    assert!(has_create, "{joined}");

    // Then one event per change, each continuing from the last.
    let mut last_id = first.id.clone().unwrap();
    for i in 1..=3 {
        let body = format!("live {i}");
        alice.send_text(&room, &format!("t{i}"), &body).await;
        let (seen, event) = next_messages(&mut stream, &room).await;
        assert_eq!(seen, vec![body]);
        let id = event.id.clone().expect("every sync event has an id");
        assert_ne!(id, last_id);
        assert_eq!(Some(id.as_str()), event.json()["next_batch"].as_str());
        last_id = id;
    }

    // A client that does not ask for a stream still gets JSON.
    let plain = bob.sync(Some(&last_id), 0, None).await;
    assert!(plain["next_batch"].is_string());

    // MSC2108's path streams without the Accept header.
    let mut unstable = SseStream::open(
        server.port(),
        SseRequest {
            accept_stream: false,
            ..stream_request(&bob, MSC2108)
        },
    )
    .await;
    assert_eq!(unstable.status, 200);
    let (_, data) = unstable.next_sync(WAIT).await;
    assert_eq!(
        bodies(&data, &room),
        vec!["before the stream", "live 1", "live 2", "live 3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_by_last_event_id_loses_nothing_and_repeats_nothing() {
    let mut server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let path = format!("{V3}/sync");
    let mut received = Vec::new();

    let mut stream = SseStream::open(server.port(), stream_request(&bob, &path)).await;
    let (first, _) = stream.next_sync(WAIT).await;
    let first_id = first.id.unwrap();
    alice.send_text(&room, "m1", "m1").await;
    let (seen, event) = next_messages(&mut stream, &room).await;
    received.extend(seen);
    let mut last_id = event.id.unwrap();
    drop(stream);

    // Sent while bob is away.
    alice.send_text(&room, "m2", "m2").await;
    alice.send_text(&room, "m3", "m3").await;
    // A browser reconnects to the same URL (here with an older `since`)
    // and adds Last-Event-ID, which wins.
    let mut stream = SseStream::open(
        server.port(),
        SseRequest {
            last_event_id: Some(last_id.clone()),
            ..stream_request(&bob, &format!("{path}?since={}", enc(&first_id)))
        },
    )
    .await;
    let (event, data) = stream.next_sync(WAIT).await;
    assert_eq!(bodies(&data, &room), vec!["m2", "m3"]);
    received.extend(bodies(&data, &room));
    last_id = event.id.unwrap();
    drop(stream);

    // Across a restart: tokens are store positions.
    server.restart().await;
    alice.send_text(&room, "m4", "m4").await;
    let mut stream = SseStream::open(
        server.port(),
        SseRequest {
            last_event_id: Some(last_id.clone()),
            ..stream_request(&bob, &path)
        },
    )
    .await;
    let (_, data) = stream.next_sync(WAIT).await;
    received.extend(bodies(&data, &room));
    // Nothing else is pending: the next event, if any, has no messages.
    alice.send_text(&room, "m5", "m5").await;
    let (seen, _) = next_messages(&mut stream, &room).await;
    received.extend(seen);
    assert_eq!(received, vec!["m1", "m2", "m3", "m4", "m5"]);

    // `since` alone resumes too (a client that keeps its own token).
    drop(stream);
    let mut stream = SseStream::open(
        server.port(),
        stream_request(&bob, &format!("{path}?since={}", enc(&last_id))),
    )
    .await;
    let (_, data) = stream.next_sync(WAIT).await;
    assert_eq!(bodies(&data, &room), vec!["m4", "m5"]);

    // A Last-Event-ID that is not a token is refused, as a bad `since` is.
    let mut bad = SseStream::open(
        server.port(),
        SseRequest {
            last_event_id: Some("not-a-token".into()),
            ..stream_request(&bob, &path)
        },
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body_json().await["errcode"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_in_the_query_for_event_source() {
    let server = TestServer::start().await;
    let bob = Client::register(&server, "bob").await;
    let token = bob.access_token.clone().unwrap();
    let query = |t: &str| SseRequest {
        path: format!("{V3}/sync?access_token={}", enc(t)),
        accept_stream: true,
        ..SseRequest::default()
    };
    let mut ok = SseStream::open(server.port(), query(&token)).await;
    assert_eq!(ok.status, 200);
    ok.next_sync(WAIT).await;

    let mut wrong = SseStream::open(server.port(), query("nope")).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body_json().await["errcode"], "M_UNKNOWN_TOKEN");
    let mut missing = SseStream::open(
        server.port(),
        SseRequest {
            path: format!("{V3}/sync"),
            accept_stream: true,
            ..SseRequest::default()
        },
    )
    .await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body_json().await["errcode"], "M_MISSING_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_flow_and_a_closed_client_goes_offline() {
    let server = TestServer::start_with(ServerOptions {
        env: vec![
            ("TERN_SSE_KEEP_ALIVE_MS".into(), "200".into()),
            ("TERN_PRESENCE_OFFLINE_MS".into(), "1000".into()),
        ],
        ..ServerOptions::default()
    })
    .await;
    let (alice, bob, _room) = room_of_two(&server).await;
    let presence = format!("{V3}/presence/{}/status", enc(&bob.user_id));

    let mut stream =
        SseStream::open(server.port(), stream_request(&bob, &format!("{V3}/sync"))).await;
    stream.next_sync(WAIT).await;
    let events = stream.idle_for(Duration::from_millis(1_500)).await;
    assert!(
        events.iter().all(|e| e.event == "sync"),
        "only sync events: {events:?}"
    );
    assert!(stream.comments() >= 3, "keep-alives: {}", stream.comments());
    // Longer than the offline period: the open stream keeps bob online.
    let status = assert_ok(alice.get(&presence).await);
    assert_eq!(status["presence"], "online", "{status}");
    assert_eq!(status["currently_active"], true, "{status}");

    // Closing the stream is noticed: bob goes offline after the period.
    drop(stream);
    eventually("bob offline once his stream is closed", async || {
        let status = assert_ok(alice.get(&presence).await);
        if status["presence"] == "offline" {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_gets_a_limited_delta_and_holds_up_no_one() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let carol = Client::register(&server, "carol").await;
    let room = public_room(&alice, &[&bob]).await;
    assert_ok(carol.join(&room).await);
    let carol_since = next_batch(&carol.sync(None, 0, None).await);

    // Bob's stream: a tiny receive buffer, and he stops reading.
    let mut slow = SseStream::open(
        server.port(),
        SseRequest {
            recv_buffer: Some(4096),
            ..stream_request(&bob, &format!("{V3}/sync"))
        },
    )
    .await;
    slow.next_sync(WAIT).await;

    // Far more than the socket buffers can hold.
    const MESSAGES: usize = 600;
    let filler = "x".repeat(16 * 1024);
    for i in 0..MESSAGES {
        alice
            .send_text(&room, &format!("s{i}"), &format!("{i} {filler}"))
            .await;
    }
    // Carol, syncing normally, has every message at once.
    let last = format!("{} {filler}", MESSAGES - 1);
    carol
        .sync_until(&carol_since, WAIT, None, |r| {
            message_bodies(&joined_timeline(r, &room)).contains(&last)
        })
        .await;

    // Bob catches up: a handful of events, not one per message, ending in
    // a limited delta with a prev_batch to page back from.
    let mut events = 0;
    let mut limited = false;
    let mut got_last = false;
    while !got_last {
        let (_, data) = slow.next_sync(WAIT).await;
        events += 1;
        let timeline = &data["rooms"]["join"][&room]["timeline"];
        if timeline["limited"] == true {
            limited = true;
            assert!(timeline["prev_batch"].is_string(), "{timeline}");
        }
        got_last = bodies(&data, &room).contains(&last);
    }
    assert!(limited, "the catch-up delta is limited");
    eprintln!("slow consumer: {events} events for {MESSAGES} messages");
    assert!(
        events < MESSAGES / 2,
        "{events} events for {MESSAGES} messages: the stream queued per change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_ticks_need_proof_from_the_stream_client() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let info = |event: String| {
        let alice = alice.clone();
        let room = room.clone();
        let bob_id = bob.user_id.clone();
        async move {
            let path = format!(
                "/_matrix/client/unstable/tern/rooms/{}/receipts/{}",
                enc(&room),
                enc(&event)
            );
            let body = assert_ok(alice.get(&path).await);
            body["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["user_id"] == bob_id.as_str())
                .cloned()
                .unwrap_or_else(|| panic!("bob not in {body}"))
        }
    };
    let delivered = |event: String| {
        let info = &info;
        async move {
            eventually("the delivered tick", async || {
                info(event.clone()).await["delivered_ts"].is_i64()
            })
            .await
        }
    };

    let mut stream =
        SseStream::open(server.port(), stream_request(&bob, &format!("{V3}/sync"))).await;
    stream.next_sync(WAIT).await;
    let e1 = alice.send_text(&room, "d1", "one").await;
    let (_, event) = next_messages(&mut stream, &room).await;
    // Written to bob's socket is not proof that bob has it. The barrier: a
    // later message written to the same stream, after anything writing
    // the first one would have recorded.
    alice.send_text(&room, "d1b", "barrier").await;
    next_messages(&mut stream, &room).await;
    assert!(info(e1.clone()).await["delivered_ts"].is_null());
    // An explicit ack with the event id is.
    assert_ok(
        bob.post(
            "/_matrix/client/unstable/tern/sync/ack",
            &json!({"next_batch": event.id.unwrap()}),
        )
        .await,
    );
    // An ack records delivery.
    delivered(e1).await;

    // So is the Last-Event-ID of a reconnect.
    let e2 = alice.send_text(&room, "d2", "two").await;
    let (_, event) = next_messages(&mut stream, &room).await;
    drop(stream);
    assert!(info(e2.clone()).await["delivered_ts"].is_null());
    let mut again = SseStream::open(
        server.port(),
        SseRequest {
            last_event_id: event.id.clone(),
            ..stream_request(&bob, &format!("{V3}/sync"))
        },
    )
    .await;
    again.next_sync(WAIT).await;
    // A reconnect records delivery.
    delivered(e2).await;

    let (status, body) = bob
        .post(
            "/_matrix/client/unstable/tern/sync/ack",
            &json!({"next_batch": "garbage"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_read_receipt_clears_the_unread_count_in_the_same_event() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let mut stream =
        SseStream::open(server.port(), stream_request(&bob, &format!("{V3}/sync"))).await;
    stream.next_sync(WAIT).await;
    // Repeated: the race it guards against (the receipt's wake-up computing
    // counts before the read was noted) did not show every time.
    for i in 0..5 {
        let event = alice
            .send_text(&room, &format!("u{i}"), &format!("unread {i}"))
            .await;
        let (_, data) = loop {
            let (e, data) = stream.next_sync(WAIT).await;
            if !bodies(&data, &room).is_empty() {
                break (e, data);
            }
        };
        let unread = &data["rooms"]["join"][&room]["unread_notifications"];
        assert_eq!(unread["notification_count"], 1, "{unread}");
        let path = format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event));
        assert_ok(bob.post(&path, &json!({})).await);
        // The event that carries bob's own receipt shows the room read.
        loop {
            let (_, data) = stream.next_sync(WAIT).await;
            let joined = &data["rooms"]["join"][&room];
            let has_receipt = joined["ephemeral"]["events"]
                .as_array()
                .is_some_and(|list| list.iter().any(|e| e["type"] == "m.receipt"));
            if has_receipt {
                assert_eq!(
                    joined["unread_notifications"]["notification_count"], 0,
                    "round {i}: {joined}"
                );
                break;
            }
        }
    }
}

/// A to-device message reaches the open stream; the stream's ack releases
/// it, so a reconnect from before the ack does not get it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_device_messages_arrive_on_the_stream_and_go_when_acknowledged() {
    let server = TestServer::start().await;
    let (alice, bob, _room) = room_of_two(&server).await;
    let mut stream =
        SseStream::open(server.port(), stream_request(&bob, &format!("{V3}/sync"))).await;
    let (first, _) = stream.next_sync(WAIT).await;
    let before = first.id.clone().unwrap();

    let body = json!({"messages": {&bob.user_id: {"*": {"hello": "device"}}}});
    assert_ok(
        alice
            .put(&format!("{V3}/sendToDevice/m.test/sse1"), &body)
            .await,
    );
    let (event, data) = loop {
        let (event, data) = stream.next_sync(WAIT).await;
        if data["to_device"]["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
        {
            break (event, data);
        }
    };
    assert_eq!(data["to_device"]["events"][0]["content"]["hello"], "device");
    assert_eq!(
        data["to_device"]["events"][0]["sender"],
        alice.user_id.as_str()
    );

    let ack = json!({"next_batch": event.id.clone().unwrap()});
    assert_ok(
        bob.post("/_matrix/client/unstable/tern/sync/ack", &ack)
            .await,
    );
    let replay = bob.sync(Some(&before), 0, None).await;
    assert_eq!(replay["to_device"]["events"], json!([]), "{replay}");
}
