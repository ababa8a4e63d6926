//! `--mode fanout`: one room of `users` members, every member long-polling,
//! one member sending `messages` messages at `rate` per second. The headline
//! figure is per message: from the send until the *last* other member's sync
//! has it, which is what the slowest reader of a big room waits. The sync
//! loops, drain and loss/duplicate checks are the default mode's (`load.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::api::Api;
use crate::load::{self, LoadConfig};
use crate::report::{
    print_problems, print_traffic, print_usage, DeliveryReport, LoadParts, PhaseSampler,
    ProcReport, SendReport, SyncReport,
};
use crate::setup::{self, Room, User, World};
use crate::stats::Summary;
use crate::sys::NofileLimit;

/// Messages per second when `--rate` is not given.
pub const DEFAULT_RATE: f64 = 10.0;

pub struct FanoutConfig {
    pub url: String,
    pub users: usize,
    pub messages: u64,
    pub rate: f64,
    pub concurrency: usize,
    pub drain: Duration,
    pub server_pid: Option<u32>,
    pub prefix: String,
}

#[derive(Serialize)]
struct FanoutReport {
    mode: &'static str,
    ok: bool,
    config: ConfigReport,
    nofile: NofileLimit,
    setup: SetupReport,
    /// Per message that reached every other member: send to arrival at the
    /// last of them.
    all_members_ms: Summary,
    /// Messages that reached every other member; the rest show in `delivery.lost`.
    complete_messages: u64,
    sends: SendReport,
    /// Per (message, recipient) pair.
    delivery: DeliveryReport,
    sync: SyncReport,
    /// Present with --server-pid: the server's use over the sending and drain.
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
    messages: u64,
    rate: f64,
    concurrency: usize,
    drain_max_s: f64,
    prefix: String,
}

#[derive(Serialize)]
struct SetupReport {
    register_s: f64,
    join_s: f64,
    initial_sync_s: f64,
}

/// Runs the mode, prints the summary, writes the JSON; returns whether it was clean.
pub async fn run(
    cfg: &FanoutConfig,
    nofile: NofileLimit,
    json: Option<&Path>,
) -> anyhow::Result<bool> {
    if cfg.users < 2 || cfg.messages == 0 || cfg.concurrency == 0 || cfg.rate <= 0.0 {
        bail!("fanout needs --users >= 2 and positive --messages, --rate and --concurrency");
    }
    println!(
        "nofile:   soft {} -> {} (hard {})",
        nofile.soft_before, nofile.soft, nofile.hard
    );
    let api = Api::new(&cfg.url, cfg.users + cfg.concurrency + 8)?;

    let t = Instant::now();
    let registered = setup::register_users(&api, &cfg.prefix, cfg.users, true).await?;
    let register_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let room_id = api.create_room(&registered[0].1).await?;
    let joiners: Vec<String> = registered[1..].iter().map(|(_, t)| t.clone()).collect();
    setup::join_all(&api, &room_id, &joiners, true).await?;
    let join_s = t.elapsed().as_secs_f64();
    let world = Arc::new(World {
        users: registered
            .into_iter()
            .map(|(user_id, token)| User {
                user_id,
                token,
                room: 0,
            })
            .collect(),
        rooms: vec![Room {
            room_id,
            members: (0..cfg.users).collect(),
        }],
    });

    let t = Instant::now();
    let syncing = load::start_syncing(&api, &world, &cfg.prefix).await?;
    let initial_sync_s = t.elapsed().as_secs_f64();
    println!(
        "setup:    {} users registered in {register_s:.1} s, joined in {join_s:.1} s, initial syncs in {initial_sync_s:.1} s (prefix {})",
        cfg.users, cfg.prefix
    );

    let send_s = cfg.messages as f64 / cfg.rate;
    let load_cfg = LoadConfig {
        prefix: cfg.prefix.clone(),
        concurrency: cfg.concurrency.min(cfg.messages as usize),
        // The message count ends the sending; the duration only has to
        // leave room for the last message's slot in the schedule.
        duration: Duration::from_secs_f64(send_s + 1.0),
        rate: Some(cfg.rate),
        drain: cfg.drain,
        sender: Some(0),
        max_messages: Some(cfg.messages),
    };
    // Sample around sending and drain only, not the setup's hashing and
    // initial syncs.
    let sampler = PhaseSampler::start(cfg.server_pid)?;
    let result = load::measure(&api, world, &load_cfg, syncing).await?;
    let usage = sampler.finish()?;

    let parts = LoadParts::new(result);
    let report = FanoutReport {
        mode: "fanout",
        ok: parts.ok() && parts.sends.acked == cfg.messages,
        config: ConfigReport {
            url: cfg.url.clone(),
            users: cfg.users,
            messages: cfg.messages,
            rate: cfg.rate,
            concurrency: load_cfg.concurrency,
            drain_max_s: cfg.drain.as_secs_f64(),
            prefix: cfg.prefix.clone(),
        },
        nofile,
        setup: SetupReport {
            register_s,
            join_s,
            initial_sync_s,
        },
        complete_messages: parts.all_recipients_us.len() as u64,
        all_members_ms: Summary::from_micros(parts.all_recipients_us),
        sends: parts.sends,
        delivery: parts.delivery,
        sync: parts.sync,
        server: usage.server,
        bench_cpu_s: usage.bench_cpu_s,
        other_cpu_s: usage.other_cpu_s,
        errors: parts.errors,
        lost_sample: parts.lost_sample,
    };

    print_summary(&report, send_s);
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(report.ok)
}

fn print_summary(r: &FanoutReport, send_s: f64) {
    let c = &r.config;
    println!(
        "fanout:   {} members in one room, {} messages at {} msg/s from one sender, against {}",
        c.users, c.messages, c.rate, c.url
    );
    let a = &r.all_members_ms;
    println!(
        "all members: {} of {} messages reached all {} others; until the last: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.complete_messages,
        r.sends.acked,
        c.users - 1,
        a.p50,
        a.p99,
        a.max
    );
    print_traffic(&r.sends, &r.delivery, &r.sync);
    print_usage(r.server.as_ref(), r.bench_cpu_s, r.other_cpu_s, send_s);
    print_problems(&r.sends, &r.delivery, &r.sync, &r.errors, &r.lost_sample);
    println!("{}", if r.ok { "OK" } else { "FAILED" });
}
