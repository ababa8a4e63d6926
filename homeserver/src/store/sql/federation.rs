//! [`FederationStore`] on either relational engine.

use async_trait::async_trait;
use ruma_common::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, ServerName, UserId};
use sqlx::Row as _;
use std::collections::HashMap;

use super::engine::Store;
use super::rows::id;
use crate::store::{parse_id, FederationStore, RoomDestination, StoreResult, StreamPos};

#[async_trait]
impl FederationStore for Store {
    async fn set_sent(
        &self,
        destination: &ServerName,
        upto: &[(&RoomId, StreamPos)],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for (room_id, stream) in upto {
            sqlx::query(
                "INSERT INTO federation_progress (destination, room_id, stream) \
                 VALUES ($1, $2, $3) ON CONFLICT (destination, room_id) DO UPDATE \
                 SET stream = excluded.stream WHERE federation_progress.stream < excluded.stream",
            )
            .bind(destination.as_str())
            .bind(room_id.as_str())
            .bind(stream)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn destinations(&self, our_server: &ServerName) -> StoreResult<Vec<RoomDestination>> {
        // LIKE narrows the scan to other servers' users; the parsed ids
        // decide (LIKE ignores case on SQLite).
        let rows = sqlx::query(
            "SELECT room_id, user_id, stream FROM memberships \
             WHERE membership = 'join' AND user_id NOT LIKE $1",
        )
        .bind(format!("%:{our_server}"))
        .fetch_all(&self.pool)
        .await?;
        let mut joined: HashMap<(OwnedRoomId, OwnedServerName), StreamPos> = HashMap::new();
        for row in &rows {
            let user_id: OwnedUserId = id(row, 1)?;
            if user_id.server_name() == our_server {
                continue;
            }
            let stream: StreamPos = row.try_get(2)?;
            joined
                .entry((id(row, 0)?, user_id.server_name().to_owned()))
                .and_modify(|at| *at = (*at).min(stream))
                .or_insert(stream);
        }
        let rows = sqlx::query("SELECT destination, room_id, stream FROM federation_progress")
            .fetch_all(&self.pool)
            .await?;
        let mut sent = HashMap::with_capacity(rows.len());
        for row in &rows {
            let server: OwnedServerName = parse_id(row.try_get(0)?)?;
            let room_id: OwnedRoomId = id(row, 1)?;
            sent.insert((room_id, server), row.try_get::<StreamPos, _>(2)?);
        }
        Ok(joined
            .into_iter()
            .map(|((room_id, server), joined_at)| RoomDestination {
                sent_upto: sent.get(&(room_id.clone(), server.clone())).copied(),
                room_id,
                server,
                joined_at,
            })
            .collect())
    }

    async fn servers_sharing_with(
        &self,
        user_id: &UserId,
        our_server: &ServerName,
    ) -> StoreResult<Vec<OwnedServerName>> {
        let rows = sqlx::query(
            "SELECT DISTINCT other.user_id FROM memberships mine \
             JOIN memberships other ON other.room_id = mine.room_id \
             WHERE mine.user_id = $1 AND mine.membership = 'join' \
             AND other.membership = 'join' AND other.user_id NOT LIKE $2",
        )
        .bind(user_id.as_str())
        .bind(format!("%:{our_server}"))
        .fetch_all(&self.pool)
        .await?;
        let mut servers = Vec::new();
        for row in &rows {
            let other: OwnedUserId = id(row, 0)?;
            let server = other.server_name();
            if server != our_server && !servers.iter().any(|s: &OwnedServerName| s == server) {
                servers.push(server.to_owned());
            }
        }
        Ok(servers)
    }
}
