//! Power changes sent to two nodes at once: whichever commits first wins,
//! every node serves one order, and in it no event breaks the rules.

use std::collections::HashSet;

use serde_json::{json, Value};
use tern_tests::{assert_ok, enc, eventually, Client, V3};

use crate::stack::Stack;

/// Power levels with `admin` at 100 and `moderator` at `level`; renaming the
/// room needs 50.
fn power_levels(admin: &str, moderator: &str, level: i64) -> Value {
    json!({
        "users": {admin: 100, moderator: level},
        "users_default": 0, "events_default": 0, "state_default": 50,
        "ban": 50, "kick": 50, "redact": 50, "invite": 0,
        "events": {"m.room.power_levels": 100, "m.room.name": 50},
    })
}

/// A moderator renames the room on one node while the admin demotes them on
/// another, at the same moment, round after round. Whichever commits first
/// wins; every node serves one order, and in it no rename follows the
/// demotion that forbids it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_changes_on_two_nodes_at_once_keep_the_rules() {
    let stack = Stack::start("auth");
    let nodes = stack.nodes().await;
    let admin = Client::register(&nodes[0], "admin").await;
    let moderator = Client::register(&nodes[1], "moderator").await;
    let room = admin.create_room(&json!({"preset": "public_chat"})).await;
    assert_ok(moderator.join(&room).await);
    let levels_path = format!("{V3}/rooms/{}/state/m.room.power_levels/", enc(&room));
    let name_path = format!("{V3}/rooms/{}/state/m.room.name/", enc(&room));
    let (mut renamed, mut refused) = (HashSet::new(), HashSet::new());
    for round in 0..12 {
        let promote = power_levels(&admin.user_id, &moderator.user_id, 50);
        assert_ok(admin.put(&levels_path, &promote).await);
        // Node 2 hears of the promotion, so both requests race on equal terms.
        eventually("node 2 has the promotion", async || {
            let levels = assert_ok(moderator.get(&levels_path).await);
            levels["users"][&moderator.user_id] == 50
        })
        .await;
        let demote = power_levels(&admin.user_id, &moderator.user_id, 0);
        let name = format!("round {round}");
        let rename_body = json!({ "name": name });
        let (demoted, rename) = tokio::join!(
            admin.put(&levels_path, &demote),
            moderator.put(&name_path, &rename_body)
        );
        assert_eq!(demoted.0, 200, "the demotion failed: {demoted:?}");
        match rename {
            (200, _) => renamed.insert(name),
            (403, body) => {
                assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
                refused.insert(name)
            }
            other => panic!("round {round}: the rename got {other:?}"),
        };
    }
    eprintln!(
        "renames before the demotion: {}, refused after it: {}",
        renamed.len(),
        refused.len()
    );

    // Every node serves the same order of events, once it has them all (a
    // node may be a moment behind the bus).
    let summary = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{} {} {}", e["event_id"], e["type"], e["sender"]))
            .collect()
    };
    let orders = eventually("every node serving as many events", async || {
        let mut orders = Vec::new();
        for node in &nodes {
            orders.push(summary(&admin.on(node).room_history(&room).await));
        }
        let lengths: Vec<usize> = orders.iter().map(Vec::len).collect();
        if lengths.iter().all(|&n| n == lengths[0]) {
            Ok(orders)
        } else {
            Err(lengths)
        }
    })
    .await;
    let history = admin.on(&nodes[0]).room_history(&room).await;
    for (n, order) in orders.iter().enumerate().skip(1) {
        if let Some(i) =
            (0..order.len().max(orders[0].len())).find(|&i| order.get(i) != orders[0].get(i))
        {
            panic!(
                "node {n} serves another order than node 0 from event {i}:\n{:#?}\nagainst\n{:#?}",
                &order[i.saturating_sub(2)..order.len().min(i + 3)],
                &orders[0][i.saturating_sub(2)..orders[0].len().min(i + 3)]
            );
        }
    }
    // Replayed in that order, each rename comes while the moderator may.
    let mut level = 0;
    let mut names = HashSet::new();
    for event in &history {
        match event["type"].as_str() {
            Some("m.room.power_levels") => {
                level = event["content"]["users"][&moderator.user_id]
                    .as_i64()
                    .unwrap_or(0);
            }
            Some("m.room.name") if event["sender"] == moderator.user_id => {
                assert!(level >= 50, "a rename at level {level}: {event}");
                names.insert(event["content"]["name"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
    }
    assert_eq!(names, renamed, "accepted renames and the history disagree");
    assert_eq!(level, 0);
}
