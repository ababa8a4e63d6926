//! Room timelines in ScyllaDB, in front of a relational engine.
//!
//! [`ScyllaTimelineStore`] is a [`RoomStore`] made of two: the relational
//! engine (`inner`) stays the record of stream positions, transaction ids,
//! current state and membership, and commits every append first; ScyllaDB
//! holds a copy of each event, partitioned by room and stream-range bucket
//! (see [`buckets`]), and serves the timeline reads: `get_event`,
//! `room_events` and `recent_events`. Everything else is the relational
//! engine's, `latest_event` included: it is the head new events are built
//! on, and must be what was committed even when Scylla lags.
//!
//! An append is acknowledged once both hold it ([`writer`]), so whatever a
//! client was told is sent can be read back from Scylla. A crash between
//! the two commits loses nothing: start-up copies whatever the relational
//! engine committed after the last checkpoint.

mod buckets;
#[cfg(test)]
mod memory;
mod schema;
mod timeline;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::try_join_all;
use ruma_common::{
    DeviceId, EventId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId,
    RoomId, UserId,
};
use ruma_events::room::member::MembershipState;
use tokio::sync::mpsc;

use crate::store::{
    Direction, Durable, MembershipRecord, NewEvent, Outlier, Refused, RelationQuery,
    RelationSummaries, RoomSlice, RoomStore, StateGroup, StoreResult, StoredEvent, StreamPos,
    TxnKey,
};
use buckets::{read_window, Window};
pub use timeline::{ScyllaSettings, ScyllaTimeline, TimelineTables};
use writer::{Progress, WriteJob};

/// Rooms read at once by a multi-room query.
const ROOM_CONCURRENCY: usize = 32;

/// A [`RoomStore`] whose timeline reads come from ScyllaDB.
pub struct ScyllaTimelineStore {
    inner: Arc<dyn RoomStore>,
    timeline: Arc<dyn TimelineTables>,
    jobs: mpsc::UnboundedSender<WriteJob>,
    progress: Arc<Progress>,
}

impl ScyllaTimelineStore {
    /// Copies what `inner` committed since `writer`'s last checkpoint (all
    /// of it the first time), then starts the writer task. `writer` names
    /// this process's checkpoint: one per relational database.
    pub async fn open(
        inner: Arc<dyn RoomStore>,
        timeline: Arc<dyn TimelineTables>,
        writer: &str,
    ) -> StoreResult<Self> {
        let from = timeline.progress(writer).await?;
        let written = writer::catch_up(inner.as_ref(), timeline.as_ref(), writer, from).await?;
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
        room_id: &OwnedRoomId,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> StoreResult<(OwnedRoomId, RoomSlice)> {
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
        Ok((room_id.clone(), RoomSlice { events, limited }))
    }

    async fn read(&self, room_id: &RoomId, window: Window) -> StoreResult<Vec<StoredEvent>> {
        read_window(
            self.timeline.as_ref() as &dyn buckets::BucketSource,
            room_id,
            window,
        )
        .await
    }
}

#[async_trait]
impl RoomStore for ScyllaTimelineStore {
    async fn create_room(
        &self,
        room_id: &RoomId,
        version: &str,
        creator: &UserId,
    ) -> StoreResult<()> {
        self.inner.create_room(room_id, version, creator).await
    }

    async fn room_exists(&self, room_id: &RoomId) -> StoreResult<bool> {
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

    /// From Scylla; an id it lacks is asked of the relational engine too,
    /// in case it is one a failed write has not copied yet.
    async fn get_event(&self, event_id: &EventId) -> StoreResult<Option<StoredEvent>> {
        match self.timeline.get_event(event_id).await? {
            Some(event) => Ok(Some(event)),
            None => self.inner.get_event(event_id).await,
        }
    }

    /// From the relational engine, which holds every event (Scylla holds
    /// the timelines' copy): one query rather than one per id.
    async fn get_events(&self, event_ids: &[OwnedEventId]) -> StoreResult<Vec<StoredEvent>> {
        self.inner.get_events(event_ids).await
    }

    async fn find_txn(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        device_id: &DeviceId,
        txn_id: &str,
    ) -> StoreResult<Option<OwnedEventId>> {
        self.inner
            .find_txn(room_id, sender, device_id, txn_id)
            .await
    }

    async fn find_txns(
        &self,
        room_id: &RoomId,
        txns: &[TxnKey],
    ) -> StoreResult<Vec<(TxnKey, OwnedEventId)>> {
        self.inner.find_txns(room_id, txns).await
    }

    async fn state_head(&self, room_id: &RoomId) -> StoreResult<Option<OwnedEventId>> {
        self.inner.state_head(room_id).await
    }

    async fn state_groups_of(
        &self,
        event_ids: &[OwnedEventId],
    ) -> StoreResult<Vec<(OwnedEventId, OwnedEventId)>> {
        self.inner.state_groups_of(event_ids).await
    }

    async fn state_group(&self, group: &EventId) -> StoreResult<Option<StateGroup>> {
        self.inner.state_group(group).await
    }

    async fn state_group_deltas(&self, group: &EventId) -> StoreResult<Option<usize>> {
        self.inner.state_group_deltas(group).await
    }

    async fn add_outliers(
        &self,
        room_id: &RoomId,
        events: &[(OwnedEventId, Arc<serde_json::Value>)],
    ) -> StoreResult<()> {
        self.inner.add_outliers(room_id, events).await
    }

    async fn add_refused(&self, room_id: &RoomId, events: &[Refused]) -> StoreResult<()> {
        self.inner.add_refused(room_id, events).await
    }

    async fn outliers(&self, event_ids: &[OwnedEventId]) -> StoreResult<Vec<Outlier>> {
        self.inner.outliers(event_ids).await
    }

    /// From the relational engine: this is the head new events are built
    /// on (`prev_events`, depth), read when a room is (re)loaded, often just
    /// after a failed append whose event Scylla may not have yet.
    async fn latest_event(&self, room_id: &RoomId) -> StoreResult<Option<StoredEvent>> {
        self.inner.latest_event(room_id).await
    }

    /// Backward pages include `from`, forward pages start after it (as the
    /// relational engines do).
    async fn room_events(
        &self,
        room_id: &RoomId,
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
        room_ids: &[OwnedRoomId],
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<(OwnedRoomId, RoomSlice)>> {
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

    /// Relations are read from the relational engine, which indexes them.
    async fn relations(&self, query: &RelationQuery<'_>) -> StoreResult<Vec<StoredEvent>> {
        self.inner.relations(query).await
    }

    async fn relation_summaries(
        &self,
        targets: &[OwnedEventId],
        user: &UserId,
    ) -> StoreResult<RelationSummaries> {
        self.inner.relation_summaries(targets, user).await
    }

    async fn threads(
        &self,
        room_id: &RoomId,
        participant: Option<&UserId>,
        before: Option<StreamPos>,
        limit: usize,
    ) -> StoreResult<Vec<(OwnedEventId, StreamPos)>> {
        self.inner
            .threads(room_id, participant, before, limit)
            .await
    }

    async fn current_state(&self, room_id: &RoomId) -> StoreResult<Vec<StoredEvent>> {
        self.inner.current_state(room_id).await
    }

    async fn current_state_of_rooms(
        &self,
        room_ids: &[OwnedRoomId],
        after: StreamPos,
        upto: StreamPos,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.inner
            .current_state_of_rooms(room_ids, after, upto)
            .await
    }

    async fn memberships_of_user(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRecord>> {
        self.inner.memberships_of_user(user_id).await
    }

    async fn members(&self, room_id: &RoomId) -> StoreResult<Vec<MembershipRecord>> {
        self.inner.members(room_id).await
    }

    async fn membership_history(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> StoreResult<Vec<(StreamPos, MembershipState)>> {
        self.inner.membership_history(room_id, user_id).await
    }

    async fn set_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> StoreResult<()> {
        self.inner.set_alias(alias, room_id, creator).await
    }

    async fn get_alias(
        &self,
        alias: &RoomAliasId,
    ) -> StoreResult<Option<(OwnedRoomId, OwnedUserId)>> {
        self.inner.get_alias(alias).await
    }

    async fn delete_alias(&self, alias: &RoomAliasId) -> StoreResult<bool> {
        self.inner.delete_alias(alias).await
    }

    async fn aliases_of_room(&self, room_id: &RoomId) -> StoreResult<Vec<OwnedRoomAliasId>> {
        self.inner.aliases_of_room(room_id).await
    }

    async fn set_room_public(&self, room_id: &RoomId, public: bool) -> StoreResult<()> {
        self.inner.set_room_public(room_id, public).await
    }

    async fn public_rooms(&self) -> StoreResult<Vec<OwnedRoomId>> {
        self.inner.public_rooms().await
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::sync::atomic::Ordering;

    use super::memory::MemoryTables;
    use super::*;
    use crate::store::conformance;
    use crate::store::sqlite::SqliteStore;
    use crate::store::StoreError;
    use ruma_common::{event_id, owned_event_id, room_id};

    /// Settings for a fresh keyspace on the ScyllaDB named by `SCYLLA_URI`
    /// (`host:port[,host:port...]`), or `None` (and a note) without it.
    fn scylla_settings(test: &str) -> Option<ScyllaSettings> {
        let Ok(uri) = std::env::var("SCYLLA_URI") else {
            // Written to the stderr handle, not with eprintln!: libtest
            // captures the macros' output of passing tests, and the skip
            // must show in CI's log.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{test}: skipped: SCYLLA_URI not set");
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

    async fn drop_keyspace(settings: &ScyllaSettings) {
        let timeline = ScyllaTimeline::connect(settings).await.unwrap();
        timeline.drop_keyspace(&settings.keyspace).await.unwrap();
    }

    async fn sqlite(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap())
    }

    #[tokio::test]
    async fn memory_timeline_passes_the_room_store_suite() {
        let dir = tempfile::tempdir().unwrap();
        let tables = Arc::new(MemoryTables::default());
        let store = ScyllaTimelineStore::open(sqlite(&dir).await, tables, "test")
            .await
            .unwrap();
        conformance::room_store(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn scylla_timeline_passes_the_room_store_suite() {
        let Some(settings) = scylla_settings("scylla_timeline_passes_the_room_store_suite") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let timeline = Arc::new(ScyllaTimeline::connect(&settings).await.unwrap());
        let store = ScyllaTimelineStore::open(sqlite(&dir).await, timeline, "test")
            .await
            .unwrap();
        conformance::room_store(Arc::new(store)).await;
        drop_keyspace(&settings).await;
    }

    /// Events the relational engine committed while the timeline missed
    /// them (a crash between the two writes, or a timeline added to a
    /// running server) are copied at start-up, and only those.
    async fn catches_up_at_start(open_tables: impl Fn() -> Arc<dyn TimelineTables>) {
        let dir = tempfile::tempdir().unwrap();
        let inner = sqlite(&dir).await;
        conformance::append_sample(inner.as_ref(), "!r:test", 5).await;
        let store = ScyllaTimelineStore::open(inner.clone(), open_tables(), "test")
            .await
            .unwrap();
        conformance::check_sample(&store, "!r:test", 5).await;
        assert_eq!(open_tables().progress("test").await.unwrap(), 5);
        drop(store);
        conformance::append_sample(inner.as_ref(), "!r2:test", 3).await;
        let store = ScyllaTimelineStore::open(inner, open_tables(), "test")
            .await
            .unwrap();
        conformance::check_sample(&store, "!r2:test", 3).await;
        let newest = store
            .room_events(room_id!("!r:test"), StreamPos::MAX, Direction::Backward, 1)
            .await
            .unwrap();
        assert_eq!(newest[0].event_id, "$!r:test-4");
        assert_eq!(open_tables().progress("test").await.unwrap(), 8);
    }

    #[tokio::test]
    async fn memory_timeline_catches_up_at_start() {
        let tables = Arc::new(MemoryTables::default());
        catches_up_at_start(|| tables.clone()).await;
    }

    #[tokio::test]
    async fn scylla_timeline_catches_up_at_start() {
        let Some(settings) = scylla_settings("scylla_timeline_catches_up_at_start") else {
            return;
        };
        let timeline: Arc<dyn TimelineTables> =
            Arc::new(ScyllaTimeline::connect(&settings).await.unwrap());
        catches_up_at_start(|| timeline.clone()).await;
        drop_keyspace(&settings).await;
    }

    /// While the timeline cannot be written, appends commit in the
    /// relational engine but are not acknowledged, and readers are held
    /// back to what the timeline has; the next append after it recovers
    /// copies everything missed.
    #[tokio::test]
    async fn a_failed_write_is_repaired_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let inner = sqlite(&dir).await;
        let tables = Arc::new(MemoryTables::default());
        let store = ScyllaTimelineStore::open(inner.clone(), tables.clone(), "test")
            .await
            .unwrap();
        conformance::append_sample(&store, "!r:test", 3).await;
        let before = store.events_position().await.unwrap();
        assert_eq!(before, 3);

        tables.fail_writes.store(true, Ordering::SeqCst);
        let redaction = NewEvent {
            kind: "m.room.redaction".into(),
            pdu: Arc::new(serde_json::json!({
                "type": "m.room.redaction",
                "content": {"redacts": "$!r:test-1"},
            })),
            redaction: Some((
                owned_event_id!("$!r:test-1"),
                serde_json::json!({"type": "m.room.message", "content": {}}),
            )),
            ..conformance::sample_message("!r:test", 10)
        };
        let failed = store.append(vec![redaction]).unwrap().await;
        assert!(matches!(failed, Err(StoreError::Database { .. })));
        // Committed in the relational engine, not readable from the timeline.
        assert_eq!(inner.events_position().await.unwrap(), 4);
        assert_eq!(store.events_position().await.unwrap(), before);
        let missing = store
            .room_events(room_id!("!r:test"), 4, Direction::Backward, 10)
            .await
            .unwrap();
        assert_eq!(
            missing.len(),
            3,
            "the uncopied event is not in the timeline"
        );
        // By id, the relational engine still answers for it.
        assert!(store
            .get_event(event_id!("$!r:test-10"))
            .await
            .unwrap()
            .is_some());

        tables.fail_writes.store(false, Ordering::SeqCst);
        let next = conformance::sample_message("!r:test", 11);
        let positions = store.append(vec![next]).unwrap().await.unwrap();
        assert_eq!(positions, vec![5]);
        assert_eq!(store.events_position().await.unwrap(), 5);
        let page = store
            .room_events(room_id!("!r:test"), 5, Direction::Backward, 10)
            .await
            .unwrap();
        let ids: Vec<&str> = page.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "$!r:test-11",
                "$!r:test-10",
                "$!r:test-2",
                "$!r:test-1",
                "$!r:test-0"
            ]
        );
        // The redaction the failed write carried was applied by the repair.
        let redacted = store
            .get_event(event_id!("$!r:test-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(redacted.pdu["content"], serde_json::json!({}));
    }
}
