//! [`ReceiptStore`] on PostgreSQL: writes share the group-commit writer.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::Row;
use tokio::sync::oneshot;

use super::writer::Job;
use super::{reject_nul, PgStore};
use crate::store::{NewReceipt, ReceiptRecord, ReceiptStore, StoreError, StoreResult, StreamPos};

#[async_trait]
impl ReceiptStore for PgStore {
    async fn set_receipts(&self, receipts: Vec<NewReceipt>) -> StoreResult<Vec<Option<StreamPos>>> {
        for r in &receipts {
            reject_nul(
                [
                    &r.room_id,
                    &r.user_id,
                    &r.receipt_type,
                    &r.event_id,
                    &r.event_sender,
                ]
                .map(String::as_str)
                .into_iter()
                .chain(r.thread_id.as_deref()),
            )?;
        }
        let (reply, done) = oneshot::channel();
        self.writer
            .send(Job::Receipts { receipts, reply })
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
        // Receipt positions commit in order (see the module docs), so what
        // this reads is always a prefix of the stream: no upper bound needed.
        let rows = sqlx::query(&format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE room_id = ANY($1) AND stream > $2 \
             ORDER BY stream"
        ))
        .bind(room_ids)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(receipt_from_row).collect()
    }

    async fn receipts_position(&self) -> StoreResult<StreamPos> {
        self.stream_position("receipts").await
    }

    async fn receipts_after(
        &self,
        after: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<ReceiptRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE stream > $1 ORDER BY stream LIMIT $2"
        ))
        .bind(after)
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
        let rows = sqlx::query(
            "SELECT room_id, MAX(event_stream) FROM receipts \
             WHERE room_id = ANY($1) AND user_id = $2 \
             AND receipt_type IN ('m.read', 'm.read.private') GROUP BY room_id",
        )
        .bind(room_ids)
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
             WHERE room_id = $1 AND event_stream >= $2 GROUP BY user_id, receipt_type",
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

/// The columns [`receipt_from_row`] reads, in its order.
const RECEIPT_COLUMNS: &str =
    "room_id, user_id, receipt_type, thread_id, event_id, event_stream, ts, stream, event_sender";

fn receipt_from_row(row: &PgRow) -> StoreResult<ReceiptRecord> {
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
