//! [`PushStore`] on either relational engine. Pusher changes are rare: plain
//! pool writes.

use async_trait::async_trait;
use ruma_common::{DeviceId, UserId};
use sqlx::Row as _;

use super::engine::{dialect, Store};
use super::rows::{self, json, PUSHER_COLUMNS};
use crate::store::{parse_id, OutboxPush, PushStore, PusherRecord, QueuedPush, StoreResult};

#[async_trait]
impl PushStore for Store {
    async fn set_pusher(&self, pusher: PusherRecord, append: bool) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        if !append {
            sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id != $3")
                .bind(&pusher.app_id)
                .bind(&pusher.pushkey)
                .bind(pusher.user_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        // Deleted and inserted rather than updated: a replaced pusher takes a
        // new place in the insertion order, as the spec's listing expects.
        sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
            .bind(pusher.user_id.as_str())
            .bind(&pusher.app_id)
            .bind(&pusher.pushkey)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO pushers ({PUSHER_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(pusher.user_id.as_str())
        .bind(&pusher.app_id)
        .bind(&pusher.pushkey)
        .bind(&pusher.kind)
        .bind(&pusher.app_display_name)
        .bind(&pusher.device_display_name)
        .bind(&pusher.profile_tag)
        .bind(&pusher.lang)
        .bind(pusher.data.to_string())
        .bind(pusher.device_id.as_ref().map(|d| d.as_str()))
        .bind(pusher.created_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_pusher(
        &self,
        user_id: &UserId,
        app_id: &str,
        pushkey: &str,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                .bind(user_id.as_str())
                .bind(app_id)
                .bind(pushkey)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn pushers(&self, user_id: &UserId) -> StoreResult<Vec<PusherRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY created_ts, {}",
            dialect::INSERTION_ORDER
        ))
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::pusher).collect()
    }

    async fn delete_device_pushers(
        &self,
        user_id: &UserId,
        device_id: Option<&DeviceId>,
        keep_device: Option<&DeviceId>,
    ) -> StoreResult<()> {
        let query = match device_id {
            Some(device) => {
                sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id.as_str())
                    .bind(device.as_str())
            }
            None => sqlx::query(
                "DELETE FROM pushers WHERE user_id = $1 AND device_id IS DISTINCT FROM $2",
            )
            .bind(user_id.as_str())
            .bind(keep_device.map(DeviceId::as_str)),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn all_pushers(&self) -> StoreResult<Vec<PusherRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers ORDER BY created_ts, {}",
            dialect::INSERTION_ORDER
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::pusher).collect()
    }

    async fn delete_pushkey(&self, app_id: &str, pushkey: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2")
            .bind(app_id)
            .bind(pushkey)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn enqueue_pushes(
        &self,
        stream: i64,
        pushes: Vec<OutboxPush>,
        now_ts: i64,
    ) -> StoreResult<bool> {
        if pushes.is_empty() {
            return Ok(true);
        }
        let mut tx = self.pool.begin().await?;
        // Events of one room reach the decider in the order their nodes'
        // producers delivered them, not in stream order: each is recorded.
        let fresh = sqlx::query(
            "INSERT INTO push_decided (stream, decided_ts) VALUES ($1, $2) \
             ON CONFLICT (stream) DO NOTHING",
        )
        .bind(stream)
        .bind(now_ts)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if stream % 1024 == 0 {
            // A redelivery comes within minutes; an hour is plenty.
            sqlx::query("DELETE FROM push_decided WHERE decided_ts < $1")
                .bind(now_ts - 3_600_000)
                .execute(&mut *tx)
                .await?;
        }
        if !fresh {
            return Ok(false);
        }
        dialect::insert_outbox(&mut tx, pushes).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_pushes(
        &self,
        now_ts: i64,
        lease_until: i64,
        limit: usize,
        skip_urls: &[String],
    ) -> StoreResult<Vec<QueuedPush>> {
        // One statement. On PostgreSQL, SKIP LOCKED lets nodes draining at
        // once take different rows; SQLite's single writer does that alone.
        let mut rows = sqlx::query(&format!(
            "UPDATE push_outbox SET next_ts = $2 WHERE id IN ( \
               SELECT id FROM push_outbox WHERE next_ts <= $1 AND NOT ({}) \
               ORDER BY next_ts, id LIMIT $3{}) \
             RETURNING id, user_id, app_id, pushkey, url, body, attempts, next_ts, \
               hold_room, hold_stream",
            dialect::in_list("url", "$4"),
            dialect::SKIP_LOCKED
        ))
        .bind(now_ts)
        .bind(lease_until)
        .bind(limit as i64)
        .bind(dialect::list(skip_urls)?)
        .fetch_all(&self.pool)
        .await?;
        rows.sort_by_key(|row| row.try_get::<i64, _>(0).unwrap_or_default());
        rows.iter()
            .map(|row| {
                let body: String = row.try_get(5)?;
                let hold_room: Option<String> = row.try_get(8)?;
                let hold_stream: Option<i64> = row.try_get(9)?;
                let unless_received = match (hold_room, hold_stream) {
                    (Some(room), Some(stream)) => Some((parse_id(room)?, stream)),
                    _ => None,
                };
                Ok(QueuedPush {
                    id: row.try_get(0)?,
                    push: OutboxPush {
                        user_id: rows::id(row, 1)?,
                        app_id: row.try_get(2)?,
                        pushkey: row.try_get(3)?,
                        url: row.try_get(4)?,
                        body: json(&body)?,
                        due_ts: row.try_get(7)?,
                        unless_received,
                    },
                    attempts: row.try_get(6)?,
                })
            })
            .collect()
    }

    async fn next_push_due(&self) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MIN(next_ts) FROM push_outbox")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn finish_push(&self, id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM push_outbox WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn retry_push(&self, id: i64, attempts: i64, next_ts: i64) -> StoreResult<()> {
        sqlx::query("UPDATE push_outbox SET attempts = $1, next_ts = $2 WHERE id = $3")
            .bind(attempts)
            .bind(next_ts)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn pushes_decided_through(&self) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT stream FROM push_caught_up WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_pushes_decided_through(&self, stream: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO push_caught_up (id, stream) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET stream = excluded.stream",
        )
        .bind(stream)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
