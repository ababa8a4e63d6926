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
mod dialect;
mod rooms;
mod state_groups;
mod state_head;
mod writer;

/// What the relational core compiles against (see `store/sql`).
mod engine {
    pub(super) use super::dialect;
    pub(super) type Store = super::PgStore;
    pub(super) type Row = sqlx::postgres::PgRow;
    pub(super) type Db = sqlx::Postgres;
}

/// The queries PostgreSQL shares with SQLite, compiled for PostgreSQL.
#[path = "../sql/mod.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "the core is compiled once per engine on purpose (see store/sql)"
)]
mod sql;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;
use tokio::sync::mpsc;

use super::{StoreError, StoreResult, StreamPos};
use sql::Job;
use sql::Stream;

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
            .map_err(|e| StoreError::database("migration failed", e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer::run(options, rx));
        Ok(Self { pool, writer: tx })
    }

    /// The committed head of a positioned stream (see the module docs).
    async fn position(&self, stream: Stream) -> StoreResult<StreamPos> {
        let name = match stream {
            Stream::Events => "events",
            Stream::Receipts => "receipts",
            Stream::AccountData => "account_data",
            Stream::DeviceLists => "device_lists",
            Stream::ToDevice => "to_device",
        };
        Ok(
            sqlx::query_scalar("SELECT pos FROM stream_positions WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Nothing to note: positions are read from `stream_positions`.
    fn stream_committed(&self, _stream: Stream, _pos: StreamPos) {}

    /// No bound: positions commit in order (see the module docs), so
    /// whatever one statement sees of a stream is gap-free.
    fn read_bound(&self, _stream: Stream) -> StreamPos {
        StreamPos::MAX
    }
}

#[cfg(test)]
pub(crate) mod test_db;
#[cfg(test)]
mod tests;
