//! The senders: an open-loop schedule of messages, each preceded by a
//! typing notification (and, encrypted, by a room-key share when the
//! sender's session in the room is new).

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
    let typed = Instant::now();
    // Element shares the room key while the user types (prepareToEncrypt),
    // so the share runs in the typing gap; one slower than the gap delays
    // the message, as it would there.
    let megolm = match &shared.e2ee {
        Some(e2ee) => Some(e2ee.prepare(shared, world, sender, room).await),
        None => None,
    };
    tokio::time::sleep_until((typed + TYPING_TO_SEND).into()).await;

    let ts_us = now_micros();
    let body = format!("tern-bench chat message {k} from {}", user.user_id);
    let id = format!("{prefix}-m{k}");
    let (event_type, content) = match (&shared.e2ee, &megolm) {
        (Some(e2ee), Some(megolm)) => {
            let seed = pick(shared.seed, k, 4);
            let content =
                e2ee.message_content(sender, &r.room_id, megolm, &body, seed, (&id, ts_us));
            ("m.room.encrypted", content)
        }
        _ => (
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": body,
                "tern_bench_id": id,
                "tern_bench_ts": ts_us,
            }),
        ),
    };
    let txn_id = format!("{prefix}-t{k}");
    let t0 = Instant::now();
    let rtt_us = match shared
        .api
        .send_event(&user.token, &r.room_id, event_type, &txn_id, &content)
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
