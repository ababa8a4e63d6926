//! `tern-bench`: a load generator for Matrix homeservers.
//!
//! It registers users, puts them in rooms, keeps one long-poll `/sync` loop
//! per user running and sends messages, then reports send throughput and
//! round trips, delivery latency from send to arrival in each recipient's
//! sync, and any lost or duplicated deliveries. It only speaks the public
//! Client-Server API, so it can be pointed at any homeserver.
//!
//! Exit status: 0 when every acknowledged message reached every other member
//! of its room exactly once and no request failed, 1 otherwise.

mod api;
mod load;
mod setup;
mod stats;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use serde::Serialize;

use crate::load::{LoadConfig, LoadResult};
use crate::stats::{machine_busy_cpu_s, reset_peak_rss, sample_process, ProcSample, Summary};

#[derive(Parser, Debug)]
#[command(
    name = "tern-bench",
    version,
    about = "Load generator for Matrix homeservers"
)]
struct Args {
    /// Base URL of the homeserver, e.g. http://127.0.0.1:8008
    #[arg(long)]
    url: String,
    /// Number of users to register (each runs one sync loop).
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// Members per room; default: all users in one room. 2 gives 1:1 rooms.
    #[arg(long)]
    room_size: Option<usize>,
    /// Number of concurrent senders.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Total messages per second; without it, senders go as fast as they can.
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

#[derive(Serialize)]
struct SendReport {
    attempted: u64,
    acked: u64,
    errors: u64,
    elapsed_s: f64,
    acks_per_sec: f64,
    rtt_ms: Summary,
}

#[derive(Serialize)]
struct DeliveryReport {
    /// (message, recipient) pairs that should have arrived.
    expected: u64,
    received: u64,
    lost: u64,
    duplicated: u64,
    drain_s: f64,
    latency_ms: Summary,
}

#[derive(Serialize)]
struct SyncReport {
    requests: u64,
    errors: u64,
    limited_timelines: u64,
}

#[derive(Serialize)]
struct ProcReport {
    pid: u32,
    cpu_s: f64,
    /// CPU seconds per wall-clock second of the load phase (1.0 = one core busy).
    cores_busy: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// Peak RSS (VmHWM) during the load phase, when resetting it at the start
    /// worked (`peak_rss_scope` = "load"); else the peak since the server
    /// started (`peak_rss_scope` = "process lifetime").
    peak_rss_kib: u64,
    peak_rss_scope: &'static str,
    /// VmHWM at the start of the load: the peak during setup and before.
    peak_rss_before_kib: u64,
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
    let room_size = args.room_size.unwrap_or(args.users).min(args.users);
    if args.users < 2 || room_size < 2 {
        bail!(
            "need at least 2 users and a room size of at least 2, or there is nobody to deliver to"
        );
    }
    if args.concurrency == 0 || args.duration <= 0.0 || args.rate.is_some_and(|r| r <= 0.0) {
        bail!("--concurrency, --duration and --rate must be positive");
    }
    let prefix = args.prefix.clone().unwrap_or_else(random_prefix);

    // One client for everything; one connection per sync loop and per sender
    // (HTTP/1.1 has no multiplexing) plus a few spare.
    let api = api::Api::new(&args.url, args.users + args.concurrency + 8)?;

    let t = Instant::now();
    let world = Arc::new(setup::build_world(&api, &prefix, args.users, room_size).await?);
    println!(
        "setup: {} users in {} room(s) in {:.2} s (prefix {prefix})",
        world.users.len(),
        world.rooms.len(),
        t.elapsed().as_secs_f64()
    );

    let cfg = LoadConfig {
        prefix: prefix.clone(),
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        drain: Duration::from_secs_f64(args.drain),
    };
    // Sample around the load phase only: registration's password hashing
    // would otherwise dominate the server's CPU figure.
    let server_pid = args.server_pid.map(|p| p.to_string());
    let server_before = server_pid.as_deref().map(sample_process).transpose()?;
    let peak_reset = server_pid.as_deref().is_some_and(reset_peak_rss);
    let self_before = sample_process("self")?;
    let machine_before = machine_busy_cpu_s()?;
    let load_start = Instant::now();
    let result = load::run(&api, world.clone(), &cfg).await?;
    let load_wall = load_start.elapsed().as_secs_f64();
    let self_after = sample_process("self")?;
    let machine_after = machine_busy_cpu_s()?;
    let server_after = server_pid.as_deref().map(sample_process).transpose()?;

    let bench_cpu_s = self_after.cpu_s - self_before.cpu_s;
    let server = match (args.server_pid, server_before, server_after) {
        (Some(pid), Some(before), Some(after)) => {
            Some(proc_report(pid, before, after, load_wall, peak_reset))
        }
        _ => None,
    };
    let other_cpu_s = server
        .as_ref()
        .map(|s| (machine_after - machine_before - s.cpu_s - bench_cpu_s).max(0.0));
    let mut report = build_report(
        &args,
        &world,
        room_size,
        prefix,
        result,
        server,
        bench_cpu_s,
    );
    report.other_cpu_s = other_cpu_s;
    print_summary(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}

fn proc_report(
    pid: u32,
    before: ProcSample,
    after: ProcSample,
    wall_s: f64,
    peak_reset: bool,
) -> ProcReport {
    let cpu_s = after.cpu_s - before.cpu_s;
    ProcReport {
        pid,
        cpu_s,
        cores_busy: cpu_s / wall_s,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        peak_rss_kib: after.peak_rss_kib,
        peak_rss_scope: if peak_reset {
            "load"
        } else {
            "process lifetime"
        },
        peak_rss_before_kib: before.peak_rss_kib,
    }
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
    let elapsed_s = r.send_elapsed.as_secs_f64();
    let received = r.delivery_us.len() as u64;
    let ok =
        r.acked > 0 && r.send_errors == 0 && r.sync_errors == 0 && r.lost == 0 && r.duplicated == 0;
    Report {
        ok,
        config: ConfigReport {
            url: args.url.clone(),
            users: world.users.len(),
            room_size,
            rooms: world.rooms.len(),
            concurrency: args.concurrency,
            duration_s: args.duration,
            rate: args.rate,
            drain_max_s: args.drain,
            prefix,
        },
        sends: SendReport {
            attempted: r.attempted,
            acked: r.acked,
            errors: r.send_errors,
            elapsed_s,
            acks_per_sec: r.acked as f64 / elapsed_s,
            rtt_ms: Summary::from_micros(r.send_rtt_us),
        },
        delivery: DeliveryReport {
            expected: r.expected_deliveries,
            received,
            lost: r.lost,
            duplicated: r.duplicated,
            drain_s: r.drain_elapsed.as_secs_f64(),
            latency_ms: Summary::from_micros(r.delivery_us),
        },
        sync: SyncReport {
            requests: r.sync_requests,
            errors: r.sync_errors,
            limited_timelines: r.sync_limited,
        },
        server,
        bench_cpu_s,
        other_cpu_s: None,
        errors: r.error_sample,
        lost_sample: r.lost_sample,
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
    let s = &r.sends;
    println!(
        "sends:    {} acked of {} attempted, {} errors, {:.1} acks/s over {:.2} s",
        s.acked, s.attempted, s.errors, s.acks_per_sec, s.elapsed_s
    );
    println!(
        "send rtt: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        s.rtt_ms.p50, s.rtt_ms.p99, s.rtt_ms.max
    );
    let d = &r.delivery;
    println!(
        "delivery: {} of {} (message, recipient) pairs; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; drained in {:.2} s",
        d.received, d.expected, d.latency_ms.p50, d.latency_ms.p99, d.latency_ms.p999, d.latency_ms.max, d.drain_s
    );
    println!(
        "sync:     {} long-polls, {} errors, {} limited timelines",
        r.sync.requests, r.sync.errors, r.sync.limited_timelines
    );
    if let Some(p) = &r.server {
        println!(
            "server:   pid {}, {:.2} CPU s ({:.2} cores busy), RSS {:.1} -> {:.1} MiB, peak {:.1} MiB ({}; {:.1} MiB before the load)",
            p.pid,
            p.cpu_s,
            p.cores_busy,
            p.rss_before_kib as f64 / 1024.0,
            p.rss_after_kib as f64 / 1024.0,
            p.peak_rss_kib as f64 / 1024.0,
            p.peak_rss_scope,
            p.peak_rss_before_kib as f64 / 1024.0,
        );
    }
    print!("bench:    {:.2} CPU s", r.bench_cpu_s);
    match r.other_cpu_s {
        Some(other) => println!("; other processes on this machine: {other:.2} CPU s"),
        None => println!(),
    }
    if r.other_cpu_s.is_some_and(|o| o > 0.1 * r.config.duration_s) {
        println!("warning:  other processes competed for the CPU; figures are not clean");
    }
    for e in &r.errors {
        println!("error:    {e}");
    }
    if d.lost > 0 {
        println!(
            "!!! LOST: {} of {} deliveries never arrived, e.g.:",
            d.lost, d.expected
        );
        for l in &r.lost_sample {
            println!("!!!   {l}");
        }
    }
    if d.duplicated > 0 {
        println!(
            "!!! DUPLICATED: {} deliveries arrived more than once",
            d.duplicated
        );
    }
    if s.errors > 0 || r.sync.errors > 0 {
        println!(
            "!!! ERRORS: {} failed sends, {} failed syncs",
            s.errors, r.sync.errors
        );
    }
    if s.acked == 0 {
        println!("!!! NOTHING SENT: no send was acknowledged");
    }
    println!("{}", if r.ok { "OK" } else { "FAILED" });
}
