//! [`AccountStore`] on either relational engine.

use async_trait::async_trait;
use ruma_common::{DeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::Value;
use sqlx::Row as _;

use super::engine::{dialect, Store};
use super::rows::{id, json};
use super::Stream;
use crate::store::{
    parse_id, AccountDataEntry, AccountStore, DirectoryUser, Report, StoreError, StoreResult,
    StreamPos, TokenOwner, UserRecord,
};

/// Attempts at taking the next filter id when another connection took it
/// first (only PostgreSQL has concurrent writers).
const FILTER_ID_ATTEMPTS: usize = 3;

#[async_trait]
impl AccountStore for Store {
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (user_id, password_hash, displayname, avatar_url, created_ts) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.user_id.as_str())
        .bind(&user.password_hash)
        .bind(&user.displayname)
        .bind(&user.avatar_url)
        .bind(user.created_ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(
            "SELECT user_id, password_hash, displayname, avatar_url, created_ts, \
             deactivated_ts IS NOT NULL FROM users WHERE user_id = $1",
        )
        .bind(user_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(UserRecord {
                user_id: id(&row, 0)?,
                password_hash: row.try_get(1)?,
                displayname: row.try_get(2)?,
                avatar_url: row.try_get(3)?,
                created_ts: row.try_get(4)?,
                deactivated: row.try_get(5)?,
            })
        })
        .transpose()
    }

    async fn set_password_hash(&self, user_id: &UserId, hash: &str) -> StoreResult<()> {
        self.set_user_column("password_hash", user_id, Some(hash))
            .await
    }

    async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> StoreResult<()> {
        self.set_user_column("displayname", user_id, name).await
    }

    async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> StoreResult<()> {
        self.set_user_column("avatar_url", user_id, url).await
    }

    async fn create_device_with_token(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
        token_hash: &str,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // Logging in again with an existing device id replaces its old token.
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET \
             display_name = COALESCE(excluded.display_name, devices.display_name)",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(display_name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO access_tokens (token_hash, user_id, device_id) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_token(&self, token_hash: &str) -> StoreResult<Option<TokenOwner>> {
        let row = sqlx::query("SELECT user_id, device_id FROM access_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(TokenOwner {
                user_id: id(&row, 0)?,
                device_id: id(&row, 1)?,
            })
        })
        .transpose()
    }

    async fn delete_token(&self, token_hash: &str) -> StoreResult<()> {
        self.delete_token_and_device(token_hash).await
    }

    async fn delete_all_tokens(
        &self,
        user_id: &UserId,
        keep_device: Option<&DeviceId>,
    ) -> StoreResult<Vec<String>> {
        let keep = keep_device.map_or("", DeviceId::as_str);
        let mut tx = self.pool.begin().await?;
        let hashes: Vec<String> = sqlx::query_scalar(
            "DELETE FROM access_tokens WHERE user_id = $1 AND device_id != $2 \
             RETURNING token_hash",
        )
        .bind(user_id.as_str())
        .bind(keep)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id != $2")
            .bind(user_id.as_str())
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(hashes)
    }

    async fn save_filter(&self, user_id: &UserId, filter: &Value) -> StoreResult<i64> {
        // MAX()+1 races with a concurrent save by the same user on another
        // connection; the primary key catches it and we take the next id.
        let mut attempt = 0;
        loop {
            let saved = sqlx::query_scalar(
                "INSERT INTO filters (user_id, filter_id, filter) VALUES ($1, \
                 (SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1), $2) \
                 RETURNING filter_id",
            )
            .bind(user_id.as_str())
            .bind(filter.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from);
            attempt += 1;
            match saved {
                Err(StoreError::Conflict) if attempt < FILTER_ID_ATTEMPTS => continue,
                other => return other,
            }
        }
    }

    async fn get_filter(&self, user_id: &UserId, filter_id: i64) -> StoreResult<Option<Value>> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2")
                .bind(user_id.as_str())
                .bind(filter_id)
                .fetch_optional(&self.pool)
                .await?;
        text.as_deref().map(json).transpose()
    }

    async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: &Value,
    ) -> StoreResult<StreamPos> {
        // Global account data is stored under room '' (the key cannot hold NULL).
        let pos: StreamPos = sqlx::query_scalar(dialect::INSERT_ACCOUNT_DATA)
            .bind(user_id.as_str())
            .bind(room_id.map_or("", RoomId::as_str))
            .bind(kind)
            .bind(content.to_string())
            .fetch_one(&self.pool)
            .await?;
        self.stream_committed(Stream::AccountData, pos);
        Ok(pos)
    }

    async fn get_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> StoreResult<Option<Value>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
        )
        .bind(user_id.as_str())
        .bind(room_id.map_or("", RoomId::as_str))
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?;
        text.as_deref().map(json).transpose()
    }

    async fn account_data_since(
        &self,
        user_id: &UserId,
        since: StreamPos,
    ) -> StoreResult<Vec<AccountDataEntry>> {
        let rows = sqlx::query(
            "SELECT room_id, type, content, stream FROM account_data \
             WHERE user_id = $1 AND stream > $2 ORDER BY stream",
        )
        .bind(user_id.as_str())
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let room_id: String = row.try_get(0)?;
                let content: String = row.try_get(2)?;
                Ok(AccountDataEntry {
                    room_id: (!room_id.is_empty())
                        .then(|| parse_id(room_id))
                        .transpose()?,
                    kind: row.try_get(1)?,
                    content: json(&content)?,
                    stream: row.try_get(3)?,
                })
            })
            .collect()
    }

    async fn account_data_position(&self) -> StoreResult<StreamPos> {
        self.position(Stream::AccountData).await
    }

    async fn create_openid_token(
        &self,
        token_hash: &str,
        user_id: &UserId,
        expires_ts: i64,
        now_ts: i64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM openid_tokens WHERE expires_ts < $1")
            .bind(now_ts)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(user_id.as_str())
        .bind(expires_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn openid_token_user(
        &self,
        token_hash: &str,
        now_ts: i64,
    ) -> StoreResult<Option<OwnedUserId>> {
        let user: Option<String> = sqlx::query_scalar(
            "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts >= $2",
        )
        .bind(token_hash)
        .bind(now_ts)
        .fetch_optional(&self.pool)
        .await?;
        user.map(parse_id).transpose()
    }

    async fn forget_room(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        stream: StreamPos,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO forgotten_rooms (user_id, room_id, stream) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, room_id) DO UPDATE SET stream = excluded.stream",
        )
        .bind(user_id.as_str())
        .bind(room_id.as_str())
        .bind(stream)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forgotten_rooms(
        &self,
        user_id: &UserId,
    ) -> StoreResult<Vec<(OwnedRoomId, StreamPos)>> {
        let rows = sqlx::query("SELECT room_id, stream FROM forgotten_rooms WHERE user_id = $1")
            .bind(user_id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((id(row, 0)?, row.try_get(1)?)))
            .collect()
    }

    async fn deactivate_user(&self, user_id: &UserId, now_ts: i64) -> StoreResult<Vec<String>> {
        self.deactivate(user_id, now_ts).await
    }

    async fn profile_fields(&self, user_id: &UserId) -> StoreResult<Vec<(String, Value)>> {
        self.fields(user_id).await
    }

    async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Option<&Value>,
    ) -> StoreResult<()> {
        self.set_field(user_id, field, value).await
    }

    async fn add_report(&self, report: &Report) -> StoreResult<()> {
        self.insert_report(report).await
    }

    async fn reports(&self, after: i64, limit: usize) -> StoreResult<Vec<Report>> {
        self.reports_after(after, limit).await
    }

    async fn search_users(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> StoreResult<Vec<DirectoryUser>> {
        self.directory_search(searcher, term, limit).await
    }
}

impl Store {
    /// One nullable text column of `users`; `column` is one of ours, never input.
    async fn set_user_column(
        &self,
        column: &'static str,
        user_id: &UserId,
        value: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "UPDATE users SET {column} = $1 WHERE user_id = $2"
        ))
        .bind(value)
        .bind(user_id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
