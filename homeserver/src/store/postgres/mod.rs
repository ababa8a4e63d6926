//! The PostgreSQL engine: the relational store that several homeserver
//! processes share (issue 9, the distributed deployment).
//!
//! Reads go through an sqlx pool. Event and receipt writes go through one
//! writer task per process that drains every queued append into a single
//! transaction (group commit), as the SQLite engine does.
//!
//! # Positions across processes
//!
//! Every positioned stream (events, receipts, account data) has a counter row
//! in `stream_positions`. A writer locks the row inside the transaction that
//! writes the positioned rows, takes the next positions from it and stores the
//! last one back, so the row lock is held until commit. The next writer, in
//! this process or another, reads the counter only after that commit, which
//! makes positions gap-free and committed in order: a reader that sees
//! position N sees every position below N too. The counter row itself is the
//! "highest committed position" every process reads.
//!
//! The engine keeps no counters or caches in memory, so nothing in it goes
//! stale when another process writes.

mod accounts;
mod bulk;
mod media;
mod push;
mod receipts;
mod rooms;
mod state_head;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{mpsc, oneshot};

use super::{Database, StoreError, StoreResult, StoredEvent, StreamPos};
use writer::Job;

/// PostgreSQL-backed implementation of every relational store trait.
pub struct PgStore {
    pool: PgPool,
    /// Unbounded so that queueing never waits (see `RoomStore::append`); the
    /// queue is bounded in practice by the requests in flight.
    writer: mpsc::UnboundedSender<Job>,
}

impl PgStore {
    /// Connects to `url`, runs the migrations (sqlx serialises concurrent
    /// migrators with an advisory lock, so nodes may start together) and
    /// starts the writer task.
    pub async fn open(url: &str, max_connections: u32) -> StoreResult<Self> {
        Self::open_with(PgConnectOptions::from_str(url)?, max_connections).await
    }

    /// [`PgStore::open`] with parsed connection options.
    pub async fn open_with(options: PgConnectOptions, max_connections: u32) -> StoreResult<Self> {
        let options = options.application_name("tern").disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer::run(options, rx));
        Ok(Self { pool, writer: tx })
    }

    /// The committed head of a positioned stream (see the module docs).
    async fn stream_position(&self, name: &str) -> StoreResult<StreamPos> {
        Ok(
            sqlx::query_scalar("SELECT pos FROM stream_positions WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

#[async_trait::async_trait]
impl Database for PgStore {
    async fn close(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.writer.send(Job::Flush(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
        self.pool.close().await;
    }
}

/// Columns every event query selects from `events e`, in the order
/// [`event_from_row`] reads.
const EVENT_COLUMNS: &str = "e.stream, e.event_id, e.room_id, e.sender, e.type, e.state_key, \
     e.pdu, e.txn_device, e.txn_id, e.visibility";

fn event_from_row(row: &PgRow) -> StoreResult<StoredEvent> {
    let pdu: String = row.try_get(6)?;
    let pdu = serde_json::from_str(&pdu).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let txn_device: Option<String> = row.try_get(7)?;
    let txn_id: Option<String> = row.try_get(8)?;
    Ok(StoredEvent {
        stream: row.try_get(0)?,
        event_id: row.try_get(1)?,
        room_id: row.try_get(2)?,
        sender: row.try_get(3)?,
        kind: row.try_get(4)?,
        state_key: row.try_get(5)?,
        pdu: Arc::new(pdu),
        txn: txn_device.zip(txn_id),
        visibility: row.try_get(9)?,
    })
}

/// PostgreSQL text cannot hold NUL. Writes that share the group commit are
/// checked before they are queued: one such value would otherwise fail the
/// whole batch, every other room's sends with it. (JSON columns need no
/// check: serialised JSON escapes NUL as `\u0000`.)
fn reject_nul<'a>(values: impl IntoIterator<Item = &'a str>) -> StoreResult<()> {
    match values.into_iter().any(|v| v.contains('\0')) {
        true => Err(StoreError::Invalid("text contains a NUL character".into())),
        false => Ok(()),
    }
}

fn parse_json(text: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
pub(crate) mod test_db;
#[cfg(test)]
mod tests;
