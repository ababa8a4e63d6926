//! [`MediaMetadataStore`] on either relational engine. Media writes are rare
//! and independent of the event stream, so they go through the pool, not the
//! group-commit writer.

use async_trait::async_trait;

use super::engine::Store;
use super::rows::{self, MEDIA_COLUMNS};
use crate::store::media::{MediaMetadataStore, MediaRecord, UploadedContent};
use crate::store::{StoreError, StoreResult};

fn size_to_db(size: u64) -> StoreResult<i64> {
    i64::try_from(size).map_err(|e| StoreError::corrupt("media size", e))
}

#[async_trait]
impl MediaMetadataStore for Store {
    async fn insert_media(&self, record: &MediaRecord) -> StoreResult<()> {
        let size = record.size.map(size_to_db).transpose()?;
        sqlx::query(&format!(
            "INSERT INTO media ({MEDIA_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&record.media_id)
        .bind(&record.uploader)
        .bind(&record.content_type)
        .bind(&record.filename)
        .bind(size)
        .bind(&record.sha256)
        .bind(record.created_ts)
        .bind(record.pending_until_ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn complete_media(&self, media_id: &str, content: &UploadedContent) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE media SET content_type = $1, filename = $2, size = $3, sha256 = $4, \
             pending_until_ts = NULL WHERE media_id = $5 AND pending_until_ts IS NOT NULL",
        )
        .bind(&content.content_type)
        .bind(&content.filename)
        .bind(size_to_db(content.size)?)
        .bind(&content.sha256)
        .bind(media_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_media(&self, media_id: &str) -> StoreResult<Option<MediaRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {MEDIA_COLUMNS} FROM media WHERE media_id = $1"
        ))
        .bind(media_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::media).transpose()
    }

    async fn count_pending_media(&self, uploader: &str, now_ts: i64) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM media WHERE uploader = $1 AND pending_until_ts > $2",
        )
        .bind(uploader)
        .bind(now_ts)
        .fetch_one(&self.pool)
        .await?;
        Ok(count.max(0) as u64)
    }

    async fn delete_expired_media(&self, now_ts: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM media WHERE pending_until_ts <= $1")
            .bind(now_ts)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
