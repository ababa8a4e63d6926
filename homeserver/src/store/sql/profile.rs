//! Profile fields, deactivation and reports: the later parts of
//! [`AccountStore`](crate::store::AccountStore), which `accounts.rs` calls.

use ruma_common::UserId;
use serde_json::Value;
use sqlx::Row as _;

use super::engine::Store;
use super::rows::{id, json};
use crate::store::{parse_id, Report, StoreResult};

impl Store {
    pub(super) async fn deactivate(
        &self,
        user_id: &UserId,
        now_ts: i64,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE users SET deactivated_ts = $1, password_hash = NULL, displayname = NULL, \
             avatar_url = NULL WHERE user_id = $2",
        )
        .bind(now_ts)
        .bind(user_id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM profile_fields WHERE user_id = $1")
            .bind(user_id.as_str())
            .execute(&mut *tx)
            .await?;
        let hashes: Vec<String> =
            sqlx::query_scalar("DELETE FROM access_tokens WHERE user_id = $1 RETURNING token_hash")
                .bind(user_id.as_str())
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1")
            .bind(user_id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(hashes)
    }

    pub(super) async fn fields(&self, user_id: &UserId) -> StoreResult<Vec<(String, Value)>> {
        let rows = sqlx::query(
            "SELECT field, value FROM profile_fields WHERE user_id = $1 ORDER BY field",
        )
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let value: String = row.try_get(1)?;
                Ok((row.try_get(0)?, json(&value)?))
            })
            .collect()
    }

    pub(super) async fn set_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Option<&Value>,
    ) -> StoreResult<()> {
        let query = match value {
            Some(_) => {
                "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value"
            }
            None => "DELETE FROM profile_fields WHERE user_id = $1 AND field = $2",
        };
        let mut query = sqlx::query(query).bind(user_id.as_str()).bind(field);
        if let Some(value) = value {
            query = query.bind(value.to_string());
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn insert_report(&self, report: &Report) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO reports (reporter, room_id, event_id, user_id, reason, score, \
             received_ts) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(report.reporter.as_str())
        .bind(report.room_id.as_ref().map(|r| r.as_str()))
        .bind(report.event_id.as_ref().map(|e| e.as_str()))
        .bind(report.user_id.as_ref().map(|u| u.as_str()))
        .bind(&report.reason)
        .bind(report.score)
        .bind(report.received_ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn reports_after(&self, after: i64, limit: usize) -> StoreResult<Vec<Report>> {
        let rows = sqlx::query(
            "SELECT id, reporter, room_id, event_id, user_id, reason, score, received_ts \
             FROM reports WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let optional = |i: usize| -> StoreResult<Option<String>> { Ok(row.try_get(i)?) };
                Ok(Report {
                    id: row.try_get(0)?,
                    reporter: id(row, 1)?,
                    room_id: optional(2)?.map(parse_id).transpose()?,
                    event_id: optional(3)?.map(parse_id).transpose()?,
                    user_id: optional(4)?.map(parse_id).transpose()?,
                    reason: row.try_get(5)?,
                    score: row.try_get(6)?,
                    received_ts: row.try_get(7)?,
                })
            })
            .collect()
    }
}
