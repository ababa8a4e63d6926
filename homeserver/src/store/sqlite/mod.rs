//! The embedded engine: SQLite in WAL mode.
//!
//! Reads go through a small connection pool. Event appends, the hot write
//! path, go through one writer task that drains every queued append into a
//! single transaction (group commit): many concurrent sends cost one fsync.

mod accounts;
mod dialect;
mod rooms;
mod writer;

/// What the relational core compiles against (see `store/sql`).
mod engine {
    pub(super) use super::dialect;
    pub(super) type Store = super::SqliteStore;
    pub(super) type Row = sqlx::sqlite::SqliteRow;
    pub(super) type Db = sqlx::Sqlite;
}

/// The queries SQLite shares with PostgreSQL, compiled for SQLite.
#[path = "../sql/mod.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "the core is compiled once per engine on purpose (see store/sql)"
)]
mod sql;

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::ConnectOptions;
use tokio::sync::mpsc;

use super::{StoreError, StoreResult, StreamPos};
use sql::Job;
use sql::Stream;

/// SQLite-backed implementation of [`super::AccountStore`] and [`super::RoomStore`].
pub struct SqliteStore {
    pool: SqlitePool,
    /// Unbounded so that queueing never waits (see `RoomStore::append`); the
    /// queue is bounded in practice by the requests in flight.
    writer: mpsc::UnboundedSender<Job>,
    /// Highest committed event position, advanced by the writer after commit.
    committed: Arc<AtomicI64>,
    /// Highest committed receipt position, advanced by the writer after commit.
    committed_receipts: Arc<AtomicI64>,
    /// Highest committed account-data position. Each account-data write is one
    /// autocommit statement and SQLite runs writers one at a time, so every
    /// position up to this one is committed too; every sync reads it, so it
    /// is kept here rather than asked of the database.
    account_data: AtomicI64,
    /// Highest committed device-list and to-device positions, for the same
    /// reason: the writing transaction takes them first (and with them
    /// SQLite's write lock), so they commit in order.
    device_lists: AtomicI64,
    to_device: AtomicI64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged write is on disk, not only in the OS cache.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false)
            .pragma("cache_size", "-16000")
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::database("migration failed", e))?;
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(stream), 0) FROM events")
            .fetch_one(&pool)
            .await?;
        let committed = Arc::new(AtomicI64::new(last));
        let account_data: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(stream), 0) FROM account_data")
                .fetch_one(&pool)
                .await?;
        let receipts: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(stream), 0) FROM receipts")
            .fetch_one(&pool)
            .await?;
        let committed_receipts = Arc::new(AtomicI64::new(receipts));
        let counter = |name: &'static str| {
            sqlx::query_scalar::<_, i64>("SELECT pos FROM stream_positions WHERE name = $1")
                .bind(name)
                .fetch_one(&pool)
        };
        let device_lists = counter("device_lists").await?;
        let to_device = counter("to_device").await?;
        let conn = writer::open(path)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let positions = writer::Positions {
            events: last,
            receipts,
            committed_events: committed.clone(),
            committed_receipts: committed_receipts.clone(),
        };
        std::thread::Builder::new()
            .name("tern-sqlite-writer".into())
            .spawn(move || writer::run(conn, rx, positions))
            .map_err(|e| StoreError::database("cannot start the writer", e))?;
        Ok(Self {
            pool,
            writer: tx,
            committed,
            committed_receipts,
            account_data: AtomicI64::new(account_data),
            device_lists: AtomicI64::new(device_lists),
            to_device: AtomicI64::new(to_device),
        })
    }

    /// The highest position of `stream` that reads may return: what the
    /// writer has committed and announced, never a row still in flight.
    fn read_bound(&self, stream: Stream) -> StreamPos {
        match stream {
            Stream::Events => self.committed.load(Ordering::Acquire),
            Stream::Receipts => self.committed_receipts.load(Ordering::Acquire),
            Stream::AccountData => self.account_data.load(Ordering::Acquire),
            Stream::DeviceLists => self.device_lists.load(Ordering::Acquire),
            Stream::ToDevice => self.to_device.load(Ordering::Acquire),
        }
    }

    /// A write on the pool committed `pos` of `stream` (account data, device
    /// lists, to-device; the writer thread announces events and receipts).
    fn stream_committed(&self, stream: Stream, pos: StreamPos) {
        let bound = match stream {
            Stream::AccountData => &self.account_data,
            Stream::DeviceLists => &self.device_lists,
            Stream::ToDevice => &self.to_device,
            Stream::Events | Stream::Receipts => return,
        };
        bound.fetch_max(pos, Ordering::AcqRel);
    }

    /// The highest committed position of `stream`, kept in memory: this
    /// process is the database's only writer.
    async fn position(&self, stream: Stream) -> StoreResult<StreamPos> {
        Ok(self.read_bound(stream))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::SqliteStore;
    use crate::store::{conformance, Database};

    async fn open_temp() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn accounts_conformance() {
        let (_dir, store) = open_temp().await;
        conformance::account_store(store).await;
    }

    #[tokio::test]
    async fn rooms_conformance() {
        let (_dir, store) = open_temp().await;
        conformance::room_store(store).await;
    }

    #[tokio::test]
    async fn receipts_conformance() {
        let (_dir, store) = open_temp().await;
        conformance::receipt_store(store.clone(), store).await;
    }

    #[tokio::test]
    async fn federation_conformance() {
        let (_dir, store) = open_temp().await;
        conformance::federation_store(store.clone(), store).await;
    }

    #[tokio::test]
    async fn e2ee_conformance() {
        let (_dir, store) = open_temp().await;
        conformance::e2ee_store(store.clone(), store.clone(), store).await;
    }

    #[tokio::test]
    async fn push_conformance() {
        let (_dir, store) = open_temp().await;
        conformance::push_store(store).await;
    }

    #[tokio::test]
    async fn media_metadata_conformance() {
        let (_dir, store) = open_temp().await;
        crate::store::media::conformance::media_metadata_store(store).await;
    }

    #[tokio::test]
    async fn appends_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let store = Arc::new(SqliteStore::open(&path).await.unwrap());
            conformance::append_sample(store.as_ref(), "!r:test", 5).await;
            store.close().await;
        }
        let store = SqliteStore::open(&path).await.unwrap();
        conformance::check_sample(&store, "!r:test", 5).await;
    }
}
