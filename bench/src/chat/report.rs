//! The chat mode's report: the default mode's numbers plus typing,
//! receipts and the ephemeral events seen, and with `--encrypted` the
//! encryption's (`e2ee/report.rs`), printed and as JSON.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::Serialize;

use super::e2ee::report::{print_e2ee, E2eeReport};
use super::{ChatConfig, Inbox, Load, Sent, Shared, World};
use crate::load::LoadResult;
use crate::report::{
    print_problems, print_traffic, print_usage, DeliveryReport, LoadParts, ProcReport, SendReport,
    SyncReport,
};
use crate::sys::NofileLimit;
use crate::tally::{tally, Tally};

#[derive(Serialize)]
pub(super) struct ChatReport {
    mode: &'static str,
    pub ok: bool,
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
    /// Present with --encrypted.
    e2ee: Option<E2eeReport>,
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
    encrypted: bool,
}

#[derive(Serialize)]
pub(super) struct SetupReport {
    pub register_s: f64,
    pub rooms_s: f64,
    /// With --encrypted: every device's key upload.
    pub keys_s: Option<f64>,
    pub initial_sync_s: f64,
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

impl ChatReport {
    /// Tallies the deliveries and gathers the counters into the report.
    pub fn new(
        cfg: &ChatConfig,
        nofile: NofileLimit,
        setup: SetupReport,
        world: &World,
        inboxes: &[Arc<Inbox>],
        shared: &Shared,
        load: Load,
    ) -> Self {
        let Load {
            sent,
            send_elapsed,
            expected,
            drain_elapsed,
            usage,
            receipts_unfinished,
        } = load;
        let acked: Vec<&Sent> = sent.iter().filter(|s| s.rtt_us.is_some()).collect();
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
            // The chat mode runs against one server (of one or many nodes).
            delivery_by_server: Vec::new(),
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
        let e2ee = shared
            .e2ee
            .as_ref()
            .map(|e| E2eeReport::new(e, inboxes, c.to_device_seen.load(Relaxed)));
        ChatReport {
            mode: "chat",
            ok: parts.ok()
                && typing.errors == 0
                && receipts.errors == 0
                && e2ee.as_ref().is_none_or(|e| e.ok),
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
                encrypted: cfg.encrypted,
            },
            nofile,
            setup,
            sends: parts.sends,
            delivery: parts.delivery,
            sync: parts.sync,
            typing,
            receipts,
            ephemeral_seen: EphemeralSeen {
                typing: c.typing_seen.load(Relaxed),
                receipt: c.receipts_seen.load(Relaxed),
            },
            e2ee,
            server: usage.server,
            bench_cpu_s: usage.bench_cpu_s,
            other_cpu_s: usage.other_cpu_s,
            errors: parts.errors,
            lost_sample: parts.lost_sample,
        }
    }
}

/// The set-up line: what was built, and how long each part took.
pub(super) fn print_setup(cfg: &ChatConfig, rooms: usize, setup: &SetupReport) {
    let keys = match setup.keys_s {
        Some(s) => format!(", keys uploaded in {s:.1} s"),
        None => String::new(),
    };
    println!(
        "setup:    {} users registered in {:.1} s, {} rooms of {} ({} per user) in {:.1} s{keys}, initial syncs in {:.1} s (prefix {})",
        cfg.users,
        setup.register_s,
        rooms,
        cfg.room_size,
        cfg.rooms_per_user,
        setup.rooms_s,
        setup.initial_sync_s,
        cfg.prefix
    );
}

pub(super) fn print_summary(r: &ChatReport) {
    let c = &r.config;
    let encrypted = if c.encrypted { ", encrypted" } else { "" };
    println!(
        "chat:     {} users, {} rooms of {} ({} per user), {} msg/s for {} s with typing and receipts{encrypted}, against {}",
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
    if let Some(e) = &r.e2ee {
        print_e2ee(e);
    }
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
