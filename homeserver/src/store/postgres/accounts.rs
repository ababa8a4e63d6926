//! The account writes PostgreSQL does its own way (the rest is in `../sql`).

use super::PgStore;
use crate::store::StoreResult;

impl PgStore {
    /// Deletes a token and its device in one statement.
    pub(super) async fn delete_token_and_device(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query(
            "WITH gone AS (DELETE FROM access_tokens WHERE token_hash = $1 \
             RETURNING user_id, device_id) \
             DELETE FROM devices d USING gone \
             WHERE d.user_id = gone.user_id AND d.device_id = gone.device_id",
        )
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
