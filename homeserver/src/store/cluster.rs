//! What the nodes of a cluster tell each other, and the transport that
//! carries it (Kafka in production, an in-process hub in tests).
//!
//! The store is the record: an event or receipt is durable, and acknowledged,
//! once its transaction committed. Messages on the transport only spare the
//! other nodes a read: they carry what was committed, so each node can fill
//! its caches and wake its own waiting syncs. A message that never arrives
//! costs latency, not data: every node also reads whatever it missed from the
//! store (see `service::cluster`).

use parking_lot::Mutex;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{BoxStream, StreamExt};
use ruma_common::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::{BroadcastStream, UnboundedReceiverStream};

use super::memory::MemoryBus;
use super::{EventBus, ReceiptRecord, StoreResult, StoredEvent, StreamNotice};

/// A redaction applied to a cached target: `(room, target id, redacted PDU)`.
pub type Redaction = (OwnedRoomId, OwnedEventId, Arc<Value>);

/// One message from one node to all the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterMessage {
    /// Events of one room that the sender committed, in stream order, and the
    /// redactions they applied.
    Events {
        events: Vec<StoredEvent>,
        redactions: Vec<Redaction>,
    },
    /// Receipts the sender committed.
    Receipts { records: Vec<ReceiptRecord> },
    /// Account data, typing, presence, device lists or a to-device inbox
    /// moved (their data is in the shared store or Redis; only the wake-up
    /// travels).
    Notice { notice: StreamNotice },
    /// Access tokens were revoked: by hash, and every token of a device
    /// (`(user, device)`, a re-login with the same device id).
    ForgetTokens {
        hashes: Vec<String>,
        device: Option<(OwnedUserId, OwnedDeviceId)>,
    },
    /// Some user's pushers changed: reload the pusher index.
    PushersChanged,
}

impl ClusterMessage {
    /// The key that picks the Kafka partition: a room's messages stay in one
    /// partition, so every node sees them in the order they were committed.
    pub fn partition_key(&self) -> &str {
        match self {
            Self::Events { events, .. } => events.first().map_or("", |e| e.room_id.as_str()),
            Self::Receipts { records } => {
                records.first().map_or("", |r| r.receipt.room_id.as_str())
            }
            Self::Notice { notice } => match notice {
                StreamNotice::RoomEvent { room_id, .. }
                | StreamNotice::Typing { room_id, .. }
                | StreamNotice::Receipt { room_id, .. } => room_id.as_str(),
                StreamNotice::AccountData { user_id, .. }
                | StreamNotice::Presence { user_id, .. }
                | StreamNotice::DeviceLists { user_id, .. }
                | StreamNotice::ToDevice { user_id, .. } => user_id.as_str(),
                StreamNotice::Lagged => "",
            },
            Self::ForgetTokens { hashes, device } => device
                .as_ref()
                .map(|(user, _)| user.as_str())
                .or(hashes.first().map(String::as_str))
                .unwrap_or(""),
            Self::PushersChanged => "",
        }
    }
}

/// A shared message given to one node of a group (a Kafka consumer group),
/// whoever sent it. `done` once it is handled: a node that dies before that
/// leaves it to the node that takes over its share, so a handler must cope
/// with seeing a message twice.
pub struct Claimed {
    pub message: ClusterMessage,
    pub done: Box<dyn FnOnce() + Send>,
}

/// Committed events given to this node alone to act on once for the whole
/// cluster (deciding push notifications), and how to mark them handled.
pub struct ClaimedEvents {
    pub events: Vec<StoredEvent>,
    pub done: Box<dyn FnOnce() + Send>,
}

/// Carries messages between the nodes of one deployment.
pub trait ClusterTransport: Send + Sync {
    /// Hands a message to every other node. Never waits: the sender's work is
    /// already durable, and a lost message is repaired from the store.
    fn send(&self, message: ClusterMessage);
    /// Like [`send`](Self::send), and resolves once the transport holds the
    /// message durably (Kafka's brokers acknowledged it) or gave up on it.
    fn send_durable(&self, message: ClusterMessage) -> BoxFuture<'static, ()> {
        self.send(message);
        futures::future::ready(()).boxed()
    }
    /// Messages from the other nodes (never this node's own). Taken once.
    fn incoming(&self) -> BoxStream<'static, ClusterMessage>;
    /// Every node's messages, shared out among the nodes of `group`: each
    /// goes to one of them, in order per room. `None` when the transport
    /// has no groups. Taken once per group.
    fn claim(&self, _group: &str) -> Option<BoxStream<'static, Claimed>> {
        None
    }
}

/// The event bus of a cluster node: notices fan out in-process at once, and
/// what other nodes need travels on the transport. Room events and receipts
/// travel whole, shared by the service that committed them; account data,
/// typing and presence live in shared engines, so only their notice travels.
pub struct ClusterBus {
    local: MemoryBus,
    transport: Arc<dyn ClusterTransport>,
    incoming: Mutex<Option<BoxStream<'static, ClusterMessage>>>,
    /// Without groups in the transport, each node acts on the events it
    /// committed itself: they are copied here as they are shared.
    own_events: Mutex<Option<mpsc::UnboundedSender<Vec<StoredEvent>>>>,
}

impl ClusterBus {
    pub fn new(transport: Arc<dyn ClusterTransport>) -> Self {
        let incoming = transport.incoming();
        Self {
            local: MemoryBus::new(65_536),
            transport,
            incoming: Mutex::new(Some(incoming)),
            own_events: Mutex::new(None),
        }
    }

    /// What the other nodes sent. Taken once, by the follower.
    pub fn incoming(&self) -> BoxStream<'static, ClusterMessage> {
        self.incoming
            .lock()
            .take()
            .unwrap_or_else(|| futures::stream::empty().boxed())
    }

    /// Wakes this node's syncs for something another node committed.
    pub async fn publish_local(&self, notice: StreamNotice) {
        let _ = self.local.publish(notice).await;
    }

    /// Copies events being shared to `own_events`, if someone acts on them.
    fn keep_own(&self, message: &ClusterMessage) {
        if let ClusterMessage::Events { events, .. } = message {
            if let Some(own) = &*self.own_events.lock() {
                let _ = own.send(events.clone());
            }
        }
    }
}

#[async_trait]
impl EventBus for ClusterBus {
    async fn publish(&self, notice: StreamNotice) -> StoreResult<()> {
        if matches!(
            notice,
            StreamNotice::AccountData { .. }
                | StreamNotice::Typing { .. }
                | StreamNotice::Presence { .. }
                | StreamNotice::DeviceLists { .. }
                | StreamNotice::ToDevice { .. }
        ) {
            self.transport.send(ClusterMessage::Notice {
                notice: notice.clone(),
            });
        }
        self.local.publish(notice).await
    }

    fn subscribe(&self) -> BoxStream<'static, StreamNotice> {
        self.local.subscribe()
    }

    fn share(&self, message: &dyn Fn() -> ClusterMessage) {
        let message = message();
        self.keep_own(&message);
        self.transport.send(message);
    }

    fn share_durable(&self, message: &dyn Fn() -> ClusterMessage) -> BoxFuture<'static, ()> {
        let message = message();
        self.keep_own(&message);
        self.transport.send_durable(message)
    }

    fn claim_events(&self, group: &str) -> Option<BoxStream<'static, ClaimedEvents>> {
        if let Some(claimed) = self.transport.claim(group) {
            return Some(
                claimed
                    .map(|Claimed { message, done }| match message {
                        ClusterMessage::Events { events, .. } => ClaimedEvents { events, done },
                        _ => ClaimedEvents {
                            events: Vec::new(),
                            done,
                        },
                    })
                    .boxed(),
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *self.own_events.lock() = Some(tx);
        Some(
            UnboundedReceiverStream::new(rx)
                .map(|events| ClaimedEvents {
                    events,
                    done: Box::new(|| {}),
                })
                .boxed(),
        )
    }
}

/// Nodes in one process, for tests: a broadcast hub each node joins.
pub struct MemoryCluster {
    hub: broadcast::Sender<(u64, ClusterMessage)>,
}

impl Default for MemoryCluster {
    fn default() -> Self {
        Self {
            hub: broadcast::channel(4096).0,
        }
    }
}

impl MemoryCluster {
    /// A transport for node number `node`.
    pub fn join(&self, node: u64) -> Arc<dyn ClusterTransport> {
        Arc::new(MemoryNode {
            node,
            hub: self.hub.clone(),
        })
    }
}

struct MemoryNode {
    node: u64,
    hub: broadcast::Sender<(u64, ClusterMessage)>,
}

impl ClusterTransport for MemoryNode {
    fn send(&self, message: ClusterMessage) {
        let _ = self.hub.send((self.node, message));
    }

    fn incoming(&self) -> BoxStream<'static, ClusterMessage> {
        let me = self.node;
        BroadcastStream::new(self.hub.subscribe())
            .filter_map(move |item| async move {
                // A lagged receiver loses messages: the store repairs that.
                let (from, message) = item.ok()?;
                (from != me).then_some(message)
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma_common::{owned_room_id, owned_user_id};

    #[tokio::test]
    async fn nodes_hear_each_other_but_not_themselves() {
        let hub = MemoryCluster::default();
        let a = hub.join(1);
        let b = hub.join(2);
        let mut at_a = a.incoming();
        let mut at_b = b.incoming();
        a.send(ClusterMessage::PushersChanged);
        b.send(ClusterMessage::Notice {
            notice: StreamNotice::Typing {
                stream: 3,
                room_id: owned_room_id!("!r:t"),
            },
        });
        assert!(matches!(
            at_b.next().await,
            Some(ClusterMessage::PushersChanged)
        ));
        match at_a.next().await {
            Some(ClusterMessage::Notice { notice }) => {
                assert_eq!(
                    notice,
                    StreamNotice::Typing {
                        stream: 3,
                        room_id: owned_room_id!("!r:t")
                    }
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn messages_round_trip_as_json_and_key_by_room() {
        let message = ClusterMessage::Notice {
            notice: StreamNotice::Receipt {
                stream: 9,
                room_id: owned_room_id!("!room:t"),
                only_user: Some(owned_user_id!("@u:t")),
            },
        };
        let json = serde_json::to_string(&message).unwrap();
        let back: ClusterMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back.partition_key(), "!room:t");
        assert!(json.contains(r#""type":"notice""#), "{json}");
    }
}
