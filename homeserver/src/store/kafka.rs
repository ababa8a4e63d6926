//! The cluster transport on Kafka (feature `kafka`, `[kafka]` in the config).
//!
//! One topic, partitioned by room (or user, for per-user messages), so every
//! node reads one room's messages in the order they were committed. The
//! producer is idempotent with `acks=all`: a broker hiccup neither loses nor
//! doubles a message. Every node reads every partition from the end, with no
//! consumer group: it wants all messages, and whatever it missed while it was
//! down it reads from the store, which is the record (see `service::cluster`).
//! Work done once for the whole cluster (deciding push notifications) reads
//! the same topic in a consumer group (`claim`).

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{BoxStream, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::cluster::{Claimed, ClusterMessage, ClusterTransport};
use super::{StoreError, StoreResult};

/// How long start-up waits for the brokers before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Messages read but not yet handled; past this the reader waits (Kafka keeps
/// the rest), so a slow node never grows memory without bound.
const INCOMING_BUFFER: usize = 4096;
/// How long a node leaving a consumer group waits to commit its offsets.
const LEAVE_WAIT: Duration = Duration::from_secs(3);

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
    brokers: String,
    topic: String,
    origin: String,
    consumer: Mutex<Option<StreamConsumer>>,
}

fn kafka_error(context: &str, err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::database(format!("kafka {context}"), err)
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
            return Err(StoreError::database_says(format!(
                "kafka metadata: topic {} has no partitions",
                settings.topic
            )));
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
            brokers: settings.brokers.clone(),
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

impl KafkaTransport {
    /// Queues `message` in the producer (in call order, so one room's
    /// messages keep their order) and returns what resolves once the
    /// brokers acknowledged it, or the producer gave up on it.
    fn produce(&self, message: ClusterMessage) -> Option<BoxFuture<'static, ()>> {
        let key = message.partition_key().to_owned();
        let envelope = Envelope {
            origin: self.origin.clone(),
            message,
        };
        let payload = match serde_json::to_vec(&envelope) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(%err, "encoding a cluster message failed");
                return None;
            }
        };
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        match self.producer.send_result(record) {
            Ok(delivery) => Some(
                async move {
                    match delivery.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((err, _))) => {
                            tracing::warn!(%err, "a cluster message was not delivered")
                        }
                        Err(_) => tracing::warn!("a cluster message was dropped"),
                    }
                }
                .boxed(),
            ),
            Err((err, _)) => {
                tracing::warn!(%err, "queueing a cluster message failed");
                None
            }
        }
    }
}

impl ClusterTransport for KafkaTransport {
    fn send(&self, message: ClusterMessage) {
        if let Some(delivered) = self.produce(message) {
            tokio::spawn(delivered);
        }
    }

    fn send_durable(&self, message: ClusterMessage) -> BoxFuture<'static, ()> {
        self.produce(message)
            .unwrap_or_else(|| futures::future::ready(()).boxed())
    }

    /// A consumer group over the topic: Kafka shares the partitions out
    /// among the group's live nodes and moves a dead node's partitions to
    /// the others, which resume from the group's committed offsets. An
    /// offset is stored only once its message is `done`, and committed
    /// within a second, so a message is handled at least once.
    fn claim(&self, group: &str) -> Option<BoxStream<'static, Claimed>> {
        let group_id = format!("{}-{group}", self.topic);
        let consumer: StreamConsumer = match ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &group_id)
            .set("client.id", format!("{group_id}-{}", self.origin))
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            // A new group starts at the oldest message still kept; the
            // handler skips what is too old to matter.
            .set("auto.offset.reset", "earliest")
            // A node that died stops holding its partitions after this.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "20")
            .create()
        {
            Ok(consumer) => consumer,
            Err(err) => {
                tracing::error!(%err, group = %group_id, "joining the kafka consumer group failed");
                return None;
            }
        };
        if let Err(err) = consumer.subscribe(&[&self.topic]) {
            tracing::error!(%err, group = %group_id, "joining the kafka consumer group failed");
            return None;
        }
        let consumer = Arc::new(consumer);
        let (tx, rx) = mpsc::channel(INCOMING_BUFFER);
        tokio::spawn(async move {
            loop {
                // Leaves the group once nobody reads: the consumer closes,
                // committing what was done, and its share moves on.
                let received = tokio::select! {
                    _ = tx.closed() => {
                        // What was done is committed before leaving, so the
                        // next holder starts right after it.
                        // Bounded: with every broker down the commit never
                        // returns, and a node must still stop.
                        let consumer = consumer.clone();
                        let commit = tokio::task::spawn_blocking(move || {
                            consumer.commit_consumer_state(CommitMode::Sync)
                        });
                        if tokio::time::timeout(LEAVE_WAIT, commit).await.is_err() {
                            tracing::warn!(group = %group_id, "committing the consumer group's offsets timed out");
                        }
                        return;
                    }
                    received = consumer.recv() => received,
                };
                let (message, topic, partition, offset) = match received {
                    Ok(m) => {
                        let at = (m.topic().to_owned(), m.partition(), m.offset());
                        let message = m
                            .payload()
                            .and_then(|p| serde_json::from_slice::<Envelope>(p).ok())
                            .map(|e| e.message);
                        (message, at.0, at.1, at.2)
                    }
                    Err(err) => {
                        tracing::warn!(%err, "reading the kafka consumer group failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let store = {
                    let consumer = Arc::downgrade(&consumer);
                    move || {
                        // librdkafka commits the offset after the one stored
                        // here (`rd_kafka_offset_store`). A partition taken
                        // away meanwhile refuses: its new holder reads this
                        // message again.
                        if let Some(consumer) = consumer.upgrade() {
                            let _ = consumer.store_offset(&topic, partition, offset);
                        }
                    }
                };
                let Some(message) = message else {
                    tracing::warn!("an unreadable cluster message was skipped");
                    store();
                    continue;
                };
                let claimed = Claimed {
                    message,
                    done: Box::new(store),
                };
                if tx.send(claimed).await.is_err() {
                    return;
                }
            }
        });
        Some(ReceiverStream::new(rx).boxed())
    }

    fn incoming(&self) -> BoxStream<'static, ClusterMessage> {
        let Some(consumer) = self.consumer.lock().take() else {
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
                room_id: room.try_into().unwrap(),
            },
        }
    }

    /// Typing notices `(room, stream)` heard on `incoming` until `done`
    /// holds for what was heard; a node must hear each within 10 s.
    async fn hear_until(
        incoming: &mut BoxStream<'static, ClusterMessage>,
        done: impl Fn(&[(String, i64)]) -> bool,
    ) -> Vec<(String, i64)> {
        let mut heard = Vec::new();
        while !done(&heard) {
            let message = tokio::time::timeout(Duration::from_secs(10), incoming.next())
                .await
                .expect("nothing heard within 10 s")
                .expect("the stream ended");
            if let ClusterMessage::Notice {
                notice: StreamNotice::Typing { stream, room_id },
            } = message
            {
                heard.push((room_id.to_string(), stream));
            }
        }
        heard
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
        let rooms = ["!room0:t", "!room1:t", "!room2:t"];
        // Consumers start at the end once their assignment takes effect, which
        // happens in the background: probe each room's partition until the
        // other node hears it (probes have negative streams).
        for (from, to) in [(&a, &mut at_b), (&b, &mut at_a)] {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut waiting = rooms.to_vec();
            while !waiting.is_empty() {
                assert!(std::time::Instant::now() < deadline, "never assigned");
                for room in &waiting {
                    from.send(notice(-1, room));
                }
                while let Ok(Some(message)) =
                    tokio::time::timeout(Duration::from_millis(100), to.next()).await
                {
                    if let ClusterMessage::Notice {
                        notice: StreamNotice::Typing { room_id, .. },
                    } = message
                    {
                        waiting.retain(|r| room_id != *r);
                    }
                }
            }
        }
        for n in 0..20 {
            a.send(notice(n, rooms[n as usize % 3]));
        }
        let got = hear_until(&mut at_b, |h| {
            h.iter().filter(|(_, s)| *s >= 0).count() == 20
        })
        .await;
        // Per room, the order sent.
        for (index, room) in rooms.iter().enumerate() {
            let streams: Vec<i64> = got
                .iter()
                .filter(|(r, s)| r == room && *s >= 0)
                .map(|(_, s)| *s)
                .collect();
            let expected: Vec<i64> = (0..20).filter(|n| *n as usize % 3 == index).collect();
            assert_eq!(streams, expected);
        }
        // b answers in each room after it heard all of a's messages, so each
        // answer lies after them in its room's partition: a hears its rooms
        // in order, and none of its own messages may come before the answers.
        for room in rooms {
            b.send(notice(100, room));
        }
        let heard = hear_until(&mut at_a, |h| {
            h.iter().filter(|(_, s)| *s == 100).count() == 3
        })
        .await;
        let own: Vec<_> = heard.iter().filter(|(_, s)| (0..20).contains(s)).collect();
        assert!(own.is_empty(), "a heard its own messages: {own:?}");
    }

    /// A consumer group resumes from its committed offsets: what a node
    /// marked done is not handed out again, and what it had not is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_resumes_where_the_last_holder_left_off() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("g", 4, 1).unwrap();
        let settings = KafkaSettings {
            brokers: cluster.bootstrap_servers(),
            topic: "g".into(),
            partitions: 4,
            replication_factor: 1,
        };
        let a = KafkaTransport::connect(&settings, "a".into())
            .await
            .unwrap();
        // Sent before anyone joined the group: a new group reads from the
        // start. The sender's own messages count too.
        for n in 0..20 {
            a.send(notice(n, &format!("!room{}:t", n % 5)));
        }
        let stream_of = |message: &ClusterMessage| match message {
            ClusterMessage::Notice {
                notice: StreamNotice::Typing { stream, .. },
            } => *stream,
            other => panic!("unexpected {other:?}"),
        };
        let mut first = a.claim("push").expect("kafka has groups");
        let mut done = Vec::new();
        for _ in 0..10 {
            let claimed = tokio::time::timeout(Duration::from_secs(20), first.next())
                .await
                .expect("the group handed out nothing")
                .unwrap();
            done.push(stream_of(&claimed.message));
            (claimed.done)();
        }
        // The holder goes away with ten messages done (and maybe more read
        // but not done); another node takes over the group.
        drop(first);
        let b = KafkaTransport::connect(&settings, "b".into())
            .await
            .unwrap();
        let mut second = b.claim("push").unwrap();
        let mut rest = Vec::new();
        let mut wait = Duration::from_secs(30);
        // Everything the group hands out, until it has been quiet a while.
        while let Ok(next) = tokio::time::timeout(wait, second.next()).await {
            let claimed = next.unwrap();
            rest.push(stream_of(&claimed.message));
            (claimed.done)();
            wait = Duration::from_secs(3);
        }
        let mut all: Vec<i64> = done.iter().chain(&rest).copied().collect();
        all.sort_unstable();
        // Nothing lost, and nothing done handed out again.
        assert_eq!(
            all,
            (0..20).collect::<Vec<_>>(),
            "done {done:?}, then {rest:?}"
        );
    }
}
