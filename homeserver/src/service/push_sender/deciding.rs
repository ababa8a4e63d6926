//! Deciding which notifications an event calls for and queueing them:
//! on one node from the bus (with a catch-up from the store after a stop),
//! on a cluster from the push consumer group.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use ruma_common::{RoomId, UserId};
use ruma_events::room::member::MembershipState;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{fcm, Sender, FCM_URL};
use crate::service::error::ServiceResult;
use crate::service::push_rules::PreparedEvent;
use crate::service::rooms::now_ms;
use crate::service::rooms::state::membership_of;
use crate::service::unread::{display_name, push_context};
use crate::store::cluster::ClaimedEvents;
use crate::store::{OutboxPush, StoredEvent, StreamNotice};

/// How often one node saves how far it decided pushes.
const SAVE_PROGRESS: Duration = Duration::from_secs(1);
/// Events read from the store per step of the catch-up at start.
const CATCH_UP_PAGE: usize = 256;

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

impl Sender {
    /// One node: decides for the events committed since the position saved
    /// last (a crash can come between an event's commit and its decision),
    /// then for each event the bus announces, saving how far it got. The bus
    /// was subscribed to before the catch-up read the store, so no event
    /// falls between the two; the bus announces events in stream order.
    pub(super) async fn decide_notified(
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
                    Some(StreamNotice::RoomEvent { stream, room_id, .. }) => {
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
    async fn catch_up(&self) -> ServiceResult<i64> {
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
    pub(super) async fn decide_claimed(
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

    async fn on_event(&self, room_id: &RoomId, stream: i64) -> ServiceResult<()> {
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
    async fn decide(&self, event: &StoredEvent) -> ServiceResult<()> {
        let parts = &self.parts;
        if !parts.pushers.anyone_has_pushers() {
            return Ok(());
        }
        let (room_id, stream) = (&event.room_id, event.stream);
        let Some(state) = parts.rooms.state_snapshot(room_id).await? else {
            return Ok(());
        };
        let mut recipients = state.members_with(MembershipState::Join);
        // An invitee is not joined yet but should hear of the invite.
        if event.kind == "m.room.member" {
            let target = event.state_key.as_deref().map(UserId::parse);
            if let Some(Ok(target)) = target {
                if membership_of(&event.pdu["content"]) == Some(MembershipState::Invite) {
                    recipients.push(target);
                }
            }
        }
        recipients.retain(|u| u != &event.sender);
        let context = push_context(room_id, &state);
        let prepared = PreparedEvent::new(&event.pdu, &context);
        let info = EventInfo {
            event,
            sender_name: state
                .get("m.room.member", event.sender.as_str())
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
            // A connected user's devices most likely get the message within
            // moments: held, it is pushed only if none did.
            let now = now_ms();
            let hold = !parts.notify_connected && parts.presence.is_connected(&user_id).await;
            let (due_ts, unless_received) = match hold {
                true => (
                    now + parts.delivery_grace_ms,
                    Some((room_id.clone(), stream)),
                ),
                false => (now, None),
            };
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
                    due_ts,
                    unless_received: unless_received.clone(),
                });
            }
        }
        if !queued.is_empty() && parts.store.enqueue_pushes(stream, queued, now_ms()).await? {
            self.nudge.notify_one();
        }
        Ok(())
    }
}
