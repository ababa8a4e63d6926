//! Timeline tables in memory, with writes that can be made to fail: the
//! write path and the paging of [`super::ScyllaTimelineStore`] tested
//! without a ScyllaDB.

use parking_lot::Mutex;
use ruma_common::{EventId, OwnedEventId, OwnedRoomId, RoomId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::buckets::{bucket_of, BucketSource};
use super::timeline::TimelineTables;
use crate::store::{Direction, StoreError, StoreResult, StoredEvent, StreamPos};

#[derive(Default)]
struct Tables {
    events: BTreeMap<(OwnedRoomId, i64), BTreeMap<StreamPos, StoredEvent>>,
    buckets: BTreeSet<(OwnedRoomId, i64)>,
    by_id: HashMap<OwnedEventId, (OwnedRoomId, StreamPos)>,
    progress: HashMap<String, StreamPos>,
}

#[derive(Default)]
pub struct MemoryTables {
    tables: Mutex<Tables>,
    /// While set, every write fails as an unreachable cluster would.
    pub fail_writes: AtomicBool,
}

impl MemoryTables {
    fn tables(&self) -> parking_lot::MutexGuard<'_, Tables> {
        self.tables.lock()
    }

    fn check_up(&self) -> StoreResult<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            Err(StoreError::database_says("scylla: unreachable (test)"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl TimelineTables for MemoryTables {
    async fn write_events(&self, events: &[StoredEvent]) -> StoreResult<()> {
        self.check_up()?;
        let mut tables = self.tables();
        for event in events {
            let bucket = bucket_of(event.stream);
            tables.buckets.insert((event.room_id.clone(), bucket));
            tables
                .events
                .entry((event.room_id.clone(), bucket))
                .or_default()
                .insert(event.stream, event.clone());
            tables.by_id.insert(
                event.event_id.clone(),
                (event.room_id.clone(), event.stream),
            );
        }
        Ok(())
    }

    async fn redact(&self, event_id: &EventId, redacted: &Value) -> StoreResult<()> {
        self.check_up()?;
        let mut tables = self.tables();
        let Some((room, stream)) = tables.by_id.get(event_id).cloned() else {
            return Ok(());
        };
        if let Some(event) = tables
            .events
            .get_mut(&(room, bucket_of(stream)))
            .and_then(|rows| rows.get_mut(&stream))
        {
            event.pdu = Arc::new(redacted.clone());
        }
        Ok(())
    }

    async fn get_event(&self, event_id: &EventId) -> StoreResult<Option<StoredEvent>> {
        let tables = self.tables();
        let Some((room, stream)) = tables.by_id.get(event_id) else {
            return Ok(None);
        };
        Ok(tables
            .events
            .get(&(room.clone(), bucket_of(*stream)))
            .and_then(|rows| rows.get(stream))
            .cloned())
    }

    async fn progress(&self, writer: &str) -> StoreResult<StreamPos> {
        Ok(self.tables().progress.get(writer).copied().unwrap_or(0))
    }

    async fn set_progress(&self, writer: &str, stream: StreamPos) -> StoreResult<()> {
        self.check_up()?;
        self.tables().progress.insert(writer.to_owned(), stream);
        Ok(())
    }
}

#[async_trait]
impl BucketSource for MemoryTables {
    async fn buckets(
        &self,
        room_id: &RoomId,
        low: i64,
        high: i64,
        dir: Direction,
        limit: usize,
    ) -> StoreResult<Vec<i64>> {
        let tables = self.tables();
        let found = tables
            .buckets
            .range((room_id.to_owned(), low)..=(room_id.to_owned(), high))
            .map(|(_, bucket)| *bucket);
        Ok(match dir {
            Direction::Forward => found.take(limit).collect(),
            Direction::Backward => found.rev().take(limit).collect(),
        })
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
        let tables = self.tables();
        let Some(rows) = tables.events.get(&(room_id.to_owned(), bucket)) else {
            return Ok(Vec::new());
        };
        if after >= upto {
            return Ok(Vec::new());
        }
        let range = rows.range(after + 1..=upto).map(|(_, e)| e.clone());
        Ok(match dir {
            Direction::Forward => range.take(limit).collect(),
            Direction::Backward => range.rev().take(limit).collect(),
        })
    }
}
