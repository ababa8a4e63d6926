//! [`DeviceStore`] on either relational engine: devices, the device-list
//! stream and user-interactive-auth sessions.

use async_trait::async_trait;
use ruma_common::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use sqlx::Row as _;

use super::engine::{dialect, Db, Store};
use super::rows::id;
use super::Stream;
use crate::store::e2ee::{DeviceRecord, DeviceStore, UiaSession};
use crate::store::{StoreError, StoreResult, StreamPos};

/// Takes `n` positions of a stream inside `tx` and returns the last. The
/// row stays locked until commit (on SQLite the statement takes the write
/// lock, so it must come before any read in `tx`): positions commit in order.
pub(super) async fn bump(
    tx: &mut sqlx::Transaction<'_, Db>,
    name: &str,
    n: usize,
) -> StoreResult<StreamPos> {
    Ok(sqlx::query_scalar(
        "UPDATE stream_positions SET pos = pos + $1 WHERE name = $2 RETURNING pos",
    )
    .bind(n as i64)
    .bind(name)
    .fetch_one(&mut **tx)
    .await?)
}

/// Notes in `tx` that these users' devices or keys changed; returns the last
/// position (the current one when `users` is empty).
pub(super) async fn note_changes(
    tx: &mut sqlx::Transaction<'_, Db>,
    users: &[&UserId],
) -> StoreResult<StreamPos> {
    let last = bump(tx, "device_lists", users.len()).await?;
    let first = last - users.len() as i64 + 1;
    for (i, user_id) in users.iter().enumerate() {
        sqlx::query("INSERT INTO device_list_changes (stream, user_id) VALUES ($1, $2)")
            .bind(first + i as i64)
            .bind(user_id.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(last)
}

/// The joined members of the rooms `$1` is joined to.
const ROOM_MATES: &str = "SELECT m2.user_id FROM memberships m1 \
     JOIN memberships m2 ON m2.room_id = m1.room_id \
     WHERE m1.user_id = $1 AND m1.membership = 'join' AND m2.membership = 'join'";

#[async_trait]
impl DeviceStore for Store {
    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>> {
        let rows = sqlx::query(
            "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices \
             WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceRecord {
                    device_id: id(row, 0)?,
                    display_name: row.try_get(1)?,
                    last_seen_ip: row.try_get(2)?,
                    last_seen_ts: row.try_get(3)?,
                })
            })
            .collect()
    }

    async fn set_device_name(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        name: Option<&str>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_seen(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        ip: &str,
        ts: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE devices SET last_seen_ip = $3, last_seen_ts = $4 \
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(ip)
        .bind(ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> StoreResult<Vec<String>> {
        if device_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let pos = note_changes(&mut tx, &[user_id]).await?;
        let devices = dialect::list(device_ids)?;
        let hashes: Vec<String> = sqlx::query_scalar(&format!(
            "DELETE FROM access_tokens WHERE user_id = $1 AND {} RETURNING token_hash",
            dialect::in_list("device_id", "$2")
        ))
        .bind(user_id.as_str())
        .bind(&devices)
        .fetch_all(&mut *tx)
        .await?;
        for table in [
            "devices",
            "device_keys",
            "one_time_keys",
            "fallback_keys",
            "to_device",
        ] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE user_id = $1 AND {}",
                dialect::in_list("device_id", "$2")
            ))
            .bind(user_id.as_str())
            .bind(&devices)
            .execute(&mut *tx)
            .await?;
        }
        // Signatures of the devices' keys go with them.
        sqlx::query(&format!(
            "DELETE FROM key_signatures WHERE user_id = $1 AND {}",
            dialect::in_list("key_id", "$2")
        ))
        .bind(user_id.as_str())
        .bind(&devices)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.stream_committed(Stream::DeviceLists, pos);
        Ok(hashes)
    }

    async fn note_device_list_change(&self, user_id: &UserId) -> StoreResult<StreamPos> {
        let mut tx = self.pool.begin().await?;
        let pos = note_changes(&mut tx, &[user_id]).await?;
        tx.commit().await?;
        self.stream_committed(Stream::DeviceLists, pos);
        Ok(pos)
    }

    async fn device_list_position(&self) -> StoreResult<StreamPos> {
        self.position(Stream::DeviceLists).await
    }

    async fn device_list_changes(
        &self,
        user_id: &UserId,
        since: StreamPos,
        upto: StreamPos,
    ) -> StoreResult<Vec<OwnedUserId>> {
        if since >= upto {
            return Ok(Vec::new());
        }
        let users: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT c.user_id FROM device_list_changes c \
             WHERE c.stream > $2 AND c.stream <= $3 \
             AND (c.user_id = $1 OR c.user_id IN ({ROOM_MATES}))"
        ))
        .bind(user_id.as_str())
        .bind(since)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        users.into_iter().map(crate::store::parse_id).collect()
    }

    async fn parted(
        &self,
        user_id: &UserId,
        since: StreamPos,
        upto: StreamPos,
    ) -> StoreResult<Vec<OwnedUserId>> {
        if since >= upto {
            return Ok(Vec::new());
        }
        let users: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT m2.user_id FROM memberships m1 \
             JOIN memberships m2 ON m2.room_id = m1.room_id \
             WHERE m1.user_id = $1 AND m2.user_id != $1 AND ( \
               (m2.membership IN ('leave', 'ban') AND m2.stream > $2 AND m2.stream <= $3) \
               OR (m1.membership IN ('leave', 'ban') AND m1.stream > $2 AND m1.stream <= $3)) \
             AND m2.user_id NOT IN ({ROOM_MATES})"
        ))
        .bind(user_id.as_str())
        .bind(since)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        users.into_iter().map(crate::store::parse_id).collect()
    }

    async fn sharing_a_room(
        &self,
        user_id: &UserId,
        candidates: &[OwnedUserId],
    ) -> StoreResult<Vec<OwnedUserId>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT m2.user_id FROM memberships m1 \
             JOIN memberships m2 ON m2.room_id = m1.room_id \
             WHERE m1.user_id = $1 AND m1.membership = 'join' AND m2.membership = 'join' \
             AND {}",
            dialect::in_list("m2.user_id", "$2")
        ))
        .bind(user_id.as_str())
        .bind(dialect::list(candidates)?)
        .fetch_all(&self.pool)
        .await?;
        users.into_iter().map(crate::store::parse_id).collect()
    }

    async fn uia_session(&self, session_id: &str) -> StoreResult<Option<UiaSession>> {
        let row = sqlx::query(
            "SELECT user_id, operation, completed, expires_ts FROM uia_sessions \
             WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let completed: String = row.try_get(2)?;
            Ok(UiaSession {
                session_id: session_id.to_owned(),
                user_id: id(&row, 0)?,
                operation: row.try_get(1)?,
                completed: serde_json::from_str(&completed)
                    .map_err(|e| StoreError::corrupt("UIA stages", e))?,
                expires_ts: row.try_get(3)?,
            })
        })
        .transpose()
    }

    async fn save_uia_session(&self, session: &UiaSession, now_ts: i64) -> StoreResult<()> {
        let completed = serde_json::to_string(&session.completed)
            .map_err(|e| StoreError::corrupt("UIA stages", e))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM uia_sessions WHERE expires_ts < $1")
            .bind(now_ts)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO uia_sessions (session_id, user_id, operation, completed, expires_ts) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id) DO UPDATE \
             SET completed = excluded.completed, expires_ts = excluded.expires_ts",
        )
        .bind(&session.session_id)
        .bind(session.user_id.as_str())
        .bind(&session.operation)
        .bind(completed)
        .bind(session.expires_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_uia_session(&self, session_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM uia_sessions WHERE session_id = $1")
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
