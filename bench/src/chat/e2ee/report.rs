//! The encryption part of the chat report: the key upload at setup, the
//! latency of each call a room-key share makes, and to-device delivery
//! checked per (share, recipient device) as messages are per (message,
//! recipient).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::Serialize;

use super::{E2ee, ONE_TIME_KEYS, ROTATE_AFTER};
use crate::chat::sync::Inbox;
use crate::stats::Summary;
use crate::tally::{tally, Tally};

#[derive(Serialize)]
pub struct E2eeReport {
    pub ok: bool,
    keys_upload: UploadReport,
    room_key_shares: SharesReport,
    keys_query: QueryReport,
    keys_claim: ClaimReport,
    send_to_device: SendToDeviceReport,
    /// Per (share, recipient device).
    to_device_delivery: ToDeviceDelivery,
    one_time_key_top_ups: TopUps,
    encrypted_messages: MessagesReport,
    lost_sample: Vec<String>,
}

#[derive(Serialize)]
struct UploadReport {
    devices: usize,
    one_time_keys_per_device: u64,
    /// Wall time of every device's upload (16 at a time).
    elapsed_s: f64,
    latency_ms: Summary,
}

#[derive(Serialize)]
struct SharesReport {
    shares: u64,
    /// Shares to devices the sender already had Olm sessions with.
    without_claim: u64,
    rotate_after_messages: u64,
}

#[derive(Serialize)]
struct QueryReport {
    requests: u64,
    errors: u64,
    /// Devices whose keys in an answer were not the uploaded ones.
    mismatched_devices: u64,
    latency_ms: Summary,
}

#[derive(Serialize)]
struct ClaimReport {
    requests: u64,
    errors: u64,
    keys_claimed: u64,
    /// Devices a claim returned no key for.
    keys_missing: u64,
    latency_ms: Summary,
}

#[derive(Serialize)]
struct SendToDeviceReport {
    requests: u64,
    errors: u64,
    /// To-device messages in the acknowledged requests.
    messages: u64,
    /// Request body sizes.
    bytes_total: u64,
    bytes_per_request_mean: f64,
    bytes_per_request_max: u64,
    latency_ms: Summary,
}

#[derive(Serialize)]
struct ToDeviceDelivery {
    expected: u64,
    received: u64,
    lost: u64,
    duplicated: u64,
    /// From the send of the `sendToDevice` to the arrival in the device's sync.
    latency_ms: Summary,
    /// Every to-device event the sync loops got during the load.
    events_seen: u64,
}

#[derive(Serialize)]
struct TopUps {
    requests: u64,
    errors: u64,
    /// Sync responses (initial ones included) that said `{}`: no one-time
    /// keys at all.
    empty_counts_seen: u64,
}

#[derive(Serialize)]
struct MessagesReport {
    messages: u64,
    content_bytes_mean: f64,
}

impl E2eeReport {
    pub fn new(e: &E2ee, inboxes: &[Arc<Inbox>], events_seen: u64) -> Self {
        let c = &e.c;
        let Tally {
            delivery_us,
            lost,
            lost_sample,
            ..
        } = {
            let guards: Vec<_> = inboxes
                .iter()
                .map(|i| i.to_device.lock().unwrap())
                .collect();
            let arrivals: Vec<&HashMap<u64, u64>> = guards.iter().map(|g| &**g).collect();
            let shares = e.shares.lock().unwrap();
            let sends = shares
                .iter()
                .map(|s| (s.n, s.ts_us, s.recipients.iter().copied()));
            tally(sends, &arrivals, |n, r| {
                format!("{}{n} -> {}", e.id_prefix, inboxes[r].user_id)
            })
        };
        let expected = e
            .shares
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.recipients.len() as u64)
            .sum();
        let duplicated = inboxes
            .iter()
            .map(|i| i.to_device_duplicates.load(Relaxed))
            .sum();
        let samples =
            |m: &std::sync::Mutex<Vec<u64>>| Summary::from_micros(m.lock().unwrap().clone());
        let to_device_requests = c.to_device_requests.load(Relaxed);
        let bytes_total = c.to_device_bytes.load(Relaxed);
        let messages = c.messages.load(Relaxed);
        let mut r = E2eeReport {
            ok: false,
            keys_upload: UploadReport {
                devices: e.devices.len(),
                one_time_keys_per_device: ONE_TIME_KEYS,
                elapsed_s: e.upload.elapsed_s,
                latency_ms: Summary::from_micros(e.upload.latency_us.clone()),
            },
            room_key_shares: SharesReport {
                shares: c.shares.load(Relaxed),
                without_claim: c.shares_without_claim.load(Relaxed),
                rotate_after_messages: ROTATE_AFTER,
            },
            keys_query: QueryReport {
                requests: c.query_requests.load(Relaxed),
                errors: c.query_errors.load(Relaxed),
                mismatched_devices: c.query_mismatches.load(Relaxed),
                latency_ms: samples(&e.samples.query_us),
            },
            keys_claim: ClaimReport {
                requests: c.claim_requests.load(Relaxed),
                errors: c.claim_errors.load(Relaxed),
                keys_claimed: c.keys_claimed.load(Relaxed),
                keys_missing: c.keys_missing.load(Relaxed),
                latency_ms: samples(&e.samples.claim_us),
            },
            send_to_device: SendToDeviceReport {
                requests: to_device_requests,
                errors: c.to_device_errors.load(Relaxed),
                messages: c.to_device_messages.load(Relaxed),
                bytes_total,
                bytes_per_request_mean: bytes_total as f64 / to_device_requests.max(1) as f64,
                bytes_per_request_max: c.to_device_max_bytes.load(Relaxed),
                latency_ms: samples(&e.samples.to_device_us),
            },
            to_device_delivery: ToDeviceDelivery {
                expected,
                received: delivery_us.len() as u64,
                lost,
                duplicated,
                latency_ms: Summary::from_micros(delivery_us),
                events_seen,
            },
            one_time_key_top_ups: TopUps {
                requests: c.top_ups.load(Relaxed),
                errors: c.top_up_errors.load(Relaxed),
                empty_counts_seen: c.empty_key_counts.load(Relaxed),
            },
            encrypted_messages: MessagesReport {
                messages,
                content_bytes_mean: c.message_bytes.load(Relaxed) as f64 / messages.max(1) as f64,
            },
            lost_sample,
        };
        r.ok = r.problems().is_empty() && r.room_key_shares.shares > 0;
        r
    }

    /// What makes the run fail, one line each.
    fn problems(&self) -> Vec<String> {
        let d = &self.to_device_delivery;
        let checks = [
            (d.lost, "to-device messages lost"),
            (d.duplicated, "to-device messages duplicated"),
            (self.keys_query.errors, "failed /keys/query"),
            (
                self.keys_query.mismatched_devices,
                "devices whose queried keys were not the uploaded ones",
            ),
            (self.keys_claim.errors, "failed /keys/claim"),
            (
                self.keys_claim.keys_missing,
                "devices a claim found no key for",
            ),
            (self.send_to_device.errors, "failed sendToDevice"),
            (
                self.one_time_key_top_ups.errors,
                "failed one-time key top-ups",
            ),
        ];
        checks
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect()
    }
}

fn ms3(s: &Summary) -> String {
    format!(
        "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        s.p50, s.p95, s.p99
    )
}

pub fn print_e2ee(r: &E2eeReport) {
    let u = &r.keys_upload;
    println!(
        "keys:     {} devices uploaded device keys, {} one-time keys and a fallback key each in {:.1} s; upload {}",
        u.devices, u.one_time_keys_per_device, u.elapsed_s, ms3(&u.latency_ms)
    );
    let (s, q, c) = (&r.room_key_shares, &r.keys_query, &r.keys_claim);
    println!(
        "shares:   {} room-key shares ({} needed no claim), new session every {} messages",
        s.shares, s.without_claim, s.rotate_after_messages
    );
    println!(
        "query:    {} requests, {} errors; {}",
        q.requests,
        q.errors,
        ms3(&q.latency_ms)
    );
    println!(
        "claim:    {} requests for {} keys ({} missing), {} errors; {}",
        c.requests,
        c.keys_claimed,
        c.keys_missing,
        c.errors,
        ms3(&c.latency_ms)
    );
    let t = &r.send_to_device;
    println!(
        "to-dev:   {} sendToDevice requests carrying {} messages, {:.0} bytes per request (max {}), {} errors; {}",
        t.requests, t.messages, t.bytes_per_request_mean, t.bytes_per_request_max, t.errors, ms3(&t.latency_ms)
    );
    let d = &r.to_device_delivery;
    println!(
        "to-dev delivery: {} of {} (share, device) pairs; {}, max {:.2} ms; {} to-device events seen in syncs",
        d.received, d.expected, ms3(&d.latency_ms), d.latency_ms.max, d.events_seen
    );
    let k = &r.one_time_key_top_ups;
    println!(
        "messages: {} m.room.encrypted, {:.0} bytes of content on average; {} one-time key top-ups ({} syncs said no keys at all)",
        r.encrypted_messages.messages,
        r.encrypted_messages.content_bytes_mean,
        k.requests,
        k.empty_counts_seen
    );
    let problems = r.problems();
    if !problems.is_empty() {
        println!("!!! E2EE: {}", problems.join(", "));
        for l in &r.lost_sample {
            println!("!!!   lost {l}");
        }
    }
}
