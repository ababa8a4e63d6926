//! The ScyllaDB side: one session, the schema, prepared statements, and the
//! reads and writes of timeline rows. Knows nothing of the relational engine.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use ruma_common::{EventId, RoomId};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use serde_json::Value;

use super::buckets::{bucket_of, BucketSource};
use super::schema;
use crate::store::{parse_id, Direction, StoreError, StoreResult, StoredEvent, StreamPos};

/// Events written at once when a group or a catch-up fans out.
const WRITE_CONCURRENCY: usize = 64;

/// Where the timeline lives.
#[derive(Debug, Clone)]
pub struct ScyllaSettings {
    /// `host:port` of at least one node; the driver discovers the rest.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// Copies of every row in each datacenter (when the keyspace is created).
    pub replication_factor: u32,
}

/// A row as read back: the columns of [`schema::EVENT_COLUMNS`].
type EventRow = (
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    String,
);

fn db(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::database("scylla", err)
}

fn event_from_row(row: EventRow) -> StoreResult<StoredEvent> {
    let (event_id, room_id, stream, sender, kind, state_key, pdu, device, txn_id, visibility) = row;
    let pdu: Value = serde_json::from_str(&pdu)
        .map_err(|e| StoreError::corrupt(format!("pdu of {event_id}"), e))?;
    Ok(StoredEvent {
        stream,
        event_id: parse_id(event_id)?,
        room_id: parse_id(room_id)?,
        sender: parse_id(sender)?,
        kind,
        state_key,
        pdu: Arc::new(pdu),
        txn: device.map(Into::into).zip(txn_id),
        visibility,
    })
}

struct Statements {
    insert_event: PreparedStatement,
    insert_event_id: PreparedStatement,
    insert_bucket: PreparedStatement,
    find_event_id: PreparedStatement,
    redact_event: PreparedStatement,
    select_event: PreparedStatement,
    events_backward: PreparedStatement,
    events_forward: PreparedStatement,
    buckets_backward: PreparedStatement,
    buckets_forward: PreparedStatement,
    select_progress: PreparedStatement,
    update_progress: PreparedStatement,
}

/// What the timeline store needs of its tables: ScyllaDB's in production,
/// a map in memory in the tests of the write path.
#[async_trait]
pub trait TimelineTables: BucketSource {
    /// Upserts events: the bucket index first, so a reader that finds a row
    /// can always find its bucket. Idempotent, so a retry is harmless.
    async fn write_events(&self, events: &[StoredEvent]) -> StoreResult<()>;
    /// Replaces the PDU of `event_id` with its redacted form, if the event
    /// is in the timeline.
    async fn redact(&self, event_id: &EventId, redacted: &Value) -> StoreResult<()>;
    async fn get_event(&self, event_id: &EventId) -> StoreResult<Option<StoredEvent>>;
    /// How far `writer` has copied the relational engine (0: never).
    async fn progress(&self, writer: &str) -> StoreResult<StreamPos>;
    async fn set_progress(&self, writer: &str, stream: StreamPos) -> StoreResult<()>;
}

/// The timeline tables of one keyspace.
pub struct ScyllaTimeline {
    session: Session,
    statements: Statements,
}

impl ScyllaTimeline {
    /// Connects, creates the keyspace and tables if needed, and prepares
    /// every statement.
    pub async fn connect(settings: &ScyllaSettings) -> StoreResult<Self> {
        schema::check_keyspace(&settings.keyspace)?;
        if settings.nodes.is_empty() {
            return Err(StoreError::database_says("scylla: no nodes configured"));
        }
        // Token aware: a prepared statement goes straight to a replica of
        // its partition. LOCAL_QUORUM both ways: a read sees every
        // acknowledged write once the replication factor is above one.
        let policy = DefaultPolicy::builder().token_aware(true).build();
        let profile = ExecutionProfile::builder()
            .load_balancing_policy(policy)
            .consistency(Consistency::LocalQuorum)
            .request_timeout(Some(Duration::from_secs(10)))
            .build();
        let session = SessionBuilder::new()
            .known_nodes(&settings.nodes)
            .connection_timeout(Duration::from_secs(5))
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(db)?;
        let keyspace = schema::create_keyspace(&settings.keyspace, settings.replication_factor);
        session.query_unpaged(keyspace, ()).await.map_err(db)?;
        session
            .use_keyspace(&settings.keyspace, false)
            .await
            .map_err(db)?;
        for (name, text) in schema::MIGRATIONS {
            for statement in schema::split_statements(text) {
                session
                    .query_unpaged(statement, ())
                    .await
                    .map_err(|e| StoreError::database(format!("scylla migration {name}"), e))?;
            }
        }
        session.await_schema_agreement().await.map_err(db)?;
        let statements = Statements::prepare(&session).await?;
        Ok(Self {
            session,
            statements,
        })
    }

    /// Drops the whole keyspace (tests clean up after themselves).
    #[cfg(test)]
    pub async fn drop_keyspace(&self, keyspace: &str) -> StoreResult<()> {
        schema::check_keyspace(keyspace)?;
        self.session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn write_event(&self, e: &StoredEvent) -> StoreResult<()> {
        let (device, txn_id) = match &e.txn {
            Some((device, txn)) => (Some(device.as_str()), Some(txn.as_str())),
            None => (None, None),
        };
        let row = (
            e.room_id.as_str(),
            bucket_of(e.stream),
            e.stream,
            e.event_id.as_str(),
            e.sender.as_str(),
            e.kind.as_str(),
            e.state_key.as_deref(),
            e.pdu.to_string(),
            device,
            txn_id,
            e.visibility.as_str(),
        );
        let by_id = (e.event_id.as_str(), e.room_id.as_str(), e.stream);
        futures::try_join!(
            async {
                self.session
                    .execute_unpaged(&self.statements.insert_event, row)
                    .await
                    .map_err(db)
            },
            async {
                self.session
                    .execute_unpaged(&self.statements.insert_event_id, by_id)
                    .await
                    .map_err(db)
            },
        )?;
        Ok(())
    }

    async fn locate(&self, event_id: &EventId) -> StoreResult<Option<(String, i64)>> {
        self.session
            .execute_unpaged(&self.statements.find_event_id, (event_id.as_str(),))
            .await
            .map_err(db)?
            .into_rows_result()
            .map_err(db)?
            .maybe_first_row::<(String, i64)>()
            .map_err(db)
    }
}

#[async_trait]
impl TimelineTables for ScyllaTimeline {
    async fn write_events(&self, events: &[StoredEvent]) -> StoreResult<()> {
        let mut buckets: Vec<(&str, i64)> = events
            .iter()
            .map(|e| (e.room_id.as_str(), bucket_of(e.stream)))
            .collect();
        buckets.sort_unstable();
        buckets.dedup();
        // In chunks of joined futures rather than a buffered stream: the
        // futures borrow `self`, and a stream of them is not `Send` enough
        // for `async_trait`.
        for chunk in buckets.chunks(WRITE_CONCURRENCY) {
            try_join_all(chunk.iter().map(|&(room, bucket)| async move {
                self.session
                    .execute_unpaged(&self.statements.insert_bucket, (room, bucket))
                    .await
                    .map_err(db)
            }))
            .await?;
        }
        for chunk in events.chunks(WRITE_CONCURRENCY) {
            try_join_all(chunk.iter().map(|event| self.write_event(event))).await?;
        }
        Ok(())
    }

    async fn redact(&self, event_id: &EventId, redacted: &Value) -> StoreResult<()> {
        let Some((room_id, stream)) = self.locate(event_id).await? else {
            return Ok(());
        };
        self.session
            .execute_unpaged(
                &self.statements.redact_event,
                (redacted.to_string(), room_id, bucket_of(stream), stream),
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn get_event(&self, event_id: &EventId) -> StoreResult<Option<StoredEvent>> {
        let Some((room_id, stream)) = self.locate(event_id).await? else {
            return Ok(None);
        };
        let row = self
            .session
            .execute_unpaged(
                &self.statements.select_event,
                (room_id, bucket_of(stream), stream),
            )
            .await
            .map_err(db)?
            .into_rows_result()
            .map_err(db)?
            .maybe_first_row::<EventRow>()
            .map_err(db)?;
        row.map(event_from_row).transpose()
    }

    async fn progress(&self, writer: &str) -> StoreResult<StreamPos> {
        let row = self
            .session
            .execute_unpaged(&self.statements.select_progress, (writer,))
            .await
            .map_err(db)?
            .into_rows_result()
            .map_err(db)?
            .maybe_first_row::<(i64,)>()
            .map_err(db)?;
        Ok(row.map_or(0, |(stream,)| stream))
    }

    async fn set_progress(&self, writer: &str, stream: StreamPos) -> StoreResult<()> {
        self.session
            .execute_unpaged(&self.statements.update_progress, (writer, stream))
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// CQL's `LIMIT ?` is an `int`.
fn cql_limit(limit: usize) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

#[async_trait]
impl BucketSource for ScyllaTimeline {
    async fn buckets(
        &self,
        room_id: &RoomId,
        low: i64,
        high: i64,
        dir: Direction,
        limit: usize,
    ) -> StoreResult<Vec<i64>> {
        let statement = match dir {
            Direction::Backward => &self.statements.buckets_backward,
            Direction::Forward => &self.statements.buckets_forward,
        };
        let rows = self
            .session
            .execute_unpaged(statement, (room_id.as_str(), low, high, cql_limit(limit)))
            .await
            .map_err(db)?
            .into_rows_result()
            .map_err(db)?;
        rows.rows::<(i64,)>()
            .map_err(db)?
            .map(|row| row.map(|(bucket,)| bucket).map_err(db))
            .collect()
    }

    async fn events(
        &self,
        room_id: &RoomId,
        bucket: i64,
        after: StreamPos,
        upto: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let statement = match dir {
            Direction::Backward => &self.statements.events_backward,
            Direction::Forward => &self.statements.events_forward,
        };
        let rows = self
            .session
            .execute_unpaged(
                statement,
                (room_id.as_str(), bucket, after, upto, cql_limit(limit)),
            )
            .await
            .map_err(db)?
            .into_rows_result()
            .map_err(db)?;
        rows.rows::<EventRow>()
            .map_err(db)?
            .map(|row| row.map_err(db).and_then(event_from_row))
            .collect()
    }
}

impl Statements {
    async fn prepare(session: &Session) -> StoreResult<Self> {
        let prepare = |cql: &'static str| async move {
            let mut statement = session.prepare(cql).await.map_err(db)?;
            // Every statement is a read or an upsert: the driver may retry
            // any of them after a timeout.
            statement.set_is_idempotent(true);
            Ok::<_, StoreError>(statement)
        };
        Ok(Self {
            insert_event: prepare(schema::INSERT_EVENT).await?,
            insert_event_id: prepare(schema::INSERT_EVENT_ID).await?,
            insert_bucket: prepare(schema::INSERT_BUCKET).await?,
            find_event_id: prepare(schema::FIND_EVENT_ID).await?,
            redact_event: prepare(schema::REDACT_EVENT).await?,
            select_event: prepare(schema::SELECT_EVENT).await?,
            events_backward: prepare(schema::SELECT_EVENTS_BACKWARD).await?,
            events_forward: prepare(schema::SELECT_EVENTS_FORWARD).await?,
            buckets_backward: prepare(schema::SELECT_BUCKETS_BACKWARD).await?,
            buckets_forward: prepare(schema::SELECT_BUCKETS_FORWARD).await?,
            select_progress: prepare(schema::SELECT_PROGRESS).await?,
            update_progress: prepare(schema::UPDATE_PROGRESS).await?,
        })
    }
}
