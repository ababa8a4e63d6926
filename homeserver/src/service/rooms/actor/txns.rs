//! Client transactions: a retried send is answered with the event its
//! first attempt built, found among recent sends or in the store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ruma_common::{EventId, OwnedEventId, RoomId};
use tokio::sync::oneshot;

use super::commit::Owed;
use super::{Core, Job, TxnKey, BUS_WAIT};
use crate::service::error::ServiceResult;
use crate::store::{self, cluster::ClusterMessage};

/// Recent transactions remembered; far more than can be in flight at once.
const RECENT_TXNS: usize = 65_536;

/// `(user, device, txn)` of a transaction found in the store.
pub(super) type DurableTxns = ServiceResult<HashMap<store::TxnKey, OwnedEventId>>;

/// Transaction ids of recent sends, queued or durable. A retry that arrives
/// while its first attempt is still in flight finds its event id here; older
/// ones are found in the store.
#[derive(Default)]
pub(super) struct RecentTxns {
    ids: HashMap<TxnKey, OwnedEventId>,
    order: VecDeque<TxnKey>,
}

impl RecentTxns {
    fn insert(&mut self, key: TxnKey, event_id: OwnedEventId) {
        if self.order.len() >= RECENT_TXNS {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.ids.insert(key, event_id);
    }
}

impl Core {
    /// The event id of a recent send of this transaction.
    pub fn recent_txn(&self, key: &TxnKey) -> Option<OwnedEventId> {
        self.recent_txns.lock().ids.get(key).cloned()
    }

    /// Remembers a send's first event id while the send is in flight.
    pub(super) fn remember_txn(&self, key: &TxnKey, event_id: &EventId) {
        self.recent_txns
            .lock()
            .insert(key.clone(), event_id.to_owned());
    }

    /// Forgets transactions whose round was not committed: their retries
    /// must build again.
    pub(super) fn forget_txns(&self, owed: &[Owed]) {
        let mut recent = self.recent_txns.lock();
        for key in owed.iter().filter_map(|o| o.txn.as_ref()) {
            recent.ids.remove(key);
        }
    }

    /// Transactions of this round already durable in the store (retries after
    /// a restart), looked up in one query for the whole round.
    pub(super) async fn durable_txns(&self, room_id: &RoomId, jobs: &[Job]) -> DurableTxns {
        let wanted: Vec<store::TxnKey> = jobs
            .iter()
            .filter_map(|job| match job {
                Job::Send(send) => match &send.txn {
                    Some(k) if self.recent_txn(k).is_none() => {
                        Some((k.1.clone(), k.2.clone(), k.3.clone()))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        Ok(self
            .store
            .find_txns(room_id, &wanted)
            .await?
            .into_iter()
            .collect())
    }

    /// The event id of a transaction sent already: by this node
    /// (remembered), or found in the store (committed before a restart, or
    /// by another node). Also says whether it came from the store.
    pub(super) fn sent_already(
        &self,
        txn: Option<&TxnKey>,
        durable: &DurableTxns,
    ) -> Option<(OwnedEventId, bool)> {
        let k = txn?;
        self.recent_txn(k).map(|id| (id, false)).or_else(|| {
            durable
                .as_ref()
                .ok()?
                .get(&(k.1.clone(), k.2.clone(), k.3.clone()))
                .map(|id| (id.clone(), true))
        })
    }

    /// Answers a retried send with the event its first attempt built.
    pub(super) fn answer_sent_already(
        self: &Arc<Self>,
        reply: oneshot::Sender<ServiceResult<Vec<OwnedEventId>>>,
        event_id: OwnedEventId,
        from_store: bool,
    ) {
        if from_store {
            // Committed by a node (of a cluster) that died before it
            // answered, and maybe before Kafka had the event: the push group
            // decides from Kafka, so it is shared again before the answer.
            // Nodes and the push group ignore what they have; a single node
            // shares nothing.
            let core = self.clone();
            tokio::spawn(async move {
                core.share_again(&event_id).await;
                let _ = reply.send(Ok(vec![event_id]));
            });
        } else {
            let _ = reply.send(Ok(vec![event_id]));
        }
    }

    /// Puts a committed event on the cluster bus again, durably (bounded
    /// like a send's wait). Not a redaction: followers apply those only
    /// with the message that commits them, and redactions push nobody.
    async fn share_again(&self, event_id: &EventId) {
        let event = match self.store.get_event(event_id).await {
            Ok(Some(event)) if event.kind != "m.room.redaction" => event,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(%err, "reading a retried event failed");
                return;
            }
        };
        let on_bus = self.bus.share_durable(&|| ClusterMessage::Events {
            events: vec![event.clone()],
            redactions: Vec::new(),
        });
        if tokio::time::timeout(BUS_WAIT, on_bus).await.is_err() {
            tracing::warn!(
                %event_id,
                "a retried event was not on the cluster bus in time"
            );
        }
    }
}
