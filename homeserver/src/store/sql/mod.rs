//! The relational core: every query SQLite and PostgreSQL run alike, written
//! once.
//!
//! This folder is compiled inside each relational engine (`#[path]` in
//! `sqlite/mod.rs` and `postgres/mod.rs`), against what that engine's
//! `engine` module names: `Store` (the engine's type, whose `pool` and hooks
//! the queries use), `Row` (its sqlx row) and the `dialect` functions for the
//! few places where the two SQLs differ (list parameters, collation, JSON
//! paths, row locks). Both engines bind `$1`-style parameters (sqlx numbers
//! SQLite's `$N` as PostgreSQL does).
//!
//! Why compiled twice rather than generic over `sqlx::Database`: a generic
//! query needs higher-ranked `Executor`, `Encode` and `Decode` bounds for
//! every type it binds or reads, repeated on every impl, and the futures
//! `async_trait` boxes must then be proved `Send` through them. Each engine
//! gets concrete code this way, as fast as hand-written, and the differences
//! that are real (group-commit writers, bulk inserts, the multi-room
//! timeline query, position counters) stay in the engine's own files.

mod accounts;
mod backup;
mod devices;
mod directory;
mod federation;
mod keys;
mod media;
mod profile;
mod push;
mod receipts;
mod relations;
mod rooms;
pub(super) mod rows;
mod state_groups;
mod to_device;

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::engine::{self, Store};
use crate::store::{Database, NewEvent, NewReceipt, StoreResult, StreamPos};

/// The positioned streams a relational engine keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Events,
    Receipts,
    AccountData,
    DeviceLists,
    ToDevice,
}

/// Rooms per statement when a room list is bound as one parameter: keeps
/// SQLite's JSON list and PostgreSQL's array of a user in thousands of rooms
/// at a size either plans well.
const ROOMS_PER_LIST: usize = 1000;

/// What the engine's group-commit writer is asked to do.
pub(super) enum Job {
    Append {
        events: Vec<NewEvent>,
        reply: oneshot::Sender<StoreResult<Vec<StreamPos>>>,
    },
    /// Receipts share the group commit: under load they arrive as often as
    /// messages, and a transaction of their own each would contend with it.
    Receipts {
        receipts: Vec<NewReceipt>,
        reply: oneshot::Sender<StoreResult<Vec<Option<StreamPos>>>>,
    },
    /// Replies once everything queued before it has committed.
    Flush(oneshot::Sender<()>),
}

#[async_trait]
impl Database for Store {
    /// Waits for queued writes to commit, then closes the connections.
    async fn close(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.writer.send(Job::Flush(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
        self.pool.close().await;
    }
}

impl Store {
    /// Runs `sql`, whose `$1` is a list of `ids` (as `dialect::in_list`
    /// takes it), in chunks the engine plans well, mapping each row.
    async fn rows_for_ids<T>(
        &self,
        sql: &str,
        ids: &[ruma_common::OwnedEventId],
        map: impl Fn(&engine::Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROOMS_PER_LIST) {
            let rows = sqlx::query(sql)
                .bind(engine::dialect::list(chunk)?)
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                out.push(map(row)?);
            }
        }
        Ok(out)
    }
}
