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
//!
//! With `--encrypted` every client encrypts as Element does: keys uploaded
//! at setup, a room-key share over to-device before a sender's first
//! message in a room, `m.room.encrypted` messages (`e2ee/`).
//!
//! `run` reads as the steps; set-up and the load are here, the sync loops
//! that record arrivals in `sync.rs`, the senders in `send.rs`, the report
//! in `report.rs`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

mod e2ee;
mod report;
mod send;
mod sync;

use self::e2ee::E2ee;
use self::report::{print_setup, print_summary, ChatReport, SetupReport};
use self::send::{send_all, Sent};
use self::sync::{count_missing, start_sync_loops, Inbox};
use crate::api::Api;
use crate::chat_layout::chat_layout;
use crate::load::note_error;
use crate::report::{PhaseSampler, PhaseUsage};
use crate::setup::{self, Progress, JOIN_PARALLELISM};
use crate::sys::NofileLimit;

pub const DEFAULT_USERS: usize = 1000;
pub const DEFAULT_ROOMS_PER_USER: usize = 20;
pub const DEFAULT_ROOM_SIZE: usize = 10;
pub const DEFAULT_RATE: f64 = 200.0;
pub const DEFAULT_DURATION_S: f64 = 30.0;

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
    /// Every client encrypts (`e2ee/`).
    pub encrypted: bool,
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
    to_device_seen: AtomicU64,
}

impl Counters {
    /// Zeroes the counters the initial syncs moved.
    fn reset_for_load(&self) {
        for c in [
            &self.sync_requests,
            &self.typing_seen,
            &self.receipts_seen,
            &self.to_device_seen,
        ] {
            c.store(0, Relaxed);
        }
    }
}

struct Shared {
    api: Api,
    /// `<prefix>-m`: message ids of this run start with it.
    id_prefix: String,
    seed: u64,
    c: Counters,
    errors: Mutex<Vec<String>>,
    /// With `--encrypted`.
    e2ee: Option<E2ee>,
}

impl Shared {
    fn new(api: Api, prefix: &str, e2ee: Option<E2ee>) -> Self {
        Self {
            api,
            e2ee,
            id_prefix: format!("{prefix}-m"),
            seed: prefix.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            }),
            c: Counters::default(),
            errors: Mutex::new(Vec::new()),
        }
    }
}

/// Runs the mode, prints the summary, writes the JSON; returns whether it was clean.
pub async fn run(
    cfg: &ChatConfig,
    nofile: NofileLimit,
    json: Option<&Path>,
) -> anyhow::Result<bool> {
    check_config(cfg)?;
    println!(
        "nofile:   soft {} -> {} (hard {})",
        nofile.soft_before, nofile.soft, nofile.hard
    );
    // One connection per sync loop, plus the messages, typing notifications
    // and receipts in flight.
    let api = Api::new(&cfg.url, cfg.users + 512)?;
    let (world, mut setup) = set_up_world(&api, cfg).await?;
    let e2ee = match cfg.encrypted {
        true => Some(E2ee::set_up(&api, &world, &cfg.prefix).await?),
        false => None,
    };
    setup.keys_s = e2ee.as_ref().map(|e| e.upload.elapsed_s);
    let shared = Arc::new(Shared::new(api, &cfg.prefix, e2ee));
    let inboxes = Inbox::for_users(&world.users);
    let t = Instant::now();
    let mut syncers = start_sync_loops(&inboxes, &shared).await?;
    setup.initial_sync_s = t.elapsed().as_secs_f64();
    print_setup(cfg, world.rooms.len(), &setup);
    // Only the initial syncs' requests were counted so far; from here on the
    // counters describe the load.
    shared.c.reset_for_load();

    let load = run_load(cfg, &world, &inboxes, &shared, &mut syncers).await?;
    let report = ChatReport::new(cfg, nofile, setup, &world, &inboxes, &shared, load);
    print_summary(&report);
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(report.ok)
}

fn check_config(cfg: &ChatConfig) -> anyhow::Result<()> {
    if cfg.users < 2 || cfg.room_size < 2 || cfg.room_size > cfg.users {
        bail!("chat needs --users >= 2 and 2 <= --room-size <= --users");
    }
    if cfg.rooms_per_user == 0 || cfg.rate <= 0.0 || cfg.duration.is_zero() {
        bail!("chat needs positive --rooms-per-user, --rate and --duration");
    }
    Ok(())
}

/// Registers the users and creates the rooms; the set-up report has their
/// times (the initial syncs' is filled in later).
async fn set_up_world(api: &Api, cfg: &ChatConfig) -> anyhow::Result<(Arc<World>, SetupReport)> {
    let t = Instant::now();
    let registered = setup::register_users(api, &cfg.prefix, cfg.users, true).await?;
    let register_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let layout = chat_layout(cfg.users, cfg.rooms_per_user, cfg.room_size);
    let tokens: Vec<String> = registered.iter().map(|(_, t)| t.clone()).collect();
    let room_ids = create_rooms(api, &layout, &tokens, cfg.encrypted).await?;
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
    let setup = SetupReport {
        register_s,
        rooms_s,
        keys_s: None,
        initial_sync_s: 0.0,
    };
    Ok((world, setup))
}

/// Creates every room (its first member creates it, the others join),
/// `JOIN_PARALLELISM` requests at a time; returns the room ids in layout
/// order. `encrypted`: with `m.room.encryption` in the initial state.
async fn create_rooms(
    api: &Api,
    layout: &[Vec<usize>],
    tokens: &[String],
    encrypted: bool,
) -> anyhow::Result<Vec<String>> {
    let body = match encrypted {
        true => e2ee::encrypted_room(),
        false => serde_json::json!({"preset": "public_chat"}),
    };
    let limit = Arc::new(Semaphore::new(JOIN_PARALLELISM));
    let mut tasks = JoinSet::new();
    for (r, members) in layout.iter().enumerate() {
        let (api, limit) = (api.clone(), limit.clone());
        let tokens: Vec<String> = members.iter().map(|&m| tokens[m].clone()).collect();
        let body = body.clone();
        tasks.spawn(async move {
            let room_id = {
                let _permit = limit.acquire().await?;
                api.create_room_with(&tokens[0], &body).await?
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

/// What the load measured, for the report.
struct Load {
    /// Every attempted message.
    sent: Vec<Sent>,
    send_elapsed: Duration,
    /// (message, recipient) pairs of the acknowledged messages.
    expected: u64,
    drain_elapsed: Duration,
    usage: PhaseUsage,
    /// Receipt requests still unanswered at the end, counted as errors.
    receipts_unfinished: u64,
}

/// Sends for the duration, waits for the deliveries (up to the drain time)
/// and for the receipts in flight, and stops the sync loops.
async fn run_load(
    cfg: &ChatConfig,
    world: &Arc<World>,
    inboxes: &[Arc<Inbox>],
    shared: &Arc<Shared>,
    syncers: &mut JoinSet<()>,
) -> anyhow::Result<Load> {
    let sampler = PhaseSampler::start(cfg.server_pid)?;
    let (sent, send_elapsed) = send_all(world, cfg, shared).await;

    let acked: Vec<&Sent> = sent.iter().filter(|s| s.rtt_us.is_some()).collect();
    let expected: u64 = acked
        .iter()
        .map(|s| world.rooms[s.room].members.len() as u64 - 1)
        .sum();
    let drain_start = Instant::now();
    while drain_start.elapsed() < cfg.drain {
        if shared.c.delivered_to_others.load(Relaxed) >= expected
            && count_missing(world, &acked, inboxes) == 0
            && shared
                .e2ee
                .as_ref()
                .is_none_or(|e| e.count_missing(inboxes) == 0)
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
    Ok(Load {
        sent,
        send_elapsed,
        expected,
        drain_elapsed,
        usage,
        receipts_unfinished,
    })
}
