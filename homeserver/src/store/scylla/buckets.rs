//! Time buckets and the paging plan over them.
//!
//! A bucket is a range of stream positions (`stream >> BUCKET_BITS`), not a
//! day of `origin_server_ts`: the timestamp is whatever the sending server
//! claimed, so it neither grows with stream order (pages across day buckets
//! would come out of order) nor bounds a busy room's day. Positions are
//! unique across the server and only grow, so a partition holds at most
//! `2^BUCKET_BITS` events whatever the room, and a position alone says where
//! its row is (a redaction needs no lookup of the bucket).
//!
//! A quiet room has events in few buckets of many; `room_buckets` lists the
//! non-empty ones, so a page reads at most one partition per event it
//! returns, plus one, plus one index read per `BUCKETS_PER_READ` buckets.

use async_trait::async_trait;
use ruma_common::RoomId;

use crate::store::{Direction, StoreResult, StoredEvent, StreamPos};

/// 65,536 positions per bucket: a partition stays under Scylla's
/// large-partition warning (100,000 rows) even for a room that takes every
/// position of the server, and a busy server (1,000 events a second) opens
/// one bucket a minute, so a page of a busy room reads one or two.
pub const BUCKET_BITS: u32 = 16;

/// Buckets listed per read of the bucket index.
pub const BUCKETS_PER_READ: usize = 16;

/// The bucket holding `stream`.
pub fn bucket_of(stream: StreamPos) -> i64 {
    stream >> BUCKET_BITS
}

/// A window of one room's timeline: positions in `(after, upto]`, read in
/// `dir`, at most `limit` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub after: StreamPos,
    pub upto: StreamPos,
    pub dir: Direction,
    pub limit: usize,
}

impl Window {
    /// The buckets the window can touch, lowest and highest.
    pub fn bucket_range(&self) -> (i64, i64) {
        (
            bucket_of(self.after.saturating_add(1)),
            bucket_of(self.upto),
        )
    }
}

/// What a page reads: the bucket index and one bucket's events. The Scylla
/// timeline implements it; the tests, a map in memory.
#[async_trait]
pub trait BucketSource: Send + Sync {
    /// Up to `limit` non-empty buckets of `room_id` in `[low, high]`, in `dir`
    /// order (newest first for `Backward`).
    async fn buckets(
        &self,
        room_id: &RoomId,
        low: i64,
        high: i64,
        dir: Direction,
        limit: usize,
    ) -> StoreResult<Vec<i64>>;
    /// Up to `limit` events of one bucket with positions in `(after, upto]`,
    /// in `dir` order.
    async fn events(
        &self,
        room_id: &RoomId,
        bucket: i64,
        after: StreamPos,
        upto: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>>;
}

/// Reads one window of a room: bucket by non-empty bucket, in `dir`, until
/// the limit is met or the window runs out. Events come in `dir` order.
pub async fn read_window(
    source: &dyn BucketSource,
    room_id: &RoomId,
    window: Window,
) -> StoreResult<Vec<StoredEvent>> {
    let mut out = Vec::new();
    if window.limit == 0 || window.after >= window.upto {
        return Ok(out);
    }
    let (mut low, mut high) = window.bucket_range();
    while out.len() < window.limit && low <= high {
        let buckets = source
            .buckets(room_id, low, high, window.dir, BUCKETS_PER_READ)
            .await?;
        for &bucket in &buckets {
            let wanted = window.limit - out.len();
            let events = source
                .events(
                    room_id,
                    bucket,
                    window.after,
                    window.upto,
                    window.dir,
                    wanted,
                )
                .await?;
            out.extend(events);
            if out.len() >= window.limit {
                break;
            }
        }
        if buckets.len() < BUCKETS_PER_READ {
            break;
        }
        // The index may list more: continue past the last bucket read.
        let last = *buckets.last().expect("a full list");
        match window.dir {
            Direction::Backward => high = last - 1,
            Direction::Forward => low = last + 1,
        }
    }
    out.truncate(window.limit);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use ruma_common::{owned_user_id, room_id};

    /// A room's timeline in memory, logging which buckets each page reads.
    #[derive(Default)]
    struct Memory {
        rows: BTreeMap<(ruma_common::OwnedRoomId, i64), BTreeMap<StreamPos, StoredEvent>>,
        reads: Mutex<Vec<String>>,
    }

    impl Memory {
        fn with(room: &RoomId, positions: &[StreamPos]) -> Self {
            let mut memory = Self::default();
            for &stream in positions {
                let event = StoredEvent {
                    stream,
                    event_id: crate::store::conformance::event(&format!("${stream}")),
                    room_id: room.to_owned(),
                    sender: owned_user_id!("@a:test"),
                    kind: "m.room.message".into(),
                    state_key: None,
                    pdu: Arc::new(json!({})),
                    txn: None,
                    visibility: "shared".into(),
                };
                memory
                    .rows
                    .entry((room.into(), bucket_of(stream)))
                    .or_default()
                    .insert(stream, event);
            }
            memory
        }

        fn take_reads(&self) -> Vec<String> {
            std::mem::take(&mut self.reads.lock())
        }
    }

    #[async_trait]
    impl BucketSource for Memory {
        async fn buckets(
            &self,
            room_id: &RoomId,
            low: i64,
            high: i64,
            dir: Direction,
            limit: usize,
        ) -> StoreResult<Vec<i64>> {
            self.reads.lock().push(format!("index {low}..={high}"));
            let mut found: Vec<i64> = self
                .rows
                .keys()
                .filter(|(room, b)| room == room_id && (low..=high).contains(b))
                .map(|(_, b)| *b)
                .collect();
            if dir == Direction::Backward {
                found.reverse();
            }
            found.truncate(limit);
            Ok(found)
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
            self.reads.lock().push(format!("bucket {bucket}"));
            let Some(rows) = self.rows.get(&(room_id.to_owned(), bucket)) else {
                return Ok(Vec::new());
            };
            let range = rows.range(after + 1..=upto).map(|(_, e)| e.clone());
            Ok(match dir {
                Direction::Forward => range.take(limit).collect(),
                Direction::Backward => range.rev().take(limit).collect(),
            })
        }
    }

    const B: StreamPos = 1 << BUCKET_BITS;

    fn streams(events: &[StoredEvent]) -> Vec<StreamPos> {
        events.iter().map(|e| e.stream).collect()
    }

    #[test]
    fn buckets_are_stream_ranges() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(B - 1), 0);
        assert_eq!(bucket_of(B), 1);
        assert_eq!(bucket_of(5 * B + 7), 5);
        let window = Window {
            after: B - 1,
            upto: 3 * B,
            dir: Direction::Backward,
            limit: 10,
        };
        // `after` is exclusive: its bucket is not read unless `after + 1` is in it.
        assert_eq!(window.bucket_range(), (1, 3));
        let unbounded = Window {
            after: StreamPos::MIN,
            upto: StreamPos::MAX,
            ..window
        };
        assert_eq!(
            unbounded.bucket_range(),
            (bucket_of(StreamPos::MIN + 1), bucket_of(StreamPos::MAX))
        );
    }

    #[tokio::test]
    async fn a_backward_page_reads_only_the_buckets_it_needs() {
        // A quiet room: two events in bucket 0, one in 3, three in 9.
        let memory = Memory::with(
            room_id!("!r:t"),
            &[5, 9, 3 * B + 1, 9 * B, 9 * B + 4, 9 * B + 8],
        );
        let window = |upto, limit| Window {
            after: 0,
            upto,
            dir: Direction::Backward,
            limit,
        };
        let page = read_window(&memory, room_id!("!r:t"), window(9 * B + 4, 3))
            .await
            .unwrap();
        assert_eq!(streams(&page), [9 * B + 4, 9 * B, 3 * B + 1]);
        // The empty buckets 4..=8 are never read.
        assert_eq!(memory.take_reads(), ["index 0..=9", "bucket 9", "bucket 3"]);

        // Paging on from the last event returned reaches the first bucket.
        let page = read_window(&memory, room_id!("!r:t"), window(3 * B, 10))
            .await
            .unwrap();
        assert_eq!(streams(&page), [9, 5]);
        // Bucket 3 is listed but holds only later events: one wasted read.
        assert_eq!(memory.take_reads(), ["index 0..=3", "bucket 3", "bucket 0"]);

        // A page that one bucket fills reads just that bucket.
        let page = read_window(&memory, room_id!("!r:t"), window(StreamPos::MAX, 2))
            .await
            .unwrap();
        assert_eq!(streams(&page), [9 * B + 8, 9 * B + 4]);
        assert_eq!(
            memory.take_reads(),
            [
                format!("index 0..={}", bucket_of(StreamPos::MAX)),
                "bucket 9".into()
            ]
        );
    }

    #[tokio::test]
    async fn forward_pages_and_lower_bounds() {
        let memory = Memory::with(room_id!("!r:t"), &[5, 9, 3 * B + 1, 9 * B, 9 * B + 4]);
        let page = read_window(
            &memory,
            room_id!("!r:t"),
            Window {
                after: 5,
                upto: StreamPos::MAX,
                dir: Direction::Forward,
                limit: 3,
            },
        )
        .await
        .unwrap();
        assert_eq!(streams(&page), [9, 3 * B + 1, 9 * B]);
        // `(after, upto]` both ways: a sync's window stops at `after`.
        let page = read_window(
            &memory,
            room_id!("!r:t"),
            Window {
                after: 9,
                upto: 9 * B,
                dir: Direction::Backward,
                limit: 10,
            },
        )
        .await
        .unwrap();
        assert_eq!(streams(&page), [9 * B, 3 * B + 1]);
        memory.take_reads();
        // An empty window reads nothing at all.
        let none = Window {
            after: 9,
            upto: 9,
            dir: Direction::Backward,
            limit: 10,
        };
        assert!(read_window(&memory, room_id!("!r:t"), none)
            .await
            .unwrap()
            .is_empty());
        assert!(memory.take_reads().is_empty());
    }

    #[tokio::test]
    async fn the_index_is_read_again_when_a_page_spans_many_buckets() {
        // One event in each of 40 buckets: a page of 20 needs two index reads.
        let positions: Vec<StreamPos> = (0..40).map(|b| b * B + 1).collect();
        let memory = Memory::with(room_id!("!r:t"), &positions);
        let page = read_window(
            &memory,
            room_id!("!r:t"),
            Window {
                after: 0,
                upto: StreamPos::MAX,
                dir: Direction::Backward,
                limit: 20,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            streams(&page),
            (20..40).rev().map(|b| b * B + 1).collect::<Vec<_>>()
        );
        let reads = memory.take_reads();
        let index_reads: Vec<&String> = reads.iter().filter(|r| r.starts_with("index")).collect();
        assert_eq!(index_reads.len(), 2);
        assert_eq!(index_reads[1], "index 0..=23");
        assert_eq!(reads.len(), 2 + 20);
        // Another room's buckets are never read.
        assert!(read_window(
            &memory,
            room_id!("!other:t"),
            Window {
                after: 0,
                upto: StreamPos::MAX,
                dir: Direction::Forward,
                limit: 5,
            },
        )
        .await
        .unwrap()
        .is_empty());
    }
}
