//! The senders: an open-loop schedule of messages, each preceded by a
//! typing notification.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use super::{ChatConfig, Shared, World};
use crate::api::now_micros;
use crate::chat_layout::pick;
use crate::load::note_error;

/// From the typing notification to the message, as a person typing a short line.
const TYPING_TO_SEND: Duration = Duration::from_millis(200);
/// The typing notification's `timeout`.
const TYPING_TIMEOUT_MS: u64 = 5_000;

/// One attempted message.
pub(super) struct Sent {
    pub k: u64,
    pub room: usize,
    pub sender: usize,
    pub ts_us: u64,
    pub rtt_us: Option<u64>,
}

/// Starts message `k` at `start + k / rate` (an open-loop schedule: a slow
/// response delays nothing else) until the duration is over; returns every
/// attempted message and the time from the start to the last response.
pub(super) async fn send_all(
    world: &Arc<World>,
    cfg: &ChatConfig,
    shared: &Arc<Shared>,
) -> (Vec<Sent>, Duration) {
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut tasks = JoinSet::new();
    for k in 0u64.. {
        let due = start + Duration::from_secs_f64(k as f64 / cfg.rate);
        if due >= deadline {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let (world, shared, prefix) = (world.clone(), shared.clone(), cfg.prefix.clone());
        tasks.spawn(async move { chat_one(&world, &shared, &prefix, k).await });
    }
    let mut sent = Vec::new();
    while let Some(res) = tasks.join_next().await {
        sent.push(res.expect("sender task panicked"));
    }
    (sent, start.elapsed())
}

/// A random member of a random room types, then sends message `k`.
async fn chat_one(world: &World, shared: &Shared, prefix: &str, k: u64) -> Sent {
    let room = (pick(shared.seed, k, 1) % world.rooms.len() as u64) as usize;
    let r = &world.rooms[room];
    let sender = r.members[(pick(shared.seed, k, 2) % r.members.len() as u64) as usize];
    let user = &world.users[sender];

    shared.c.typing_requests.fetch_add(1, Relaxed);
    if let Err(err) = shared
        .api
        .typing(
            &user.token,
            &r.room_id,
            &user.user_id,
            true,
            TYPING_TIMEOUT_MS,
        )
        .await
    {
        shared.c.typing_errors.fetch_add(1, Relaxed);
        note_error(&shared.errors, &err);
    }
    tokio::time::sleep(TYPING_TO_SEND).await;

    let ts_us = now_micros();
    let content = json!({
        "msgtype": "m.text",
        "body": format!("tern-bench chat message {k} from {}", user.user_id),
        "tern_bench_id": format!("{prefix}-m{k}"),
        "tern_bench_ts": ts_us,
    });
    let txn_id = format!("{prefix}-t{k}");
    let t0 = Instant::now();
    let rtt_us = match shared
        .api
        .send_message(&user.token, &r.room_id, &txn_id, &content)
        .await
    {
        Ok(_) => Some(t0.elapsed().as_micros() as u64),
        Err(err) => {
            note_error(&shared.errors, &err);
            None
        }
    };
    Sent {
        k,
        room,
        sender,
        ts_us,
        rtt_us,
    }
}
