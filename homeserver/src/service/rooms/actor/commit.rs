//! Committing a round: one append for all its events, then, once durable,
//! the events made visible to syncs, shared with the other nodes, and the
//! requests answered.

use std::sync::Arc;

use futures::future::BoxFuture;
use ruma_common::{OwnedEventId, OwnedServerName, OwnedUserId, RoomId};
use serde_json::Value;
use tokio::sync::oneshot;

use super::build::{request_of, Retry};
use super::{Core, Job, TxnKey, BUS_WAIT};
use crate::service::error::ServiceResult;
use crate::service::rooms::EventRequest;
use crate::store::cluster::ClusterMessage;
use crate::store::{Durable, NewEvent, StoreError, StoredEvent, StreamNotice, StreamPos};

/// What a round has built so far: the events for its one append, and the
/// replies owed once they are durable.
#[derive(Default)]
pub(super) struct Batch {
    events: Vec<NewEvent>,
    owed: Vec<Owed>,
    /// Per event: built here, so other servers of the room get it.
    outgoing: Vec<bool>,
    /// The other servers of the room, when federating.
    pub destinations: Vec<OwnedServerName>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn has_outgoing(&self) -> bool {
        self.outgoing.contains(&true)
    }

    /// Events built here: other servers of the room will get them.
    pub fn add(&mut self, built: Vec<NewEvent>, owed: Owed) {
        self.outgoing.extend(built.iter().map(|_| true));
        self.events.extend(built);
        self.owed.push(owed);
    }

    /// Events another server built: kept here only.
    pub fn add_imported(&mut self, imported: Vec<NewEvent>, owed: Owed) {
        self.outgoing.extend(imported.iter().map(|_| false));
        self.events.extend(imported);
        self.owed.push(owed);
    }
}

/// A reply owed once a round's append is durable, and (on a node of a
/// cluster) what is needed to build the request again.
pub(super) struct Owed {
    pub reply: oneshot::Sender<ServiceResult<Vec<OwnedEventId>>>,
    /// The ids of the events built, the answer.
    pub ids: Vec<OwnedEventId>,
    pub txn: Option<TxnKey>,
    pub retry: Option<Retry>,
}

/// An event as it will be cached once its position is known.
struct Committed {
    event: StoredEvent,
    redaction: Option<(OwnedEventId, Arc<Value>)>,
}

impl Committed {
    fn from_new(e: &NewEvent) -> Self {
        Self {
            event: StoredEvent {
                stream: 0,
                event_id: e.event_id.clone(),
                room_id: e.room_id.clone(),
                sender: e.sender.clone(),
                kind: e.kind.clone(),
                state_key: e.state_key.clone(),
                pdu: e.pdu.clone(),
                txn: e.txn.clone(),
                visibility: e.visibility.clone(),
            },
            redaction: e
                .redaction
                .as_ref()
                .map(|(target, pdu)| (target.clone(), Arc::new(pdu.clone()))),
        }
    }
}

impl Core {
    /// Queues a round's events as one append, and leaves a task to answer
    /// once they are durable.
    pub(super) fn append(self: &Arc<Self>, room_id: &RoomId, loaded: &mut bool, batch: Batch) {
        let Batch {
            events,
            owed,
            outgoing,
            destinations,
        } = batch;
        let committed: Vec<Committed> = events.iter().map(Committed::from_new).collect();
        // Each event for other servers, with its place in the round.
        let sends: Vec<(usize, Arc<Value>)> = match (&self.outbox, destinations.is_empty()) {
            (Some(_), false) => events
                .iter()
                .zip(&outgoing)
                .enumerate()
                .filter(|(_, (_, out))| **out)
                .map(|(n, (event, _))| (n, event.pdu.clone()))
                .collect(),
            _ => Vec::new(),
        };
        match self.store.append(events) {
            Ok(durable) => {
                let core = self.clone();
                let room_id = room_id.to_owned();
                tokio::spawn(async move {
                    let positions = core.finish(&room_id, durable, committed, owed).await;
                    if let Some(positions) = positions {
                        core.send_out(&room_id, &sends, &positions, destinations);
                    }
                });
            }
            Err(err) => {
                *loaded = false;
                self.forget_txns(&owed);
                for Owed { reply, .. } in owed {
                    let _ = reply.send(Err(err.clone().into()));
                }
            }
        }
    }

    /// Hands committed events to the federation outbox for the room's
    /// other servers, each with its stream position (how the outbox notes
    /// what a destination accepted).
    fn send_out(
        &self,
        room_id: &RoomId,
        pdus: &[(usize, Arc<Value>)],
        positions: &[StreamPos],
        destinations: Vec<OwnedServerName>,
    ) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        for (n, pdu) in pdus {
            let Some(&stream) = positions.get(*n) else {
                continue;
            };
            match serde_json::value::to_raw_value(pdu.as_ref()) {
                Ok(raw) => outbox.send(&raw, room_id, stream, destinations.iter().cloned()),
                Err(err) => tracing::error!(%err, "an event could not be queued for federation"),
            }
        }
    }

    /// Waits for a round to be durable, makes its events visible to syncs,
    /// tells every node, and answers the requests. Returns the events'
    /// positions if the round was committed.
    async fn finish(
        self: &Arc<Self>,
        room_id: &RoomId,
        durable: Durable,
        committed: Vec<Committed>,
        owed: Vec<Owed>,
    ) -> Option<Vec<StreamPos>> {
        match durable.await {
            Ok(positions) => {
                let on_bus = self.publish(room_id, committed, &positions).await;
                // On a cluster the sender hears back once the events are on
                // Kafka too: the push consumer group decides notifications
                // from the log, so an event acknowledged but still in a
                // dead node's producer would never be pushed. Bounded, so a
                // Kafka outage slows sends but does not stop them (the store
                // has the events; syncs read them there).
                if tokio::time::timeout(BUS_WAIT, on_bus).await.is_err() {
                    tracing::warn!(
                        %room_id,
                        "events not on the cluster bus in time; answering anyway"
                    );
                }
                for Owed { reply, ids, .. } in owed {
                    let _ = reply.send(Ok(ids));
                }
                Some(positions)
            }
            Err(err) => {
                // Nothing of the round was committed, but the head names its
                // events: have the actor reload it from the store.
                self.forget_txns(&owed);
                self.submit(room_id, Job::Reload);
                for Owed {
                    reply,
                    ids,
                    txn,
                    retry,
                } in owed
                {
                    let again = retry.and_then(|r| Some((r, requests_again(&committed, &ids)?)));
                    match (&err, again) {
                        // Another node changed the state: authorize again
                        // against the reloaded head (which may now refuse).
                        // A conflict in a cluster is either a retried txn
                        // that another node committed (the retry finds it in
                        // the store and answers with its event id) or a
                        // byte-identical event built on the same stale
                        // parent elsewhere (the reloaded head gives it
                        // another parent, so another id).
                        (
                            StoreError::Stale | StoreError::Conflict,
                            Some((retry, (sender, requests))),
                        ) => self.submit(room_id, retry.into_job(sender, requests, txn, reply)),
                        _ => {
                            let _ = reply.send(Err(err.clone().into()));
                        }
                    }
                }
                None
            }
        }
    }

    /// Makes a round's events visible and shares them with the other
    /// nodes; returns what resolves once the bus holds them durably.
    async fn publish(
        &self,
        room_id: &RoomId,
        committed: Vec<Committed>,
        positions: &[StreamPos],
    ) -> BoxFuture<'static, ()> {
        let mut events = Vec::with_capacity(committed.len());
        let mut redactions = Vec::new();
        for (mut c, pos) in committed.into_iter().zip(positions) {
            c.event.stream = *pos;
            if let Some((target, pdu)) = c.redaction {
                redactions.push((room_id.to_owned(), target, pdu));
            }
            events.push(c.event);
        }
        // Other nodes cache the events from this message; one of a room
        // goes to one partition, so they arrive in commit order.
        let on_bus = self.bus.share_durable(&|| ClusterMessage::Events {
            events: events.clone(),
            redactions: redactions.clone(),
        });
        for visible in self.cache.insert(events, redactions) {
            let notice = StreamNotice::RoomEvent {
                stream: visible.stream,
                room_id: visible.room_id,
                affected_user: visible.affected_user,
            };
            if let Err(err) = self.bus.publish(notice).await {
                tracing::warn!(%err, "publishing a stream notice failed");
            }
        }
        on_bus
    }
}

/// The sender and requests of the events `ids` of a failed round, to build
/// them again.
fn requests_again(
    committed: &[Committed],
    ids: &[OwnedEventId],
) -> Option<(OwnedUserId, Vec<EventRequest>)> {
    let events: Vec<&StoredEvent> = ids
        .iter()
        .filter_map(|id| committed.iter().find(|c| &c.event.event_id == id))
        .map(|c| &c.event)
        .collect();
    let sender = events.first()?.sender.clone();
    let requests = events
        .iter()
        .map(|e| request_of(&e.kind, e.state_key.as_deref(), &e.pdu))
        .collect();
    Some((sender, requests))
}
