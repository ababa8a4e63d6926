//! An acknowledged message is never lost and never duplicated, even when the
//! server is killed with SIGKILL while sends are in flight.
//!
//! "Acknowledged" means the client got a 200 with an event id. After a crash and
//! restart, every such event must be in the room history exactly once, and a
//! client retrying a send with the same transaction id (as clients do after a
//! network error) must get the original event back instead of a duplicate.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tern_tests::{enc, message_bodies, Client, TestServer, V3};
use tokio::sync::Notify;

const TASKS: usize = 8;
const SENDS_PER_TASK: usize = 25;
const TOTAL: usize = TASKS * SENDS_PER_TASK;

/// One acknowledged send: what the client sent and the event id it was given.
#[derive(Clone, Debug)]
struct Ack {
    txn: String,
    body: String,
    event_id: String,
}

fn event_path(room: &str, event_id: &str) -> String {
    format!("{V3}/rooms/{}/event/{}", enc(room), enc(event_id))
}

fn txn_of(task: usize, i: usize) -> (String, String) {
    (format!("dur-{task}-{i}"), format!("msg-{task}-{i}"))
}

/// Counts how often each message body and event id occurs in the history.
fn census(history: &[Value]) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let mut bodies = HashMap::new();
    for body in message_bodies(history) {
        *bodies.entry(body).or_insert(0) += 1;
    }
    let mut ids = HashMap::new();
    for event in history {
        if let Some(id) = event["event_id"].as_str() {
            *ids.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    (bodies, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_sigkill_exactly_once() {
    let mut server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let room = alice.create_room(&json!({"preset": "private_chat"})).await;

    // 8 concurrent senders, each sending its 25 messages one after another and
    // stopping at the first network error (the server is gone).
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    // Told by the sender whose acknowledgement is the half-way one.
    let half_acknowledged = Arc::new(Notify::new());
    let mut senders = Vec::new();
    for task in 0..TASKS {
        let (client, room, acks) = (alice.clone(), room.clone(), acks.clone());
        let half_acknowledged = half_acknowledged.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..SENDS_PER_TASK {
                let (txn, body) = txn_of(task, i);
                match client.try_send_text(&room, &txn, &body).await {
                    Ok((200, resp)) => {
                        let event_id = resp["event_id"].as_str().expect("event_id").to_owned();
                        let mut acks = acks.lock().unwrap();
                        acks.push(Ack {
                            txn,
                            body,
                            event_id,
                        });
                        if acks.len() == TOTAL / 2 {
                            half_acknowledged.notify_one();
                        }
                    }
                    Ok((status, resp)) => panic!("send {txn} got {status} {resp}"),
                    Err(_) => return,
                }
            }
        }));
    }

    // Crash the server once about half of the sends are acknowledged, so that
    // the other half are in flight or not yet started.
    tokio::time::timeout(Duration::from_secs(60), half_acknowledged.notified())
        .await
        .unwrap_or_else(|_| {
            let acked = acks.lock().unwrap().len();
            panic!("only {acked} of {TOTAL} sends acknowledged after 60 s")
        });
    server.kill_hard();
    for sender in senders {
        sender.await.expect("sender task panicked");
    }
    let acks = acks.lock().unwrap().clone();
    assert!(
        acks.len() < TOTAL,
        "all {TOTAL} sends finished before the kill; the test did not crash mid-flight"
    );

    eprintln!(
        "{} of {TOTAL} sends acknowledged before SIGKILL",
        acks.len()
    );
    server.restart().await;

    // Every acknowledged event is in the history exactly once, under the id
    // the client was given, and no message body appears twice.
    let history = alice.room_history(&room).await;
    let (bodies, ids) = census(&history);
    for ack in &acks {
        assert_eq!(
            ids.get(&ack.event_id),
            Some(&1),
            "acknowledged event {} ({}) must be in the history exactly once",
            ack.event_id,
            ack.body
        );
        assert_eq!(bodies.get(&ack.body), Some(&1), "body {}", ack.body);
    }
    let duplicated: Vec<_> = bodies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated bodies: {duplicated:?}");
    let messages_before = message_bodies(&history).len();

    // Retrying acknowledged sends with the same token and txn id returns the
    // original event id and adds nothing.
    for ack in acks.iter().step_by(acks.len().div_ceil(10).max(1)) {
        let event_id = alice.send_text(&room, &ack.txn, &ack.body).await;
        assert_eq!(event_id, ack.event_id, "retry of {} after restart", ack.txn);
    }
    let history = alice.room_history(&room).await;
    assert_eq!(
        message_bodies(&history).len(),
        messages_before,
        "retrying acknowledged transactions must not add events"
    );

    // Retrying every send that was never acknowledged (a client's reaction to
    // the network error) must leave each message in the history exactly once,
    // whether or not the server had stored it before dying.
    let acked: HashSet<&str> = acks.iter().map(|a| a.txn.as_str()).collect();
    let mut retried = HashMap::new();
    for task in 0..TASKS {
        for i in 0..SENDS_PER_TASK {
            let (txn, body) = txn_of(task, i);
            if !acked.contains(txn.as_str()) {
                let event_id = alice.send_text(&room, &txn, &body).await;
                retried.insert(body, event_id);
            }
        }
    }
    let history = alice.room_history(&room).await;
    let (bodies, _) = census(&history);
    let mut wrong = Vec::new();
    for task in 0..TASKS {
        for i in 0..SENDS_PER_TASK {
            let (_, body) = txn_of(task, i);
            let count = bodies.get(&body).copied().unwrap_or(0);
            if count != 1 {
                // Show what the server says about the id it gave the retry.
                let detail = match retried.get(&body) {
                    Some(id) => format!("{id}: {:?}", alice.get(&event_path(&room, id)).await),
                    None => "acknowledged before the crash".to_owned(),
                };
                wrong.push(format!("{body} x{count} ({detail})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "after retries every message must be in the history exactly once; wrong:\n{}",
        wrong.join("\n")
    );
    assert_eq!(message_bodies(&history).len(), TOTAL);
    server.stop().await;
}

#[tokio::test]
async fn accounts_rooms_and_tokens_survive_sigkill() {
    let mut server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let room = alice
        .create_room(&json!({"preset": "private_chat", "name": "Kept"}))
        .await;
    let event_id = alice.send_text(&room, "t1", "before the crash").await;

    server.kill_hard();
    server.restart().await;

    // The old access token still works and still belongs to the same device.
    let (status, whoami) = alice.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200, "{whoami}");
    assert_eq!(whoami["user_id"], alice.user_id.as_str());
    assert_eq!(whoami["device_id"], alice.device_id.as_str());
    // The room, its state and the message are there.
    let (status, name) = alice
        .get(&format!("{V3}/rooms/{}/state/m.room.name/", enc(&room)))
        .await;
    assert_eq!(status, 200, "{name}");
    assert_eq!(name["name"], "Kept");
    let history = alice.room_history(&room).await;
    assert!(
        history.iter().any(|e| e["event_id"] == event_id.as_str()),
        "message sent before the crash is missing"
    );
    // The password still logs in.
    Client::login(&server, "alice", tern_tests::PASSWORD).await;
}
