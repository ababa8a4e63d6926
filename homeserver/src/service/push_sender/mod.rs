//! Sending push notifications to Matrix push gateways (spec: "Push Gateway
//! API") and, for the apps in `[[push.fcm]]`, to FCM directly (`fcm.rs`),
//! through a durable outbox.
//!
//! One task reads the event bus. For each new event it finds the room's
//! members with pushers, evaluates their push rules (the same evaluation
//! that gives unread counts), leaves out by default those connected right
//! now (the seed: notify offline users), and writes a notification per
//! pusher to the outbox in one transaction. On a cluster the events come
//! from a Kafka consumer group instead (`EventBus::claim_events`): each event
//! is decided by one node, and a node that dies hands its share to the
//! others, which resume from the group's committed offsets; the outbox
//! remembers which events were decided, so an event handed out twice is
//! queued once. Another task drains the outbox: each notification is
//! taken and leased in one statement (its due time moved past the request
//! timeout, so no other node takes it) and sent on its own task, so one
//! slow gateway never holds up another's notifications or any message
//! delivery. 2xx finishes it, and
//! pushkeys the gateway lists as `rejected` are removed; 5xx, 429 and
//! network errors are retried with exponential backoff; other 4xx give up.
//! A crash loses nothing queued: the lease runs out and it is sent again.
//! Nor anything committed but not yet decided: on one node the decider
//! saves how far it got about once a second and, on start, decides the
//! events committed after that (on a cluster the consumer group's offsets
//! do this). A destination has at most [`MAX_PER_DESTINATION`] requests in
//! flight; the drain leaves the rest of its notifications queued, so a
//! gateway that hangs holds a few of the slots, never all of them.
//! FCM notifications are queued already in FCM's message shape, and FCM's
//! `UNREGISTERED` answer removes the pusher as a gateway's `rejected` does.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

mod deciding;
mod destinations;

use destinations::Destinations;

use super::fcm::{self, Fcm};
use super::presence::PresenceService;
use super::push_rules::PushRuleService;
use super::pushers::PusherService;
use super::rooms::{now_ms, RoomService};
use super::sync::AckMarks;
use super::timeline_cache::TimelineCache;
use super::unread::UnreadService;
use crate::store::{EventBus, PushStore, QueuedPush, ReceiptStore, RoomStore};

/// A gateway gets this long to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A notification taken for sending is not taken again for this long.
const LEASE_MS: i64 = 30_000;
/// First retry after this; doubles per attempt up to `MAX_BACKOFF_MS`.
const FIRST_BACKOFF_MS: i64 = 1_000;
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// After this many failed attempts a notification is dropped.
const MAX_ATTEMPTS: i64 = 15;
/// The longest the drain sleeps without looking at the outbox.
const IDLE_MS: i64 = 5_000;
/// Requests to gateways in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// Requests to one destination (a gateway's URL, or FCM) in flight at once:
/// a quarter of the slots, so a gateway that stops answering delays only
/// its own notifications.
const MAX_PER_DESTINATION: usize = MAX_IN_FLIGHT / 4;
/// When every due notification is for a busy destination, the drain waits
/// this long (or for a slot to free) before looking again.
const BUSY_WAIT_MS: i64 = 1_000;

/// Everything the sender reads.
pub struct PushSenderParts {
    pub rooms: RoomService,
    pub room_store: Arc<dyn RoomStore>,
    pub cache: Arc<TimelineCache>,
    pub store: Arc<dyn PushStore>,
    pub pushers: Arc<PusherService>,
    pub push_rules: Arc<PushRuleService>,
    pub unread: Arc<UnreadService>,
    pub presence: Arc<PresenceService>,
    /// Whether and by which device a user received a message.
    pub receipts: Arc<dyn ReceiptStore>,
    /// How far users' clients on this node acknowledged holding events.
    pub acks: Arc<AckMarks>,
    /// Push users connected right now at once, received or not.
    pub notify_connected: bool,
    /// How long a connected user's notification waits for a device of
    /// theirs to receive the message.
    pub delivery_grace_ms: i64,
    /// Apps this server sends to FCM itself.
    pub fcm: Arc<Fcm>,
}

/// The outbox `url` of a notification for FCM rather than a gateway.
const FCM_URL: &str = "fcm:v1";

struct Sender {
    parts: PushSenderParts,
    http: reqwest::Client,
    nudge: Notify,
    in_flight: Arc<Semaphore>,
    destinations: Arc<Destinations>,
}

/// Starts the sender's two tasks.
pub fn spawn(parts: PushSenderParts, bus: &dyn EventBus, shutdown: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap_or_default();
    let sender = Arc::new(Sender {
        parts,
        http,
        nudge: Notify::new(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        destinations: Arc::default(),
    });
    let events = sender.clone();
    let stop = shutdown.clone();
    // On a cluster each committed event is handed to one node, which decides
    // its pushes for all; on one node every event is this node's.
    match bus.claim_events("push") {
        Some(claimed) => tokio::spawn(events.decide_claimed(claimed, stop)),
        None => tokio::spawn(events.decide_notified(bus.subscribe(), stop)),
    };
    tokio::spawn(sender.drain(shutdown));
}

fn backoff_ms(attempts: i64) -> i64 {
    let shift = attempts.clamp(0, 20) as u32;
    (FIRST_BACKOFF_MS << shift).min(MAX_BACKOFF_MS)
}

impl Sender {
    /// Sends whatever is due, then sleeps until the next is due or more
    /// is queued.
    async fn drain(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = now_ms();
            // Leased as taken, so a crash mid-request means a retry, not a
            // loss, and no other node takes it meanwhile. Only as many as
            // can be sent now are taken.
            let free = self.in_flight.available_permits().max(1);
            let busy = self.destinations.busy();
            let due = match self
                .parts
                .store
                .claim_pushes(now, now + LEASE_MS, free, &busy)
                .await
            {
                Ok(due) => due,
                Err(err) => {
                    tracing::warn!(%err, "reading the push outbox failed");
                    Vec::new()
                }
            };
            let took_all = due.len() >= free;
            for queued in due {
                // Checked here, in due order, rather than on the sending
                // task: a held notification is settled before any that
                // fell due after it is sent.
                if self.received(&queued).await {
                    self.finish(queued.id).await;
                    continue;
                }
                let Some(slot) = self.destinations.try_take(&queued.push.url) else {
                    // More for one destination than it may have in flight:
                    // back to the queue, due now and not an attempt; rounds
                    // skip that destination until one of its requests ends.
                    if let Err(err) = self
                        .parts
                        .store
                        .retry_push(queued.id, queued.attempts, now)
                        .await
                    {
                        tracing::warn!(%err, "updating the push outbox failed");
                    }
                    continue;
                };
                let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                    return;
                };
                let this = self.clone();
                tokio::spawn(async move {
                    this.send(queued).await;
                    drop(permit);
                    drop(slot);
                    this.nudge.notify_one();
                });
            }
            // Never idle long: on a cluster other nodes queue rows (and a
            // dead node's leases run out) without nudging this one.
            let mut wait_ms = match self.parts.store.next_push_due().await {
                Ok(Some(at)) => (at - now_ms()).clamp(0, IDLE_MS),
                _ => IDLE_MS,
            };
            // What is due may all be for busy destinations, which a round
            // skips: wait for one of their requests to end (it nudges).
            if !took_all && !self.destinations.busy().is_empty() {
                wait_ms = wait_ms.max(BUSY_WAIT_MS);
            }
            let wait = Duration::from_millis(wait_ms as u64);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A held notification whose message a device of the user received (or
    /// the user read) meanwhile: nothing to push. When the receipts cannot
    /// be read it is pushed: a needless notification beats a lost one.
    async fn received(&self, queued: &QueuedPush) -> bool {
        let Some((room_id, stream)) = &queued.push.unless_received else {
            return false;
        };
        let user_id = &queued.push.user_id;
        if self.parts.unread.has_read(user_id, room_id, *stream)
            || self.parts.acks.upto(user_id) >= *stream
        {
            return true;
        }
        match self.parts.receipts.received_upto(user_id, room_id).await {
            Ok(upto) => upto.is_some_and(|upto| upto >= *stream),
            Err(err) => {
                tracing::warn!(%err, "reading receipts for a held notification failed");
                false
            }
        }
    }

    async fn finish(&self, id: i64) {
        if let Err(err) = self.parts.store.finish_push(id).await {
            tracing::warn!(%err, "updating the push outbox failed");
        }
    }

    async fn send(&self, queued: QueuedPush) {
        let retry = if queued.push.url == FCM_URL {
            self.send_fcm(&queued).await
        } else {
            self.send_gateway(&queued).await
        };
        let store = &self.parts.store;
        let attempts = queued.attempts + 1;
        let outcome = if retry && attempts < MAX_ATTEMPTS {
            store
                .retry_push(queued.id, attempts, now_ms() + backoff_ms(queued.attempts))
                .await
        } else {
            store.finish_push(queued.id).await
        };
        if let Err(err) = outcome {
            tracing::warn!(%err, "updating the push outbox failed");
        }
    }

    /// Sends to FCM; true when worth retrying.
    async fn send_fcm(&self, queued: &QueuedPush) -> bool {
        let push = &queued.push;
        match self
            .parts
            .fcm
            .send(&self.http, &push.app_id, &push.body)
            .await
        {
            fcm::Outcome::Delivered | fcm::Outcome::GiveUp => false,
            fcm::Outcome::Retry => true,
            fcm::Outcome::Unregistered => {
                tracing::info!(app_id = %push.app_id, "FCM says a registration token is dead; removing its pusher");
                self.parts
                    .pushers
                    .remove_pushkey(&push.app_id, &push.pushkey)
                    .await;
                false
            }
        }
    }

    /// Sends to a Matrix push gateway; true when worth retrying.
    async fn send_gateway(&self, queued: &QueuedPush) -> bool {
        let result = self
            .http
            .post(&queued.push.url)
            .json(&queued.push.body)
            .send()
            .await;
        match result {
            Ok(resp) if resp.status().is_success() => {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                for key in body["rejected"].as_array().into_iter().flatten() {
                    if let Some(key) = key.as_str() {
                        tracing::info!(app_id = %queued.push.app_id, "gateway rejected a pushkey; removing its pusher");
                        self.parts
                            .pushers
                            .remove_pushkey(&queued.push.app_id, key)
                            .await;
                    }
                }
                false
            }
            Ok(resp) => {
                let status = resp.status();
                let transient = status.is_server_error() || status.as_u16() == 429;
                if !transient {
                    tracing::warn!(%status, url = %queued.push.url, "push gateway refused a notification; dropping it");
                }
                transient
            }
            Err(err) => {
                tracing::debug!(%err, url = %queued.push.url, "push gateway unreachable");
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stops_growing() {
        assert_eq!(backoff_ms(0), 1_000);
        assert_eq!(backoff_ms(1), 2_000);
        assert_eq!(backoff_ms(5), 32_000);
        assert_eq!(backoff_ms(14), MAX_BACKOFF_MS);
    }
}
