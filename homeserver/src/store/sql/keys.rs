//! [`KeyStore`] on either relational engine: identity, one-time, fallback
//! and cross-signing keys, and signatures.

use std::collections::HashMap;

use async_trait::async_trait;
use ruma_common::{DeviceId, OwnedUserId, UserId};
use serde_json::Value;
use sqlx::Row as _;

use super::devices::note_changes;
use super::engine::{dialect, Db, Store};
use super::rows::{id, json};
use super::Stream;
use crate::store::e2ee::{CrossSigningKind, DeviceKeys, KeySignature, KeyStore, OneTimeKey};
use crate::store::{StoreError, StoreResult, StreamPos};

/// Keys per insert statement: five parameters each, well under either
/// engine's limit on bound parameters.
const KEYS_PER_STATEMENT: usize = 500;

#[async_trait]
impl KeyStore for Store {
    async fn set_device_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &Value,
    ) -> StoreResult<StreamPos> {
        let mut tx = self.pool.begin().await?;
        let pos = note_changes(&mut tx, &[user_id]).await?;
        sqlx::query(
            "INSERT INTO device_keys (user_id, device_id, keys) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET keys = excluded.keys",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(keys.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.stream_committed(Stream::DeviceLists, pos);
        Ok(pos)
    }

    async fn device_keys(&self, users: &[OwnedUserId]) -> StoreResult<Vec<DeviceKeys>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT k.user_id, k.device_id, k.keys, d.display_name FROM device_keys k \
             LEFT JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id \
             WHERE {} ORDER BY k.user_id, k.device_id",
            dialect::in_list("k.user_id", "$1")
        ))
        .bind(dialect::list(users)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let keys: String = row.try_get(2)?;
                Ok(DeviceKeys {
                    user_id: id(row, 0)?,
                    device_id: id(row, 1)?,
                    keys: json(&keys)?,
                    display_name: row.try_get(3)?,
                })
            })
            .collect()
    }

    async fn add_one_time_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &[OneTimeKey],
    ) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key) ",
            );
            insert.push_values(chunk, |mut row, key| {
                row.push_bind(user_id.as_str())
                    .push_bind(device_id.as_str())
                    .push_bind(&key.algorithm)
                    .push_bind(&key.key_id)
                    .push_bind(key.key.to_string());
            });
            insert.push(" ON CONFLICT DO NOTHING");
            added += insert.build().execute(&mut *tx).await?.rows_affected() as usize;
        }
        if added < keys.len() {
            // Some ids were stored before: the same key sent again is fine
            // (a retried upload), another key under the same id is not.
            let stored: HashMap<(String, String), Value> = sqlx::query(
                "SELECT algorithm, key_id, key FROM one_time_keys \
                 WHERE user_id = $1 AND device_id = $2",
            )
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| {
                let key: String = row.try_get(2)?;
                Ok(((row.try_get(0)?, row.try_get(1)?), json(&key)?))
            })
            .collect::<StoreResult<_>>()?;
            let differs = keys.iter().any(|k| {
                stored
                    .get(&(k.algorithm.clone(), k.key_id.clone()))
                    .is_some_and(|old| *old != k.key)
            });
            if differs {
                return Err(StoreError::Conflict);
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_fallback_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &[OneTimeKey],
    ) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for key in keys {
            // The same key again keeps its `used` mark; a new one is unused.
            sqlx::query(
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key, used) \
                 VALUES ($1, $2, $3, $4, $5, FALSE) \
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE \
                 SET key_id = excluded.key_id, key = excluded.key, \
                 used = CASE WHEN fallback_keys.key_id = excluded.key_id \
                             AND fallback_keys.key = excluded.key \
                        THEN fallback_keys.used ELSE FALSE END",
            )
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(&key.algorithm)
            .bind(&key.key_id)
            .bind(key.key.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn key_counts(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<(Vec<(String, u64)>, Vec<String>)> {
        // One round trip for both: a count row per one-time-key algorithm,
        // and a row with count -1 per unused fallback key.
        let rows = sqlx::query(
            "SELECT algorithm, COUNT(*) FROM one_time_keys \
             WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm \
             UNION ALL SELECT algorithm, -1 FROM fallback_keys \
             WHERE user_id = $1 AND device_id = $2 AND NOT used",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        let (mut counts, mut fallbacks) = (Vec::new(), Vec::new());
        for row in &rows {
            let algorithm: String = row.try_get(0)?;
            let count: i64 = row.try_get(1)?;
            match u64::try_from(count) {
                Ok(count) => counts.push((algorithm, count)),
                Err(_) => fallbacks.push(algorithm),
            }
        }
        Ok((counts, fallbacks))
    }

    async fn claim_key(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        algorithm: &str,
    ) -> StoreResult<Option<OneTimeKey>> {
        // Skipping locked rows: two claims at once take two keys, rather
        // than the second waiting for the first and finding its key gone.
        let row = sqlx::query(&format!(
            "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 \
             AND algorithm = $3 AND key_id = (SELECT key_id FROM one_time_keys \
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
             ORDER BY key_id LIMIT 1{}) RETURNING key_id, key",
            dialect::SKIP_LOCKED
        ))
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(algorithm)
        .fetch_optional(&self.pool)
        .await?;
        let row = match row {
            Some(row) => row,
            None => {
                let fallback = sqlx::query(
                    "UPDATE fallback_keys SET used = TRUE \
                     WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
                     RETURNING key_id, key",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(algorithm)
                .fetch_optional(&self.pool)
                .await?;
                match fallback {
                    Some(row) => row,
                    None => return Ok(None),
                }
            }
        };
        let key: String = row.try_get(1)?;
        Ok(Some(OneTimeKey {
            algorithm: algorithm.to_owned(),
            key_id: row.try_get(0)?,
            key: json(&key)?,
        }))
    }

    async fn set_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: &[(CrossSigningKind, Value)],
    ) -> StoreResult<StreamPos> {
        let mut tx = self.pool.begin().await?;
        let pos = note_changes(&mut tx, &[user_id]).await?;
        for (kind, key) in keys {
            sqlx::query(
                "INSERT INTO cross_signing_keys (user_id, kind, keys) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, kind) DO UPDATE SET keys = excluded.keys",
            )
            .bind(user_id.as_str())
            .bind(kind.as_str())
            .bind(key.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.stream_committed(Stream::DeviceLists, pos);
        Ok(pos)
    }

    async fn cross_signing_keys(
        &self,
        users: &[OwnedUserId],
    ) -> StoreResult<Vec<(OwnedUserId, CrossSigningKind, Value)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT user_id, kind, keys FROM cross_signing_keys WHERE {}",
            dialect::in_list("user_id", "$1")
        ))
        .bind(dialect::list(users)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get(1)?;
                let keys: String = row.try_get(2)?;
                let kind = CrossSigningKind::parse(&kind)
                    .ok_or_else(|| StoreError::corrupt_says("cross-signing key kind"))?;
                Ok((id(row, 0)?, kind, json(&keys)?))
            })
            .collect()
    }

    async fn add_signatures(&self, signatures: &[KeySignature]) -> StoreResult<StreamPos> {
        let mut users: Vec<&UserId> = signatures.iter().map(|s| s.user_id.as_ref()).collect();
        users.sort();
        users.dedup();
        let mut tx = self.pool.begin().await?;
        let pos = note_changes(&mut tx, &users).await?;
        for signature in signatures {
            sqlx::query(
                "INSERT INTO key_signatures \
                 (user_id, key_id, signer, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (user_id, key_id, signer, signer_key_id) \
                 DO UPDATE SET signature = excluded.signature",
            )
            .bind(signature.user_id.as_str())
            .bind(&signature.key_id)
            .bind(signature.signer.as_str())
            .bind(&signature.signer_key_id)
            .bind(&signature.signature)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.stream_committed(Stream::DeviceLists, pos);
        Ok(pos)
    }

    async fn signatures(&self, users: &[OwnedUserId]) -> StoreResult<Vec<KeySignature>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT user_id, key_id, signer, signer_key_id, signature FROM key_signatures \
             WHERE {}",
            dialect::in_list("user_id", "$1")
        ))
        .bind(dialect::list(users)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(KeySignature {
                    user_id: id(row, 0)?,
                    key_id: row.try_get(1)?,
                    signer: id(row, 2)?,
                    signer_key_id: row.try_get(3)?,
                    signature: row.try_get(4)?,
                })
            })
            .collect()
    }
}
