//! [`ToDeviceStore`] on either relational engine: every device's inbox.

use async_trait::async_trait;
use ruma_common::{DeviceId, OwnedDeviceId, UserId};
use sqlx::Row as _;

use super::devices::bump;
use super::engine::{Db, Store};
use super::rows::{id, json};
use super::Stream;
use crate::store::e2ee::{InboxMessage, OutboundEdu, ToDeviceMessage, ToDeviceStore};
use crate::store::{StoreResult, StreamPos};

/// How long a sendToDevice transaction id is remembered: a client retries
/// within seconds, not days.
const TXN_MEMORY_MS: i64 = 24 * 60 * 60 * 1000;

/// Messages per insert statement (six parameters each).
const MESSAGES_PER_STATEMENT: usize = 500;

#[async_trait]
impl ToDeviceStore for Store {
    async fn queue_to_device(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        txn_id: &str,
        now_ts: i64,
        messages: &[ToDeviceMessage],
        remote: &mut [OutboundEdu],
    ) -> StoreResult<Option<StreamPos>> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO to_device_txns (user_id, device_id, txn_id, ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(sender.as_str())
        .bind(sender_device.as_str())
        .bind(txn_id)
        .bind(now_ts)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !fresh {
            return Ok(None);
        }
        sqlx::query("DELETE FROM to_device_txns WHERE ts < $1")
            .bind(now_ts - TXN_MEMORY_MS)
            .execute(&mut *tx)
            .await?;
        let last = bump(&mut tx, "to_device", messages.len()).await?;
        let mut next = last - messages.len() as i64 + 1;
        for chunk in messages.chunks(MESSAGES_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO to_device (stream, user_id, device_id, sender, type, content) ",
            );
            insert.push_values(chunk, |mut row, message| {
                row.push_bind(next)
                    .push_bind(message.user_id.as_str())
                    .push_bind(message.device_id.as_str())
                    .push_bind(sender.as_str())
                    .push_bind(&message.kind)
                    .push_bind(message.content.to_string());
                next += 1;
            });
            insert.build().execute(&mut *tx).await?;
        }
        for edu in remote.iter_mut() {
            edu.id = sqlx::query_scalar(
                "INSERT INTO outbound_to_device (destination, edu) VALUES ($1, $2) RETURNING id",
            )
            .bind(edu.destination.as_str())
            .bind(&edu.edu)
            .fetch_one(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.stream_committed(Stream::ToDevice, last);
        Ok(Some(last))
    }

    async fn pending_outbound(&self) -> StoreResult<Vec<OutboundEdu>> {
        let rows = sqlx::query("SELECT id, destination, edu FROM outbound_to_device ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboundEdu {
                    id: row.try_get(0)?,
                    destination: id(row, 1)?,
                    edu: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn outbound_sent(&self, ids: &[i64]) -> StoreResult<()> {
        for id in ids {
            sqlx::query("DELETE FROM outbound_to_device WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn to_device_inbox(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        since: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<InboxMessage>> {
        let rows = sqlx::query(
            "SELECT stream, sender, type, content FROM to_device \
             WHERE user_id = $1 AND device_id = $2 AND stream > $3 AND stream <= $4 \
             ORDER BY stream LIMIT $5",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(since)
        .bind(upto)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let content: String = row.try_get(3)?;
                Ok(InboxMessage {
                    stream: row.try_get(0)?,
                    sender: id(row, 1)?,
                    kind: row.try_get(2)?,
                    content: json(&content)?,
                })
            })
            .collect()
    }

    async fn acknowledge_to_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        upto: StreamPos,
    ) -> StoreResult<()> {
        // Every sync acknowledges; most have nothing to delete, and a read
        // costs no write lock.
        let waiting: Option<i64> = sqlx::query_scalar(
            "SELECT stream FROM to_device WHERE user_id = $1 AND device_id = $2 \
             AND stream <= $3 LIMIT 1",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(upto)
        .fetch_optional(&self.pool)
        .await?;
        if waiting.is_none() {
            return Ok(());
        }
        sqlx::query("DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream <= $3")
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(upto)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn inbox_sizes(&self, user_id: &UserId) -> StoreResult<Vec<(OwnedDeviceId, u64)>> {
        let rows = sqlx::query(
            "SELECT device_id, COUNT(*) FROM to_device WHERE user_id = $1 GROUP BY device_id",
        )
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let count: i64 = row.try_get(1)?;
                Ok((id(row, 0)?, count.max(0) as u64))
            })
            .collect()
    }

    async fn to_device_position(&self) -> StoreResult<StreamPos> {
        self.position(Stream::ToDevice).await
    }
}
