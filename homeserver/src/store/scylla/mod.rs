//! Room timelines in ScyllaDB, in front of a relational engine.
//!
//! [`ScyllaTimelineStore`] is a [`RoomStore`] made of two: the relational
//! engine (`inner`) stays the record of stream positions, transaction ids,
//! current state and membership, and commits every append first; ScyllaDB
//! holds a copy of each event, partitioned by room and stream-range bucket
//! (see [`buckets`]), and serves the timeline reads: `get_event`,
//! `room_events`, `recent_events`, `latest_event`. Everything else is the
//! relational engine's.
//!
//! An append is acknowledged once both hold it ([`writer`]), so whatever a
//! client was told is sent can be read back from Scylla. A crash between
//! the two commits loses nothing: start-up copies whatever the relational
//! engine committed after the last checkpoint.

mod buckets;
mod schema;
mod timeline;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::try_join_all;
use tokio::sync::mpsc;

use crate::store::{
    Direction, Durable, MembershipRecord, NewEvent, RoomSlice, RoomStore, StoreResult, StoredEvent,
    StreamPos,
};
use buckets::{read_window, Window};
pub use timeline::{ScyllaSettings, ScyllaTimeline};
use writer::{Progress, WriteJob};

/// Rooms read at once by a multi-room query.
const ROOM_CONCURRENCY: usize = 32;

/// A [`RoomStore`] whose timeline reads come from ScyllaDB.
pub struct ScyllaTimelineStore {
    inner: Arc<dyn RoomStore>,
    timeline: Arc<ScyllaTimeline>,
    jobs: mpsc::UnboundedSender<WriteJob>,
    progress: Arc<Progress>,
}

impl ScyllaTimelineStore {
    /// Copies what `inner` committed since `writer`'s last checkpoint (all
    /// of it the first time), then starts the writer task. `writer` names
    /// this process's checkpoint: one per relational database.
    pub async fn open(
        inner: Arc<dyn RoomStore>,
        timeline: ScyllaTimeline,
        writer: &str,
    ) -> StoreResult<Self> {
        let timeline = Arc::new(timeline);
        let from = timeline.progress(writer).await?;
        let written = writer::catch_up(inner.as_ref(), &timeline, writer, from).await?;
        if written > from {
            tracing::info!(from, written, "scylla timeline caught up");
        }
        let progress = Arc::new(Progress::new(written));
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(writer::run(
            queue,
            inner.clone(),
            timeline.clone(),
            progress.clone(),
            writer.to_owned(),
        ));
        Ok(Self {
            inner,
            timeline,
            jobs,
            progress,
        })
    }

    /// The last `limit` events of one room in `(after, upto]`, oldest first.
    async fn recent_of_room(
        &self,
        room_id: &str,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> StoreResult<(String, RoomSlice)> {
        // One more than asked: whether the window holds more.
        let window = Window {
            after,
            upto,
            dir: Direction::Backward,
            limit: limit + 1,
        };
        let mut events = self.read(room_id, window).await?;
        let limited = events.len() > limit;
        events.truncate(limit);
        events.reverse();
        Ok((room_id.to_owned(), RoomSlice { events, limited }))
    }

    async fn read(&self, room_id: &str, window: Window) -> StoreResult<Vec<StoredEvent>> {
        read_window(self.timeline.as_ref(), room_id, window).await
    }
}

#[async_trait]
impl RoomStore for ScyllaTimelineStore {
    async fn create_room(&self, room_id: &str, version: &str, creator: &str) -> StoreResult<()> {
        self.inner.create_room(room_id, version, creator).await
    }

    async fn room_exists(&self, room_id: &str) -> StoreResult<bool> {
        self.inner.room_exists(room_id).await
    }

    /// The relational engine queues the events in the call itself (so the
    /// order of calls stays the order of commits); the future resolves once
    /// Scylla holds them too.
    fn append(&self, events: Vec<NewEvent>) -> StoreResult<Durable> {
        writer::append(self.inner.as_ref(), &self.jobs, &self.progress, events)
    }

    /// The relational engine's head, held back to what Scylla has: a reader
    /// paging from it never skips an event still on its way.
    async fn events_position(&self) -> StoreResult<StreamPos> {
        let head = self.inner.events_position().await?;
        Ok(self.progress.visible(head))
    }

    async fn events_after(&self, after: StreamPos, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        self.inner.events_after(after, limit).await
    }

    async fn get_event(&self, event_id: &str) -> StoreResult<Option<StoredEvent>> {
        self.timeline.get_event(event_id).await
    }

    async fn find_txn(
        &self,
        room_id: &str,
        sender: &str,
        device_id: &str,
        txn_id: &str,
    ) -> StoreResult<Option<String>> {
        self.inner
            .find_txn(room_id, sender, device_id, txn_id)
            .await
    }

    async fn find_txns(
        &self,
        room_id: &str,
        txns: &[(String, String, String)],
    ) -> StoreResult<Vec<((String, String, String), String)>> {
        self.inner.find_txns(room_id, txns).await
    }

    async fn latest_event(&self, room_id: &str) -> StoreResult<Option<StoredEvent>> {
        let window = Window {
            after: StreamPos::MIN,
            upto: StreamPos::MAX,
            dir: Direction::Backward,
            limit: 1,
        };
        Ok(self.read(room_id, window).await?.pop())
    }

    /// Backward pages include `from`, forward pages start after it (as the
    /// relational engines do).
    async fn room_events(
        &self,
        room_id: &str,
        from: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let (after, upto) = match dir {
            Direction::Backward => (StreamPos::MIN, from),
            Direction::Forward => (from, StreamPos::MAX),
        };
        let window = Window {
            after,
            upto,
            dir,
            limit,
        };
        self.read(room_id, window).await
    }

    /// One bounded backward page per room, `ROOM_CONCURRENCY` rooms at a
    /// time: Scylla answers many small partition reads better than one
    /// query across partitions.
    async fn recent_events(
        &self,
        room_ids: &[String],
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<(String, RoomSlice)>> {
        let mut out = Vec::with_capacity(room_ids.len());
        for chunk in room_ids.chunks(ROOM_CONCURRENCY) {
            out.extend(
                try_join_all(
                    chunk
                        .iter()
                        .map(|room_id| self.recent_of_room(room_id, after, upto, limit)),
                )
                .await?,
            );
        }
        Ok(out)
    }

    async fn current_state(&self, room_id: &str) -> StoreResult<Vec<StoredEvent>> {
        self.inner.current_state(room_id).await
    }

    async fn current_state_of_rooms(
        &self,
        room_ids: &[String],
        after: StreamPos,
        upto: StreamPos,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.inner
            .current_state_of_rooms(room_ids, after, upto)
            .await
    }

    async fn memberships_of_user(&self, user_id: &str) -> StoreResult<Vec<MembershipRecord>> {
        self.inner.memberships_of_user(user_id).await
    }

    async fn members(&self, room_id: &str) -> StoreResult<Vec<MembershipRecord>> {
        self.inner.members(room_id).await
    }

    async fn membership_history(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> StoreResult<Vec<(StreamPos, String)>> {
        self.inner.membership_history(room_id, user_id).await
    }

    async fn set_alias(&self, alias: &str, room_id: &str, creator: &str) -> StoreResult<()> {
        self.inner.set_alias(alias, room_id, creator).await
    }

    async fn get_alias(&self, alias: &str) -> StoreResult<Option<(String, String)>> {
        self.inner.get_alias(alias).await
    }

    async fn delete_alias(&self, alias: &str) -> StoreResult<bool> {
        self.inner.delete_alias(alias).await
    }

    async fn aliases_of_room(&self, room_id: &str) -> StoreResult<Vec<String>> {
        self.inner.aliases_of_room(room_id).await
    }

    async fn set_room_public(&self, room_id: &str, public: bool) -> StoreResult<()> {
        self.inner.set_room_public(room_id, public).await
    }

    async fn public_rooms(&self) -> StoreResult<Vec<String>> {
        self.inner.public_rooms().await
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::store::conformance;
    use crate::store::sqlite::SqliteStore;

    /// Settings for a fresh keyspace on the ScyllaDB named by `SCYLLA_URI`
    /// (`host:port[,host:port...]`), or `None` (and a note) without it.
    fn test_settings(test: &str) -> Option<ScyllaSettings> {
        let Ok(uri) = std::env::var("SCYLLA_URI") else {
            eprintln!("{test}: skipped: SCYLLA_URI not set");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Some(ScyllaSettings {
            nodes: uri
                .trim_start_matches("scylla://")
                .split(',')
                .map(|n| n.trim().to_owned())
                .collect(),
            keyspace: format!("tern_test_{}_{}", std::process::id(), nanos % 1_000_000_000),
            replication_factor: 1,
        })
    }

    async fn sqlite(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap())
    }

    #[tokio::test]
    async fn scylla_timeline_passes_the_room_store_suite() {
        let Some(settings) = test_settings("scylla_timeline_passes_the_room_store_suite") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let timeline = ScyllaTimeline::connect(&settings).await.unwrap();
        let store = ScyllaTimelineStore::open(sqlite(&dir).await, timeline, "test")
            .await
            .unwrap();
        conformance::room_store(Arc::new(store)).await;
        ScyllaTimeline::connect(&settings)
            .await
            .unwrap()
            .drop_keyspace(&settings.keyspace)
            .await
            .unwrap();
    }

    /// Events the relational engine committed while Scylla missed them (a
    /// crash between the two writes, or a timeline added to a running
    /// server) are copied at start-up, redactions included.
    #[tokio::test]
    async fn scylla_timeline_catches_up_at_start() {
        let Some(settings) = test_settings("scylla_timeline_catches_up_at_start") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let inner = sqlite(&dir).await;
        conformance::append_sample(inner.as_ref(), "!r:test", 5).await;
        let timeline = ScyllaTimeline::connect(&settings).await.unwrap();
        let store = ScyllaTimelineStore::open(inner.clone(), timeline, "test")
            .await
            .unwrap();
        conformance::check_sample(&store, "!r:test", 5).await;
        // Behind Scylla's back again; the next start copies only the rest.
        conformance::append_sample(inner.as_ref(), "!r2:test", 3).await;
        let timeline = ScyllaTimeline::connect(&settings).await.unwrap();
        let store = ScyllaTimelineStore::open(inner, timeline, "test")
            .await
            .unwrap();
        conformance::check_sample(&store, "!r2:test", 3).await;
        let latest = store.latest_event("!r:test").await.unwrap().unwrap();
        assert_eq!(latest.event_id, "$!r:test-4");
        ScyllaTimeline::connect(&settings)
            .await
            .unwrap()
            .drop_keyspace(&settings.keyspace)
            .await
            .unwrap();
    }
}
