//! [`RoomStore`] on PostgreSQL. Multi-room reads are one statement each,
//! with the room list bound as one array.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::Row;
use tokio::sync::oneshot;

use super::writer::Job;
use super::{event_from_row, reject_nul, PgStore, EVENT_COLUMNS};
use crate::store::{
    Direction, Durable, MembershipRecord, NewEvent, RoomSlice, RoomStore, StoreError, StoreResult,
    StoredEvent, StreamPos,
};

fn membership_from_row(row: &PgRow) -> StoreResult<MembershipRecord> {
    Ok(MembershipRecord {
        room_id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        membership: row.try_get(2)?,
        event_id: row.try_get(3)?,
        stream: row.try_get(4)?,
    })
}

#[async_trait]
impl RoomStore for PgStore {
    async fn create_room(&self, room_id: &str, version: &str, creator: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO rooms (room_id, version, creator) VALUES ($1, $2, $3)")
            .bind(room_id)
            .bind(version)
            .bind(creator)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn room_exists(&self, room_id: &str) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    fn append(&self, events: Vec<NewEvent>) -> StoreResult<Durable> {
        for e in &events {
            let txn = e.txn.iter().flat_map(|(d, t)| [d.as_str(), t.as_str()]);
            let redacts = e.redaction.iter().map(|(target, _)| target.as_str());
            let optional = [e.state_key.as_deref(), e.membership.as_deref()];
            reject_nul(
                [&e.event_id, &e.room_id, &e.sender, &e.kind, &e.visibility]
                    .map(String::as_str)
                    .into_iter()
                    .chain(optional.into_iter().flatten())
                    .chain(txn)
                    .chain(redacts),
            )?;
        }
        let (reply, done) = oneshot::channel();
        self.writer
            .send(Job::Append { events, reply })
            .map_err(|_| StoreError::Closed)?;
        Ok(Box::pin(async move {
            done.await.map_err(|_| StoreError::Closed)?
        }))
    }

    async fn events_position(&self) -> StoreResult<StreamPos> {
        self.stream_position("events").await
    }

    async fn events_after(&self, after: StreamPos, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        // Positions commit in order, so whatever one statement sees past
        // `after` is gap-free: no upper bound needed.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.stream > $1 ORDER BY e.stream LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn get_event(&self, event_id: &str) -> StoreResult<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id = $1");
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
            "SELECT event_id FROM events WHERE room_id = $1 AND sender = $2 AND txn_device = $3 \
             AND txn_id = $4",
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
        .bind(room_id)
        .bind(&senders)
        .bind(&devices)
        .bind(&ids)
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
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.room_id = $1 \
             ORDER BY e.stream DESC LIMIT 1"
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
                "SELECT {EVENT_COLUMNS} FROM events e WHERE e.room_id = $1 AND e.stream <= $2 \
                 ORDER BY e.stream DESC LIMIT $3"
            ),
            Direction::Forward => format!(
                "SELECT {EVENT_COLUMNS} FROM events e WHERE e.room_id = $1 AND e.stream > $2 \
                 ORDER BY e.stream ASC LIMIT $3"
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
        if room_ids.is_empty() {
            return Ok(out);
        }
        // One LATERAL sub-select per room, each reading at most limit+1 rows
        // from the (room_id, stream) index: the extra row tells `limited`.
        // `ord` carries the room's index in the request back.
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, r.ord FROM unnest($1::text[]) WITH ORDINALITY AS r(room_id, ord) \
             CROSS JOIN LATERAL (SELECT * FROM events x WHERE x.room_id = r.room_id \
             AND x.stream > $2 AND x.stream <= $3 ORDER BY x.stream DESC LIMIT $4) e"
        );
        let rows = sqlx::query(&sql)
            .bind(room_ids)
            .bind(after)
            .bind(upto)
            .bind(limit as i64 + 1)
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            let ord: i64 = row.try_get(10)?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| StoreError::Corrupt(format!("room ordinal {ord}")))?;
            slot.1.events.push(event_from_row(row)?);
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
            "SELECT {EVENT_COLUMNS} FROM current_state c JOIN events e ON e.stream = c.stream \
             WHERE c.room_id = $1 ORDER BY e.stream"
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
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM current_state c JOIN events e ON e.stream = c.stream \
             WHERE c.room_id = ANY($1) AND c.stream > $2 AND c.stream <= $3 ORDER BY e.stream"
        );
        let rows = sqlx::query(&sql)
            .bind(room_ids)
            .bind(after)
            .bind(upto)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn memberships_of_user(&self, user_id: &str) -> StoreResult<Vec<MembershipRecord>> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, membership, event_id, stream FROM memberships \
             WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(membership_from_row).collect()
    }

    async fn members(&self, room_id: &str) -> StoreResult<Vec<MembershipRecord>> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, membership, event_id, stream FROM memberships \
             WHERE room_id = $1 ORDER BY user_id COLLATE \"C\"",
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
            "SELECT stream, (pdu::jsonb) -> 'content' ->> 'membership' FROM events \
             WHERE room_id = $1 AND state_key = $2 AND type = 'm.room.member' ORDER BY stream",
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
        sqlx::query("INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)")
            .bind(alias)
            .bind(room_id)
            .bind(creator)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_alias(&self, alias: &str) -> StoreResult<Option<(String, String)>> {
        let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    async fn delete_alias(&self, alias: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn aliases_of_room(&self, room_id: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias COLLATE \"C\"",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn set_room_public(&self, room_id: &str, public: bool) -> StoreResult<()> {
        sqlx::query("UPDATE rooms SET is_public = $1 WHERE room_id = $2")
            .bind(public)
            .bind(room_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn public_rooms(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT room_id FROM rooms WHERE is_public ORDER BY room_id COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
