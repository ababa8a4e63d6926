//! [`RoomStore`] on either relational engine. Appends go to the engine's
//! group-commit writer; the two multi-row lookups whose best SQL differs
//! (`find_txns`, `recent_events`) are the engine's own.

use std::sync::Arc;

use async_trait::async_trait;
use ruma_common::{
    DeviceId, EventId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId,
    RoomId, UserId,
};
use ruma_events::room::member::MembershipState;
use serde_json::Value;
use sqlx::Row as _;
use tokio::sync::oneshot;

use super::engine::{dialect, Store};
use super::rows::{self, EVENT_COLUMNS, MEMBERSHIP_COLUMNS};
use super::{Job, Stream, ROOMS_PER_LIST};
use crate::store::{
    parse_id, Direction, Durable, MembershipRecord, NewEvent, Outlier, Refused, RelationQuery,
    RelationSummaries, RoomSlice, RoomStore, StateGroup, StoreError, StoreResult, StoredEvent,
    StreamPos, TxnKey,
};

#[async_trait]
impl RoomStore for Store {
    async fn create_room(
        &self,
        room_id: &RoomId,
        version: &str,
        creator: &UserId,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO rooms (room_id, version, creator) VALUES ($1, $2, $3)")
            .bind(room_id.as_str())
            .bind(version)
            .bind(creator.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn room_exists(&self, room_id: &RoomId) -> StoreResult<bool> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT room_id FROM rooms WHERE room_id = $1")
                .bind(room_id.as_str())
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

    async fn get_event(&self, event_id: &EventId) -> StoreResult<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id = $1");
        let row = sqlx::query(&sql)
            .bind(event_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::event).transpose()
    }

    async fn get_events(&self, event_ids: &[OwnedEventId]) -> StoreResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE {}",
            dialect::in_list("e.event_id", "$1")
        );
        self.rows_for_ids(&sql, event_ids, rows::event).await
    }

    async fn find_txn(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        device_id: &DeviceId,
        txn_id: &str,
    ) -> StoreResult<Option<OwnedEventId>> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT event_id FROM events WHERE room_id = $1 AND sender = $2 AND txn_device = $3 \
             AND txn_id = $4",
        )
        .bind(room_id.as_str())
        .bind(sender.as_str())
        .bind(device_id.as_str())
        .bind(txn_id)
        .fetch_optional(&self.pool)
        .await?;
        found.map(parse_id).transpose()
    }

    async fn find_txns(
        &self,
        room_id: &RoomId,
        txns: &[TxnKey],
    ) -> StoreResult<Vec<(TxnKey, OwnedEventId)>> {
        if txns.is_empty() {
            return Ok(Vec::new());
        }
        self.find_txns_of_room(room_id, txns).await
    }

    async fn state_head(&self, room_id: &RoomId) -> StoreResult<Option<OwnedEventId>> {
        let head: Option<Option<String>> =
            sqlx::query_scalar("SELECT state_head FROM rooms WHERE room_id = $1")
                .bind(room_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        head.flatten().map(parse_id).transpose()
    }

    async fn state_groups_of(
        &self,
        event_ids: &[OwnedEventId],
    ) -> StoreResult<Vec<(OwnedEventId, OwnedEventId)>> {
        self.groups_of_events(event_ids).await
    }

    async fn state_group(&self, group: &EventId) -> StoreResult<Option<StateGroup>> {
        self.read_state_group(group).await
    }

    async fn state_group_deltas(&self, group: &EventId) -> StoreResult<Option<usize>> {
        self.count_group_deltas(group).await
    }

    async fn add_outliers(
        &self,
        room_id: &RoomId,
        events: &[(OwnedEventId, Arc<Value>)],
    ) -> StoreResult<()> {
        self.insert_outliers(room_id, events).await
    }

    async fn add_refused(&self, room_id: &RoomId, events: &[Refused]) -> StoreResult<()> {
        self.insert_refused(room_id, events).await
    }

    async fn outliers(&self, event_ids: &[OwnedEventId]) -> StoreResult<Vec<Outlier>> {
        self.read_outliers(event_ids).await
    }

    async fn latest_event(&self, room_id: &RoomId) -> StoreResult<Option<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.room_id = $1 \
             ORDER BY e.stream DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(room_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::event).transpose()
    }

    async fn room_events(
        &self,
        room_id: &RoomId,
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
            .bind(room_id.as_str())
            .bind(from)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::event).collect()
    }

    async fn recent_events(
        &self,
        room_ids: &[OwnedRoomId],
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<(OwnedRoomId, RoomSlice)>> {
        let mut out: Vec<(OwnedRoomId, RoomSlice)> = room_ids
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

    async fn current_state(&self, room_id: &RoomId) -> StoreResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM current_state c JOIN events e ON e.stream = c.stream \
             WHERE c.room_id = $1 ORDER BY e.stream"
        );
        let rows = sqlx::query(&sql)
            .bind(room_id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::event).collect()
    }

    async fn current_state_of_rooms(
        &self,
        room_ids: &[OwnedRoomId],
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

    async fn memberships_of_user(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE user_id = $1"
        ))
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::membership).collect()
    }

    async fn members(&self, room_id: &RoomId) -> StoreResult<Vec<MembershipRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE room_id = $1 \
             ORDER BY user_id{}",
            dialect::BYTE_ORDER
        ))
        .bind(room_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::membership).collect()
    }

    async fn membership_history(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> StoreResult<Vec<(StreamPos, MembershipState)>> {
        let rows = sqlx::query(&format!(
            "SELECT stream, {} FROM events WHERE room_id = $1 AND state_key = $2 \
             AND type = 'm.room.member' ORDER BY stream",
            dialect::PDU_MEMBERSHIP
        ))
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let membership: Option<String> = row.try_get(1)?;
                Ok((
                    row.try_get(0)?,
                    membership.map_or(MembershipState::Leave, MembershipState::from),
                ))
            })
            .collect()
    }

    async fn set_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)")
            .bind(alias.as_str())
            .bind(room_id.as_str())
            .bind(creator.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_alias(
        &self,
        alias: &RoomAliasId,
    ) -> StoreResult<Option<(OwnedRoomId, OwnedUserId)>> {
        let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
            .bind(alias.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((rows::id(&row, 0)?, rows::id(&row, 1)?)))
            .transpose()
    }

    async fn delete_alias(&self, alias: &RoomAliasId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
            .bind(alias.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn aliases_of_room(&self, room_id: &RoomId) -> StoreResult<Vec<OwnedRoomAliasId>> {
        let aliases: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias{}",
            dialect::BYTE_ORDER
        ))
        .bind(room_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        aliases.into_iter().map(parse_id).collect()
    }

    async fn relations(&self, query: &RelationQuery<'_>) -> StoreResult<Vec<StoredEvent>> {
        self.relations_of(query).await
    }

    async fn relation_summaries(
        &self,
        targets: &[OwnedEventId],
        user: &UserId,
    ) -> StoreResult<RelationSummaries> {
        self.summaries(targets, user).await
    }

    async fn threads(
        &self,
        room_id: &RoomId,
        participant: Option<&UserId>,
        before: Option<StreamPos>,
        limit: usize,
    ) -> StoreResult<Vec<(OwnedEventId, StreamPos)>> {
        self.thread_roots(room_id, participant, before, limit).await
    }

    async fn set_room_public(&self, room_id: &RoomId, public: bool) -> StoreResult<()> {
        sqlx::query("UPDATE rooms SET is_public = $1 WHERE room_id = $2")
            .bind(public)
            .bind(room_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn public_rooms(&self) -> StoreResult<Vec<OwnedRoomId>> {
        let rooms: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT room_id FROM rooms WHERE is_public ORDER BY room_id{}",
            dialect::BYTE_ORDER
        ))
        .fetch_all(&self.pool)
        .await?;
        rooms.into_iter().map(parse_id).collect()
    }
}
