//! `--mode chat`: many online users, each in several small rooms, chatting
//! with typing notifications and read receipts flowing ("1,000 online users
//! each in 20 rooms").
//!
//! Setup registers `users` accounts and puts each in `rooms_per_user` rooms
//! of `room_size` members (`chat_layout`), then every user runs one
//! long-poll sync loop. During the load, at `rate` messages per second in
//! total, a random member of a random room sets itself typing, ~200 ms later
//! sends a message into that room; every recipient whose sync brings a
//! message posts an `m.read` receipt for it with probability one half. The
//! checks are the default mode's: every acknowledged message must reach
//! every other member of its room exactly once.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::{now_micros, Api};
use crate::chat_layout::{chat_layout, pick};
use crate::load::{next_batch, note_error, LoadResult};
use crate::report::{
    print_problems, print_traffic, print_usage, DeliveryReport, LoadParts, PhaseSampler,
    ProcReport, SendReport, SyncReport,
};
use crate::setup::{self, Progress, JOIN_PARALLELISM};
use crate::sys::NofileLimit;
use crate::tally::{tally, Tally};

pub const DEFAULT_USERS: usize = 1000;
pub const DEFAULT_ROOMS_PER_USER: usize = 20;
pub const DEFAULT_ROOM_SIZE: usize = 10;
pub const DEFAULT_RATE: f64 = 200.0;
pub const DEFAULT_DURATION_S: f64 = 30.0;

/// From the typing notification to the message, as a person typing a short line.
const TYPING_TO_SEND: Duration = Duration::from_millis(200);
/// The typing notification's `timeout`.
const TYPING_TIMEOUT_MS: u64 = 5_000;
/// Long-poll timeout of the sync loops.
const SYNC_TIMEOUT_MS: u64 = 30_000;
/// The initial sync only needs a `next_batch`: the newest event per room.
const INITIAL_FILTER: &str = r#"{"room":{"timeline":{"limit":1}}}"#;
/// Incremental syncs: a limit high enough that no burst is cut (`limited`).
const SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":1000}}}"#;
const SYNC_RETRY_DELAY: Duration = Duration::from_millis(100);
const INITIAL_SYNC_PARALLELISM: usize = 16;
/// Longest wait, after the deliveries, for receipt requests still in flight.
const RECEIPT_WAIT: Duration = Duration::from_secs(10);

pub struct ChatConfig {
    pub url: String,
    pub users: usize,
    pub rooms_per_user: usize,
    pub room_size: usize,
    pub rate: f64,
    pub duration: Duration,
    pub drain: Duration,
    pub server_pid: Option<u32>,
    pub prefix: String,
}

#[derive(Serialize)]
struct ChatReport {
    mode: &'static str,
    ok: bool,
    config: ConfigReport,
    nofile: NofileLimit,
    setup: SetupReport,
    sends: SendReport,
    /// Per (message, recipient) pair.
    delivery: DeliveryReport,
    sync: SyncReport,
    typing: RequestReport,
    receipts: RequestReport,
    /// Ephemeral events the sync loops received during the load.
    ephemeral_seen: EphemeralSeen,
    /// Present with --server-pid: the server's use over the load and drain.
    server: Option<ProcReport>,
    bench_cpu_s: f64,
    other_cpu_s: Option<f64>,
    errors: Vec<String>,
    lost_sample: Vec<String>,
}

#[derive(Serialize)]
struct ConfigReport {
    url: String,
    users: usize,
    rooms_per_user: usize,
    room_size: usize,
    rooms: usize,
    rate: f64,
    duration_s: f64,
    drain_max_s: f64,
    prefix: String,
}

#[derive(Serialize)]
struct SetupReport {
    register_s: f64,
    rooms_s: f64,
    initial_sync_s: f64,
}

#[derive(Serialize)]
struct RequestReport {
    requests: u64,
    errors: u64,
}

#[derive(Serialize)]
struct EphemeralSeen {
    typing: u64,
    receipt: u64,
}

struct ChatUser {
    user_id: String,
    token: String,
}

struct ChatRoom {
    room_id: String,
    members: Vec<usize>,
}

struct World {
    users: Vec<ChatUser>,
    rooms: Vec<ChatRoom>,
}

/// What one user's sync loop has seen.
struct Inbox {
    index: usize,
    user_id: String,
    token: String,
    /// Message number `k` -> wall-clock arrival time in microseconds.
    arrivals: Mutex<HashMap<u64, u64>>,
    duplicates: AtomicU64,
}

#[derive(Default)]
struct Counters {
    delivered_to_others: AtomicU64,
    sync_requests: AtomicU64,
    sync_errors: AtomicU64,
    sync_limited: AtomicU64,
    typing_requests: AtomicU64,
    typing_errors: AtomicU64,
    receipt_requests: AtomicU64,
    receipt_errors: AtomicU64,
    receipts_in_flight: AtomicU64,
    typing_seen: AtomicU64,
    receipts_seen: AtomicU64,
}

struct Shared {
    api: Api,
    /// `<prefix>-m`: message ids of this run start with it.
    id_prefix: String,
    seed: u64,
    c: Counters,
    errors: Mutex<Vec<String>>,
}

/// One attempted message.
struct Sent {
    k: u64,
    room: usize,
    sender: usize,
    ts_us: u64,
    rtt_us: Option<u64>,
}

/// Runs the mode, prints the summary, writes the JSON; returns whether it was clean.
pub async fn run(
    cfg: &ChatConfig,
    nofile: NofileLimit,
    json: Option<&Path>,
) -> anyhow::Result<bool> {
    if cfg.users < 2 || cfg.room_size < 2 || cfg.room_size > cfg.users {
        bail!("chat needs --users >= 2 and 2 <= --room-size <= --users");
    }
    if cfg.rooms_per_user == 0 || cfg.rate <= 0.0 || cfg.duration.is_zero() {
        bail!("chat needs positive --rooms-per-user, --rate and --duration");
    }
    println!(
        "nofile:   soft {} -> {} (hard {})",
        nofile.soft_before, nofile.soft, nofile.hard
    );
    // One connection per sync loop, plus the messages, typing notifications
    // and receipts in flight.
    let api = Api::new(&cfg.url, cfg.users + 512)?;

    let t = Instant::now();
    let registered = setup::register_users(&api, &cfg.prefix, cfg.users, true).await?;
    let register_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let layout = chat_layout(cfg.users, cfg.rooms_per_user, cfg.room_size);
    let tokens: Vec<String> = registered.iter().map(|(_, t)| t.clone()).collect();
    let room_ids = create_rooms(&api, &layout, &tokens).await?;
    let rooms_s = t.elapsed().as_secs_f64();
    let world = Arc::new(World {
        users: registered
            .into_iter()
            .map(|(user_id, token)| ChatUser { user_id, token })
            .collect(),
        rooms: layout
            .into_iter()
            .zip(room_ids)
            .map(|(members, room_id)| ChatRoom { room_id, members })
            .collect(),
    });

    let shared = Arc::new(Shared {
        api: api.clone(),
        id_prefix: format!("{}-m", cfg.prefix),
        seed: cfg.prefix.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        }),
        c: Counters::default(),
        errors: Mutex::new(Vec::new()),
    });
    let inboxes: Vec<Arc<Inbox>> = world
        .users
        .iter()
        .enumerate()
        .map(|(index, u)| {
            Arc::new(Inbox {
                index,
                user_id: u.user_id.clone(),
                token: u.token.clone(),
                arrivals: Mutex::new(HashMap::new()),
                duplicates: AtomicU64::new(0),
            })
        })
        .collect();
    let t = Instant::now();
    let mut syncers = start_sync_loops(&inboxes, &shared).await?;
    let initial_sync_s = t.elapsed().as_secs_f64();
    println!(
        "setup:    {} users registered in {register_s:.1} s, {} rooms of {} ({} per user) in {rooms_s:.1} s, initial syncs in {initial_sync_s:.1} s (prefix {})",
        cfg.users,
        world.rooms.len(),
        cfg.room_size,
        cfg.rooms_per_user,
        cfg.prefix
    );
    // Only the initial syncs' requests were counted so far; from here on the
    // counters describe the load.
    for c in [
        &shared.c.sync_requests,
        &shared.c.typing_seen,
        &shared.c.receipts_seen,
    ] {
        c.store(0, Relaxed);
    }

    let sampler = PhaseSampler::start(cfg.server_pid)?;
    let (sent, send_elapsed) = send_all(&world, cfg, &shared).await;

    let acked: Vec<&Sent> = sent.iter().filter(|s| s.rtt_us.is_some()).collect();
    let expected: u64 = acked
        .iter()
        .map(|s| world.rooms[s.room].members.len() as u64 - 1)
        .sum();
    let drain_start = Instant::now();
    while drain_start.elapsed() < cfg.drain {
        if shared.c.delivered_to_others.load(Relaxed) >= expected
            && count_missing(&world, &acked, &inboxes) == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_elapsed = drain_start.elapsed();
    let receipts_start = Instant::now();
    while shared.c.receipts_in_flight.load(Relaxed) > 0 && receipts_start.elapsed() < RECEIPT_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage = sampler.finish()?;
    syncers.abort_all();
    let receipts_unfinished = shared.c.receipts_in_flight.load(Relaxed);
    if receipts_unfinished > 0 {
        note_error(
            &shared.errors,
            &anyhow::anyhow!("{receipts_unfinished} receipt requests still unanswered at the end"),
        );
    }

    let Tally {
        delivery_us,
        all_recipients_us,
        lost,
        lost_sample,
    } = {
        let guards: Vec<_> = inboxes.iter().map(|i| i.arrivals.lock().unwrap()).collect();
        let arrivals: Vec<&HashMap<u64, u64>> = guards.iter().map(|g| &**g).collect();
        let sends = acked.iter().map(|s| {
            let members = &world.rooms[s.room].members;
            let recipients: Vec<usize> =
                members.iter().copied().filter(|&m| m != s.sender).collect();
            (s.k, s.ts_us, recipients)
        });
        tally(sends, &arrivals, |k, r| {
            format!("{}{} -> {}", shared.id_prefix, k, inboxes[r].user_id)
        })
    };
    let c = &shared.c;
    let result = LoadResult {
        attempted: sent.len() as u64,
        acked: acked.len() as u64,
        send_errors: (sent.len() - acked.len()) as u64,
        send_elapsed,
        send_rtt_us: acked.iter().filter_map(|s| s.rtt_us).collect(),
        delivery_us,
        all_recipients_us,
        expected_deliveries: expected,
        lost,
        duplicated: inboxes.iter().map(|i| i.duplicates.load(Relaxed)).sum(),
        drain_elapsed,
        sync_requests: c.sync_requests.load(Relaxed),
        sync_errors: c.sync_errors.load(Relaxed),
        sync_limited: c.sync_limited.load(Relaxed),
        error_sample: shared.errors.lock().unwrap().clone(),
        lost_sample,
    };
    let parts = LoadParts::new(result);
    let typing = RequestReport {
        requests: c.typing_requests.load(Relaxed),
        errors: c.typing_errors.load(Relaxed),
    };
    let receipts = RequestReport {
        requests: c.receipt_requests.load(Relaxed),
        errors: c.receipt_errors.load(Relaxed) + receipts_unfinished,
    };
    let report = ChatReport {
        mode: "chat",
        ok: parts.ok() && typing.errors == 0 && receipts.errors == 0,
        config: ConfigReport {
            url: cfg.url.clone(),
            users: cfg.users,
            rooms_per_user: cfg.rooms_per_user,
            room_size: cfg.room_size,
            rooms: world.rooms.len(),
            rate: cfg.rate,
            duration_s: cfg.duration.as_secs_f64(),
            drain_max_s: cfg.drain.as_secs_f64(),
            prefix: cfg.prefix.clone(),
        },
        nofile,
        setup: SetupReport {
            register_s,
            rooms_s,
            initial_sync_s,
        },
        sends: parts.sends,
        delivery: parts.delivery,
        sync: parts.sync,
        typing,
        receipts,
        ephemeral_seen: EphemeralSeen {
            typing: c.typing_seen.load(Relaxed),
            receipt: c.receipts_seen.load(Relaxed),
        },
        server: usage.server,
        bench_cpu_s: usage.bench_cpu_s,
        other_cpu_s: usage.other_cpu_s,
        errors: parts.errors,
        lost_sample: parts.lost_sample,
    };
    print_summary(&report);
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(report.ok)
}

/// Creates every room (its first member creates it, the others join),
/// `JOIN_PARALLELISM` requests at a time; returns the room ids in layout order.
async fn create_rooms(
    api: &Api,
    layout: &[Vec<usize>],
    tokens: &[String],
) -> anyhow::Result<Vec<String>> {
    let limit = Arc::new(Semaphore::new(JOIN_PARALLELISM));
    let mut tasks = JoinSet::new();
    for (r, members) in layout.iter().enumerate() {
        let (api, limit) = (api.clone(), limit.clone());
        let tokens: Vec<String> = members.iter().map(|&m| tokens[m].clone()).collect();
        tasks.spawn(async move {
            let room_id = {
                let _permit = limit.acquire().await?;
                api.create_room(&tokens[0]).await?
            };
            for token in &tokens[1..] {
                let _permit = limit.acquire().await?;
                api.join(token, &room_id)
                    .await
                    .with_context(|| format!("joining {room_id}"))?;
            }
            anyhow::Ok((r, room_id))
        });
    }
    let mut room_ids = vec![String::new(); layout.len()];
    let mut progress = Progress::new("rooms created and joined", layout.len());
    while let Some(res) = tasks.join_next().await {
        let (r, room_id) = res??;
        room_ids[r] = room_id;
        progress.step();
    }
    Ok(room_ids)
}

/// Every user's initial sync (timeline limit 1), then its long-poll loop.
async fn start_sync_loops(
    inboxes: &[Arc<Inbox>],
    shared: &Arc<Shared>,
) -> anyhow::Result<JoinSet<()>> {
    let limit = Arc::new(Semaphore::new(INITIAL_SYNC_PARALLELISM));
    let mut initial = JoinSet::new();
    for inbox in inboxes {
        let (inbox, shared, limit) = (inbox.clone(), shared.clone(), limit.clone());
        initial.spawn(async move {
            let permit = limit.acquire_owned().await?;
            let (v, arrived) = shared
                .api
                .sync(&inbox.token, None, 0, Some(INITIAL_FILTER))
                .await?;
            drop(permit);
            shared.c.sync_requests.fetch_add(1, Relaxed);
            record(&v, arrived, &inbox, &shared, true);
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
            record(&v, arrived, &inbox, &shared, false);
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
/// receipt events.
fn record(v: &Value, arrived_us: u64, inbox: &Inbox, shared: &Arc<Shared>, initial: bool) {
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

fn count_missing(world: &World, acked: &[&Sent], inboxes: &[Arc<Inbox>]) -> u64 {
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

/// Starts message `k` at `start + k / rate` (an open-loop schedule: a slow
/// response delays nothing else) until the duration is over; returns every
/// attempted message and the time from the start to the last response.
async fn send_all(
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

fn print_summary(r: &ChatReport) {
    let c = &r.config;
    println!(
        "chat:     {} users, {} rooms of {} ({} per user), {} msg/s for {} s with typing and receipts, against {}",
        c.users, c.rooms, c.room_size, c.rooms_per_user, c.rate, c.duration_s, c.url
    );
    print_traffic(&r.sends, &r.delivery, &r.sync);
    println!(
        "typing:   {} requests, {} errors; receipts: {} requests, {} errors",
        r.typing.requests, r.typing.errors, r.receipts.requests, r.receipts.errors
    );
    println!(
        "seen:     {} m.typing and {} m.receipt ephemeral events in syncs",
        r.ephemeral_seen.typing, r.ephemeral_seen.receipt
    );
    print_usage(
        r.server.as_ref(),
        r.bench_cpu_s,
        r.other_cpu_s,
        c.duration_s,
    );
    print_problems(&r.sends, &r.delivery, &r.sync, &r.errors, &r.lost_sample);
    if r.typing.errors > 0 || r.receipts.errors > 0 {
        println!(
            "!!! ERRORS: {} failed typing requests, {} failed receipts",
            r.typing.errors, r.receipts.errors
        );
    }
    println!("{}", if r.ok { "OK" } else { "FAILED" });
}
