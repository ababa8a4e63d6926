//! Sending our events to the other servers of a room: one queue and one
//! transaction in flight per destination, at most 50 PDUs a transaction, a
//! failed transaction retried with the same id after a backoff that grows
//! (with jitter) up to five minutes and resets when the destination answers.
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

/// PDUs per transaction (the spec's limit).
const MAX_PDUS: usize = 50;
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
    loop {
        let batch: Vec<Box<RawValue>> = {
            let pdus = queue.pdus.lock();
            pdus.iter().take(MAX_PDUS).cloned().collect()
        };
        if batch.is_empty() {
            tokio::select! {
                _ = queue.wake.notified() => continue,
                _ = inner.shutdown.cancelled() => return,
            }
        }
        let txn_id = TransactionId::new();
        loop {
            match send_once(&inner.federation, &destination, &txn_id, batch.clone()).await {
                Ok(()) => {
                    queue.pdus.lock().drain(..batch.len());
                    backoff = MIN_BACKOFF;
                    break;
                }
                Err(err) => {
                    let wait = jittered(backoff);
                    tracing::info!(%destination, error = %err, retry_in = ?wait, "federation send failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = inner.shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
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
) -> Result<(), super::FederationError> {
    let mut request = send_transaction_message::v1::Request::new(
        txn_id.clone(),
        federation.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
    );
    request.pdus = pdus;
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
