//! `tern-bench`: a load generator for Matrix homeservers.
//!
//! It registers users, puts them in rooms, keeps one long-poll `/sync` loop
//! per user running and sends messages, then reports send throughput and
//! round trips, delivery latency from send to arrival in each recipient's
//! sync, and any lost or duplicated deliveries. It only speaks the public
//! Client-Server API, so it can be pointed at any homeserver.
//!
//! Two more modes measure single aspects at scale: `--mode idle-syncs`
//! holds thousands of idle long-polls open and reports the server's memory
//! per open sync (see `idle.rs`); `--mode fanout` sends into one big room and
//! reports how long until every member has each message (see `fanout.rs`).
//! `--mode chat` runs many users in many small rooms, with typing
//! notifications and read receipts alongside the messages (see `chat/`);
//! with `--encrypted` every client encrypts, sharing room keys over
//! to-device (see `chat/e2ee/`).
//!
//! Exit status: 0 when every acknowledged message reached every other member
//! of its room exactly once (with `--encrypted`, every to-device message its
//! device too) and no request failed, 1 otherwise.

mod api;
mod chat;
mod chat_layout;
mod fanout;
mod idle;
mod load;
mod remote_join;
mod report;
mod setup;
mod stats;
mod sys;
mod tally;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::load::{LoadConfig, LoadResult};
use crate::report::{
    print_usage, DeliveryReport, LoadParts, PhaseSampler, ProcReport, SendReport, SyncReport,
};

#[derive(Parser, Debug)]
#[command(
    name = "tern-bench",
    version,
    about = "Load generator for Matrix homeservers"
)]
struct Args {
    /// Base URL of the homeserver, e.g. http://127.0.0.1:8008; several,
    /// comma-separated, are nodes of one deployment (users spread over them)
    #[arg(long)]
    url: String,
    /// Number of users to register (each runs one sync loop); default 8,
    /// 1000 with --mode chat.
    #[arg(long)]
    users: Option<usize>,
    /// Members per room; default: all users in one room (10 with --mode
    /// chat). 2 gives 1:1 rooms.
    #[arg(long)]
    room_size: Option<usize>,
    /// chat: rooms each user is in.
    #[arg(long, default_value_t = chat::DEFAULT_ROOMS_PER_USER)]
    rooms_per_user: usize,
    /// chat: every client encrypts as Element does (device and one-time keys
    /// at setup, room keys shared over to-device, m.room.encrypted messages).
    #[arg(long)]
    encrypted: bool,
    /// Number of concurrent senders.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to send for; default 10, 30 with --mode chat.
    #[arg(long)]
    duration: Option<f64>,
    /// Total messages per second; without it, senders go as fast as they can
    /// (--mode chat: 200).
    #[arg(long)]
    rate: Option<f64>,
    /// Longest wait in seconds, after sending stops, for outstanding deliveries.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Write the full report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// PID of the server process (same machine), to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// User-name and message-id prefix; default: random, so reruns against
    /// the same server don't collide.
    #[arg(long)]
    prefix: Option<String>,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Load)]
    mode: Mode,
    /// idle-syncs: long-polls to hold open at once.
    #[arg(long, default_value_t = 10_000)]
    idle_syncs: usize,
    /// idle-syncs: users the long-polls are spread over.
    #[arg(long, default_value_t = 100)]
    idle_users: usize,
    /// idle-syncs: the `timeout` of each long-poll, in milliseconds; must
    /// outlast opening them all and the liveness check.
    #[arg(long, default_value_t = 120_000)]
    idle_timeout_ms: u64,
    /// idle-syncs: long-polls opened per second.
    #[arg(long, default_value_t = 1_000.0)]
    idle_ramp: f64,
    /// idle-syncs: hold SSE sync streams instead of long-polls.
    #[arg(long)]
    idle_sse: bool,
    /// fanout: messages to send (at --rate, default 10/s).
    #[arg(long, default_value_t = 50)]
    messages: u64,
    /// remote-join: rooms to join, one first join each.
    #[arg(long, default_value_t = 3)]
    rooms: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Sync loops for every user, senders, delivery latency (the default).
    Load,
    /// Server memory per idle open long-poll sync.
    IdleSyncs,
    /// One big room: time until every member has each message.
    Fanout,
    /// Many users in many small rooms, with typing and read receipts.
    Chat,
    /// A user of the first server joins rooms of many members the second
    /// server holds (`--users` members, `--rooms` rooms).
    RemoteJoin,
}

/// The JSON report; field names are the contract with scripts and tests.
#[derive(Serialize)]
struct Report {
    ok: bool,
    config: ConfigReport,
    sends: SendReport,
    delivery: DeliveryReport,
    sync: SyncReport,
    /// Present with --server-pid: the server's use over the load phase.
    server: Option<ProcReport>,
    /// This tool's own CPU over the load phase: it shares the machine.
    bench_cpu_s: f64,
    /// CPU used by every other process on the machine over the load phase
    /// (machine busy time minus server and bench; needs --server-pid). Much
    /// above zero means something else competed for the cores.
    other_cpu_s: Option<f64>,
    errors: Vec<String>,
    lost_sample: Vec<String>,
}

#[derive(Serialize)]
struct ConfigReport {
    url: String,
    users: usize,
    room_size: usize,
    rooms: usize,
    concurrency: usize,
    duration_s: f64,
    rate: Option<f64>,
    drain_max_s: f64,
    prefix: String,
}

/// Users in the default and fan-out modes when --users is not given.
const DEFAULT_USERS: usize = 8;
/// Seconds of sending in the default mode when --duration is not given.
const DEFAULT_DURATION_S: f64 = 10.0;

fn world_duration(args: &Args) -> f64 {
    args.duration.unwrap_or(DEFAULT_DURATION_S)
}

/// A short random prefix without pulling in a random-number crate:
/// `RandomState` is seeded randomly per process.
fn random_prefix() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("tb{:08x}", h.finish() as u32)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Every open long-poll is one socket; thousands need more than the
    // usual soft limit of 1024. Harmless for the small default runs.
    let nofile = sys::raise_nofile_limit()?;
    let prefix = args.prefix.clone().unwrap_or_else(random_prefix);
    if args.encrypted && args.mode != Mode::Chat {
        bail!("--encrypted is for --mode chat");
    }
    let ok = match args.mode {
        Mode::Load => run_load(&args, prefix).await?,
        Mode::IdleSyncs => {
            let Some(server_pid) = args.server_pid else {
                bail!("--mode idle-syncs needs --server-pid: it measures the server's memory");
            };
            let cfg = idle::IdleConfig {
                url: args.url.clone(),
                syncs: args.idle_syncs,
                users: args.idle_users,
                timeout_ms: args.idle_timeout_ms,
                ramp_per_s: args.idle_ramp,
                server_pid,
                prefix,
                sse: args.idle_sse,
            };
            idle::run(&cfg, nofile, args.json.as_deref()).await?
        }
        Mode::Fanout => {
            let cfg = fanout::FanoutConfig {
                url: args.url.clone(),
                users: args.users.unwrap_or(DEFAULT_USERS),
                messages: args.messages,
                rate: args.rate.unwrap_or(fanout::DEFAULT_RATE),
                concurrency: args.concurrency,
                drain: Duration::from_secs_f64(args.drain),
                server_pid: args.server_pid,
                prefix,
            };
            fanout::run(&cfg, nofile, args.json.as_deref()).await?
        }
        Mode::Chat => {
            let cfg = chat::ChatConfig {
                url: args.url.clone(),
                users: args.users.unwrap_or(chat::DEFAULT_USERS),
                rooms_per_user: args.rooms_per_user,
                room_size: args.room_size.unwrap_or(chat::DEFAULT_ROOM_SIZE),
                rate: args.rate.unwrap_or(chat::DEFAULT_RATE),
                duration: Duration::from_secs_f64(
                    args.duration.unwrap_or(chat::DEFAULT_DURATION_S),
                ),
                drain: Duration::from_secs_f64(args.drain),
                server_pid: args.server_pid,
                prefix,
                encrypted: args.encrypted,
            };
            chat::run(&cfg, nofile, args.json.as_deref()).await?
        }
        Mode::RemoteJoin => {
            let cfg = remote_join::RemoteJoinConfig {
                url: args.url.clone(),
                users: args.users.unwrap_or(1000),
                rooms: args.rooms,
                prefix,
            };
            remote_join::run(&cfg, args.json.as_deref()).await?
        }
    };
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// The default mode; returns whether the run was clean.
async fn run_load(args: &Args, prefix: String) -> anyhow::Result<bool> {
    let users = args.users.unwrap_or(DEFAULT_USERS);
    let duration = args.duration.unwrap_or(DEFAULT_DURATION_S);
    let room_size = args.room_size.unwrap_or(users).min(users);
    if users < 2 || room_size < 2 {
        bail!(
            "need at least 2 users and a room size of at least 2, or there is nobody to deliver to"
        );
    }
    if args.concurrency == 0 || duration <= 0.0 || args.rate.is_some_and(|r| r <= 0.0) {
        bail!("--concurrency, --duration and --rate must be positive");
    }

    // One client for everything; one connection per sync loop and per sender
    // (HTTP/1.1 has no multiplexing) plus a few spare.
    let api = api::Api::new(&args.url, users + args.concurrency + 8)?;

    let t = Instant::now();
    let world = Arc::new(setup::build_world(&api, &prefix, users, room_size).await?);
    println!(
        "setup: {} users in {} room(s) in {:.2} s (prefix {prefix})",
        world.users.len(),
        world.rooms.len(),
        t.elapsed().as_secs_f64()
    );

    let cfg = LoadConfig {
        prefix: prefix.clone(),
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(duration),
        rate: args.rate,
        drain: Duration::from_secs_f64(args.drain),
        sender: None,
        max_messages: None,
    };
    // Sample around the load phase only: registration's password hashing
    // would otherwise dominate the server's CPU figure.
    let sampler = PhaseSampler::start(args.server_pid)?;
    let result = load::run(&api, world.clone(), &cfg).await?;
    let usage = sampler.finish()?;

    let mut report = build_report(
        args,
        &world,
        room_size,
        prefix,
        result,
        usage.server,
        usage.bench_cpu_s,
    );
    report.other_cpu_s = usage.other_cpu_s;
    print_summary(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(report.ok)
}

fn build_report(
    args: &Args,
    world: &setup::World,
    room_size: usize,
    prefix: String,
    r: LoadResult,
    server: Option<ProcReport>,
    bench_cpu_s: f64,
) -> Report {
    let parts = LoadParts::new(r);
    Report {
        ok: parts.ok(),
        config: ConfigReport {
            url: args.url.clone(),
            users: world.users.len(),
            room_size,
            rooms: world.rooms.len(),
            concurrency: args.concurrency,
            duration_s: world_duration(args),
            rate: args.rate,
            drain_max_s: args.drain,
            prefix,
        },
        sends: parts.sends,
        delivery: parts.delivery,
        sync: parts.sync,
        server,
        bench_cpu_s,
        other_cpu_s: None,
        errors: parts.errors,
        lost_sample: parts.lost_sample,
    }
}

fn print_summary(r: &Report) {
    let c = &r.config;
    let mode = match c.rate {
        Some(rate) => format!("{rate} msg/s"),
        None => "max throughput".to_string(),
    };
    println!(
        "load: {} users, {} room(s) of up to {}, {} senders, {} s, {mode}, against {}",
        c.users, c.rooms, c.room_size, c.concurrency, c.duration_s, c.url
    );
    report::print_traffic(&r.sends, &r.delivery, &r.sync);
    print_usage(
        r.server.as_ref(),
        r.bench_cpu_s,
        r.other_cpu_s,
        c.duration_s,
    );
    report::print_problems(&r.sends, &r.delivery, &r.sync, &r.errors, &r.lost_sample);
    println!("{}", if r.ok { "OK" } else { "FAILED" });
}
