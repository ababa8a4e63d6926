//! [`RoomStore`] on either relational engine. Appends go to the engine's
//! group-commit writer; the two multi-row lookups whose best SQL differs
//! (`find_txns`, `recent_events`) are the engine's own.

use async_trait::async_trait;
use sqlx::Row as _;
use tokio::sync::oneshot;

use super::engine::{dialect, Store};
use super::rows::{self, EVENT_COLUMNS, MEMBERSHIP_COLUMNS};
use super::{Job, Stream, ROOMS_PER_LIST};
use crate::store::{
    Direction, Durable, MembershipRecord, NewEvent, RoomSlice, RoomStore, StoreError, StoreResult,
    StoredEvent, StreamPos,
};

#[async_trait]
impl RoomStore for Store {
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
        let found: Option<String> =
            sqlx::query_scalar("SELECT room_id FROM rooms WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    fn append(&self, events: Vec<NewEvent>) -> StoreResult<Durable> {
        // Checked before queueing: one value the engine cannot store would
        // otherwise fail the whole group commit, every other room's sends
        // with it.
        dialect::check_events(&events)?;
        let (reply, done) = oneshot::channel();
        self.writer
            .send(Job::Append { events, reply })
            .map_err(|_| StoreError::Closed)?;
        Ok(Box::pin(async move {
            done.await.map_err(|_| StoreError::Closed)?
        }))
    }

    async fn events_position(&self) -> StoreResult<StreamPos> {
        self.position(Stream::Events).await
    }

    async fn events_after(&self, after: StreamPos, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        let upto = self.read_bound(Stream::Events);
        if after >= upto {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.stream > $1 AND e.stream <= $2 \
             ORDER BY e.stream LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(upto)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::event).collect()
    }

    async fn get_event(&self, event_id: &str) -> StoreResult<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id = $1");
        let row = sqlx::query(&sql)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::event).transpose()
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
        self.find_txns_of_room(room_id, txns).await
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
        row.as_ref().map(rows::event).transpose()
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
        rows.iter().map(rows::event).collect()
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
        // The engine reads up to limit+1 events per room, newest first; the
        // extra one tells `limited`.
        self.recent_events_of_rooms(room_ids, &mut out, after, upto, limit as i64 + 1)
            .await?;
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
        rows.iter().map(rows::event).collect()
    }

    async fn current_state_of_rooms(
        &self,
        room_ids: &[String],
        after: StreamPos,
        upto: StreamPos,
    ) -> StoreResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM current_state c JOIN events e ON e.stream = c.stream \
             WHERE {} AND c.stream > $2 AND c.stream <= $3 ORDER BY e.stream",
            dialect::in_list("c.room_id", "$1")
        );
        let mut out = Vec::new();
        for chunk in room_ids.chunks(ROOMS_PER_LIST) {
            let rows = sqlx::query(&sql)
                .bind(dialect::list(chunk)?)
                .bind(after)
                .bind(upto)
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                out.push(rows::event(row)?);
            }
        }
        if room_ids.len() > ROOMS_PER_LIST {
            out.sort_by_key(|e| e.stream);
        }
        Ok(out)
    }

    async fn memberships_of_user(&self, user_id: &str) -> StoreResult<Vec<MembershipRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::membership).collect()
    }

    async fn members(&self, room_id: &str) -> StoreResult<Vec<MembershipRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE room_id = $1 \
             ORDER BY user_id{}",
            dialect::BYTE_ORDER
        ))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::membership).collect()
    }

    async fn membership_history(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> StoreResult<Vec<(StreamPos, String)>> {
        let rows = sqlx::query(&format!(
            "SELECT stream, {} FROM events WHERE room_id = $1 AND state_key = $2 \
             AND type = 'm.room.member' ORDER BY stream",
            dialect::PDU_MEMBERSHIP
        ))
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
        Ok(sqlx::query_scalar(&format!(
            "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias{}",
            dialect::BYTE_ORDER
        ))
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
        Ok(sqlx::query_scalar(&format!(
            "SELECT room_id FROM rooms WHERE is_public ORDER BY room_id{}",
            dialect::BYTE_ORDER
        ))
        .fetch_all(&self.pool)
        .await?)
    }
}
