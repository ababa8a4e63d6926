//! Cross-node wake-ups for ephemeral data over Redis pub/sub (feature
//! `redis`), and the transport that splits the cluster bus between Redis and
//! Kafka.
//!
//! Typing and presence change often, matter for seconds and live in Redis
//! already: their notices go over a Redis channel, which costs no disk and no
//! partition. Everything else (events, receipts, invalidations) needs Kafka's
//! per-room order and stays there.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::cluster::{Claimed, ClusterMessage, ClusterTransport};
use super::{StoreError, StoreResult, StreamNotice};

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    message: ClusterMessage,
}

/// One Redis channel every node publishes to and listens on.
pub struct RedisTransport {
    conn: ConnectionManager,
    channel: String,
    origin: String,
    incoming: parking_lot::Mutex<Option<BoxStream<'static, ClusterMessage>>>,
}

impl RedisTransport {
    pub async fn connect(url: &str, prefix: &str, origin: String) -> StoreResult<Self> {
        let err = |e: redis::RedisError| StoreError::database("redis bus", e);
        let client = redis::Client::open(url).map_err(err)?;
        let conn = ConnectionManager::new(client.clone()).await.map_err(err)?;
        let channel = format!("{prefix}bus");
        let mut pubsub = client.get_async_pubsub().await.map_err(err)?;
        pubsub.subscribe(&channel).await.map_err(err)?;
        let me = origin.clone();
        let incoming = pubsub
            .into_on_message()
            .filter_map(move |msg| {
                let me = me.clone();
                async move {
                    let payload: Vec<u8> = msg.get_payload().ok()?;
                    let envelope: Envelope = serde_json::from_slice(&payload).ok()?;
                    (envelope.origin != me).then_some(envelope.message)
                }
            })
            .boxed();
        Ok(Self {
            conn,
            channel,
            origin,
            incoming: parking_lot::Mutex::new(Some(incoming)),
        })
    }
}

impl ClusterTransport for RedisTransport {
    fn send(&self, message: ClusterMessage) {
        let envelope = Envelope {
            origin: self.origin.clone(),
            message,
        };
        let Ok(payload) = serde_json::to_vec(&envelope) else {
            return;
        };
        let mut conn = self.conn.clone();
        let channel = self.channel.clone();
        tokio::spawn(async move {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(payload)
                .query_async(&mut conn)
                .await;
            if let Err(err) = sent {
                tracing::warn!(%err, "publishing a wake-up on redis failed");
            }
        });
    }

    fn incoming(&self) -> BoxStream<'static, ClusterMessage> {
        self.incoming
            .lock()
            .take()
            .unwrap_or_else(|| futures::stream::empty().boxed())
    }
}

/// Typing and presence notices over Redis, the rest over Kafka (or whatever
/// `ordered` is); incoming messages from both, merged.
pub struct SplitTransport {
    pub ephemeral: Arc<dyn ClusterTransport>,
    pub ordered: Arc<dyn ClusterTransport>,
}

impl SplitTransport {
    /// Which transport carries `message`.
    fn route(&self, message: &ClusterMessage) -> &dyn ClusterTransport {
        match message {
            ClusterMessage::Notice {
                notice: StreamNotice::Typing { .. } | StreamNotice::Presence { .. },
            } => &*self.ephemeral,
            _ => &*self.ordered,
        }
    }
}

impl ClusterTransport for SplitTransport {
    fn send(&self, message: ClusterMessage) {
        self.route(&message).send(message);
    }

    fn send_durable(&self, message: ClusterMessage) -> BoxFuture<'static, ()> {
        self.route(&message).send_durable(message)
    }

    fn incoming(&self) -> BoxStream<'static, ClusterMessage> {
        futures::stream::select(self.ephemeral.incoming(), self.ordered.incoming()).boxed()
    }

    fn claim(&self, group: &str) -> Option<BoxStream<'static, Claimed>> {
        self.ordered.claim(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::cluster::MemoryCluster;
    use ruma_common::owned_room_id;
    use std::time::Duration;

    fn redis_url() -> String {
        std::env::var("TERN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// Two nodes over a real Redis: typing goes through Redis, an event
    /// notice through the other transport, and each node hears only the other.
    #[tokio::test]
    async fn ephemeral_notices_cross_redis_and_the_rest_the_ordered_bus() {
        let prefix = format!("tern-bus-test-{}:", std::process::id());
        // scripts/test.sh starts Redis: without one the test fails.
        let a_redis = RedisTransport::connect(&redis_url(), &prefix, "a".into())
            .await
            .unwrap_or_else(|e| panic!("no Redis at {} ({e}): run scripts/test.sh", redis_url()));
        let b_redis = RedisTransport::connect(&redis_url(), &prefix, "b".into())
            .await
            .unwrap();
        let hub = MemoryCluster::default();
        let a = SplitTransport {
            ephemeral: Arc::new(a_redis),
            ordered: hub.join(1),
        };
        let b = SplitTransport {
            ephemeral: Arc::new(b_redis),
            ordered: hub.join(2),
        };
        let mut at_b = b.incoming();
        let mut at_a = a.incoming();
        a.send(ClusterMessage::Notice {
            notice: StreamNotice::Typing {
                stream: 1,
                room_id: owned_room_id!("!r:t"),
            },
        });
        a.send(ClusterMessage::PushersChanged);
        let mut got = Vec::new();
        for _ in 0..2 {
            let message = tokio::time::timeout(Duration::from_secs(5), at_b.next())
                .await
                .expect("b heard nothing")
                .unwrap();
            got.push(serde_json::to_value(&message).unwrap()["type"].clone());
        }
        got.sort_by_key(|v| v.to_string());
        assert_eq!(got, vec!["notice", "pushers_changed"]);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), at_a.next())
                .await
                .is_err(),
            "a heard itself"
        );
    }
}
