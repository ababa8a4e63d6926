//! The measured part: one long-poll sync loop per user, concurrent senders,
//! then a drain period that waits for every delivery.
//!
//! Every message carries a unique `tern_bench_id` (`<prefix>-m<k>`) and its
//! send time. Each user's sync loop records, per message id, when it first
//! arrived; afterwards every acknowledged message is checked against every
//! other member of its room, which yields delivery latencies, losses and
//! duplicates without trusting anything the server reports about itself.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::{now_micros, Api};
use crate::setup::World;
use crate::tally::{tally, Tally};

/// How long a sync may wait for new events; the usual client value.
const SYNC_TIMEOUT_MS: u64 = 30_000;

/// A large timeline limit so that a burst between two syncs is delivered
/// whole rather than cut down to the newest few events (`limited: true`).
const SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":1000}}}"#;

/// Pause after a failed sync before retrying, so an erroring server is not
/// hammered in a tight loop.
const SYNC_RETRY_DELAY: Duration = Duration::from_millis(100);

/// How many distinct error messages (and lost deliveries) to keep for the report.
pub const SAMPLE_LIMIT: usize = 10;

/// Initial syncs in flight at once. Each returns the full state of the
/// user's rooms, which in a room of a thousand members is heavy for the
/// server; all at once would queue them past the request timeout.
const INITIAL_SYNC_PARALLELISM: usize = 16;

pub struct LoadConfig {
    pub prefix: String,
    pub concurrency: usize,
    pub duration: Duration,
    /// Total messages per second across all senders; `None` sends as fast as
    /// acknowledgements come back.
    pub rate: Option<f64>,
    /// Longest wait, after sending stops, for outstanding deliveries.
    pub drain: Duration,
    /// The one user who sends everything; `None`: users take turns.
    pub sender: Option<usize>,
    /// Stop after this many messages even if the duration is not over.
    pub max_messages: Option<u64>,
}

/// Raw results; `main` turns them into percentiles and the report.
pub struct LoadResult {
    pub attempted: u64,
    pub acked: u64,
    pub send_errors: u64,
    /// From the first send to the last acknowledgement (or failure).
    pub send_elapsed: Duration,
    pub send_rtt_us: Vec<u64>,
    /// One sample per (message, recipient) pair that arrived.
    pub delivery_us: Vec<u64>,
    /// The same, per recipient's server name.
    pub delivery_by_server: Vec<(String, Vec<u64>)>,
    /// Per message that reached every recipient: send to arrival at the last
    /// of them (the fan-out figure).
    pub all_recipients_us: Vec<u64>,
    pub expected_deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub drain_elapsed: Duration,
    pub sync_requests: u64,
    pub sync_errors: u64,
    /// Room timelines that came back with `limited: true`, i.e. with a gap.
    pub sync_limited: u64,
    pub error_sample: Vec<String>,
    /// A few lost deliveries as "message id -> recipient".
    pub lost_sample: Vec<String>,
}

/// What one user's sync loop has seen.
struct Inbox {
    user_id: String,
    /// Message number `k` -> wall-clock arrival time in microseconds.
    arrivals: Mutex<HashMap<u64, u64>>,
    /// Times a message id turned up again in this user's sync stream.
    duplicates: AtomicU64,
}

/// Counters shared by all tasks.
struct Shared {
    /// `<prefix>-m`: message ids of this run start with it.
    id_prefix: String,
    /// First arrivals at a user other than the sender. Only a hint for the
    /// drain loop: the exact check compares against acknowledged sends.
    delivered_to_others: AtomicU64,
    sync_requests: AtomicU64,
    sync_errors: AtomicU64,
    sync_limited: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn note_error(&self, err: &anyhow::Error) {
        note_error(&self.errors, err);
    }
}

/// Keeps the first `SAMPLE_LIMIT` distinct error messages.
pub fn note_error(errors: &Mutex<Vec<String>>, err: &anyhow::Error) {
    let text = format!("{err:#}");
    let mut errors = errors.lock().unwrap();
    if errors.len() < SAMPLE_LIMIT && !errors.contains(&text) {
        errors.push(text);
    }
}

/// One attempted send.
struct Sent {
    k: u64,
    sender: usize,
    ts_us: u64,
    /// Round trip of the PUT; `None` when it failed.
    rtt_us: Option<u64>,
}

/// Every user's sync loop, running.
pub struct Syncing {
    shared: Arc<Shared>,
    inboxes: Vec<Arc<Inbox>>,
    loops: JoinSet<()>,
}

/// Starts the sync loops, then sends and measures.
pub async fn run(api: &Api, world: Arc<World>, cfg: &LoadConfig) -> anyhow::Result<LoadResult> {
    let syncing = start_syncing(api, &world, &cfg.prefix).await?;
    measure(api, world, cfg, syncing).await
}

/// Does every user's initial sync and starts the long-poll loops. Separate
/// from `measure` so that a caller can keep these heavy initial syncs out of
/// what it measures.
pub async fn start_syncing(api: &Api, world: &World, prefix: &str) -> anyhow::Result<Syncing> {
    let shared = Arc::new(Shared {
        id_prefix: format!("{prefix}-m"),
        delivered_to_others: AtomicU64::new(0),
        sync_requests: AtomicU64::new(0),
        sync_errors: AtomicU64::new(0),
        sync_limited: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });
    let inboxes: Vec<Arc<Inbox>> = world
        .users
        .iter()
        .map(|u| {
            Arc::new(Inbox {
                user_id: u.user_id.clone(),
                arrivals: Mutex::new(HashMap::new()),
                duplicates: AtomicU64::new(0),
            })
        })
        .collect();

    // Every user is syncing before the first message goes out, so that no
    // delivery can be missed between an initial sync and the loop.
    let loops = start_sync_loops(api, world, &inboxes, &shared).await?;
    Ok(Syncing {
        shared,
        inboxes,
        loops,
    })
}

/// Sends for the configured duration, drains and checks every delivery.
pub async fn measure(
    api: &Api,
    world: Arc<World>,
    cfg: &LoadConfig,
    syncing: Syncing,
) -> anyhow::Result<LoadResult> {
    let Syncing {
        shared,
        inboxes,
        loops: mut syncers,
    } = syncing;
    let (sent, send_elapsed) = send_all(api, &world, cfg, &shared).await;

    let acked: Vec<&Sent> = sent.iter().filter(|s| s.rtt_us.is_some()).collect();
    let expected: u64 = acked
        .iter()
        .map(|s| recipients(&world, s.sender).count() as u64)
        .sum();

    // Drain: wait until every expected delivery arrived, or the drain period ends.
    let drain_start = Instant::now();
    while drain_start.elapsed() < cfg.drain {
        if shared.delivered_to_others.load(Relaxed) >= expected
            && count_missing(&world, &acked, &inboxes) == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_elapsed = drain_start.elapsed();
    // The loops are parked in 30 s long-polls; nothing more is being measured.
    syncers.abort_all();

    let Tally {
        delivery_us,
        all_recipients_us,
        lost,
        lost_sample,
    } = {
        let guards: Vec<_> = inboxes.iter().map(|i| i.arrivals.lock().unwrap()).collect();
        let arrivals: Vec<&HashMap<u64, u64>> = guards.iter().map(|g| &**g).collect();
        let sends = acked
            .iter()
            .map(|s| (s.k, s.ts_us, recipients(&world, s.sender)));
        tally(sends, &arrivals, |k, r| {
            format!("{}{} -> {}", shared.id_prefix, k, inboxes[r].user_id)
        })
    };
    let delivery_by_server = by_recipient_server(&world, &acked, &inboxes);
    let error_sample = shared.errors.lock().unwrap().clone();

    Ok(LoadResult {
        attempted: sent.len() as u64,
        acked: acked.len() as u64,
        send_errors: (sent.len() - acked.len()) as u64,
        send_elapsed,
        send_rtt_us: acked.iter().filter_map(|s| s.rtt_us).collect(),
        delivery_us,
        delivery_by_server,
        all_recipients_us,
        expected_deliveries: expected,
        lost,
        duplicated: inboxes.iter().map(|i| i.duplicates.load(Relaxed)).sum(),
        drain_elapsed,
        sync_requests: shared.sync_requests.load(Relaxed),
        sync_errors: shared.sync_errors.load(Relaxed),
        sync_limited: shared.sync_limited.load(Relaxed),
        error_sample,
        lost_sample,
    })
}

/// Delivery latencies grouped by the recipient's server (the part of the
/// user id after the first `:`), in server order.
fn by_recipient_server(
    world: &World,
    acked: &[&Sent],
    inboxes: &[Arc<Inbox>],
) -> Vec<(String, Vec<u64>)> {
    let arrivals: Vec<_> = inboxes.iter().map(|i| i.arrivals.lock().unwrap()).collect();
    let mut by: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for s in acked {
        for r in recipients(world, s.sender) {
            if let Some(&at) = arrivals[r].get(&s.k) {
                let user_id = &world.users[r].user_id;
                let server = user_id.split_once(':').map_or("", |(_, d)| d);
                by.entry(server)
                    .or_default()
                    .push(at.saturating_sub(s.ts_us));
            }
        }
    }
    by.into_iter().map(|(s, v)| (s.to_owned(), v)).collect()
}

/// Everyone in the sender's room except the sender.
fn recipients(world: &World, sender: usize) -> impl Iterator<Item = usize> + '_ {
    let room = &world.rooms[world.users[sender].room];
    room.members.iter().copied().filter(move |&m| m != sender)
}

fn count_missing(world: &World, acked: &[&Sent], inboxes: &[Arc<Inbox>]) -> u64 {
    let arrivals: Vec<_> = inboxes.iter().map(|i| i.arrivals.lock().unwrap()).collect();
    acked
        .iter()
        .map(|s| {
            recipients(world, s.sender)
                .filter(|&r| !arrivals[r].contains_key(&s.k))
                .count() as u64
        })
        .sum()
}

/// Does each user's initial sync (which returns at once) and then spawns its
/// long-poll loop from the `next_batch` it got.
async fn start_sync_loops(
    api: &Api,
    world: &World,
    inboxes: &[Arc<Inbox>],
    shared: &Arc<Shared>,
) -> anyhow::Result<JoinSet<()>> {
    let limit = Arc::new(Semaphore::new(INITIAL_SYNC_PARALLELISM));
    let mut initial = JoinSet::new();
    for (i, user) in world.users.iter().enumerate() {
        let (api, token) = (api.clone(), user.token.clone());
        let (inbox, shared, limit) = (inboxes[i].clone(), shared.clone(), limit.clone());
        initial.spawn(async move {
            let permit = limit.acquire_owned().await?;
            let (v, arrived) = api.sync(&token, None, 0, Some(SYNC_FILTER)).await?;
            drop(permit);
            record(&v, arrived, &inbox, &shared, true);
            let since = next_batch(&v)?;
            anyhow::Ok((api, token, inbox, since))
        });
    }
    let mut loops = JoinSet::new();
    while let Some(res) = initial.join_next().await {
        let (api, token, inbox, since) = res??;
        loops.spawn(sync_loop(api, token, inbox, shared.clone(), since));
    }
    Ok(loops)
}

/// Long-polls `/sync` forever (until aborted), recording every message.
async fn sync_loop(
    api: Api,
    token: String,
    inbox: Arc<Inbox>,
    shared: Arc<Shared>,
    mut since: String,
) {
    loop {
        let result = api
            .sync(&token, Some(&since), SYNC_TIMEOUT_MS, Some(SYNC_FILTER))
            .await;
        shared.sync_requests.fetch_add(1, Relaxed);
        let next = result.and_then(|(v, arrived)| {
            record(&v, arrived, &inbox, &shared, false);
            next_batch(&v)
        });
        match next {
            Ok(next) => since = next,
            Err(err) => {
                // Keep the old token: retrying it must not skip or repeat events.
                shared.sync_errors.fetch_add(1, Relaxed);
                shared.note_error(&err);
                tokio::time::sleep(SYNC_RETRY_DELAY).await;
            }
        }
    }
}

pub fn next_batch(v: &Value) -> anyhow::Result<String> {
    v.get("next_batch")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("sync response without next_batch"))
}

/// Notes the arrival of every benchmark message in one sync response.
/// `initial`: the sync without `since`, whose timeline is cut to the filter's
/// limit in any room with a longer history (a big room's joins alone exceed
/// it); that is not a gap in the run, so it is not counted as limited.
fn record(v: &Value, arrived_us: u64, inbox: &Inbox, shared: &Shared, initial: bool) {
    let Some(rooms) = v.pointer("/rooms/join").and_then(Value::as_object) else {
        return;
    };
    let mut arrivals = inbox.arrivals.lock().unwrap();
    for room in rooms.values() {
        if !initial && room.pointer("/timeline/limited") == Some(&Value::Bool(true)) {
            shared.sync_limited.fetch_add(1, Relaxed);
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
                continue; // not a message of this run
            };
            match arrivals.entry(k) {
                // Keep the first arrival: that is when the user saw it.
                Entry::Occupied(_) => {
                    inbox.duplicates.fetch_add(1, Relaxed);
                }
                Entry::Vacant(slot) => {
                    slot.insert(arrived_us);
                    if event.get("sender").and_then(Value::as_str) != Some(&inbox.user_id) {
                        shared.delivered_to_others.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
}

/// Runs `cfg.concurrency` senders until the duration is over; returns every
/// attempted send and the time from the start to the last response.
async fn send_all(
    api: &Api,
    world: &Arc<World>,
    cfg: &LoadConfig,
    shared: &Arc<Shared>,
) -> (Vec<Sent>, Duration) {
    let start = Instant::now();
    let deadline = start + cfg.duration;
    // Message numbers are handed out from one counter, so ids and txn ids are
    // unique across senders, and with --rate message k is due at start + k/rate
    // regardless of which sender takes it (an open-loop schedule: a slow
    // response delays one sender, not the whole offered load, as long as a
    // sender is free).
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = JoinSet::new();
    for _ in 0..cfg.concurrency {
        let (api, world, shared, next) = (api.clone(), world.clone(), shared.clone(), next.clone());
        let (prefix, rate, sender) = (cfg.prefix.clone(), cfg.rate, cfg.sender);
        let max_messages = cfg.max_messages.unwrap_or(u64::MAX);
        senders.spawn(async move {
            let mut sent = Vec::new();
            loop {
                let k = next.fetch_add(1, Relaxed);
                if k >= max_messages {
                    break;
                }
                match rate {
                    Some(rate) => {
                        let due = start + Duration::from_secs_f64(k as f64 / rate);
                        if due >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                    }
                    None if Instant::now() >= deadline => break,
                    None => {}
                }
                let sender = sender.unwrap_or((k % world.users.len() as u64) as usize);
                sent.push(send_one(&api, &world, &shared, &prefix, k, sender).await);
            }
            sent
        });
    }
    let mut sent = Vec::new();
    while let Some(res) = senders.join_next().await {
        sent.extend(res.expect("sender task panicked"));
    }
    (sent, start.elapsed())
}

/// Sends message `k` from user `sender` into that user's room.
async fn send_one(
    api: &Api,
    world: &World,
    shared: &Shared,
    prefix: &str,
    k: u64,
    sender: usize,
) -> Sent {
    let user = &world.users[sender];
    let room = &world.rooms[user.room];
    let ts_us = now_micros();
    let content = json!({
        "msgtype": "m.text",
        "body": format!("tern-bench message {k} from {}", user.user_id),
        "tern_bench_id": format!("{prefix}-m{k}"),
        "tern_bench_ts": ts_us,
    });
    let txn_id = format!("{prefix}-t{k}");
    let t0 = Instant::now();
    let rtt_us = match api
        .send_message(&user.token, &room.room_id, &txn_id, &content)
        .await
    {
        Ok(_event_id) => Some(t0.elapsed().as_micros() as u64),
        Err(err) => {
            shared.note_error(&err);
            None
        }
    };
    Sent {
        k,
        sender,
        ts_us,
        rtt_us,
    }
}
