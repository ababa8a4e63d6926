//! `--mode idle-syncs`: how much server memory one idle long-poll costs.
//!
//! Registers a few users, takes each one's `next_batch` with an initial sync,
//! then opens `syncs` requests `GET /sync?since=<next_batch>&timeout=<long>`
//! spread over those users (several open syncs per access token are legal),
//! each on its own TCP connection, and holds them. The server's RSS growth
//! divided by the number of open syncs is the figure. Before trusting it, the
//! run checks that the server really holds them: every connection accepted
//! (its open descriptors), its CPU idle and RSS flat. Then one message into a
//! room shared by some of the users must come back on every one of their open
//! syncs, which proves they are live long-polls rather than dead sockets.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::api::{now_micros, Api};
use crate::load::{next_batch, note_error};
use crate::setup;
use crate::stats::{sample_process, Summary};
use crate::sys::{self, NofileLimit};

/// Presence off: the users' own syncs bring them online, which would answer
/// the others' long-polls at once; this mode measures held syncs, and the
/// chat mode measures presence traffic with everything else.
const IDLE_FILTER: &str = r#"{"presence":{"not_types":["*"]}}"#;

/// How often to look at the server while waiting for it to settle.
const SETTLE_INTERVAL: Duration = Duration::from_secs(1);
/// Consecutive calm intervals (all accepted, CPU idle, RSS flat) that count
/// as settled: one could be a lull between bursts.
const SETTLE_CALM_INTERVALS: u32 = 2;
/// Give up waiting to settle after this; the run is then reported not ok.
const SETTLE_MAX: Duration = Duration::from_secs(30);
/// Server CPU per settle interval that still counts as idle: parked syncs
/// cost nothing, anything above this means requests are still being handled.
const IDLE_CPU_S: f64 = 0.05;
/// RSS change per settle interval that still counts as flat.
const FLAT_RSS_KIB: u64 = 256;
/// Longest wait for the liveness message to come back on every member sync.
const LIVENESS_WAIT: Duration = Duration::from_secs(30);
/// Longest wait, after we drop our connections, for the server to close its ends.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

pub struct IdleConfig {
    pub url: String,
    pub syncs: usize,
    pub users: usize,
    pub timeout_ms: u64,
    pub ramp_per_s: f64,
    pub server_pid: u32,
    pub prefix: String,
    /// Hold SSE streams instead of long-polls.
    pub sse: bool,
}

/// The server at one moment of the run.
#[derive(Debug, Clone, Copy, Serialize)]
struct Checkpoint {
    /// Our long-polls open (opened minus failed) at this point.
    syncs_open: u64,
    rss_kib: u64,
    open_fds: u64,
    threads: u64,
    /// Server ends of ESTABLISHED TCP connections on its port.
    established: u64,
    /// Time spent waiting for the server to settle before this sample
    /// (for `after_close`: for it to close its ends).
    settle_s: f64,
    /// Settled in time (for `after_close`: descriptors back to the baseline).
    settled: bool,
}

#[derive(Serialize)]
struct IdleReport {
    mode: &'static str,
    ok: bool,
    config: ConfigReport,
    /// Our own open-file limit, raised to the hard limit.
    nofile: NofileLimit,
    /// The server's "Max open files" (soft, hard), from /proc.
    server_nofile: (String, String),
    setup_s: f64,
    /// Time spent opening the long-polls (the ramp), without the settling.
    open_s: f64,
    before: Checkpoint,
    half: Checkpoint,
    after: Checkpoint,
    /// After we dropped every connection: does the server let go of them?
    after_close: Checkpoint,
    /// (after - before) RSS / syncs.
    bytes_per_idle_sync: f64,
    /// (after - half) RSS / syncs opened in the second half. Memory the
    /// server freed during setup (password hashing) can be reused by the
    /// first syncs without growing RSS; by the second half it is used up.
    bytes_per_idle_sync_second_half: f64,
    server_cpu_s_opening: f64,
    bench_rss_kib: u64,
    /// Requests that failed on our side (connect, reset, timeout, HTTP error).
    failures: u64,
    /// Syncs that answered before the liveness message (and were reopened):
    /// an idle long-poll should not answer at all.
    early_returns: u64,
    liveness: LivenessReport,
    errors: Vec<String>,
}

#[derive(Serialize)]
struct ConfigReport {
    url: String,
    syncs: usize,
    users: usize,
    timeout_ms: u64,
    ramp_per_s: f64,
    prefix: String,
}

#[derive(Serialize)]
struct LivenessReport {
    /// Users in the shared room; user 0 sends.
    room_members: usize,
    /// Open syncs belonging to those members: each must return the message.
    syncs_expected: u64,
    returned_with_message: u64,
    /// From the send to each sync's answer.
    latency_ms: Summary,
}

/// What the holding tasks report back.
struct Slots {
    /// Per slot: wall-clock time its sync answered with the liveness message.
    arrivals: Mutex<Vec<Option<u64>>>,
    returned: AtomicU64,
    early_returns: AtomicU64,
    failures: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// Runs the mode, prints the summary, writes the JSON; returns whether it was clean.
pub async fn run(
    cfg: &IdleConfig,
    nofile: NofileLimit,
    json: Option<&Path>,
) -> anyhow::Result<bool> {
    if cfg.users < 2 || cfg.syncs == 0 || cfg.timeout_ms == 0 || cfg.ramp_per_s <= 0.0 {
        bail!("idle-syncs needs --idle-users >= 2 and positive --idle-syncs, --idle-timeout-ms and --idle-ramp");
    }
    let pid = cfg.server_pid;
    let port = reqwest::Url::parse(&cfg.url)?
        .port_or_known_default()
        .context("--url has no port")?;
    let server_nofile = sys::nofile_limit_of(pid)?;
    println!(
        "nofile:   bench soft {} -> {} (hard {}); server soft {} hard {}",
        nofile.soft_before, nofile.soft, nofile.hard, server_nofile.0, server_nofile.1
    );
    if nofile.soft < cfg.syncs as u64 + 64 {
        println!("warning:  our open-file limit is below the number of syncs; expect failures");
    }

    // Setup: users, the shared room (the first tenth of the users, at least
    // two) and every user's current position.
    let t = Instant::now();
    let room_members = (cfg.users / 10).clamp(2, cfg.users);
    let (tokens, room_id, since) = {
        let api = Api::new(&cfg.url, 16)?;
        let users = setup::register_users(&api, &cfg.prefix, cfg.users, true).await?;
        let tokens: Vec<String> = users.into_iter().map(|(_, t)| t).collect();
        let room_id = api.create_room(&tokens[0]).await?;
        setup::join_all(&api, &room_id, &tokens[1..room_members], false).await?;
        // Only after every join: a later join would be news to the members'
        // syncs and answer them at once.
        let since = initial_syncs(&api, &tokens).await?;
        (tokens, room_id, since)
        // Dropping `api` closes its pooled connections, so the baseline
        // below counts none of ours.
    };
    let setup_s = t.elapsed().as_secs_f64();
    println!(
        "setup:    {} users, shared room of {room_members}, in {setup_s:.1} s (prefix {})",
        cfg.users, cfg.prefix
    );

    let slots = Arc::new(Slots {
        arrivals: Mutex::new(vec![None; cfg.syncs]),
        returned: AtomicU64::new(0),
        early_returns: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });
    let zero = Checkpoint {
        syncs_open: 0,
        rss_kib: 0,
        open_fds: 0,
        threads: 0,
        established: 0,
        settle_s: 0.0,
        settled: true,
    };
    let before = settle(pid, port, 0, &zero, &slots).await?;
    let cpu_before = sample_process(&pid.to_string())?.cpu_s;
    print_checkpoint("before", &before);

    // Our ends of the long-polls. HTTP/1.1 without pipelining: every request
    // in flight has a connection of its own.
    let client = Api::with_timeout(
        &cfg.url,
        cfg.syncs + 8,
        Duration::from_millis(cfg.timeout_ms) + Duration::from_secs(30),
    )?;
    let marker: Arc<str> = format!("{}-live", cfg.prefix).into();
    let mut holders = JoinSet::new();
    let mut open_s = 0.0;
    let half_n = cfg.syncs / 2;
    let hold = Hold {
        client: &client,
        tokens: &tokens,
        since: &since,
        timeout_ms: cfg.timeout_ms,
        marker: &marker,
        slots: &slots,
        sse: cfg.sse,
    };
    let mut checkpoints = Vec::new();
    for range in [0..half_n, half_n..cfg.syncs] {
        let t = Instant::now();
        hold.open(range.clone(), cfg.ramp_per_s, &mut holders).await;
        open_s += t.elapsed().as_secs_f64();
        let c = settle(pid, port, range.end as u64, &before, &slots).await?;
        print_checkpoint(if range.start == 0 { "half" } else { "after" }, &c);
        checkpoints.push(c);
    }
    let (half, after) = (checkpoints[0], checkpoints[1]);
    let server_cpu_s_opening = sample_process(&pid.to_string())?.cpu_s - cpu_before;
    let bench_rss_kib = sample_process("self")?.rss_kib;

    let liveness = check_liveness(cfg, &tokens[0], &room_id, room_members, &marker, &slots).await?;

    // Cancel: dropping the tasks and the client closes every connection.
    holders.abort_all();
    while holders.join_next().await.is_some() {}
    drop(client);
    let after_close = wait_closed(pid, port, &before).await?;
    print_checkpoint("closed", &after_close);

    let per_sync = |from: &Checkpoint, to: &Checkpoint, n: usize| {
        (to.rss_kib as f64 - from.rss_kib as f64) * 1024.0 / n.max(1) as f64
    };
    let failures = slots.failures.load(Relaxed);
    let early_returns = slots.early_returns.load(Relaxed);
    let report = IdleReport {
        mode: if cfg.sse { "idle-sse" } else { "idle-syncs" },
        ok: failures == 0
            && early_returns == 0
            && after.settled
            && liveness.returned_with_message == liveness.syncs_expected,
        config: ConfigReport {
            url: cfg.url.clone(),
            syncs: cfg.syncs,
            users: cfg.users,
            timeout_ms: cfg.timeout_ms,
            ramp_per_s: cfg.ramp_per_s,
            prefix: cfg.prefix.clone(),
        },
        nofile,
        server_nofile,
        setup_s,
        open_s,
        bytes_per_idle_sync: per_sync(&before, &after, cfg.syncs),
        bytes_per_idle_sync_second_half: per_sync(&half, &after, cfg.syncs - half_n),
        before,
        half,
        after,
        after_close,
        server_cpu_s_opening,
        bench_rss_kib,
        failures,
        early_returns,
        liveness,
        errors: slots.errors.lock().unwrap().clone(),
    };
    print_summary(&report);
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(report.ok)
}

/// Each user's `next_batch` from a sync without `since` (which answers at once).
async fn initial_syncs(api: &Api, tokens: &[String]) -> anyhow::Result<Vec<String>> {
    let mut tasks = JoinSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let (api, token) = (api.clone(), token.clone());
        tasks.spawn(async move {
            let (v, _) = api.sync(&token, None, 0, Some(IDLE_FILTER)).await?;
            anyhow::Ok((i, next_batch(&v)?))
        });
    }
    let mut since = vec![String::new(); tokens.len()];
    while let Some(res) = tasks.join_next().await {
        let (i, next) = res??;
        since[i] = next;
    }
    Ok(since)
}

/// What every holding task needs.
struct Hold<'a> {
    client: &'a Api,
    tokens: &'a [String],
    since: &'a [String],
    timeout_ms: u64,
    marker: &'a Arc<str>,
    slots: &'a Arc<Slots>,
    sse: bool,
}

impl Hold<'_> {
    /// Opens long-polls for `range` (slot `i` belongs to user `i % users`) at
    /// `ramp_per_s`: all at once would overflow the server's listen queue and
    /// measure SYN retries instead.
    async fn open(&self, range: Range<usize>, ramp_per_s: f64, holders: &mut JoinSet<()>) {
        let start = Instant::now();
        for (n, slot) in range.enumerate() {
            let due = start + Duration::from_secs_f64(n as f64 / ramp_per_s);
            tokio::time::sleep_until(due.into()).await;
            let user = slot % self.tokens.len();
            if self.sse {
                holders.spawn(hold_stream(
                    self.client.clone(),
                    slot,
                    self.tokens[user].clone(),
                    self.since[user].clone(),
                    self.marker.clone(),
                    self.slots.clone(),
                ));
                continue;
            }
            holders.spawn(hold(
                self.client.clone(),
                slot,
                self.tokens[user].clone(),
                self.since[user].clone(),
                self.timeout_ms,
                self.marker.clone(),
                self.slots.clone(),
            ));
        }
    }
}

/// One open long-poll: waits for the liveness message. An answer without it
/// is counted and the sync reopened from the new position; a failure is
/// counted and ends the slot.
async fn hold(
    api: Api,
    slot: usize,
    token: String,
    mut since: String,
    timeout_ms: u64,
    marker: Arc<str>,
    slots: Arc<Slots>,
) {
    loop {
        let answer = api
            .sync(&token, Some(&since), timeout_ms, Some(IDLE_FILTER))
            .await
            .and_then(|(v, arrived)| Ok((has_marker(&v, &marker), next_batch(&v)?, arrived)));
        match answer {
            Ok((true, _, arrived)) => {
                slots.arrivals.lock().unwrap()[slot] = Some(arrived);
                slots.returned.fetch_add(1, Relaxed);
                return;
            }
            Ok((false, next, _)) => {
                slots.early_returns.fetch_add(1, Relaxed);
                since = next;
            }
            Err(err) => {
                slots.failures.fetch_add(1, Relaxed);
                note_error(&slots.errors, &err);
                return;
            }
        }
    }
}

/// One open SSE stream: reads events until the liveness message. The first
/// event is the stream's start (from `since`, usually empty); any other
/// event without the message counts as an early return.
async fn hold_stream(
    api: Api,
    slot: usize,
    token: String,
    since: String,
    marker: Arc<str>,
    slots: Arc<Slots>,
) {
    let result = async {
        let mut stream = api
            .sync_stream(&token, Some(&since), Some(IDLE_FILTER))
            .await?;
        let mut first = true;
        while let Some((v, arrived)) = stream.next().await? {
            if has_marker(&v, &marker) {
                return Ok(Some(arrived));
            }
            if !first {
                slots.early_returns.fetch_add(1, Relaxed);
            }
            first = false;
        }
        Ok(None)
    }
    .await;
    match result {
        Ok(Some(arrived)) => {
            slots.arrivals.lock().unwrap()[slot] = Some(arrived);
            slots.returned.fetch_add(1, Relaxed);
        }
        Ok(None) => {
            slots.failures.fetch_add(1, Relaxed);
            note_error(&slots.errors, &anyhow::anyhow!("stream closed early"));
        }
        Err(err) => {
            slots.failures.fetch_add(1, Relaxed);
            note_error(&slots.errors, &err);
        }
    }
}

fn has_marker(v: &Value, marker: &str) -> bool {
    let Some(rooms) = v.pointer("/rooms/join").and_then(Value::as_object) else {
        return false;
    };
    rooms
        .values()
        .filter_map(|room| room.pointer("/timeline/events").and_then(Value::as_array))
        .flatten()
        .any(|e| e.pointer("/content/tern_bench_id").and_then(Value::as_str) == Some(marker))
}

/// Samples the server every `SETTLE_INTERVAL` until it has accepted `opened`
/// connections more than at `base` (less any that failed on our side), its
/// CPU is idle and its RSS flat, or `SETTLE_MAX` passed.
async fn settle(
    pid: u32,
    port: u16,
    opened: u64,
    base: &Checkpoint,
    slots: &Slots,
) -> anyhow::Result<Checkpoint> {
    let start = Instant::now();
    let mut prev = sample_process(&pid.to_string())?;
    let mut calm = 0;
    loop {
        tokio::time::sleep(SETTLE_INTERVAL).await;
        let now = sample_process(&pid.to_string())?;
        let open = opened - slots.failures.load(Relaxed).min(opened);
        let c = Checkpoint {
            syncs_open: open,
            rss_kib: now.rss_kib,
            open_fds: sys::open_fds(pid)?,
            threads: sys::threads(pid)?,
            established: sys::established_on_port(port)?,
            settle_s: start.elapsed().as_secs_f64(),
            settled: false,
        };
        let accepted =
            c.open_fds >= base.open_fds + open && c.established >= base.established + open;
        let idle = now.cpu_s - prev.cpu_s <= IDLE_CPU_S
            && now.rss_kib.abs_diff(prev.rss_kib) <= FLAT_RSS_KIB;
        calm = if accepted && idle { calm + 1 } else { 0 };
        prev = now;
        if calm >= SETTLE_CALM_INTERVALS {
            return Ok(Checkpoint { settled: true, ..c });
        }
        if start.elapsed() >= SETTLE_MAX {
            return Ok(c);
        }
    }
}

/// User 0 sends one message into the shared room; every open sync of a room
/// member must answer with it.
async fn check_liveness(
    cfg: &IdleConfig,
    token: &str,
    room_id: &str,
    room_members: usize,
    marker: &str,
    slots: &Slots,
) -> anyhow::Result<LivenessReport> {
    let member_slots: Vec<usize> = (0..cfg.syncs)
        .filter(|s| s % cfg.users < room_members)
        .collect();
    let expected = member_slots.len() as u64;
    let api = Api::new(&cfg.url, 2)?;
    let sent_us = now_micros();
    let content =
        json!({"msgtype": "m.text", "body": "tern-bench liveness", "tern_bench_id": marker});
    api.send_message(token, room_id, marker, &content).await?;
    let start = Instant::now();
    while slots.returned.load(Relaxed) < expected && start.elapsed() < LIVENESS_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = slots.arrivals.lock().unwrap();
    let latencies: Vec<u64> = member_slots
        .iter()
        .filter_map(|&s| arrivals[s])
        .map(|at| at.saturating_sub(sent_us))
        .collect();
    Ok(LivenessReport {
        room_members,
        syncs_expected: expected,
        returned_with_message: latencies.len() as u64,
        latency_ms: Summary::from_micros(latencies),
    })
}

/// After we closed everything: waits until the server's descriptors are back
/// near the baseline (or `CLOSE_WAIT` passed) and samples it.
async fn wait_closed(pid: u32, port: u16, base: &Checkpoint) -> anyhow::Result<Checkpoint> {
    let start = Instant::now();
    loop {
        tokio::time::sleep(SETTLE_INTERVAL).await;
        let fds = sys::open_fds(pid)?;
        let closed = fds <= base.open_fds + 2;
        if closed || start.elapsed() >= CLOSE_WAIT {
            return Ok(Checkpoint {
                syncs_open: 0,
                rss_kib: sample_process(&pid.to_string())?.rss_kib,
                open_fds: fds,
                threads: sys::threads(pid)?,
                established: sys::established_on_port(port)?,
                settle_s: start.elapsed().as_secs_f64(),
                settled: closed,
            });
        }
    }
}

fn print_checkpoint(label: &str, c: &Checkpoint) {
    println!(
        "{label:>8}: {} syncs open; server RSS {:.1} MiB, {} fds, {} threads, {} established; {}settled after {:.1} s",
        c.syncs_open,
        c.rss_kib as f64 / 1024.0,
        c.open_fds,
        c.threads,
        c.established,
        if c.settled { "" } else { "NOT " },
        c.settle_s
    );
}

fn print_summary(r: &IdleReport) {
    println!(
        "idle:     {} {} over {} users opened in {:.1} s; server RSS {:.1} -> {:.1} MiB: {:.0} bytes per idle sync ({:.0} over the second half); {:.2} server CPU s to open them",
        r.config.syncs,
        if r.mode == "idle-sse" { "SSE streams" } else { "long-polls" },
        r.config.users,
        r.open_s,
        r.before.rss_kib as f64 / 1024.0,
        r.after.rss_kib as f64 / 1024.0,
        r.bytes_per_idle_sync,
        r.bytes_per_idle_sync_second_half,
        r.server_cpu_s_opening,
    );
    let l = &r.liveness;
    println!(
        "liveness: {} of {} member syncs returned the message; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.returned_with_message, l.syncs_expected, l.latency_ms.p50, l.latency_ms.p99, l.latency_ms.max
    );
    println!(
        "client:   {} failures, {} early returns; bench RSS {:.1} MiB",
        r.failures,
        r.early_returns,
        r.bench_rss_kib as f64 / 1024.0
    );
    for e in &r.errors {
        println!("error:    {e}");
    }
    if !r.after.settled {
        println!("!!! NOT SETTLED: the server had not accepted every connection, or was still busy, when RSS was read");
    }
    if !r.after_close.settled {
        println!("!!! NOT CLOSED: the server still held {} fds ({} before) {:.0} s after we closed our connections", r.after_close.open_fds, r.before.open_fds, r.after_close.settle_s);
    }
    println!("{}", if r.ok { "OK" } else { "FAILED" });
}
