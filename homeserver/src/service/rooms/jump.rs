//! Jumping to a date (`timestamp_to_event`): the event closest to a time.
//!
//! Events are stored in stream order, which is the order they were sent in
//! for this server's own events and close to it for others'. A binary
//! search over stream positions finds where the time falls in a handful of
//! index seeks; the events around that point are then compared by their
//! real timestamps, so a few out-of-order events do not mislead it.

use ruma_common::{RoomId, UserId};

use super::RoomService;
use crate::service::error::{ServiceError, ServiceResult};
use crate::store::{Direction, StoredEvent, StreamPos};

/// Events read on each side of the point the search lands on.
const WINDOW: usize = 50;
/// Further pages read past the window when it holds no visible match.
const EXTRA_PAGES: usize = 10;

fn ts(event: &StoredEvent) -> i64 {
    event.pdu["origin_server_ts"].as_i64().unwrap_or(0)
}

impl RoomService {
    /// The visible event closest to `at`: the first at or after it going
    /// forward, the last at or before it going backward.
    pub async fn event_at(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        at: i64,
        dir: Direction,
    ) -> ServiceResult<StoredEvent> {
        let viewer = self.reader(room_id, user_id).await?;
        let (lo, hi) = self.bracket(room_id, at).await?;
        let mut window = self
            .store
            .room_events(room_id, hi, Direction::Backward, WINDOW)
            .await?;
        window.extend(
            self.store
                .room_events(room_id, lo, Direction::Forward, WINDOW)
                .await?,
        );
        window.sort_by_key(|e| e.stream);
        window.dedup_by_key(|e| e.stream);
        let best = |events: &[StoredEvent]| -> Option<StoredEvent> {
            let visible = events.iter().filter(|e| viewer.can_see(e));
            match dir {
                Direction::Forward => visible
                    .filter(|e| ts(e) >= at)
                    .min_by_key(|e| (ts(e), e.stream)),
                Direction::Backward => visible
                    .filter(|e| ts(e) <= at)
                    .max_by_key(|e| (ts(e), e.stream)),
            }
            .cloned()
        };
        if let Some(found) = best(&window) {
            return Ok(found);
        }
        // Nothing visible near the point: walk on in `dir`, a bounded way.
        let mut cursor = match dir {
            Direction::Forward => window.last().map_or(lo, |e| e.stream),
            Direction::Backward => window.first().map_or(hi, |e| e.stream),
        };
        for _ in 0..EXTRA_PAGES {
            let page = self.store.room_events(room_id, cursor, dir, 100).await?;
            if let Some(found) = best(&page) {
                return Ok(found);
            }
            match page.last() {
                Some(last) if page.len() == 100 => cursor = last.stream,
                _ => break,
            }
        }
        Err(ServiceError::not_found("No event found near that time"))
    }

    /// Stream positions `lo < hi` around where `at` falls: the first event
    /// after `lo` is older than `at` (or there is none before), the first
    /// after `hi` is not. (A page backward from `hi` includes `hi`; forward
    /// from `lo` starts after it.)
    async fn bracket(&self, room_id: &RoomId, at: i64) -> ServiceResult<(StreamPos, StreamPos)> {
        let (mut lo, mut hi) = (0, self.store.events_position().await? + 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let next = self
                .store
                .room_events(room_id, mid, Direction::Forward, 1)
                .await?;
            match next.first() {
                Some(event) if ts(event) < at => lo = mid,
                _ => hi = mid,
            }
        }
        Ok((lo, hi))
    }
}
