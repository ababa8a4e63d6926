//! A node killed with `kill -9` mid-load: nothing acknowledged is lost or
//! repeated, in sync or in push notifications; a user only it served goes
//! offline by lease; and when it comes back its consumers resume from the
//! committed offsets, without gaps or repeats.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use tern_tests::{
    assert_ok, enc, eventually, eventually_within, joined_timeline, next_batch, text, Client,
    FakeGateway, GatewayMode, V3,
};
use tokio::sync::Notify;

use crate::stack::{history_ids, ids, Stack};

/// Messages each of the three senders sends.
const PER_SENDER: usize = 40;

/// A timeline limit above the whole load: nothing may be skipped as
/// `limited` (which a client would fill by paging back).
const WHOLE_LOAD: &str = r#"{"room":{"timeline":{"limit":1000}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_mid_load_loses_and_repeats_nothing() {
    let stack = Stack::start("kill");
    let mut nodes = stack.nodes().await;
    let owner = Client::register(&nodes[0], "owner").await;
    let room = owner.create_room(&json!({"preset": "public_chat"})).await;
    // One sender per node, and a reader on node 2 (the one that will die).
    let mut senders = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let sender = Client::register(node, &format!("sender{n}")).await;
        assert_ok(sender.join(&room).await);
        senders.push(sender);
    }
    let reader = Client::register(&nodes[1], "reader").await;
    assert_ok(reader.join(&room).await);
    let mut since = next_batch(&reader.sync(None, 0, None).await);
    // A member who is offline with a phone: every message is pushed to it
    // once, decided by whichever node holds the room's share of the push
    // consumer group, dead or alive.
    let gateway = FakeGateway::start(GatewayMode::Accept).await;
    let phone = Client::register(&nodes[2], "phone").await;
    assert_ok(phone.join(&room).await);
    let pusher = json!({
        "pushkey": "phone-key", "kind": "http", "app_id": "org.example.chat",
        "app_display_name": "Chat", "device_display_name": "Phone", "lang": "en",
        "data": {"url": gateway.url()},
    });
    assert_ok(phone.post(&format!("{V3}/pushers/set"), &pusher).await);
    // Once one message is pushed, every node knows the pusher.
    let first = owner.send_text(&room, "warm-up", "before the load").await;
    gateway.wait_for(&first, Duration::from_secs(30)).await;

    // Someone who is online only through node 2 and never comes back: with
    // their node gone, nobody times them out but the lease sweep.
    let ghost = Client::register(&nodes[1], "ghost").await;
    assert_ok(ghost.join(&room).await);
    let ghost_sync = {
        let ghost = ghost.clone();
        tokio::spawn(async move {
            let path = format!("{V3}/sync?timeout=60000");
            let _ = ghost
                .try_request(reqwest::Method::GET, &path, None, None)
                .await;
        })
    };
    let ghost_status = format!("{V3}/presence/{}/status", enc(&ghost.user_id));
    // (Node 1 may take a moment to see that they share the room.)
    eventually("the ghost online", async || {
        owner.get(&ghost_status).await.1["presence"] == "online"
    })
    .await;

    let acknowledged = Mutex::new(HashMap::<String, String>::new());
    let half_acknowledged = Notify::new();
    let backups = [
        nodes[0].base_url(),
        nodes[2].base_url(),
        nodes[0].base_url(),
    ];
    let load = senders.into_iter().enumerate().map(|(n, sender)| {
        let (acknowledged, half_acknowledged) = (&acknowledged, &half_acknowledged);
        let backup = sender.on_url(&backups[n]);
        let room = &room;
        async move {
            let mut client = sender;
            for i in 0..PER_SENDER {
                let txn = format!("s{n}-{i}");
                let body = format!("sender{n} message {i}");
                // Retry the same txn, on another node once this one is gone:
                // the deployment must answer with the same event, not a copy.
                let event_id = eventually(&format!("{txn} acknowledged"), async || {
                    match client.try_send(room, &txn, &text(&body)).await {
                        Ok((200, resp)) => Ok(resp["event_id"].as_str().unwrap().to_owned()),
                        other => {
                            client = backup.clone();
                            Err(other.map_err(|e| e.to_string()))
                        }
                    }
                })
                .await;
                let mut acknowledged = acknowledged.lock().unwrap();
                assert!(acknowledged.insert(body, event_id).is_none());
                if acknowledged.len() == 3 * PER_SENDER / 2 {
                    half_acknowledged.notify_one();
                }
            }
        }
    });
    // Kill node 2 (reader's, sender1's and the ghost's node) half-way
    // through the load.
    let kill = async {
        tokio::time::timeout(Duration::from_secs(60), half_acknowledged.notified())
            .await
            .expect("half the load acknowledged within 60 s");
        nodes[1].kill_hard();
        Instant::now()
    };
    let (_, killed_at) = tokio::join!(futures::future::join_all(load), kill);

    // The reader resumes on node 3 with the token node 2 gave it.
    let reader = reader.on(&nodes[2]);
    let expected = acknowledged.lock().unwrap().clone();
    assert_eq!(expected.len(), 3 * PER_SENDER);
    let mut seen: Vec<String> = Vec::new();
    let last = reader
        .sync_until(&since, Duration::from_secs(30), Some(WHOLE_LOAD), |resp| {
            assert_ne!(
                resp["rooms"]["join"][&room]["timeline"]["limited"],
                json!(true),
                "{resp}"
            );
            seen.extend(ids(&joined_timeline(resp, &room)));
            expected.values().all(|id| seen.contains(id))
        })
        .await;
    since = next_batch(&last);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a message was delivered twice");
    // Both surviving nodes serve the same history, each message once. Node
    // 1 learns of node 3's last appends over the bus, so it may be a moment
    // behind: it must catch up, not stay behind.
    let on_third = history_ids(&reader, &room).await;
    assert_eq!(on_third.len(), 3 * PER_SENDER + 1);
    let first = reader.on(&nodes[0]);
    eventually("node 1 serves the history node 3 serves", async || {
        let on_first = history_ids(&first, &room).await;
        (on_first == on_third).then_some(()).ok_or(on_first.len())
    })
    .await;

    // Every acknowledged message reached the phone's gateway. A node that
    // dies holding the room's partition hands it over after the group's
    // session timeout (10 s).
    eventually_within(
        Duration::from_secs(60),
        "every acknowledged message pushed",
        async || {
            let pushed = pushed_ids(&gateway);
            let missing: Vec<_> = expected
                .iter()
                .filter(|(_, id)| !pushed.contains(id))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} never pushed, e.g. {:?}",
                    missing.len(),
                    missing[0]
                ))
            }
        },
    )
    .await;
    // Decided once per event, even where the dead node's share was handed
    // over. Only a push the killed node had in flight (sent, or taken and
    // not yet finished) goes out again when its lease runs out (30 s):
    // gateways see at least once, and at most a node's 16 requests in
    // flight to one gateway twice.
    let pushed = pushed_ids(&gateway);
    let unique: HashSet<&String> = pushed.iter().collect();
    let repeats = pushed.len() - unique.len();
    assert!(repeats <= 16, "{repeats} pushes repeated: {pushed:?}");
    eprintln!("pushes repeated after the kill: {repeats}");

    // The ghost goes offline once their lease runs out (20 s plus the
    // offline grace), keeping a last-seen time from before the kill.
    ghost_sync.await.expect("ghost sync task");
    let status = eventually_within(Duration::from_secs(60), "the ghost offline", async || {
        let status = assert_ok(owner.get(&ghost_status).await);
        if status["presence"] == "offline" {
            Ok(status)
        } else {
            Err(status)
        }
    })
    .await;
    let ago = status["last_active_ago"].as_u64().expect("last seen kept");
    assert!(ago >= killed_at.elapsed().as_millis() as u64, "{status}");

    // The dead node comes back: its consumers rejoin (the push group among
    // them) and resume from the committed offsets. A client of it continues
    // with the token it holds and gets what was sent since, once; the phone
    // gets each new message once.
    nodes[1].restart().await;
    let back = reader.on(&nodes[1]);
    let mut after = Vec::new();
    for i in 0..5 {
        let txn = format!("after-{i}");
        after.push(
            owner
                .send_text(&room, &txn, &format!("after restart {i}"))
                .await,
        );
    }
    let mut seen_after: Vec<String> = Vec::new();
    back.sync_until(&since, Duration::from_secs(30), Some(WHOLE_LOAD), |resp| {
        seen_after.extend(ids(&joined_timeline(resp, &room)));
        after.iter().all(|id| seen_after.contains(id))
    })
    .await;
    assert_eq!(
        seen_after, after,
        "the restarted node repeated or reordered"
    );
    eventually_within(
        Duration::from_secs(60),
        "the messages sent after the restart pushed",
        async || after.iter().all(|id| pushed_ids(&gateway).contains(id)),
    )
    .await;
    // The barrier: one more message, pushed after any repeat of those
    // before it (one room, one partition, decided in order).
    let barrier = owner.send_text(&room, "barrier", "the last one").await;
    gateway.wait_for(&barrier, Duration::from_secs(60)).await;
    let pushed = pushed_ids(&gateway);
    for id in &after {
        let times = pushed.iter().filter(|p| *p == id).count();
        assert_eq!(times, 1, "{id} was pushed {times} times");
    }
}

fn pushed_ids(gateway: &FakeGateway) -> Vec<String> {
    gateway
        .received()
        .iter()
        .filter_map(|n| n["event_id"].as_str().map(str::to_owned))
        .collect()
}
