//! [`RoomStore`] on SQLite.

use async_trait::async_trait;
use sqlx::Row;
use tokio::sync::oneshot;

use super::writer::AppendJob;
use super::{event_from_row, SqliteStore, EVENT_COLUMNS};
use crate::store::{
    Direction, Durable, MembershipRecord, NewEvent, RoomSlice, RoomStore, StoreError, StoreResult,
    StoredEvent, StreamPos,
};

/// Rooms per statement in multi-room queries (SQLite caps compound SELECTs at 500).
const ROOMS_PER_QUERY: usize = 200;

fn membership_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<MembershipRecord> {
    Ok(MembershipRecord {
        room_id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        membership: row.try_get(2)?,
        event_id: row.try_get(3)?,
        stream: row.try_get(4)?,
    })
}

#[async_trait]
impl RoomStore for SqliteStore {
    async fn create_room(&self, room_id: &str, version: &str, creator: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO rooms (room_id, version, creator) VALUES (?, ?, ?)")
            .bind(room_id)
            .bind(version)
            .bind(creator)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn room_exists(&self, room_id: &str) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM rooms WHERE room_id = ?")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    fn append(&self, events: Vec<NewEvent>) -> StoreResult<Durable> {
        let (reply, done) = oneshot::channel();
        self.writer
            .send(AppendJob::Append { events, reply })
            .map_err(|_| StoreError::Closed)?;
        Ok(Box::pin(async move {
            done.await.map_err(|_| StoreError::Closed)?
        }))
    }

    async fn events_position(&self) -> StoreResult<StreamPos> {
        Ok(self.committed())
    }

    async fn events_after(&self, after: StreamPos, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        let upto = self.committed();
        if after >= upto {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream > ? AND stream <= ? \
             ORDER BY stream LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(upto)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn get_event(&self, event_id: &str) -> StoreResult<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?");
        let row = sqlx::query(&sql)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn find_txn(
        &self,
        room_id: &str,
        sender: &str,
        device_id: &str,
        txn_id: &str,
    ) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM events WHERE room_id = ? AND sender = ? AND txn_device = ? \
             AND txn_id = ?",
        )
        .bind(room_id)
        .bind(sender)
        .bind(device_id)
        .bind(txn_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn find_txns(
        &self,
        room_id: &str,
        txns: &[(String, String, String)],
    ) -> StoreResult<Vec<((String, String, String), String)>> {
        if txns.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(txns).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT sender, txn_device, txn_id, event_id FROM events WHERE room_id = ?1 \
             AND txn_id IS NOT NULL AND (sender, txn_device, txn_id) IN \
             (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?2))",
        )
        .bind(room_id)
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
                    row.try_get(3)?,
                ))
            })
            .collect()
    }

    async fn latest_event(&self, room_id: &str) -> StoreResult<Option<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = ? ORDER BY stream DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn room_events(
        &self,
        room_id: &str,
        from: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let sql = match dir {
            Direction::Backward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = ? AND stream <= ? \
                 ORDER BY stream DESC LIMIT ?"
            ),
            Direction::Forward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = ? AND stream > ? \
                 ORDER BY stream ASC LIMIT ?"
            ),
        };
        let rows = sqlx::query(&sql)
            .bind(room_id)
            .bind(from)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn recent_events(
        &self,
        room_ids: &[String],
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<(String, RoomSlice)>> {
        let mut out: Vec<(String, RoomSlice)> = room_ids
            .iter()
            .map(|r| (r.clone(), RoomSlice::default()))
            .collect();
        let index: std::collections::HashMap<&str, usize> = room_ids
            .iter()
            .enumerate()
            .map(|(i, r)| (r.as_str(), i))
            .collect();
        // One indexed sub-select per room, glued with UNION ALL: each reads at
        // most limit+1 rows from the (room_id, stream) index, and a whole chunk
        // of rooms costs one round trip.
        let fetch = limit as i64 + 1;
        for chunk in room_ids.chunks(ROOMS_PER_QUERY) {
            let part = format!(
                "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events WHERE room_id = ? \
                 AND stream > {after} AND stream <= {upto} ORDER BY stream DESC LIMIT {fetch})"
            );
            let sql = vec![part; chunk.len()].join(" UNION ALL ");
            let mut query = sqlx::query(&sql);
            for room in chunk {
                query = query.bind(room);
            }
            for row in query.fetch_all(&self.pool).await? {
                let event = event_from_row(&row)?;
                if let Some(&i) = index.get(event.room_id.as_str()) {
                    out[i].1.events.push(event);
                }
            }
        }
        for (_, slice) in &mut out {
            slice.events.sort_by_key(|e| e.stream);
            if slice.events.len() > limit {
                slice.limited = true;
                slice.events.drain(..slice.events.len() - limit);
            }
        }
        Ok(out)
    }

    async fn current_state(&self, room_id: &str) -> StoreResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream IN \
             (SELECT stream FROM current_state WHERE room_id = ?) ORDER BY stream"
        );
        let rows = sqlx::query(&sql)
            .bind(room_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn current_state_of_rooms(
        &self,
        room_ids: &[String],
        after: StreamPos,
        upto: StreamPos,
    ) -> StoreResult<Vec<StoredEvent>> {
        let mut out = Vec::new();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream IN (SELECT c.stream FROM \
             current_state c WHERE c.room_id IN (SELECT value FROM json_each(?)) \
             AND c.stream > ? AND c.stream <= ?) ORDER BY stream"
        );
        for chunk in room_ids.chunks(ROOMS_PER_QUERY * 5) {
            let list =
                serde_json::to_string(chunk).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let rows = sqlx::query(&sql)
                .bind(list)
                .bind(after)
                .bind(upto)
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                out.push(event_from_row(row)?);
            }
        }
        Ok(out)
    }

    async fn memberships_of_user(&self, user_id: &str) -> StoreResult<Vec<MembershipRecord>> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, membership, event_id, stream FROM memberships \
             WHERE user_id = ?",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(membership_from_row).collect()
    }

    async fn members(&self, room_id: &str) -> StoreResult<Vec<MembershipRecord>> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, membership, event_id, stream FROM memberships \
             WHERE room_id = ? ORDER BY user_id",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(membership_from_row).collect()
    }

    async fn membership_history(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> StoreResult<Vec<(StreamPos, String)>> {
        let rows = sqlx::query(
            "SELECT stream, json_extract(pdu, '$.content.membership') FROM events \
             WHERE room_id = ? AND state_key = ? AND type = 'm.room.member' ORDER BY stream",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let membership: Option<String> = row.try_get(1)?;
                Ok((
                    row.try_get(0)?,
                    membership.unwrap_or_else(|| "leave".into()),
                ))
            })
            .collect()
    }

    async fn set_alias(&self, alias: &str, room_id: &str, creator: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO room_aliases (alias, room_id, creator) VALUES (?, ?, ?)")
            .bind(alias)
            .bind(room_id)
            .bind(creator)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_alias(&self, alias: &str) -> StoreResult<Option<(String, String)>> {
        let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE alias = ?")
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    async fn delete_alias(&self, alias: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM room_aliases WHERE alias = ?")
            .bind(alias)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn aliases_of_room(&self, room_id: &str) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias")
                .bind(room_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn set_room_public(&self, room_id: &str, public: bool) -> StoreResult<()> {
        sqlx::query("UPDATE rooms SET is_public = ? WHERE room_id = ?")
            .bind(public)
            .bind(room_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn public_rooms(&self) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY room_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
