//! The room-store parts SQLite does its own way (the rest is in `../sql`):
//! appends go to the group-commit writer, and multi-room reads glue one
//! indexed sub-select per room.

use std::collections::HashMap;

use ruma_common::{OwnedEventId, OwnedRoomId, RoomId};

use super::sql::rows::{self, EVENT_COLUMNS};
use super::SqliteStore;
use crate::store::{RoomSlice, StoreError, StoreResult, StreamPos, TxnKey};

/// Rooms per statement in multi-room queries (SQLite caps compound SELECTs at 500).
const ROOMS_PER_QUERY: usize = 200;

impl SqliteStore {
    /// `RoomStore::find_txns` for a non-empty list: the triples as one JSON
    /// array.
    pub(super) async fn find_txns_of_room(
        &self,
        room_id: &RoomId,
        txns: &[TxnKey],
    ) -> StoreResult<Vec<(TxnKey, OwnedEventId)>> {
        let list =
            serde_json::to_string(txns).map_err(|e| StoreError::corrupt("list parameter", e))?;
        let rows = sqlx::query(
            "SELECT sender, txn_device, txn_id, event_id FROM events WHERE room_id = $1 \
             AND txn_id IS NOT NULL AND (sender, txn_device, txn_id) IN \
             (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($2))",
        )
        .bind(room_id.as_str())
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::txn_hit).collect()
    }

    /// Up to `fetch` events of each of `room_ids`, newest first, into the
    /// slice of `out` at the room's index.
    pub(super) async fn recent_events_of_rooms(
        &self,
        room_ids: &[OwnedRoomId],
        out: &mut [(OwnedRoomId, RoomSlice)],
        after: StreamPos,
        upto: StreamPos,
        fetch: i64,
    ) -> StoreResult<()> {
        let index: HashMap<&str, usize> = room_ids
            .iter()
            .enumerate()
            .map(|(i, room)| (room.as_str(), i))
            .collect();
        // One indexed sub-select per room, glued with UNION ALL: each reads at
        // most `fetch` rows from the (room_id, stream) index, and a whole
        // chunk of rooms costs one round trip.
        let part = format!(
            "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events e WHERE e.room_id = ? \
             AND e.stream > {after} AND e.stream <= {upto} ORDER BY e.stream DESC LIMIT {fetch})"
        );
        for chunk in room_ids.chunks(ROOMS_PER_QUERY) {
            let sql = vec![part.as_str(); chunk.len()].join(" UNION ALL ");
            let mut query = sqlx::query(&sql);
            for room in chunk {
                query = query.bind(room.as_str());
            }
            for row in query.fetch_all(&self.pool).await? {
                let event = rows::event(&row)?;
                if let Some(&i) = index.get(event.room_id.as_str()) {
                    out[i].1.events.push(event);
                }
            }
        }
        Ok(())
    }
}
