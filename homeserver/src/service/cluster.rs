//! Keeps one node of a cluster in step with the others.
//!
//! Every node commits to the shared store and shares what it committed on the
//! cluster bus (`store::cluster`). The follower task applies what the other
//! nodes shared: their events go into this node's timeline cache (which wakes
//! the syncs waiting here), their receipts into the receipt cache, and their
//! revocations and changes drop the matching cached entries (tokens, push
//! rules, pushers, room heads).
//!
//! The bus is a fast path, not the record. Once a second the follower
//! compares its watermarks with the store's heads; if it is still behind where
//! the store was a second earlier (a message was lost, or this node just
//! started), it reads the gap from the store. A lost message therefore delays
//! a wake-up by about a second and never loses or reorders anything: the
//! caches admit events and receipts strictly in stream order and ignore ones
//! they already hold.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use ruma_common::{EventId, RoomId};
use tokio_util::sync::CancellationToken;

use super::receipts::{READ, READ_PRIVATE};
use super::timeline_cache::TimelineCache;
use super::Services;
use crate::store::cluster::{ClusterBus, ClusterMessage, Redaction};
use crate::store::{EventBus, ReceiptRecord, ReceiptStore, RoomStore, StoredEvent, StreamNotice};

/// How often the store's heads are compared with this node's watermarks.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long events may wait above a gap in the timeline cache before the gap
/// is read from the store: every sync on this node waits on it meanwhile.
const GAP_PATIENCE: Duration = Duration::from_millis(100);
/// Events or receipts read from the store per gap-filling query.
const FILL_BATCH: usize = 1000;
/// Messages applied together before waking anyone.
const BATCH: usize = 256;

/// What the follower needs besides the services.
pub struct FollowerParts {
    pub bus: Arc<ClusterBus>,
    pub cache: Arc<TimelineCache>,
    pub rooms: Arc<dyn RoomStore>,
    pub receipts: Arc<dyn ReceiptStore>,
}

pub fn spawn_follower(services: Arc<Services>, parts: FollowerParts, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut incoming = parts.bus.incoming();
        let follower = Follower { services, parts };
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gap_tick = tokio::time::interval(GAP_PATIENCE);
        gap_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The watermark when a gap was last seen: a gap still there, with the
        // watermark unmoved, a whole GAP_PATIENCE later is filled.
        let mut gap_at = None;
        // The store's heads at the previous check.
        let mut seen = (0, 0);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                next = incoming.next() => {
                    let Some(first) = next else { break };
                    // Apply whatever else is ready with it, then wake once.
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match incoming.next().now_or_never() {
                            Some(Some(message)) => batch.push(message),
                            _ => break,
                        }
                    }
                    follower.apply(batch).await;
                }
                _ = tick.tick() => {
                    seen = follower.check(seen).await;
                }
                _ = gap_tick.tick() => {
                    gap_at = follower.check_gap(gap_at).await;
                }
            }
        }
    });
}

struct Follower {
    services: Arc<Services>,
    parts: FollowerParts,
}

impl Follower {
    async fn apply(&self, batch: Vec<ClusterMessage>) {
        let mut events = Vec::new();
        let mut redactions = Vec::new();
        let mut receipts = Vec::new();
        for message in batch {
            match message {
                ClusterMessage::Events {
                    events: mut e,
                    redactions: mut r,
                } => {
                    events.append(&mut e);
                    redactions.append(&mut r);
                }
                ClusterMessage::Receipts { mut records } => receipts.append(&mut records),
                ClusterMessage::Notice { notice } => {
                    match &notice {
                        // Push rules are account data: the cached set is stale.
                        // So may the ignored users be.
                        StreamNotice::AccountData { user_id, .. } => {
                            self.services.push_rules.forget(user_id);
                            self.services.accounts.forget_ignored(user_id);
                        }
                        // Another node heard that a remote user's devices changed.
                        StreamNotice::DeviceLists { user_id, .. } => {
                            self.services.e2ee.forget_remote_keys(user_id)
                        }
                        _ => {}
                    }
                    self.parts.bus.publish_local(notice).await;
                }
                ClusterMessage::ForgetTokens { hashes, device } => {
                    self.services.accounts.forget_tokens(&hashes);
                    if let Some((user_id, device_id)) = device {
                        self.services
                            .accounts
                            .forget_device_tokens(&user_id, &device_id);
                    }
                }
                ClusterMessage::PushersChanged => {
                    if let Err(err) = self.services.pushers.reload().await {
                        tracing::warn!(error = %err.message, "reloading pushers failed");
                    }
                }
            }
        }
        self.add_events(events, redactions).await;
        self.add_receipts(receipts).await;
    }

    /// Caches events committed elsewhere and wakes the syncs they concern.
    async fn add_events(&self, events: Vec<StoredEvent>, redactions: Vec<Redaction>) {
        if events.is_empty() {
            return;
        }
        // Only a state change matters to this node's room actors: a message
        // from elsewhere just forks the DAG (legal), and a state change the
        // actor has not seen yet is caught by the store's check anyway.
        let rooms: HashSet<&RoomId> = events
            .iter()
            .filter(|e| e.state_key.is_some())
            .map(|e| e.room_id.as_ref())
            .collect();
        for room_id in rooms {
            self.services.rooms.head_moved_elsewhere(room_id);
        }
        for visible in self.parts.cache.insert(events, redactions) {
            let notice = StreamNotice::RoomEvent {
                stream: visible.stream,
                room_id: visible.room_id,
                affected_user: visible.affected_user,
            };
            let _ = self.parts.bus.publish(notice).await;
        }
    }

    async fn add_receipts(&self, records: Vec<ReceiptRecord>) {
        if records.is_empty() {
            return;
        }
        for record in &records {
            let r = &record.receipt;
            if r.receipt_type == READ || r.receipt_type == READ_PRIVATE {
                // The reader's unread count drops here too.
                self.services
                    .unread
                    .mark_read(&r.user_id, &r.room_id, r.event_stream);
            }
        }
        self.services.receipts.announce(records).await;
    }

    /// Compares the store's heads with this node's watermarks and fills what
    /// is still missing since the previous check. Returns the heads seen now.
    async fn check(&self, (events_before, receipts_before): (i64, i64)) -> (i64, i64) {
        let events_head = match self.parts.rooms.events_position().await {
            Ok(head) => head,
            Err(err) => {
                tracing::warn!(%err, "reading the event stream head failed");
                events_before
            }
        };
        let receipts_head = match self.parts.receipts.receipts_position().await {
            Ok(head) => head,
            Err(err) => {
                tracing::warn!(%err, "reading the receipt stream head failed");
                receipts_before
            }
        };
        // Only what was already durable a check ago: anything newer is most
        // likely still on its way over the bus.
        let watermark = self.parts.cache.watermark();
        if watermark < events_before.min(events_head) {
            self.fill_events(watermark, events_before.min(events_head))
                .await;
        }
        let receipts_at = self.services.receipts.position();
        if receipts_at < receipts_before.min(receipts_head) {
            match self
                .parts
                .receipts
                .receipts_after(receipts_at, FILL_BATCH)
                .await
            {
                Ok(records) => self.add_receipts(records).await,
                Err(err) => tracing::warn!(%err, "filling the receipt gap failed"),
            }
        }
        (events_head, receipts_head)
    }

    /// Fills a gap below events waiting in the cache once it has lasted a
    /// whole period: a message from another node is late or lost, and every
    /// sync here waits on it.
    async fn check_gap(&self, before: Option<i64>) -> Option<i64> {
        let cache = &self.parts.cache;
        let lowest = cache.lowest_pending()?;
        let watermark = cache.watermark();
        if before == Some(watermark) {
            tracing::debug!(watermark, lowest, "filling a lasting gap from the store");
            self.fill_events(watermark, lowest - 1).await;
            return None;
        }
        Some(watermark)
    }

    async fn fill_events(&self, mut from: i64, upto: i64) {
        while from < upto {
            let events = match self.parts.rooms.events_after(from, FILL_BATCH).await {
                Ok(events) if !events.is_empty() => events,
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(%err, "filling the event gap failed");
                    return;
                }
            };
            tracing::debug!(
                from,
                count = events.len(),
                "filling an event gap from the store"
            );
            from = events.last().map_or(upto, |e| e.stream);
            // A redaction's target is stored redacted: cached copies must be too.
            let mut redactions = Vec::new();
            for event in events.iter().filter(|e| e.kind == "m.room.redaction") {
                // Room version 11 keeps `redacts` in the content.
                let target = event.pdu.get("content").and_then(|c| c.get("redacts"));
                let target = target.or(event.pdu.get("redacts")).and_then(|v| v.as_str());
                let Some(Ok(target)) = target.map(<&EventId>::try_from) else {
                    continue;
                };
                if let Ok(Some(stored)) = self.parts.rooms.get_event(target).await {
                    redactions.push((stored.room_id, stored.event_id, stored.pdu));
                }
            }
            self.add_events(events, redactions).await;
        }
    }
}
