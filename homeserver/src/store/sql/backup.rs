//! [`KeyBackupStore`] on either relational engine.

use std::collections::HashMap;

use async_trait::async_trait;
use ruma_common::{RoomId, UserId};
use serde_json::Value;
use sqlx::Row as _;

use super::engine::{Db, Store};
use super::rows::{id, json};
use crate::store::e2ee::{BackupKey, BackupVersion, Better, KeyBackupStore};
use crate::store::StoreResult;

/// Keys per statement (five parameters each).
const KEYS_PER_STATEMENT: usize = 500;

/// The filter on `backup_keys` of an optional room and session, binding
/// `$3` and `$4` (NULL for "any").
const KEY_FILTER: &str = "user_id = $1 AND version = $2 \
     AND ($3 IS NULL OR room_id = $3) AND ($4 IS NULL OR session_id = $4)";

impl Store {
    /// Moves a version's etag on inside `tx` (first, so SQLite takes its
    /// write lock at once); `None` if there is no such undeleted version.
    async fn touch_backup(
        tx: &mut sqlx::Transaction<'_, Db>,
        user_id: &UserId,
        version: i64,
    ) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "UPDATE backup_versions SET etag = etag + 1 \
             WHERE user_id = $1 AND version = $2 AND NOT deleted RETURNING etag",
        )
        .bind(user_id.as_str())
        .bind(version)
        .fetch_optional(&mut **tx)
        .await?)
    }

    async fn backup_count(
        tx: &mut sqlx::Transaction<'_, Db>,
        user_id: &UserId,
        version: i64,
    ) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2",
        )
        .bind(user_id.as_str())
        .bind(version)
        .fetch_one(&mut **tx)
        .await?)
    }
}

#[async_trait]
impl KeyBackupStore for Store {
    async fn create_backup(
        &self,
        user_id: &UserId,
        algorithm: &str,
        auth_data: &Value,
    ) -> StoreResult<i64> {
        // Deleted versions keep their rows, so a new version's number is
        // never one a client saw before.
        Ok(sqlx::query_scalar(
            "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, deleted) \
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, 0, FALSE \
             FROM backup_versions WHERE user_id = $1 RETURNING version",
        )
        .bind(user_id.as_str())
        .bind(algorithm)
        .bind(auth_data.to_string())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn backup_version(
        &self,
        user_id: &UserId,
        version: Option<i64>,
    ) -> StoreResult<Option<BackupVersion>> {
        let row = sqlx::query(
            "SELECT v.version, v.algorithm, v.auth_data, v.etag, \
             (SELECT COUNT(*) FROM backup_keys k WHERE k.user_id = v.user_id \
              AND k.version = v.version) \
             FROM backup_versions v WHERE v.user_id = $1 AND NOT v.deleted \
             AND ($2 IS NULL OR v.version = $2) ORDER BY v.version DESC LIMIT 1",
        )
        .bind(user_id.as_str())
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let auth_data: String = row.try_get(2)?;
            Ok(BackupVersion {
                version: row.try_get(0)?,
                algorithm: row.try_get(1)?,
                auth_data: json(&auth_data)?,
                etag: row.try_get(3)?,
                count: row.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn update_backup(
        &self,
        user_id: &UserId,
        version: i64,
        auth_data: &Value,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE backup_versions SET auth_data = $3 \
             WHERE user_id = $1 AND version = $2 AND NOT deleted",
        )
        .bind(user_id.as_str())
        .bind(version)
        .bind(auth_data.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_backup(&self, user_id: &UserId, version: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE backup_versions SET deleted = TRUE \
             WHERE user_id = $1 AND version = $2 AND NOT deleted",
        )
        .bind(user_id.as_str())
        .bind(version)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id.as_str())
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        keys: &[BackupKey],
        better: &Better,
    ) -> StoreResult<Option<(i64, i64)>> {
        let mut tx = self.pool.begin().await?;
        let Some(etag) = Self::touch_backup(&mut tx, user_id, version).await? else {
            return Ok(None);
        };
        // What is stored of the rooms in this upload, to keep the better key
        // of each session.
        let mut rooms: Vec<&str> = keys.iter().map(|k| k.room_id.as_str()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut stored: HashMap<(String, String), Value> = HashMap::new();
        for room in rooms {
            let rows = sqlx::query(
                "SELECT session_id, data FROM backup_keys \
                 WHERE user_id = $1 AND version = $2 AND room_id = $3",
            )
            .bind(user_id.as_str())
            .bind(version)
            .bind(room)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let data: String = row.try_get(1)?;
                stored.insert((room.to_owned(), row.try_get(0)?), json(&data)?);
            }
        }
        let wanted: Vec<&BackupKey> = keys
            .iter()
            .filter(|k| {
                stored
                    .get(&(k.room_id.to_string(), k.session_id.clone()))
                    .is_none_or(|old| better(&k.data, old))
            })
            .collect();
        for chunk in wanted.chunks(KEYS_PER_STATEMENT) {
            let mut upsert = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO backup_keys (user_id, version, room_id, session_id, data) ",
            );
            upsert.push_values(chunk, |mut row, key| {
                row.push_bind(user_id.as_str())
                    .push_bind(version)
                    .push_bind(key.room_id.as_str())
                    .push_bind(&key.session_id)
                    .push_bind(key.data.to_string());
            });
            upsert.push(
                " ON CONFLICT (user_id, version, room_id, session_id) \
                 DO UPDATE SET data = excluded.data",
            );
            upsert.build().execute(&mut *tx).await?;
        }
        let count = Self::backup_count(&mut tx, user_id, version).await?;
        tx.commit().await?;
        Ok(Some((etag, count)))
    }

    async fn backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        room_id: Option<&RoomId>,
        session_id: Option<&str>,
    ) -> StoreResult<Vec<BackupKey>> {
        let rows = sqlx::query(&format!(
            "SELECT room_id, session_id, data FROM backup_keys WHERE {KEY_FILTER} \
             ORDER BY room_id, session_id"
        ))
        .bind(user_id.as_str())
        .bind(version)
        .bind(room_id.map(RoomId::as_str))
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let data: String = row.try_get(2)?;
                Ok(BackupKey {
                    room_id: id(row, 0)?,
                    session_id: row.try_get(1)?,
                    data: json(&data)?,
                })
            })
            .collect()
    }

    async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        room_id: Option<&RoomId>,
        session_id: Option<&str>,
    ) -> StoreResult<Option<(i64, i64)>> {
        let mut tx = self.pool.begin().await?;
        let Some(etag) = Self::touch_backup(&mut tx, user_id, version).await? else {
            return Ok(None);
        };
        sqlx::query(&format!("DELETE FROM backup_keys WHERE {KEY_FILTER}"))
            .bind(user_id.as_str())
            .bind(version)
            .bind(room_id.map(RoomId::as_str))
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        let count = Self::backup_count(&mut tx, user_id, version).await?;
        tx.commit().await?;
        Ok(Some((etag, count)))
    }
}
