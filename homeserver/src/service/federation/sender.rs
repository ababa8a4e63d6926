//! Sending our events and ephemeral data (EDUs: typing, receipts) to the
//! other servers of a room: one queue and one transaction in flight per
//! destination, at most 50 PDUs and 100 EDUs a transaction, a
//! failed transaction retried with the same id after a backoff that grows
//! (with jitter) up to five minutes and resets when the destination answers
//! or sends us a request.
//!
//! The queue is in memory and fed by the node that committed the events,
//! so each event goes out once per destination even on a cluster. Not yet:
//! a durable queue that survives a restart (issue 18).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use ruma_common::{MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, TransactionId};
use ruma_federation_api::transactions::send_transaction_message;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::FederationService;

/// PDUs and EDUs per transaction (the spec's limits).
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
/// EDUs kept for a destination that does not answer: typing and receipts
/// are soon stale, so the oldest go first.
const MAX_QUEUED_EDUS: usize = 1000;
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The queues of every destination; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    federation: Arc<FederationService>,
    queues: Mutex<HashMap<OwnedServerName, Arc<Queue>>>,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct Queue {
    pdus: Mutex<VecDeque<Box<RawValue>>>,
    edus: Mutex<VecDeque<Box<RawValue>>>,
    wake: Notify,
}

impl Outbox {
    pub fn new(federation: Arc<FederationService>, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                federation,
                queues: Mutex::default(),
                shutdown,
            }),
        }
    }

    /// Queues `pdu` for each of `destinations`.
    pub fn send(&self, pdu: &RawValue, destinations: impl IntoIterator<Item = OwnedServerName>) {
        for destination in destinations {
            let queue = self.queue(destination);
            queue.pdus.lock().push_back(pdu.to_owned());
            queue.wake.notify_one();
        }
    }

    /// Queues the EDU `edu` for each of `destinations`.
    pub fn send_edu(
        &self,
        edu: &RawValue,
        destinations: impl IntoIterator<Item = OwnedServerName>,
    ) {
        for destination in destinations {
            let queue = self.queue(destination);
            let mut edus = queue.edus.lock();
            if edus.len() >= MAX_QUEUED_EDUS {
                edus.pop_front();
            }
            edus.push_back(edu.to_owned());
            drop(edus);
            queue.wake.notify_one();
        }
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
        let batch: Vec<Box<RawValue>> = {
            let pdus = queue.pdus.lock();
            pdus.iter().take(MAX_PDUS).cloned().collect()
        };
        let edus: Vec<Box<RawValue>> = {
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
            let sent = send_once(
                &inner.federation,
                &destination,
                &txn_id,
                batch.clone(),
                edus.clone(),
            );
            match sent.await {
                Ok(()) => {
                    queue.pdus.lock().drain(..batch.len());
                    // Some of these may have been dropped for newer ones
                    // meanwhile: drop what was sent, as far as it is there.
                    let mut queued = queue.edus.lock();
                    let sent = edus.len().min(queued.len());
                    queued.drain(..sent);
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

/// `base` times a factor in [0.8, 1.4), so retries of many destinations
/// spread out.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::thread_rng().gen_range(0.8..1.4))
}
