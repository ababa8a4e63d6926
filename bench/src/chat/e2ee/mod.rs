//! `--mode chat --encrypted`: every client behaves as an encrypting client
//! (Element) does, without real cryptography: the server never decrypts,
//! so only the calls, their order and the sizes matter.
//!
//! - At setup each device uploads signed device keys (a real ed25519
//!   signature: the server verifies it), 50 signed one-time keys and a
//!   fallback key; the rooms carry `m.room.encryption`.
//! - Before a sender's first message into a room, and again every
//!   `ROTATE_AFTER` messages (Megolm's default rotation), it shares a new
//!   room key (`share.rs`): `/keys/query` for members whose devices it has
//!   not fetched yet, `/keys/claim` of one one-time key per device it has
//!   no Olm session with, then one `PUT /sendToDevice/m.room.encrypted`
//!   carrying an Olm-encrypted `m.room_key` of the real size per device.
//! - Messages go out as `m.room.encrypted` with a Megolm-shaped content of
//!   the size the real ciphertext would have (`payload.rs`).
//! - The sync loops record each to-device message's arrival, and top the
//!   one-time keys up when the server's count falls below half, as clients do.
//!
//! Every to-device message must reach its device exactly once; the report
//! (`report.rs`) has the latencies of each call and of to-device delivery.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use ring::rand::SystemRandom;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

mod keys;
mod payload;
pub(super) mod report;
mod share;

pub(super) use self::keys::DeviceKeys;
use super::sync::Inbox;
use super::{Shared, World};
use crate::api::{now_micros, Api};
use crate::load::note_error;
use crate::setup::{Progress, JOIN_PARALLELISM};

/// One-time keys a device keeps on the server (Element keeps 50).
pub const ONE_TIME_KEYS: u64 = 50;
/// Messages per Megolm session before a new one is shared (Megolm's default).
pub const ROTATE_AFTER: u64 = 100;

/// The `/createRoom` body of an encrypted room (as Element makes them).
pub fn encrypted_room() -> Value {
    json!({
        "preset": "public_chat",
        "initial_state": [{
            "type": "m.room.encryption",
            "state_key": "",
            "content": {"algorithm": keys::MEGOLM_ALGORITHM},
        }],
    })
}

/// A sender's current Megolm session in one room.
#[derive(Default)]
struct Outbound {
    session_id: Option<String>,
    /// Messages sent with it: the next message's ratchet index.
    sent: u64,
}

/// An async lock: a message waits for its session's share in flight.
type OutboundSlot = Arc<tokio::sync::Mutex<Outbound>>;

/// An Olm session between two devices. Either side sends over it: the one
/// who claimed sends pre-key messages until it hears back.
struct OlmSession {
    creator: usize,
    replied: bool,
}

/// One acknowledged `sendToDevice` of a room key.
pub(super) struct Share {
    pub n: u64,
    pub ts_us: u64,
    pub recipients: Vec<usize>,
}

#[derive(Default)]
pub(super) struct E2eeCounters {
    pub shares: AtomicU64,
    pub shares_without_claim: AtomicU64,
    pub query_requests: AtomicU64,
    pub query_errors: AtomicU64,
    /// Devices whose queried keys were not the uploaded ones (or missing).
    pub query_mismatches: AtomicU64,
    pub claim_requests: AtomicU64,
    pub claim_errors: AtomicU64,
    pub keys_claimed: AtomicU64,
    /// Devices a claim returned no key for (neither one-time nor fallback).
    pub keys_missing: AtomicU64,
    pub to_device_requests: AtomicU64,
    pub to_device_errors: AtomicU64,
    pub to_device_messages: AtomicU64,
    pub to_device_bytes: AtomicU64,
    pub to_device_max_bytes: AtomicU64,
    pub message_bytes: AtomicU64,
    pub messages: AtomicU64,
    pub top_ups: AtomicU64,
    pub top_up_errors: AtomicU64,
    /// Sync responses whose `device_one_time_keys_count` was `{}`.
    pub empty_key_counts: AtomicU64,
}

/// Latency samples of each call, in microseconds.
#[derive(Default)]
pub(super) struct Samples {
    pub query_us: Mutex<Vec<u64>>,
    pub claim_us: Mutex<Vec<u64>>,
    pub to_device_us: Mutex<Vec<u64>>,
}

pub(super) struct E2ee {
    rng: SystemRandom,
    /// Per user, its one device.
    pub devices: Vec<DeviceKeys>,
    /// `<prefix>-d`: to-device message ids of this run start with it.
    pub id_prefix: String,
    /// By (sender, room).
    outbound: Mutex<HashMap<(usize, usize), OutboundSlot>>,
    /// By (lower, higher) device index.
    olm: Mutex<HashMap<(usize, usize), OlmSession>>,
    /// Per user: the users whose device keys it has queried.
    tracked: Vec<Mutex<HashSet<usize>>>,
    next_share: AtomicU64,
    pub shares: Mutex<Vec<Share>>,
    /// Per user: when its last one-time key top-up was answered (µs since
    /// the epoch; `u64::MAX` while one is in flight). A sync sent before it
    /// may report the count from before the upload.
    topped_up_us: Vec<AtomicU64>,
    pub c: E2eeCounters,
    pub samples: Samples,
    pub upload: UploadTimes,
}

/// The setup's key uploads.
pub(super) struct UploadTimes {
    pub elapsed_s: f64,
    pub latency_us: Vec<u64>,
}

impl E2ee {
    /// Makes every user's device keys and uploads them with its one-time
    /// and fallback keys, `JOIN_PARALLELISM` devices at a time.
    pub async fn set_up(api: &Api, world: &World, prefix: &str) -> anyhow::Result<Self> {
        let device_ids = device_ids(api, world).await?;
        let rng = SystemRandom::new();
        let devices = world
            .users
            .iter()
            .zip(&device_ids)
            .map(|(u, d)| DeviceKeys::generate(&rng, &u.user_id, d))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bodies = devices
            .iter()
            .map(|d| {
                Ok(json!({
                    "device_keys": d.device_keys(),
                    "one_time_keys": d.one_time_keys(&rng, ONE_TIME_KEYS)?,
                    "fallback_keys": d.fallback_key(&rng)?,
                }))
            })
            .collect::<anyhow::Result<Vec<Value>>>()?;
        let t = Instant::now();
        let latency_us = upload_all(api, world, bodies).await?;
        let upload = UploadTimes {
            elapsed_s: t.elapsed().as_secs_f64(),
            latency_us,
        };
        let n = devices.len();
        Ok(Self {
            rng,
            devices,
            id_prefix: format!("{prefix}-d"),
            outbound: Mutex::new(HashMap::new()),
            olm: Mutex::new(HashMap::new()),
            tracked: (0..n).map(|_| Mutex::new(HashSet::new())).collect(),
            next_share: AtomicU64::new(0),
            shares: Mutex::new(Vec::new()),
            topped_up_us: (0..n).map(|_| AtomicU64::new(0)).collect(),
            c: E2eeCounters::default(),
            samples: Samples::default(),
            upload,
        })
    }

    /// Called with each sync's `device_one_time_keys_count` and when that
    /// sync was sent: below half of `ONE_TIME_KEYS`, uploads new keys up to
    /// it, as clients do. One top-up per device at a time, and none on a
    /// count from a sync sent before the last top-up was answered: under
    /// load such stale counts come back for seconds, and each would upload
    /// again.
    pub fn on_key_count(
        &self,
        shared: &Arc<Shared>,
        user: usize,
        token: &str,
        count: u64,
        sync_sent_us: u64,
    ) {
        let last = self.topped_up_us[user].load(Relaxed);
        if count >= ONE_TIME_KEYS / 2
            || sync_sent_us < last
            || self.topped_up_us[user]
                .compare_exchange(last, u64::MAX, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let (shared, token) = (shared.clone(), token.to_owned());
        tokio::spawn(async move {
            let Some(e2ee) = &shared.e2ee else { return };
            e2ee.c.top_ups.fetch_add(1, Relaxed);
            let result = async {
                let keys = e2ee.devices[user].one_time_keys(&e2ee.rng, ONE_TIME_KEYS - count)?;
                let body = json!({ "one_time_keys": keys });
                shared.api.keys(&token, "upload", &body).await
            }
            .await;
            if let Err(err) = result {
                e2ee.c.top_up_errors.fetch_add(1, Relaxed);
                note_error(&shared.errors, &err);
            }
            e2ee.topped_up_us[user].store(now_micros(), Relaxed);
        });
    }

    /// (share, recipient) pairs of the acknowledged shares not arrived yet.
    pub fn count_missing(&self, inboxes: &[Arc<Inbox>]) -> u64 {
        let shares = self.shares.lock().unwrap();
        shares
            .iter()
            .map(|s| {
                s.recipients
                    .iter()
                    .filter(|&&r| !inboxes[r].to_device.lock().unwrap().contains_key(&s.n))
                    .count() as u64
            })
            .sum()
    }
}

/// Each user's device id (registration made one device per user).
async fn device_ids(api: &Api, world: &World) -> anyhow::Result<Vec<String>> {
    let limit = Arc::new(Semaphore::new(JOIN_PARALLELISM));
    let mut tasks = JoinSet::new();
    for (i, u) in world.users.iter().enumerate() {
        let (api, limit, token) = (api.clone(), limit.clone(), u.token.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            anyhow::Ok((i, api.whoami_device(&token).await?))
        });
    }
    let mut ids = vec![String::new(); world.users.len()];
    while let Some(res) = tasks.join_next().await {
        let (i, id) = res??;
        ids[i] = id;
    }
    Ok(ids)
}

/// Uploads each user's keys; returns each request's round trip in µs.
async fn upload_all(api: &Api, world: &World, bodies: Vec<Value>) -> anyhow::Result<Vec<u64>> {
    let limit = Arc::new(Semaphore::new(JOIN_PARALLELISM));
    let mut tasks = JoinSet::new();
    for (u, body) in world.users.iter().zip(bodies) {
        let (api, limit, token) = (api.clone(), limit.clone(), u.token.clone());
        let user_id = u.user_id.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let t = Instant::now();
            let answer = api
                .keys(&token, "upload", &body)
                .await
                .with_context(|| format!("uploading the keys of {user_id}"))?;
            let us = t.elapsed().as_micros() as u64;
            let count = answer
                .pointer("/one_time_key_counts/signed_curve25519")
                .and_then(Value::as_u64);
            anyhow::ensure!(
                count == Some(ONE_TIME_KEYS),
                "{user_id}: the upload answered one-time key counts {}",
                answer
            );
            anyhow::Ok(us)
        });
    }
    let mut latency_us = Vec::with_capacity(world.users.len());
    let mut progress = Progress::new("keys uploaded", world.users.len());
    while let Some(res) = tasks.join_next().await {
        latency_us.push(res??);
        progress.step();
    }
    Ok(latency_us)
}
