//! The cluster transport on Kafka (feature `kafka`, `[kafka]` in the config).
//!
//! One topic, partitioned by room (or user, for per-user messages), so every
//! node reads one room's messages in the order they were committed. The
//! producer is idempotent with `acks=all`: a broker hiccup neither loses nor
//! doubles a message. Every node reads every partition from the end, with no
//! consumer group: it wants all messages, and whatever it missed while it was
//! down it reads from the store, which is the record (see `service::cluster`).

use std::sync::Mutex;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::cluster::{ClusterMessage, ClusterTransport};
use super::{StoreError, StoreResult};

/// How long start-up waits for the brokers before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Messages read but not yet handled; past this the reader waits (Kafka keeps
/// the rest), so a slow node never grows memory without bound.
const INCOMING_BUFFER: usize = 4096;

/// Where the brokers are and how the topic is laid out.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i32,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The sending node, so it can skip its own messages.
    origin: String,
    message: ClusterMessage,
}

pub struct KafkaTransport {
    producer: FutureProducer,
    topic: String,
    origin: String,
    consumer: Mutex<Option<StreamConsumer>>,
}

fn kafka_error(context: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("kafka {context}: {err}"))
}

impl KafkaTransport {
    /// Connects, creates the topic if it is missing, and starts reading every
    /// partition from its end. `origin` names this node (unique per process).
    pub async fn connect(settings: &KafkaSettings, origin: String) -> StoreResult<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A short linger lets one send's messages share a request.
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| kafka_error("producer", e))?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            // Required by librdkafka even without joining a group: nothing is
            // committed, every node reads everything.
            .set("group.id", format!("tern-node-{origin}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // A wake-up is only as fast as the fetch that carries it: an
            // idle fetch waits at most this long for new messages.
            .set("fetch.wait.max.ms", "20")
            .create()
            .map_err(|e| kafka_error("consumer", e))?;
        let (mut consumer, mut partitions) = partition_count(consumer, &settings.topic).await?;
        if partitions == 0 {
            create_topic(settings).await?;
            (consumer, partitions) = partition_count(consumer, &settings.topic).await?;
        }
        if partitions == 0 {
            return Err(kafka_error(
                "metadata",
                format!("topic {} has no partitions", settings.topic),
            ));
        }
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions as i32 {
            list.add_partition_offset(&settings.topic, partition, Offset::End)
                .map_err(|e| kafka_error("assign", e))?;
        }
        consumer
            .assign(&list)
            .map_err(|e| kafka_error("assign", e))?;
        tracing::info!(brokers = %settings.brokers, topic = %settings.topic, partitions, "kafka cluster transport ready");
        Ok(Self {
            producer,
            topic: settings.topic.clone(),
            origin,
            consumer: Mutex::new(Some(consumer)),
        })
    }
}

/// How many partitions the topic has (0: it does not exist). Blocking in
/// librdkafka, so off the async threads; the consumer comes back.
async fn partition_count(
    consumer: StreamConsumer,
    topic: &str,
) -> StoreResult<(StreamConsumer, usize)> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&topic), CONNECT_TIMEOUT)
            .map_err(|e| kafka_error("metadata", e))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        Ok((consumer, count))
    })
    .await
    .map_err(|e| kafka_error("metadata", e))?
}

/// Creates the topic; one that exists already is fine, and so is a broker
/// that does not offer topic creation (the topic must then exist).
async fn create_topic(settings: &KafkaSettings) -> StoreResult<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()
        .map_err(|e| kafka_error("admin", e))?;
    let topic = NewTopic::new(
        &settings.topic,
        settings.partitions,
        TopicReplication::Fixed(settings.replication_factor),
    );
    let options = AdminOptions::new()
        .operation_timeout(Some(CONNECT_TIMEOUT))
        .request_timeout(Some(CONNECT_TIMEOUT));
    match admin.create_topics([&topic], &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        tracing::warn!(topic = %name, ?code, "creating the kafka topic failed")
                    }
                }
            }
        }
        Err(err) => tracing::warn!(%err, "creating the kafka topic failed"),
    }
    Ok(())
}

impl ClusterTransport for KafkaTransport {
    fn send(&self, message: ClusterMessage) {
        let key = message.partition_key().to_owned();
        let envelope = Envelope {
            origin: self.origin.clone(),
            message,
        };
        let payload = match serde_json::to_vec(&envelope) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(%err, "encoding a cluster message failed");
                return;
            }
        };
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                tokio::spawn(async move {
                    match delivery.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((err, _))) => {
                            tracing::warn!(%err, "a cluster message was not delivered")
                        }
                        Err(_) => tracing::warn!("a cluster message was dropped"),
                    }
                });
            }
            Err((err, _)) => tracing::warn!(%err, "queueing a cluster message failed"),
        }
    }

    fn incoming(&self) -> BoxStream<'static, ClusterMessage> {
        let Some(consumer) = self.consumer.lock().expect("consumer lock").take() else {
            return futures::stream::empty().boxed();
        };
        let origin = self.origin.clone();
        let (tx, rx) = mpsc::channel(INCOMING_BUFFER);
        tokio::spawn(async move {
            loop {
                let envelope = match consumer.recv().await {
                    Ok(message) => {
                        match message.payload().map(serde_json::from_slice::<Envelope>) {
                            Some(Ok(envelope)) => envelope,
                            Some(Err(err)) => {
                                tracing::warn!(%err, "an unreadable cluster message was skipped");
                                continue;
                            }
                            None => continue,
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%err, "reading cluster messages failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                if envelope.origin == origin {
                    continue;
                }
                if tx.send(envelope.message).await.is_err() {
                    return;
                }
            }
        });
        ReceiverStream::new(rx).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StreamNotice;
    use rdkafka::mocking::MockCluster;

    fn notice(stream: i64, room: &str) -> ClusterMessage {
        ClusterMessage::Notice {
            notice: StreamNotice::Typing {
                stream,
                room_id: room.into(),
            },
        }
    }

    /// Two nodes over librdkafka's mock broker (the real wire protocol on a
    /// loopback port): each hears the other, in order per room, never itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_exchange_messages_through_a_broker() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 4, 1).unwrap();
        let settings = KafkaSettings {
            brokers: cluster.bootstrap_servers(),
            topic: "t".into(),
            partitions: 4,
            replication_factor: 1,
        };
        let a = KafkaTransport::connect(&settings, "a".into())
            .await
            .unwrap();
        let b = KafkaTransport::connect(&settings, "b".into())
            .await
            .unwrap();
        let mut at_a = a.incoming();
        let mut at_b = b.incoming();
        // Assignment from the end takes effect asynchronously: give it a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for n in 0..20 {
            a.send(notice(n, &format!("!room{}:t", n % 3)));
        }
        b.send(notice(100, "!other:t"));
        let mut got = Vec::new();
        while got.len() < 20 {
            let message = tokio::time::timeout(Duration::from_secs(10), at_b.next())
                .await
                .expect("b heard nothing")
                .unwrap();
            if let ClusterMessage::Notice {
                notice: StreamNotice::Typing { stream, room_id },
            } = message
            {
                got.push((room_id, stream));
            }
        }
        // Per room, the order sent.
        for room in 0..3 {
            let name = format!("!room{room}:t");
            let streams: Vec<i64> = got
                .iter()
                .filter(|(r, _)| *r == name)
                .map(|(_, s)| *s)
                .collect();
            let expected: Vec<i64> = (0..20).filter(|n| n % 3 == room).collect();
            assert_eq!(streams, expected);
        }
        let heard = tokio::time::timeout(Duration::from_secs(10), at_a.next())
            .await
            .expect("a heard nothing")
            .unwrap();
        assert_eq!(heard.partition_key(), "!other:t");
        // Nothing of a's own came back to it.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), at_a.next())
                .await
                .is_err()
        );
    }
}
