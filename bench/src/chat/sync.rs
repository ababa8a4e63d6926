//! The sync loops: one long-poll per user, recording when each message of
//! the run arrives and answering half of them with a read receipt; with
//! `--encrypted`, also when each to-device message arrives, and topping the
//! one-time keys up.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{ChatUser, Sent, Shared, World};
use crate::api::now_micros;
use crate::chat_layout::pick;
use crate::load::{next_batch, note_error};
use crate::setup::Progress;

/// Long-poll timeout of the sync loops.
const SYNC_TIMEOUT_MS: u64 = 30_000;
/// The initial sync only needs a `next_batch`: the newest event per room.
const INITIAL_FILTER: &str = r#"{"room":{"timeline":{"limit":1}}}"#;
/// Incremental syncs: a limit high enough that no burst is cut (`limited`).
const SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":1000}}}"#;
const SYNC_RETRY_DELAY: Duration = Duration::from_millis(100);
const INITIAL_SYNC_PARALLELISM: usize = 16;

/// What one user's sync loop has seen.
pub(super) struct Inbox {
    index: usize,
    pub user_id: String,
    token: String,
    /// Message number `k` -> wall-clock arrival time in microseconds.
    pub arrivals: Mutex<HashMap<u64, u64>>,
    pub duplicates: AtomicU64,
    /// Room-key share number -> arrival time in microseconds.
    pub to_device: Mutex<HashMap<u64, u64>>,
    pub to_device_duplicates: AtomicU64,
}

impl Inbox {
    /// One empty inbox per user, in user order.
    pub fn for_users(users: &[ChatUser]) -> Vec<Arc<Inbox>> {
        users
            .iter()
            .enumerate()
            .map(|(index, u)| {
                Arc::new(Inbox {
                    index,
                    user_id: u.user_id.clone(),
                    token: u.token.clone(),
                    arrivals: Mutex::new(HashMap::new()),
                    duplicates: AtomicU64::new(0),
                    to_device: Mutex::new(HashMap::new()),
                    to_device_duplicates: AtomicU64::new(0),
                })
            })
            .collect()
    }
}

/// Every user's initial sync (timeline limit 1), then its long-poll loop.
pub(super) async fn start_sync_loops(
    inboxes: &[Arc<Inbox>],
    shared: &Arc<Shared>,
) -> anyhow::Result<JoinSet<()>> {
    let limit = Arc::new(Semaphore::new(INITIAL_SYNC_PARALLELISM));
    let mut initial = JoinSet::new();
    for inbox in inboxes {
        let (inbox, shared, limit) = (inbox.clone(), shared.clone(), limit.clone());
        initial.spawn(async move {
            let permit = limit.acquire_owned().await?;
            let sent_us = now_micros();
            let (v, arrived) = shared
                .api
                .sync(&inbox.token, None, 0, Some(INITIAL_FILTER))
                .await?;
            drop(permit);
            shared.c.sync_requests.fetch_add(1, Relaxed);
            record(&v, (sent_us, arrived), &inbox, &shared, true);
            let since = next_batch(&v)?;
            anyhow::Ok((inbox, since))
        });
    }
    let mut loops = JoinSet::new();
    let mut progress = Progress::new("initial syncs", inboxes.len());
    while let Some(res) = initial.join_next().await {
        let (inbox, since) = res??;
        loops.spawn(sync_loop(inbox, shared.clone(), since));
        progress.step();
    }
    Ok(loops)
}

async fn sync_loop(inbox: Arc<Inbox>, shared: Arc<Shared>, mut since: String) {
    loop {
        let sent_us = now_micros();
        let result = shared
            .api
            .sync(
                &inbox.token,
                Some(&since),
                SYNC_TIMEOUT_MS,
                Some(SYNC_FILTER),
            )
            .await;
        shared.c.sync_requests.fetch_add(1, Relaxed);
        let next = result.and_then(|(v, arrived)| {
            record(&v, (sent_us, arrived), &inbox, &shared, false);
            next_batch(&v)
        });
        match next {
            Ok(next) => since = next,
            Err(err) => {
                shared.c.sync_errors.fetch_add(1, Relaxed);
                note_error(&shared.errors, &err);
                tokio::time::sleep(SYNC_RETRY_DELAY).await;
            }
        }
    }
}

/// Notes every message of this run in one sync response, posts a read
/// receipt for half of the new ones from others, and counts typing and
/// receipt events. `times`: when the sync was sent and when its answer
/// arrived, in µs since the epoch.
fn record(v: &Value, times: (u64, u64), inbox: &Inbox, shared: &Arc<Shared>, initial: bool) {
    let (sent_us, arrived_us) = times;
    record_e2ee(v, sent_us, arrived_us, inbox, shared);
    let Some(rooms) = v.pointer("/rooms/join").and_then(Value::as_object) else {
        return;
    };
    let mut receipts = Vec::new();
    {
        let mut arrivals = inbox.arrivals.lock().unwrap();
        for (room_id, room) in rooms {
            if !initial && room.pointer("/timeline/limited") == Some(&Value::Bool(true)) {
                shared.c.sync_limited.fetch_add(1, Relaxed);
            }
            if let Some(events) = room.pointer("/ephemeral/events").and_then(Value::as_array) {
                for e in events {
                    match e.get("type").and_then(Value::as_str) {
                        Some("m.typing") => shared.c.typing_seen.fetch_add(1, Relaxed),
                        Some("m.receipt") => shared.c.receipts_seen.fetch_add(1, Relaxed),
                        _ => 0,
                    };
                }
            }
            let Some(events) = room.pointer("/timeline/events").and_then(Value::as_array) else {
                continue;
            };
            for event in events {
                let Some(k) = event
                    .pointer("/content/tern_bench_id")
                    .and_then(Value::as_str)
                    .and_then(|id| id.strip_prefix(&shared.id_prefix))
                    .and_then(|k| k.parse::<u64>().ok())
                else {
                    continue;
                };
                match arrivals.entry(k) {
                    Entry::Occupied(_) => {
                        inbox.duplicates.fetch_add(1, Relaxed);
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(arrived_us);
                        if event.get("sender").and_then(Value::as_str) == Some(&inbox.user_id) {
                            continue;
                        }
                        shared.c.delivered_to_others.fetch_add(1, Relaxed);
                        let wants = pick(shared.seed, k, 3 + inbox.index as u64) & 1 == 0;
                        if let (true, Some(event_id)) =
                            (wants, event.get("event_id").and_then(Value::as_str))
                        {
                            receipts.push((room_id.clone(), event_id.to_string()));
                        }
                    }
                }
            }
        }
    }
    for (room_id, event_id) in receipts {
        let (api, token) = (shared.api.clone(), inbox.token.clone());
        shared.c.receipt_requests.fetch_add(1, Relaxed);
        shared.c.receipts_in_flight.fetch_add(1, Relaxed);
        let s = shared.clone();
        tokio::spawn(async move {
            if let Err(err) = api.read_receipt(&token, &room_id, &event_id).await {
                s.c.receipt_errors.fetch_add(1, Relaxed);
                note_error(&s.errors, &err);
            }
            s.c.receipts_in_flight.fetch_sub(1, Relaxed);
        });
    }
}

/// Notes the run's to-device messages in one sync response, and hands the
/// one-time key count to the encryption (which may top the keys up).
fn record_e2ee(v: &Value, sent_us: u64, arrived_us: u64, inbox: &Inbox, shared: &Arc<Shared>) {
    let events = v.pointer("/to_device/events").and_then(Value::as_array);
    let events = events.map(Vec::as_slice).unwrap_or_default();
    shared
        .c
        .to_device_seen
        .fetch_add(events.len() as u64, Relaxed);
    let Some(e2ee) = &shared.e2ee else {
        return;
    };
    let mut arrivals = inbox.to_device.lock().unwrap();
    for event in events {
        let Some(n) = event
            .pointer("/content/tern_bench_id")
            .and_then(Value::as_str)
            .and_then(|id| id.strip_prefix(&e2ee.id_prefix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        match arrivals.entry(n) {
            Entry::Occupied(_) => {
                inbox.to_device_duplicates.fetch_add(1, Relaxed);
            }
            Entry::Vacant(slot) => {
                slot.insert(arrived_us);
            }
        }
    }
    drop(arrivals);
    // An absent count is none left (sync v2). An empty map while the
    // device has keys is the server's error, which clients answer with an
    // upload: counted, so the report shows where top-ups came from.
    let counts = v.get("device_one_time_keys_count");
    if counts
        .and_then(Value::as_object)
        .is_some_and(|c| c.is_empty())
    {
        e2ee.c.empty_key_counts.fetch_add(1, Relaxed);
    }
    let count = counts
        .and_then(|c| c.get("signed_curve25519"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    e2ee.on_key_count(shared, inbox.index, &inbox.token, count, sent_us);
}

/// (message, recipient) pairs of `acked` that have not arrived yet.
pub(super) fn count_missing(world: &World, acked: &[&Sent], inboxes: &[Arc<Inbox>]) -> u64 {
    let arrivals: Vec<_> = inboxes.iter().map(|i| i.arrivals.lock().unwrap()).collect();
    acked
        .iter()
        .map(|s| {
            world.rooms[s.room]
                .members
                .iter()
                .filter(|&&m| m != s.sender && !arrivals[m].contains_key(&s.k))
                .count() as u64
        })
        .sum()
}
