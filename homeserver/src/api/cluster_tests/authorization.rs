//! A node with a stale view of a room (it never hears the other's
//! changes) cannot commit what the room's current state forbids.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::*;

/// Nodes race on one room's state: B never hears of A's changes (a deaf
/// bus), so only the store's check stands between B's stale view and an
/// event the room's authorization rules forbid.
#[tokio::test]
async fn a_stale_node_cannot_commit_what_the_current_state_forbids() {
    let shared = shared().await;
    let a = node(&shared, MemoryCluster::default().join(1)).await;
    let b = node(&shared, MemoryCluster::default().join(2)).await;
    let alice = register(&a, "alice").await;
    let bob = register(&b, "bob").await;
    let room = shared_room(&a, &b, &alice, &bob).await;
    let put_state = |app: &Router, token: &str, kind: &str, content: Value| {
        let app = app.clone();
        let token = token.to_owned();
        let uri = format!("/_matrix/client/v3/rooms/{room}/state/{kind}/");
        async move { call(&app, "PUT", &uri, Some(&token), Some(&content.to_string())).await }
    };
    // Bob may rename the room (power 50); his node loads that view.
    let levels = json!({"users": {"@alice:localhost": 100, "@bob:localhost": 50},
                        "state_default": 50, "events_default": 0});
    let (status, body) = put_state(&a, &alice, "m.room.power_levels", levels).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = put_state(&b, &bob, "m.room.name", json!({"name": "by bob"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Alice demotes Bob on A; B still believes he may rename.
    let demoted = json!({"users": {"@alice:localhost": 100}, "state_default": 50,
                         "events_default": 0});
    let (status, _) = put_state(&a, &alice, "m.room.power_levels", demoted).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = put_state(&b, &bob, "m.room.name", json!({"name": "stale"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    // Messages are still his to send: the retry authorizes against the new state.
    send(&b, &bob, &room, "m1", "still here").await;

    // Kicked on A, Bob can no longer send through B.
    let (status, _) = call(
        &a,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/kick"),
        Some(&alice),
        Some(r#"{"user_id":"@bob:localhost"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &b,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/m2"),
        Some(&bob),
        Some(r#"{"msgtype":"m.text","body":"after the kick"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // What the room holds: the name Bob set while allowed, nothing after.
    let (status, name) = call(
        &a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(name["name"], "by bob");
}
