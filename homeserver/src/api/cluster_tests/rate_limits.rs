//! Rate limits hold for the cluster: spreading requests over nodes buys
//! no extra budget.

use std::time::Instant;

use axum::http::StatusCode;

use super::*;

#[tokio::test]
async fn spreading_sends_over_nodes_buys_no_extra_rate() {
    let shared = shared().await;
    let hub = MemoryCluster::default();
    let (a, _) = node_configured(&shared, hub.join(1), false).await;
    let (b, _) = node_configured(&shared, hub.join(2), false).await;
    let alice = register(&a, "alice").await;
    let (status, created) = call(
        &a,
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        Some("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    // The message budget is a burst of 50: alternate nodes until refused.
    let mut refused = None;
    let started = Instant::now();
    for n in 0..100 {
        let app = if n % 2 == 0 { &a } else { &b };
        let (status, body) = call(
            app,
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/r{n}"),
            Some(&alice),
            Some(r#"{"msgtype":"m.text","body":"x"}"#),
        )
        .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
            refused = Some(n);
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let refused = refused.expect("never limited across two nodes");
    // One shared bucket: 50 plus what refilled meanwhile (10/s). Two
    // buckets, one per node, would have taken 100.
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        refused >= 50 && refused <= 51 + refilled && refused < 100,
        "limited after {refused} sends ({refilled} refilled)"
    );
}
