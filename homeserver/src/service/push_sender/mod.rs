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

use futures::stream::{BoxStream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

mod destinations;

use destinations::Destinations;

use super::fcm::{self, Fcm};
use super::presence::PresenceService;
use super::push_rules::{PreparedEvent, PushRuleService};
use super::pushers::PusherService;
use super::rooms::{now_ms, RoomService};
use super::timeline_cache::TimelineCache;
use super::unread::{display_name, push_context, UnreadService};
use crate::store::cluster::ClaimedEvents;
use crate::store::{
    EventBus, OutboxPush, PushStore, QueuedPush, RoomStore, StoredEvent, StreamNotice,
};

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
/// How often one node saves how far it decided pushes.
const SAVE_PROGRESS: Duration = Duration::from_secs(1);
/// Events read from the store per step of the catch-up at start.
const CATCH_UP_PAGE: usize = 256;

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
    /// Push also to users connected right now.
    pub notify_connected: bool,
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

/// Events older than this when a node gets to them are not pushed: a node
/// that joins a new consumer group reads the whole retained log first.
const MAX_AGE_MS: i64 = 10 * 60 * 1000;

/// The room-wide parts of a notification.
struct EventInfo<'a> {
    event: &'a StoredEvent,
    sender_name: Option<String>,
    room_name: Option<String>,
}

/// The per-user, per-pusher parts of a notification.
struct Delivery {
    unread: u64,
    highlight: bool,
    sound: Option<String>,
    user_is_target: bool,
    event_id_only: bool,
    device: Value,
}

/// What a gateway is sent, in the push gateway API's shape.
fn notification(info: &EventInfo<'_>, d: Delivery) -> Value {
    let event = info.event;
    let prio = if d.highlight || d.sound.is_some() {
        "high"
    } else {
        "low"
    };
    let mut n = json!({
        "event_id": event.event_id,
        "room_id": event.room_id,
        "counts": {"unread": d.unread},
        "prio": prio,
        "devices": [d.device],
    });
    if !d.event_id_only {
        n["type"] = json!(event.kind);
        n["sender"] = json!(event.sender);
        n["content"] = event.pdu.get("content").cloned().unwrap_or(json!({}));
        if let Some(name) = &info.sender_name {
            n["sender_display_name"] = json!(name);
        }
        if let Some(name) = &info.room_name {
            n["room_name"] = json!(name);
        }
        if event.kind == "m.room.member" {
            n["user_is_target"] = json!(d.user_is_target);
        }
    }
    json!({ "notification": n })
}

fn backoff_ms(attempts: i64) -> i64 {
    let shift = attempts.clamp(0, 20) as u32;
    (FIRST_BACKOFF_MS << shift).min(MAX_BACKOFF_MS)
}

impl Sender {
    /// One node: decides for the events committed since the position saved
    /// last (a crash can come between an event's commit and its decision),
    /// then for each event the bus announces, saving how far it got. The bus
    /// was subscribed to before the catch-up read the store, so no event
    /// falls between the two; the bus announces events in stream order.
    async fn decide_notified(
        self: Arc<Self>,
        mut notices: BoxStream<'static, StreamNotice>,
        stop: CancellationToken,
    ) {
        let caught_up = match self.catch_up().await {
            Ok(through) => through,
            Err(err) => {
                tracing::warn!(error = %err.message, "deciding pushes missed while stopped failed");
                0
            }
        };
        let (mut through, mut saved) = (caught_up, caught_up);
        let mut save = tokio::time::interval(SAVE_PROGRESS);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = save.tick() => {
                    if through > saved {
                        match self.parts.store.set_pushes_decided_through(through).await {
                            Ok(()) => saved = through,
                            Err(err) => tracing::warn!(%err, "saving push progress failed"),
                        }
                    }
                }
                next = notices.next() => match next {
                    Some(StreamNotice::RoomEvent { stream, room_id, .. }) if stream != i64::MAX => {
                        if stream <= caught_up {
                            continue;
                        }
                        if let Err(err) = self.on_event(&room_id, stream).await {
                            tracing::warn!(error = %err.message, "deciding pushes failed");
                        }
                        through = through.max(stream);
                    }
                    Some(_) => {}
                    None => break,
                },
            }
        }
        if through > saved {
            if let Err(err) = self.parts.store.set_pushes_decided_through(through).await {
                tracing::warn!(%err, "saving push progress failed");
            }
        }
    }

    /// Decides for the events committed after the saved position (younger
    /// than [`MAX_AGE_MS`]); returns the position it got to. Events already
    /// queued are not queued again (the outbox remembers them).
    async fn catch_up(&self) -> super::error::ServiceResult<i64> {
        let parts = &self.parts;
        let saved = parts.store.pushes_decided_through().await?;
        let Some(mut through) = saved.filter(|_| parts.pushers.anyone_has_pushers()) else {
            // First start, or nobody to push to: nothing before now is due.
            let head = parts.room_store.events_position().await?;
            parts.store.set_pushes_decided_through(head).await?;
            return Ok(head);
        };
        let oldest = now_ms() - MAX_AGE_MS;
        let mut decided = 0usize;
        loop {
            let events = parts
                .room_store
                .events_after(through, CATCH_UP_PAGE)
                .await?;
            let Some(last) = events.last().map(|e| e.stream) else {
                break;
            };
            for event in &events {
                let ts = event.pdu["origin_server_ts"].as_i64().unwrap_or(i64::MAX);
                if event.stream == i64::MAX || ts < oldest {
                    continue;
                }
                if let Err(err) = self.decide(event).await {
                    tracing::warn!(error = %err.message, "deciding pushes failed");
                }
                decided += 1;
            }
            through = last;
            parts.store.set_pushes_decided_through(through).await?;
        }
        if decided > 0 {
            tracing::info!(
                decided,
                "decided pushes for events committed before the last stop"
            );
        }
        Ok(through)
    }

    /// A cluster: decides for the events handed to this node, then says so.
    async fn decide_claimed(
        self: Arc<Self>,
        mut claimed: BoxStream<'static, ClaimedEvents>,
        stop: CancellationToken,
    ) {
        loop {
            let ClaimedEvents { events, done } = tokio::select! {
                _ = stop.cancelled() => return,
                next = claimed.next() => match next {
                    Some(next) => next,
                    None => return,
                },
            };
            let oldest = now_ms() - MAX_AGE_MS;
            for event in events {
                let ts = event.pdu["origin_server_ts"].as_i64().unwrap_or(i64::MAX);
                if event.stream == i64::MAX || ts < oldest {
                    continue;
                }
                if let Err(err) = self.decide(&event).await {
                    tracing::warn!(error = %err.message, "deciding pushes failed");
                }
            }
            done();
        }
    }

    async fn on_event(&self, room_id: &str, stream: i64) -> super::error::ServiceResult<()> {
        let parts = &self.parts;
        if !parts.pushers.anyone_has_pushers() {
            return Ok(());
        }
        let event = match parts.cache.recent(room_id, stream - 1, stream, 1) {
            Some(slice) if !slice.events.is_empty() => slice.events.into_iter().next(),
            _ => parts
                .room_store
                .recent_events(&[room_id.to_owned()], stream - 1, stream, 1)
                .await?
                .into_iter()
                .next()
                .and_then(|(_, s)| s.events.into_iter().next()),
        };
        match event {
            Some(event) => self.decide(&event).await,
            None => Ok(()),
        }
    }

    /// Queues the notifications one event calls for.
    async fn decide(&self, event: &StoredEvent) -> super::error::ServiceResult<()> {
        let parts = &self.parts;
        if !parts.pushers.anyone_has_pushers() {
            return Ok(());
        }
        let (room_id, stream) = (event.room_id.as_str(), event.stream);
        let Some(state) = parts.rooms.state_snapshot(room_id).await? else {
            return Ok(());
        };
        let mut recipients = state.members_with("join");
        // An invitee is not joined yet but should hear of the invite.
        if event.kind == "m.room.member" {
            if let Some(target) = &event.state_key {
                if event.pdu["content"]["membership"] == "invite" {
                    recipients.push(target.clone());
                }
            }
        }
        recipients.retain(|u| u != &event.sender);
        let context = push_context(room_id, &state);
        let prepared = PreparedEvent::new(&event.pdu, &context);
        let info = EventInfo {
            event,
            sender_name: state
                .get("m.room.member", &event.sender)
                .and_then(|e| e.content.get("displayname"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            room_name: state
                .get("m.room.name", "")
                .and_then(|e| e.content.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        let mut queued = Vec::new();
        for user_id in recipients {
            let pushers = parts.pushers.pushers_of(&user_id);
            if pushers.is_empty() {
                continue;
            }
            if !parts.notify_connected && parts.presence.is_connected(&user_id).await {
                continue;
            }
            let ruleset = parts.push_rules.get_ruleset(&user_id).await?;
            let outcome = prepared
                .evaluate(&ruleset, &user_id, &display_name(&state, &user_id))
                .await;
            if !outcome.notify {
                continue;
            }
            let unread = parts
                .unread
                .counts(&user_id, &[room_id.to_owned()], stream)
                .await?
                .first()
                .map(|c| c.notifications)
                .unwrap_or(1);
            // Read already (on another device, or before a catch-up after a
            // restart got to it): nothing to tell.
            if parts.unread.has_read(&user_id, room_id, stream) {
                continue;
            }
            for pusher in pushers.iter() {
                let mut data = pusher.data.clone();
                let event_id_only =
                    data.get("format").and_then(Value::as_str) == Some("event_id_only");
                let url = data
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if let Some(map) = data.as_object_mut() {
                    map.remove("url");
                }
                let mut tweaks = json!({});
                if let Some(sound) = &outcome.sound {
                    tweaks["sound"] = json!(sound);
                }
                if outcome.highlight {
                    tweaks["highlight"] = json!(true);
                }
                let device = json!({
                    "app_id": pusher.app_id, "pushkey": pusher.pushkey,
                    "pushkey_ts": pusher.created_ts / 1000, "data": data, "tweaks": tweaks,
                });
                let body = notification(
                    &info,
                    Delivery {
                        unread,
                        highlight: outcome.highlight,
                        sound: outcome.sound.clone(),
                        user_is_target: event.state_key.as_deref() == Some(user_id.as_str()),
                        event_id_only,
                        device,
                    },
                );
                // Queued in the shape it is sent in, so a retry after a
                // restart needs nothing but the row.
                let (url, body) = if parts.fcm.handles(&pusher.app_id) {
                    (FCM_URL.to_owned(), fcm::message(&body))
                } else {
                    (url, body)
                };
                queued.push(OutboxPush {
                    user_id: user_id.clone(),
                    app_id: pusher.app_id.clone(),
                    pushkey: pusher.pushkey.clone(),
                    url,
                    body,
                });
            }
        }
        if !queued.is_empty() && parts.store.enqueue_pushes(stream, queued, now_ms()).await? {
            self.nudge.notify_one();
        }
        Ok(())
    }

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
