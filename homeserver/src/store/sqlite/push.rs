//! [`PushStore`] on SQLite. Pusher changes are rare: plain pool writes.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::SqliteStore;
use crate::store::{OutboxPush, PushStore, PusherRecord, QueuedPush, StoreError, StoreResult};

const PUSHER_COLUMNS: &str = "user_id, app_id, pushkey, kind, app_display_name, \
     device_display_name, profile_tag, lang, data, device_id, created_ts";

fn pusher_from_row(row: &SqliteRow) -> StoreResult<PusherRecord> {
    let data: String = row.try_get(8)?;
    Ok(PusherRecord {
        user_id: row.try_get(0)?,
        app_id: row.try_get(1)?,
        pushkey: row.try_get(2)?,
        kind: row.try_get(3)?,
        app_display_name: row.try_get(4)?,
        device_display_name: row.try_get(5)?,
        profile_tag: row.try_get(6)?,
        lang: row.try_get(7)?,
        data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        device_id: row.try_get(9)?,
        created_ts: row.try_get(10)?,
    })
}

#[async_trait]
impl PushStore for SqliteStore {
    async fn set_pusher(&self, pusher: PusherRecord, append: bool) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        if !append {
            sqlx::query("DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?")
                .bind(&pusher.app_id)
                .bind(&pusher.pushkey)
                .bind(&pusher.user_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&format!(
            "INSERT OR REPLACE INTO pushers ({PUSHER_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&pusher.user_id)
        .bind(&pusher.app_id)
        .bind(&pusher.pushkey)
        .bind(&pusher.kind)
        .bind(&pusher.app_display_name)
        .bind(&pusher.device_display_name)
        .bind(&pusher.profile_tag)
        .bind(&pusher.lang)
        .bind(pusher.data.to_string())
        .bind(&pusher.device_id)
        .bind(pusher.created_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?")
                .bind(user_id)
                .bind(app_id)
                .bind(pushkey)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn pushers(&self, user_id: &str) -> StoreResult<Vec<PusherRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = ? ORDER BY created_ts, rowid"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pusher_from_row).collect()
    }

    async fn delete_device_pushers(
        &self,
        user_id: &str,
        device_id: Option<&str>,
        keep_device: Option<&str>,
    ) -> StoreResult<()> {
        let query = match device_id {
            Some(device) => sqlx::query("DELETE FROM pushers WHERE user_id = ? AND device_id = ?")
                .bind(user_id)
                .bind(device),
            None => sqlx::query("DELETE FROM pushers WHERE user_id = ? AND device_id IS NOT ?")
                .bind(user_id)
                .bind(keep_device),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn all_pushers(&self) -> StoreResult<Vec<PusherRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers ORDER BY created_ts, rowid"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pusher_from_row).collect()
    }

    async fn delete_pushkey(&self, app_id: &str, pushkey: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM pushers WHERE app_id = ? AND pushkey = ?")
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
        let fresh = sqlx::query("INSERT INTO push_decided (stream, decided_ts) VALUES (?, ?) ON CONFLICT (stream) DO NOTHING")
            .bind(stream)
            .bind(now_ts)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if stream % 1024 == 0 {
            // A redelivery comes within minutes; an hour is plenty.
            sqlx::query("DELETE FROM push_decided WHERE decided_ts < ?")
                .bind(now_ts - 3_600_000)
                .execute(&mut *tx)
                .await?;
        }
        if !fresh {
            return Ok(false);
        }
        for push in pushes {
            sqlx::query(
                "INSERT INTO push_outbox (user_id, app_id, pushkey, url, body, next_ts) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&push.user_id)
            .bind(&push.app_id)
            .bind(&push.pushkey)
            .bind(&push.url)
            .bind(push.body.to_string())
            .bind(now_ts)
            .execute(&mut *tx)
            .await?;
        }
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
        // One statement, so one write lock: nobody else takes these rows.
        let mut rows = sqlx::query(
            "UPDATE push_outbox SET next_ts = ? WHERE id IN ( \
               SELECT id FROM push_outbox WHERE next_ts <= ? \
               AND url NOT IN (SELECT value FROM json_each(?)) \
               ORDER BY next_ts, id LIMIT ?) \
             RETURNING id, user_id, app_id, pushkey, url, body, attempts",
        )
        .bind(lease_until)
        .bind(now_ts)
        .bind(serde_json::to_string(skip_urls).unwrap_or_else(|_| "[]".into()))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.sort_by_key(|row| row.try_get::<i64, _>(0).unwrap_or_default());
        rows.iter()
            .map(|row| {
                let body: String = row.try_get(5)?;
                Ok(QueuedPush {
                    id: row.try_get(0)?,
                    push: OutboxPush {
                        user_id: row.try_get(1)?,
                        app_id: row.try_get(2)?,
                        pushkey: row.try_get(3)?,
                        url: row.try_get(4)?,
                        body: serde_json::from_str(&body)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
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
        sqlx::query("DELETE FROM push_outbox WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn retry_push(&self, id: i64, attempts: i64, next_ts: i64) -> StoreResult<()> {
        sqlx::query("UPDATE push_outbox SET attempts = ?, next_ts = ? WHERE id = ?")
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
            "INSERT INTO push_caught_up (id, stream) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET stream = excluded.stream",
        )
        .bind(stream)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
