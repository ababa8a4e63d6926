//! The room-store parts PostgreSQL does its own way (the rest is in
//! `../sql`): appends go to the group-commit writer, and multi-room reads
//! are one statement each, with the list bound as arrays.

use ruma_common::{OwnedEventId, OwnedRoomId, RoomId};
use sqlx::Row;

use super::sql::rows::{self, EVENT_COLUMNS};
use super::{dialect, PgStore};
use crate::store::{RoomSlice, StoreError, StoreResult, StreamPos, TxnKey};

impl PgStore {
    /// `RoomStore::find_txns` for a non-empty list.
    pub(super) async fn find_txns_of_room(
        &self,
        room_id: &RoomId,
        txns: &[TxnKey],
    ) -> StoreResult<Vec<(TxnKey, OwnedEventId)>> {
        let senders: Vec<&str> = txns.iter().map(|t| t.0.as_str()).collect();
        let devices: Vec<&str> = txns.iter().map(|t| t.1.as_str()).collect();
        let ids: Vec<&str> = txns.iter().map(|t| t.2.as_str()).collect();
        // One index probe per transaction id: `LIMIT 1` keeps the planner from
        // turning the LATERAL into a join that scans the room (a generic
        // plan cannot tell how many ids come), and `txn_id IS NOT NULL`
        // lets it use the partial unique index.
        let rows = sqlx::query(
            "SELECT t.sender, t.device, t.txn, e.event_id \
             FROM unnest($2::text[], $3::text[], $4::text[]) AS t(sender, device, txn) \
             CROSS JOIN LATERAL (SELECT x.event_id FROM events x WHERE x.room_id = $1 \
             AND x.sender = t.sender AND x.txn_device = t.device AND x.txn_id = t.txn \
             AND x.txn_id IS NOT NULL LIMIT 1) e",
        )
        .bind(room_id.as_str())
        .bind(&senders)
        .bind(&devices)
        .bind(&ids)
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
        // One LATERAL sub-select per room, each reading at most `fetch` rows
        // from the (room_id, stream) index. `ord` carries the room's index
        // in the request back.
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, r.ord FROM unnest($1::text[]) WITH ORDINALITY AS r(room_id, ord) \
             CROSS JOIN LATERAL (SELECT * FROM events x WHERE x.room_id = r.room_id \
             AND x.stream > $2 AND x.stream <= $3 ORDER BY x.stream DESC LIMIT $4) e"
        );
        let rows = sqlx::query(&sql)
            .bind(dialect::list(room_ids)?)
            .bind(after)
            .bind(upto)
            .bind(fetch)
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            let ord: i64 = row.try_get(10)?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| StoreError::corrupt_says(format!("room ordinal {ord}")))?;
            slot.1.events.push(rows::event(row)?);
        }
        Ok(())
    }
}
