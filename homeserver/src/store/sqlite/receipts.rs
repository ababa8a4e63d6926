//! [`ReceiptStore`] on SQLite: writes share the group-commit writer.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use sqlx::Row;
use tokio::sync::oneshot;

use super::writer::AppendJob;
use super::SqliteStore;
use crate::store::{NewReceipt, ReceiptRecord, ReceiptStore, StoreError, StoreResult, StreamPos};

#[async_trait]
impl ReceiptStore for SqliteStore {
    async fn set_receipts(&self, receipts: Vec<NewReceipt>) -> StoreResult<Vec<Option<StreamPos>>> {
        let (reply, done) = oneshot::channel();
        self.writer
            .send(AppendJob::Receipts { receipts, reply })
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    async fn receipts_since(
        &self,
        room_ids: &[String],
        since: StreamPos,
    ) -> StoreResult<Vec<ReceiptRecord>> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        let upto = self.committed_receipts.load(Ordering::Acquire);
        if since >= upto {
            return Ok(Vec::new());
        }
        let list =
            serde_json::to_string(room_ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(&format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts \
             WHERE room_id IN (SELECT value FROM json_each(?)) AND stream > ? \
             AND stream <= ? ORDER BY stream"
        ))
        .bind(list)
        .bind(since)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(receipt_from_row).collect()
    }

    async fn receipts_position(&self) -> StoreResult<StreamPos> {
        Ok(self.committed_receipts.load(Ordering::Acquire))
    }

    async fn receipts_after(
        &self,
        after: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<ReceiptRecord>> {
        let upto = self.committed_receipts.load(Ordering::Acquire);
        if after >= upto {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE stream > ? AND stream <= ? \
             ORDER BY stream LIMIT ?"
        ))
        .bind(after)
        .bind(upto)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(receipt_from_row).collect()
    }

    async fn read_positions(
        &self,
        user_id: &str,
        room_ids: &[String],
    ) -> StoreResult<Vec<(String, StreamPos)>> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        let list =
            serde_json::to_string(room_ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT room_id, MAX(event_stream) FROM receipts              WHERE room_id IN (SELECT value FROM json_each(?)) AND user_id = ?              AND receipt_type IN ('m.read', 'm.read.private') GROUP BY room_id",
        )
        .bind(list)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    async fn receipt_times(
        &self,
        room_id: &str,
        event_stream: StreamPos,
    ) -> StoreResult<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT user_id, receipt_type, MIN(ts) FROM receipt_log \
             WHERE room_id = ? AND event_stream >= ? GROUP BY user_id, receipt_type",
        )
        .bind(room_id)
        .bind(event_stream)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }
}

/// The columns `receipt_from_row` reads, in its order.
const RECEIPT_COLUMNS: &str =
    "room_id, user_id, receipt_type, thread_id, event_id, event_stream, ts, stream, event_sender";

fn receipt_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<ReceiptRecord> {
    let thread: String = row.try_get(3)?;
    Ok(ReceiptRecord {
        receipt: NewReceipt {
            room_id: row.try_get(0)?,
            user_id: row.try_get(1)?,
            receipt_type: row.try_get(2)?,
            thread_id: (!thread.is_empty()).then_some(thread),
            event_id: row.try_get(4)?,
            event_sender: row.try_get(8)?,
            event_stream: row.try_get(5)?,
            ts: row.try_get(6)?,
        },
        stream: row.try_get(7)?,
    })
}
