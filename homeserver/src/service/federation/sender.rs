//! Sending our events and ephemeral data (EDUs: typing, receipts) to the
//! other servers of a room: one queue and one transaction in flight per
//! destination, at most 50 PDUs and 100 EDUs a transaction, a
//! failed transaction retried with the same id after a backoff that grows
//! (with jitter) up to five minutes and resets when the destination answers
//! or sends us a request.
//!
//! The queue is in memory and fed by the node that committed the events,
//! so each event goes out once per destination even on a cluster. What
//! makes it durable is the event log itself: each answered transaction
//! records, per room, the latest of our events the destination accepted
//! ([`FederationStore::set_sent`]; never past an event of the room still
//! queued), and at start [`Outbox::resume`] queues again our events after
//! that for every server in our rooms, so neither a restart nor `kill -9`
//! loses an event another server has yet to get. An event committed in
//! the moment before the crash but not yet handed to the queue reaches the
//! other server when a later event names it as a parent: the receiver asks
//! for it (`get_missing_events`), as Synapse's catch-up relies on too.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use ruma_common::{
    MilliSecondsSinceUnixEpoch, OwnedRoomId, OwnedServerName, OwnedTransactionId, RoomId,
    ServerName, TransactionId,
};
use ruma_federation_api::transactions::send_transaction_message;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::FederationService;
use crate::store::e2ee::OutboundEdu;
use crate::store::{
    Direction, E2eeStore, FederationStore, RoomStore, StoreResult, StoredEvent, StreamPos,
};

/// PDUs and EDUs per transaction (the spec's limits).
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
/// EDUs kept for a destination that does not answer: typing and receipts
/// are soon stale, so the oldest go first.
const MAX_QUEUED_EDUS: usize = 1000;
/// Our events of one room queued again for a server at start, at most: the
/// latest ones; it fetches any before them it lacks (`get_missing_events`).
const RESUME_PER_ROOM: usize = 100;
/// Events of one room read, at most, to find them; and per read.
const RESUME_SCAN: usize = 10_000;
const RESUME_PAGE: usize = 500;
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The queues of every destination; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    federation: Arc<FederationService>,
    progress: Arc<dyn FederationStore>,
    /// Where durable EDUs (to-device messages) wait until sent.
    outbound: Arc<dyn E2eeStore>,
    queues: Mutex<HashMap<OwnedServerName, Arc<Queue>>>,
    shutdown: CancellationToken,
}

/// One of our events on its way to one server.
#[derive(Clone)]
struct QueuedPdu {
    pdu: Box<RawValue>,
    room_id: OwnedRoomId,
    stream: StreamPos,
}

/// An EDU on its way; `stored` names the row of a durable one, deleted
/// once the destination has it.
#[derive(Clone)]
struct QueuedEdu {
    edu: Box<RawValue>,
    stored: Option<i64>,
}

#[derive(Default)]
struct Queue {
    pdus: Mutex<VecDeque<QueuedPdu>>,
    edus: Mutex<VecDeque<QueuedEdu>>,
    wake: Notify,
}

impl Outbox {
    pub fn new(
        federation: Arc<FederationService>,
        progress: Arc<dyn FederationStore>,
        outbound: Arc<dyn E2eeStore>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                federation,
                progress,
                outbound,
                queues: Mutex::default(),
                shutdown,
            }),
        }
    }

    /// Queues `pdu`, our event of `room_id` at `stream`, for each of
    /// `destinations`.
    pub fn send(
        &self,
        pdu: &RawValue,
        room_id: &RoomId,
        stream: StreamPos,
        destinations: impl IntoIterator<Item = OwnedServerName>,
    ) {
        for destination in destinations {
            let queue = self.queue(destination);
            queue.pdus.lock().push_back(QueuedPdu {
                pdu: pdu.to_owned(),
                room_id: room_id.to_owned(),
                stream,
            });
            queue.wake.notify_one();
        }
    }

    /// At start: queues again, for every other server in our rooms, our
    /// events it has not accepted yet (those after the latest it did, or
    /// after its users joined), oldest first. On a cluster every node does
    /// so when it starts; an event another node is still sending may then
    /// go out twice, which the receiver ignores.
    pub async fn resume(&self, rooms: &dyn RoomStore, ours: &ServerName) -> StoreResult<usize> {
        let head = rooms.events_position().await?;
        let mut queued = 0;
        for destination in self.inner.progress.destinations(ours).await? {
            // What it accepted last; never told anything, since it joined.
            let after = destination.sent_upto.unwrap_or(destination.joined_at);
            if after >= head {
                continue;
            }
            let unsent = ours_after(rooms, &destination.room_id, after, head, ours).await?;
            for event in unsent {
                match serde_json::value::to_raw_value(event.pdu.as_ref()) {
                    Ok(raw) => {
                        let server = destination.server.clone();
                        self.send(&raw, &event.room_id, event.stream, [server]);
                        queued += 1;
                    }
                    Err(err) => tracing::error!(%err, "a stored event could not be queued"),
                }
            }
        }
        Ok(queued)
    }

    /// Queues the EDU `edu` for each of `destinations`. Such EDUs (typing,
    /// receipts, presence, device lists) are soon stale: past
    /// [`MAX_QUEUED_EDUS`] for a destination the oldest go.
    pub fn send_edu(
        &self,
        edu: &RawValue,
        destinations: impl IntoIterator<Item = OwnedServerName>,
    ) {
        for destination in destinations {
            self.push_edu(
                destination,
                QueuedEdu {
                    edu: edu.to_owned(),
                    stored: None,
                },
            );
        }
    }

    /// Queues an EDU already stored (to-device messages, see
    /// [`E2eeStore::pending_outbound`]): never dropped, and its row goes
    /// once the destination has it.
    pub fn send_stored_edu(&self, stored: OutboundEdu) {
        let Ok(edu) = RawValue::from_string(stored.edu) else {
            tracing::error!(id = stored.id, "a stored EDU is not JSON");
            return;
        };
        let queued = QueuedEdu {
            edu,
            stored: Some(stored.id),
        };
        self.push_edu(stored.destination, queued);
    }

    /// At start: queues again the stored EDUs no server has taken yet.
    pub async fn resume_edus(&self) -> StoreResult<usize> {
        let pending = self.inner.outbound.pending_outbound().await?;
        let count = pending.len();
        for stored in pending {
            self.send_stored_edu(stored);
        }
        Ok(count)
    }

    fn push_edu(&self, destination: OwnedServerName, queued: QueuedEdu) {
        let queue = self.queue(destination);
        let mut edus = queue.edus.lock();
        if edus.len() >= MAX_QUEUED_EDUS {
            if let Some(stale) = edus.iter().position(|e| e.stored.is_none()) {
                edus.remove(stale);
            }
        }
        edus.push_back(queued);
        drop(edus);
        queue.wake.notify_one();
    }

    /// The destination's queue, with its sending task started on first use.
    fn queue(&self, destination: OwnedServerName) -> Arc<Queue> {
        let mut queues = self.inner.queues.lock();
        if let Some(queue) = queues.get(&destination) {
            return queue.clone();
        }
        let queue = Arc::new(Queue::default());
        queues.insert(destination.clone(), queue.clone());
        let inner = self.inner.clone();
        tokio::spawn(deliver(inner, destination, queue.clone()));
        queue
    }
}

/// Sends the destination's queue, a transaction at a time, until shutdown.
async fn deliver(inner: Arc<Inner>, destination: OwnedServerName, queue: Arc<Queue>) {
    let mut backoff = MIN_BACKOFF;
    let waker = inner.federation.waker(&destination);
    loop {
        let batch: Vec<QueuedPdu> = {
            let pdus = queue.pdus.lock();
            pdus.iter().take(MAX_PDUS).cloned().collect()
        };
        let edus: Vec<QueuedEdu> = {
            let edus = queue.edus.lock();
            edus.iter().take(MAX_EDUS).cloned().collect()
        };
        if batch.is_empty() && edus.is_empty() {
            tokio::select! {
                _ = queue.wake.notified() => continue,
                _ = inner.shutdown.cancelled() => return,
            }
        }
        let txn_id = TransactionId::new();
        loop {
            let pdus = batch.iter().map(|q| q.pdu.clone()).collect();
            let raw = edus.iter().map(|q| q.edu.clone()).collect();
            let sent = send_once(&inner.federation, &destination, &txn_id, pdus, raw);
            match sent.await {
                Ok(()) => {
                    let waiting = {
                        let mut pdus = queue.pdus.lock();
                        pdus.drain(..batch.len());
                        oldest_waiting(&pdus, &batch)
                    };
                    record_progress(inner.progress.as_ref(), &destination, &batch, &waiting).await;
                    forget_sent_edus(&inner, &queue, &edus).await;
                    backoff = MIN_BACKOFF;
                    break;
                }
                Err(err) => {
                    let wait = jittered(backoff);
                    tracing::info!(%destination, error = %err, retry_in = ?wait, "federation send failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                        // It talked to us: it is up, try now.
                        _ = waker.notified() => backoff = MIN_BACKOFF,
                        _ = inner.shutdown.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// Takes the EDUs that went out off the queue (some of those not stored
/// may have been dropped for newer ones meanwhile: as far as they are
/// there), and deletes the stored ones' rows.
async fn forget_sent_edus(inner: &Inner, queue: &Queue, sent: &[QueuedEdu]) {
    {
        let mut queued = queue.edus.lock();
        for edu in sent {
            let found = queued.iter().position(|q| match (q.stored, edu.stored) {
                (Some(a), Some(b)) => a == b,
                (None, None) => q.edu.get() == edu.edu.get(),
                _ => false,
            });
            if let Some(at) = found {
                queued.remove(at);
            }
        }
    }
    let stored: Vec<i64> = sent.iter().filter_map(|e| e.stored).collect();
    if stored.is_empty() {
        return;
    }
    if let Err(err) = inner.outbound.outbound_sent(&stored).await {
        // They go out again after a restart; the receiver drops repeats.
        tracing::warn!(%err, "forgetting sent to-device EDUs failed");
    }
}

/// For each room of `sent`, the oldest of its events still queued: the
/// queue is not in stream order (rounds are handed over as they become
/// durable, and a restart's resume runs beside new sends).
fn oldest_waiting(
    queued: &VecDeque<QueuedPdu>,
    sent: &[QueuedPdu],
) -> Vec<(OwnedRoomId, StreamPos)> {
    let mut oldest: Vec<(OwnedRoomId, StreamPos)> = Vec::new();
    for q in queued {
        if !sent.iter().any(|s| s.room_id == q.room_id) {
            continue;
        }
        match oldest.iter_mut().find(|(room, _)| *room == q.room_id) {
            Some((_, at)) => *at = (*at).min(q.stream),
            None => oldest.push((q.room_id.clone(), q.stream)),
        }
    }
    oldest
}

/// Notes how far the destination has each room's events (what a restart
/// resumes from): the latest sent, but short of any event of the room still
/// waiting in the queue. Failing costs only events sent again after a
/// restart.
async fn record_progress(
    store: &dyn FederationStore,
    destination: &ServerName,
    sent: &[QueuedPdu],
    waiting: &[(OwnedRoomId, StreamPos)],
) {
    let mut upto: Vec<(&RoomId, StreamPos)> = Vec::new();
    for q in sent {
        match upto.iter_mut().find(|(room, _)| *room == q.room_id) {
            Some((_, at)) => *at = (*at).max(q.stream),
            None => upto.push((&q.room_id, q.stream)),
        }
    }
    for (room, at) in &mut upto {
        if let Some((_, oldest)) = waiting.iter().find(|(r, _)| r == room) {
            *at = (*at).min(oldest - 1);
        }
    }
    if upto.is_empty() {
        return;
    }
    if let Err(err) = store.set_sent(destination, &upto).await {
        tracing::warn!(%destination, %err, "recording federation progress failed");
    }
}

/// One transaction; a PDU the destination refuses is its answer, not a
/// reason to send again (synapse#11160).
async fn send_once(
    federation: &FederationService,
    destination: &ruma_common::ServerName,
    txn_id: &OwnedTransactionId,
    pdus: Vec<Box<RawValue>>,
    edus: Vec<Box<RawValue>>,
) -> Result<(), super::FederationError> {
    let mut request = send_transaction_message::v1::Request::new(
        txn_id.clone(),
        federation.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
    );
    request.pdus = pdus;
    request.edus = edus
        .into_iter()
        .map(ruma_common::serde::Raw::from_json)
        .collect();
    let response = federation.client.send(destination, request).await?;
    for (event_id, result) in response.pdus {
        if let Err(reason) = result {
            tracing::info!(%destination, %event_id, %reason, "the destination refused our event");
        }
    }
    Ok(())
}

/// Our events of a room after `after` up to `head`, oldest first: the
/// latest [`RESUME_PER_ROOM`] of them, found among at most
/// [`RESUME_SCAN`] events (other servers' are skipped, not counted).
async fn ours_after(
    rooms: &dyn RoomStore,
    room_id: &RoomId,
    after: StreamPos,
    head: StreamPos,
    ours: &ServerName,
) -> StoreResult<VecDeque<StoredEvent>> {
    let mut found = VecDeque::new();
    let (mut from, mut scanned) = (after, 0);
    while scanned < RESUME_SCAN {
        let page = rooms
            .room_events(room_id, from, Direction::Forward, RESUME_PAGE)
            .await?;
        let Some(last) = page.last().map(|e| e.stream) else {
            break;
        };
        scanned += page.len();
        for event in page.into_iter().take_while(|e| e.stream <= head) {
            if event.sender.server_name() == ours {
                found.push_back(event);
                if found.len() > RESUME_PER_ROOM {
                    found.pop_front();
                }
            }
        }
        if last >= head {
            break;
        }
        from = last;
    }
    Ok(found)
}

/// `base` times a factor in [0.8, 1.4), so retries of many destinations
/// spread out.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::thread_rng().gen_range(0.8..1.4))
}
