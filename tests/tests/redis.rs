//! Typing and presence kept in Redis (`[redis]`), as the distributed
//! deployment runs them: they work as in memory, and last seen survives a
//! restart of the homeserver. Needs Redis at `TERN_TEST_REDIS_URL` (default
//! 127.0.0.1:6379; `scripts/test.sh` makes sure it runs).

use std::time::Duration;

use serde_json::json;
use tern_tests::{
    assert_ok, enc, eventually, next_batch, redis_url, room_of_two, typing_in, ServerOptions,
    TestServer, V3,
};

async fn start(prefix: &str) -> TestServer {
    TestServer::start_with(ServerOptions {
        config_toml: Some(format!(
            "[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
            redis_url()
        )),
        env: vec![("TERN_PRESENCE_OFFLINE_MS".into(), "500".into())],
        ..ServerOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_presence_live_in_redis_and_last_seen_survives_a_restart() {
    let prefix = format!("tern-bb-{}:", std::process::id());
    let mut server = start(&prefix).await;
    let (alice, bob, room) = room_of_two(&server).await;
    let since = next_batch(&bob.sync(None, 0, None).await);

    let path = format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));
    assert_ok(
        alice
            .put(&path, &json!({"typing": true, "timeout": 30_000}))
            .await,
    );
    bob.sync_until(&since, Duration::from_secs(10), None, |r| {
        typing_in(r, &room).is_some_and(|ids| ids == [alice.user_id.clone()])
    })
    .await;

    // Alice syncs once (online), then stops: offline with a last seen.
    alice.sync(None, 0, None).await;
    let status_path = format!("{V3}/presence/{}/status", enc(&alice.user_id));
    let before = eventually("alice offline", async || {
        let status = assert_ok(bob.get(&status_path).await);
        if status["presence"] == "offline" {
            Ok(status)
        } else {
            Err(status)
        }
    })
    .await;
    let seen_before = before["last_active_ago"].as_i64().expect("last seen");

    // A restart of the homeserver keeps it: it lives in Redis.
    server.restart().await;
    let after = assert_ok(bob.get(&status_path).await);
    assert_eq!(after["presence"], "offline", "{after}");
    let seen_after = after["last_active_ago"]
        .as_i64()
        .unwrap_or_else(|| panic!("last seen lost across the restart: {after}"));
    assert!(seen_after >= seen_before, "{seen_before} then {seen_after}");
    server.stop().await;
    clear(&prefix);
}

/// Deletes the keys under `prefix`, so the test leaves Redis as it found it.
fn clear(prefix: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap();
    assert!(!keys.is_empty(), "the server wrote nothing under {prefix}");
    let _: () = redis::cmd("DEL").arg(keys).query(&mut conn).unwrap();
}
