//! The real binary on PostgreSQL (`storage = "postgres"`): the client flows
//! work, and an acknowledged message survives `kill -9` exactly once.
//!
//! Needs `TERN_TEST_POSTGRES_URL` (a role that may create databases; `psql`
//! on the PATH) and a binary built with `--features homeserver/postgres`;
//! `scripts/test.sh` provides both; without the variable the tests fail.
//! Every test gets a database of its own, dropped at the end.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tern_tests::{
    assert_ok, enc, message_bodies, Client, ServerOptions, TestDatabase, TestServer, V3,
};
use tokio::sync::Notify;

/// Options for a server on `db`, with a small pool so that a crash leaves
/// few connections behind.
fn server_options(db: &TestDatabase) -> ServerOptions {
    ServerOptions {
        config_toml: Some(format!(
            "storage = \"postgres\"\n[postgres]\nurl = \"{}\"\nmax_connections = 8\n",
            db.url()
        )),
        ..ServerOptions::default()
    }
}

/// Runs `sql` with psql and returns its unaligned output.
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_create_send_and_sync_on_postgres() {
    let db = TestDatabase::create("bb");
    let mut server = TestServer::start_with(server_options(&db)).await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let room = alice
        .create_room(&json!({"preset": "public_chat", "name": "On PG"}))
        .await;
    assert_ok(bob.join(&room).await);
    let since = tern_tests::next_batch(&bob.sync(None, 0, None).await);

    let event_id = alice.send_text(&room, "t1", "hello from postgres").await;
    bob.sync_until(&since, Duration::from_secs(10), None, |r| {
        r["rooms"]["join"][room.as_str()]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["event_id"] == event_id.as_str()))
    })
    .await;

    // Account data, filters and the state read back from the database.
    let (status, _) = alice
        .put(
            &format!("{V3}/user/{}/account_data/org.example", enc(&alice.user_id)),
            &json!({"x": 1}),
        )
        .await;
    assert_eq!(status, 200);
    // It really is in PostgreSQL, not in a SQLite file in the data directory.
    let stored = psql(
        &db.url(),
        &format!("SELECT count(*) FROM events WHERE event_id = '{event_id}'"),
    );
    assert_eq!(stored, "1");
    assert!(!server.data_dir().join("tern.db").exists());
    server.restart().await;
    let (status, data) = alice
        .get(&format!(
            "{V3}/user/{}/account_data/org.example",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!((status, data), (200, json!({"x": 1})));
    let (status, name) = bob
        .get(&format!("{V3}/rooms/{}/state/m.room.name/", enc(&room)))
        .await;
    assert_eq!((status, name["name"].clone()), (200, json!("On PG")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_sigkill_on_postgres() {
    const TASKS: usize = 6;
    const SENDS: usize = 25;
    let db = TestDatabase::create("bb");
    let mut server = TestServer::start_with(server_options(&db)).await;
    let alice = Client::register(&server, "alice").await;
    let room = alice.create_room(&json!({"preset": "private_chat"})).await;

    // (txn id, body) -> event id of every acknowledged send.
    let acks: Arc<Mutex<HashMap<(String, String), String>>> = Arc::default();
    // Told by the sender whose acknowledgement is the half-way one.
    let half_acknowledged = Arc::new(Notify::new());
    let mut senders = Vec::new();
    for task in 0..TASKS {
        let (client, room, acks) = (alice.clone(), room.clone(), acks.clone());
        let half_acknowledged = half_acknowledged.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..SENDS {
                let (txn, body) = (format!("pg-{task}-{i}"), format!("msg-{task}-{i}"));
                match client.try_send_text(&room, &txn, &body).await {
                    Ok((200, resp)) => {
                        let id = resp["event_id"].as_str().expect("event_id").to_owned();
                        let mut acks = acks.lock().unwrap();
                        acks.insert((txn, body), id);
                        if acks.len() == TASKS * SENDS / 2 {
                            half_acknowledged.notify_one();
                        }
                    }
                    Ok((status, resp)) => panic!("send {txn} got {status} {resp}"),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), half_acknowledged.notified())
        .await
        .expect("half the sends acknowledged within 60 s");
    server.kill_hard();
    for sender in senders {
        sender.await.expect("sender panicked");
    }
    let acks = acks.lock().unwrap().clone();
    assert!(acks.len() < TASKS * SENDS, "the kill came after every send");
    eprintln!(
        "{} of {} sends acknowledged before SIGKILL",
        acks.len(),
        TASKS * SENDS
    );
    server.restart().await;

    // Every acknowledged message is there exactly once, under its id.
    let history = alice.room_history(&room).await;
    let bodies = message_bodies(&history);
    for ((txn, body), event_id) in &acks {
        assert_eq!(
            bodies.iter().filter(|b| *b == body).count(),
            1,
            "{txn}: {body} must be in the history exactly once"
        );
        assert!(
            history.iter().any(|e| e["event_id"] == event_id.as_str()),
            "{txn}: acknowledged event {event_id} missing"
        );
    }
    // A retried transaction id gets the same event id and adds nothing.
    for ((txn, body), event_id) in acks.iter().take(10) {
        assert_eq!(
            &alice.send_text(&room, txn, body).await,
            event_id,
            "retry of {txn}"
        );
    }
    let after = message_bodies(&alice.room_history(&room).await);
    assert_eq!(after.len(), bodies.len(), "retries must not add events");
    server.stop().await;
}

/// The queries the everyday client endpoints added on PostgreSQL: the
/// user directory (its JSON paths and `LIKE` escaping), relations and
/// threads (the JSON expression index), profile fields, reports and
/// deactivation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_profiles_reports_and_deactivation_on_postgres() {
    let db = TestDatabase::create("cs");
    let mut server = TestServer::start_with(server_options(&db)).await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let carol = Client::register(&server, "carol").await;
    let me = enc(&bob.user_id);
    assert_ok(
        bob.put(
            &format!("{V3}/profile/{me}/displayname"),
            &json!({"displayname": "Bobby 50%"}),
        )
        .await,
    );
    assert_ok(
        bob.put(&format!("{V3}/profile/{me}/m.tz"), &json!({"m.tz": "UTC"}))
            .await,
    );
    let room = alice
        .create_room(&json!({"preset": "public_chat", "name": "Before"}))
        .await;
    assert_ok(bob.join(&room).await);
    carol.create_room(&json!({})).await;

    let search = |term: &str| json!({"search_term": term});
    let (status, found) = alice
        .post(&format!("{V3}/user_directory/search"), &search("50%"))
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        found["results"],
        json!([{"user_id": bob.user_id, "display_name": "Bobby 50%"}])
    );
    let (_, found) = alice
        .post(&format!("{V3}/user_directory/search"), &search("carol"))
        .await;
    assert_eq!(
        found["results"],
        json!([]),
        "Carol shares no room and is in no public one"
    );
    let (_, profile) = alice.get(&format!("{V3}/profile/{me}")).await;
    assert_eq!(profile, json!({"displayname": "Bobby 50%", "m.tz": "UTC"}));

    // Threads, edits and their bundles, through PostgreSQL's JSON index.
    let root = alice.send_text(&room, "root", "root").await;
    let reply = json!({"msgtype": "m.text", "body": "in thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    let path = |txn: &str| format!("{V3}/rooms/{}/send/m.room.message/{txn}", enc(&room));
    assert_ok(bob.put(&path("r1"), &reply).await);
    let edit = json!({"msgtype": "m.text", "body": "* root!", "m.new_content": {"msgtype": "m.text", "body": "root!"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": root}});
    assert_ok(alice.put(&path("e1"), &edit).await);
    let v1 = "/_matrix/client/v1";
    let (_, threads) = bob.get(&format!("{v1}/rooms/{}/threads", enc(&room))).await;
    let bundle = &threads["chunk"][0]["unsigned"]["m.relations"];
    assert_eq!(
        (
            threads["chunk"][0]["event_id"].as_str(),
            &bundle["m.thread"]["count"]
        ),
        (Some(root.as_str()), &json!(1))
    );
    assert_eq!(bundle["m.thread"]["current_user_participated"], true);
    assert_eq!(
        bundle["m.replace"]["content"]["m.new_content"]["body"],
        "root!"
    );
    let (_, related) = bob
        .get(&format!(
            "{v1}/rooms/{}/relations/{}/m.thread",
            enc(&room),
            enc(&root)
        ))
        .await;
    assert_eq!(related["chunk"][0]["content"]["body"], "in thread");
    // A NUL in an event (legal JSON, which jsonb refuses) neither fails the
    // send nor the reads that look into PDUs.
    let nul = json!({"msgtype": "m.text", "body": "a\u{0}b",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    assert_ok(bob.put(&path("r2"), &nul).await);
    let (_, related) = bob
        .get(&format!(
            "{v1}/rooms/{}/relations/{}/m.thread",
            enc(&room),
            enc(&root)
        ))
        .await;
    assert_eq!(related["chunk"][0]["content"]["body"], "a\u{0}b");

    let spam = alice.send_text(&room, "s1", "spam").await;
    let path = format!("{V3}/rooms/{}/report/{}", enc(&room), enc(&spam));
    assert_ok(
        bob.post(&path, &json!({"reason": "spam", "score": -50}))
            .await,
    );
    let stored = psql(
        &db.url(),
        "SELECT reporter || ' ' || reason || ' ' || score FROM reports",
    );
    assert_eq!(stored, format!("{} spam -50", bob.user_id));

    // Bob deactivates; he left the room, and the state he would read as a
    // former member is the room as he left it.
    let auth = json!({"type": "m.login.password", "user": "bob", "password": tern_tests::PASSWORD});
    let (status, body) = bob
        .post(&format!("{V3}/account/deactivate"), &json!({"auth": auth}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = bob.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 401);
    let (_, member) = alice
        .get(&format!(
            "{V3}/rooms/{}/state/m.room.member/{me}",
            enc(&room)
        ))
        .await;
    assert_eq!(member["membership"], "leave");
    let flag = psql(
        &db.url(),
        &format!(
            "SELECT deactivated_ts IS NOT NULL FROM users WHERE user_id = '{}'",
            bob.user_id
        ),
    );
    assert_eq!(flag, "t");
    let (_, found) = alice
        .post(&format!("{V3}/user_directory/search"), &search("bob"))
        .await;
    assert_eq!(found["results"], json!([]), "gone from the shared room");
    server.stop().await;
}
