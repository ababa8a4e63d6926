//! State groups on either relational engine: the state after an event, read
//! as one recursive query that walks a group's parents up to the nearest
//! snapshot.

use std::collections::HashSet;
use std::sync::Arc;

use ruma_common::{EventId, OwnedEventId, RoomId};
use serde_json::Value;
use sqlx::Row as _;

use super::engine::{dialect, Row, Store};
use super::rows::id;
use crate::store::{Outlier, Refused, StateGroup, StateKeyed, StoreResult};

/// The group and its ancestors up to (and including) the first snapshot,
/// numbered from 0.
const CHAIN: &str = "\
    WITH RECURSIVE chain (group_id, parent, snapshot, n) AS ( \
        SELECT group_id, parent, snapshot, 0 FROM state_groups WHERE group_id = $1 \
        UNION ALL \
        SELECT g.group_id, g.parent, g.snapshot, c.n + 1 \
        FROM chain c JOIN state_groups g ON g.group_id = c.parent \
        WHERE NOT c.snapshot \
    ) ";

impl Store {
    pub(super) async fn groups_of_events(
        &self,
        event_ids: &[OwnedEventId],
    ) -> StoreResult<Vec<(OwnedEventId, OwnedEventId)>> {
        let sql = format!(
            "SELECT event_id, state_group FROM events e \
             WHERE state_group IS NOT NULL AND {}",
            dialect::in_list("e.event_id", "$1")
        );
        self.rows_for_ids(&sql, event_ids, |row| Ok((id(row, 0)?, id(row, 1)?)))
            .await
    }

    pub(super) async fn read_state_group(
        &self,
        group: &EventId,
    ) -> StoreResult<Option<StateGroup>> {
        let sql = format!(
            "{CHAIN} SELECT c.n, c.parent, e.type, e.state_key, e.event_id \
             FROM chain c LEFT JOIN state_group_entries e ON e.group_id = c.group_id \
             ORDER BY c.n"
        );
        let rows = sqlx::query(&sql)
            .bind(group.as_str())
            .fetch_all(&self.pool)
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let parent: Option<String> = first.try_get(1)?;
        let mut state = StateGroup {
            parent: parent.map(crate::store::parse_id).transpose()?,
            entries: Vec::new(),
        };
        // Nearest group first: the first entry seen for a key is the one
        // in force.
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for row in &rows {
            let kind: Option<String> = row.try_get(2)?;
            let Some(kind) = kind else { continue };
            let state_key: String = row.try_get(3)?;
            if seen.insert((kind.clone(), state_key.clone())) {
                state.entries.push(StateKeyed {
                    kind,
                    state_key,
                    event_id: id(row, 4)?,
                });
            }
        }
        Ok(Some(state))
    }

    pub(super) async fn count_group_deltas(&self, group: &EventId) -> StoreResult<Option<usize>> {
        let sql = format!("{CHAIN} SELECT CAST(MAX(n) AS BIGINT) FROM chain");
        let deepest: Option<i64> = sqlx::query_scalar(&sql)
            .bind(group.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(deepest.map(|n| n as usize))
    }

    pub(super) async fn insert_outliers(
        &self,
        room_id: &RoomId,
        events: &[(OwnedEventId, Arc<Value>)],
    ) -> StoreResult<()> {
        let rows = events.iter().map(|(id, pdu)| (id, pdu, None, None));
        self.insert_outlier_rows(room_id, rows).await
    }

    pub(super) async fn insert_refused(
        &self,
        room_id: &RoomId,
        events: &[Refused],
    ) -> StoreResult<()> {
        let rows = events.iter().map(|e| {
            let refusal = if e.soft_failed {
                "soft_failed"
            } else {
                "rejected"
            };
            (&e.event_id, &e.pdu, Some(refusal), Some(e.reason.as_str()))
        });
        self.insert_outlier_rows(room_id, rows).await
    }

    /// `(event_id, pdu, refusal, reason)` rows in one transaction; an event
    /// kept already keeps its first row.
    async fn insert_outlier_rows<'a>(
        &self,
        room_id: &RoomId,
        rows: impl Iterator<
            Item = (
                &'a OwnedEventId,
                &'a Arc<Value>,
                Option<&'a str>,
                Option<&'a str>,
            ),
        >,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for (event_id, pdu, refusal, reason) in rows {
            sqlx::query(
                "INSERT INTO outliers (event_id, room_id, pdu, refusal, reason) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(event_id.as_str())
            .bind(room_id.as_str())
            .bind(pdu.to_string())
            .bind(refusal)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn read_outliers(
        &self,
        event_ids: &[OwnedEventId],
    ) -> StoreResult<Vec<Outlier>> {
        let sql = format!(
            "SELECT event_id, room_id, pdu, refusal, reason FROM outliers o WHERE {}",
            dialect::in_list("o.event_id", "$1")
        );
        self.rows_for_ids(&sql, event_ids, outlier).await
    }
}

fn outlier(row: &Row) -> StoreResult<Outlier> {
    let pdu: String = row.try_get(2)?;
    let pdu =
        serde_json::from_str(&pdu).map_err(|e| crate::store::StoreError::corrupt("outlier", e))?;
    let refusal: Option<String> = row.try_get(3)?;
    let reason: Option<String> = row.try_get(4)?;
    Ok(Outlier {
        event_id: id(row, 0)?,
        room_id: id(row, 1)?,
        pdu: Arc::new(pdu),
        refused: refusal.map(|kind| (kind == "soft_failed", reason.unwrap_or_default())),
    })
}
