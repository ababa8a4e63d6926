//! [`ReceiptStore`] on either relational engine: writes share the engine's
//! group-commit writer, reads go through the pool.

use async_trait::async_trait;
use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use sqlx::Row as _;
use tokio::sync::oneshot;

use super::engine::{dialect, Store};
use super::rows::{self, RECEIPT_COLUMNS};
use super::{Job, Stream, ROOMS_PER_LIST};
use crate::store::{NewReceipt, ReceiptRecord, ReceiptStore, StoreError, StoreResult, StreamPos};

#[async_trait]
impl ReceiptStore for Store {
    async fn set_receipts(&self, receipts: Vec<NewReceipt>) -> StoreResult<Vec<Option<StreamPos>>> {
        dialect::check_receipts(&receipts)?;
        let (reply, done) = oneshot::channel();
        self.writer
            .send(Job::Receipts { receipts, reply })
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    async fn receipts_since(
        &self,
        room_ids: &[OwnedRoomId],
        since: StreamPos,
    ) -> StoreResult<Vec<ReceiptRecord>> {
        let upto = self.read_bound(Stream::Receipts);
        let mut out = Vec::new();
        if since >= upto {
            return Ok(out);
        }
        let sql = format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE {} AND stream > $2 \
             AND stream <= $3 ORDER BY stream",
            dialect::in_list("room_id", "$1")
        );
        for chunk in room_ids.chunks(ROOMS_PER_LIST) {
            let rows = sqlx::query(&sql)
                .bind(dialect::list(chunk)?)
                .bind(since)
                .bind(upto)
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                out.push(rows::receipt(row)?);
            }
        }
        if room_ids.len() > ROOMS_PER_LIST {
            out.sort_by_key(|r| r.stream);
        }
        Ok(out)
    }

    async fn receipts_position(&self) -> StoreResult<StreamPos> {
        self.position(Stream::Receipts).await
    }

    async fn receipts_after(
        &self,
        after: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<ReceiptRecord>> {
        let upto = self.read_bound(Stream::Receipts);
        if after >= upto {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE stream > $1 AND stream <= $2 \
             ORDER BY stream LIMIT $3"
        ))
        .bind(after)
        .bind(upto)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::receipt).collect()
    }

    async fn read_positions(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
    ) -> StoreResult<Vec<(OwnedRoomId, StreamPos)>> {
        let sql = format!(
            "SELECT room_id, MAX(event_stream) FROM receipts WHERE {} AND user_id = $2 \
             AND receipt_type IN ('m.read', 'm.read.private') GROUP BY room_id",
            dialect::in_list("room_id", "$1")
        );
        let mut out = Vec::new();
        for chunk in room_ids.chunks(ROOMS_PER_LIST) {
            let rows = sqlx::query(&sql)
                .bind(dialect::list(chunk)?)
                .bind(user_id.as_str())
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                out.push((rows::id(row, 0)?, row.try_get(1)?));
            }
        }
        Ok(out)
    }

    async fn received_upto(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> StoreResult<Option<StreamPos>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(event_stream) FROM receipts WHERE room_id = $1 AND user_id = $2 \
             AND receipt_type IN ('tern.delivered', 'm.read', 'm.read.private')",
        )
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn receipt_times(
        &self,
        room_id: &RoomId,
        event_stream: StreamPos,
    ) -> StoreResult<Vec<(OwnedUserId, String, i64)>> {
        let rows = sqlx::query(
            "SELECT user_id, receipt_type, MIN(ts) FROM receipt_log \
             WHERE room_id = $1 AND event_stream >= $2 GROUP BY user_id, receipt_type",
        )
        .bind(room_id.as_str())
        .bind(event_stream)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((rows::id(row, 0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }
}
