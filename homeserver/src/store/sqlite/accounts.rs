//! The account writes SQLite does its own way (the rest is in `../sql`).

use sqlx::Row;

use super::SqliteStore;
use crate::store::StoreResult;

impl SqliteStore {
    /// Deletes a token and its device. SQLite has no data-modifying CTE, so
    /// a transaction of two statements.
    pub(super) async fn delete_token_and_device(&self, token_hash: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let owner = sqlx::query(
            "DELETE FROM access_tokens WHERE token_hash = $1 RETURNING user_id, device_id",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = owner {
            let user_id: String = row.try_get(0)?;
            let device_id: String = row.try_get(1)?;
            sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
