//! Relations: an event's relations, the summaries bundled with events, and
//! a room's threads, all read through the `events_relates_to` index.

use std::collections::HashMap;

use ruma_common::{OwnedEventId, RoomId, UserId};
use sqlx::Row as _;

use super::engine::{dialect, Store};
use super::rows::{self, id, EVENT_COLUMNS};
use crate::store::{
    Direction, RelationQuery, RelationSummaries, StoreResult, StoredEvent, StreamPos, ThreadSummary,
};

/// How deep `recurse` follows relations of relations (Synapse's limit).
const RECURSE_DEPTH: i64 = 3;

impl Store {
    pub(super) async fn relations_of(
        &self,
        q: &RelationQuery<'_>,
    ) -> StoreResult<Vec<StoredEvent>> {
        let target = dialect::RELATES_TO;
        // Direct relations, or a recursive walk down to RECURSE_DEPTH.
        let related = if q.recurse {
            format!(
                "WITH RECURSIVE rel(event_id, depth) AS ( \
                   SELECT e.event_id, 1 FROM events e WHERE e.room_id = $1 AND {target} = $2 \
                   UNION SELECT e.event_id, rel.depth + 1 FROM rel JOIN events e \
                     ON {target} = rel.event_id WHERE e.room_id = $1 AND rel.depth < {RECURSE_DEPTH} \
                 ) SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id IN (SELECT event_id FROM rel)"
            )
        } else {
            format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.room_id = $1 AND {target} = $2")
        };
        // Tokens mean what they mean for /messages: backward from `from`
        // includes the event at `from` and stops after `to`; forward starts
        // after `from` and ends at `to`, included.
        let (order, after, before) = match q.dir {
            Direction::Forward => ("ASC", ">", "<="),
            Direction::Backward => ("DESC", "<=", ">"),
        };
        let sql = format!(
            "{related} AND ($3 IS NULL OR {rel_type} = $3) AND ($4 IS NULL OR e.type = $4) \
             AND ($5 IS NULL OR e.stream {after} $5) AND ($6 IS NULL OR e.stream {before} $6) \
             ORDER BY e.stream {order} LIMIT $7",
            rel_type = dialect::REL_TYPE,
        );
        let rows = sqlx::query(&sql)
            .bind(q.room_id.as_str())
            .bind(q.target.as_str())
            .bind(q.rel_type)
            .bind(q.event_type)
            .bind(q.from)
            .bind(q.to)
            .bind(q.limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::event).collect()
    }

    /// Three reads, whatever the number of targets: thread counts with
    /// their latest replies, the newest edits, and the references.
    pub(super) async fn summaries(
        &self,
        targets: &[OwnedEventId],
        user: &UserId,
    ) -> StoreResult<RelationSummaries> {
        if targets.is_empty() {
            return Ok(RelationSummaries::default());
        }
        let (target, rel_type) = (dialect::RELATES_TO, dialect::REL_TYPE);
        let in_targets = dialect::in_list(target, "$1");
        // Threads: per root, the reply count, the latest reply, and whether
        // `user` wrote a reply (the root's sender is the service's check).
        let counts = format!(
            "SELECT {target}, COUNT(*), MAX(CASE WHEN e.sender = $2 THEN 1 ELSE 0 END) \
             FROM events e WHERE {in_targets} AND {rel_type} = 'm.thread' GROUP BY {target}"
        );
        let rows = sqlx::query(&counts)
            .bind(dialect::list(targets)?)
            .bind(user.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut threads = HashMap::with_capacity(rows.len());
        for row in &rows {
            let root: OwnedEventId = id(row, 0)?;
            let (count, mine): (i64, i32) = (row.try_get(1)?, row.try_get(2)?);
            threads.insert(root, (count, mine == 1));
        }
        let found = self
            .newest_relations(targets, "m.thread", "")
            .await?
            .into_iter()
            .filter_map(|(root, latest)| {
                let &(count, participated) = threads.get(&root)?;
                Some(ThreadSummary {
                    root,
                    count,
                    latest,
                    participated,
                })
            })
            .collect();
        // Edits: the newest `m.replace` of each target by each sender (the
        // service keeps only the original sender's).
        let edits = self
            .newest_relations(targets, "m.replace", ", e.sender")
            .await?;
        let references_sql = format!(
            "SELECT {target}, e.event_id FROM events e WHERE {in_targets} AND {rel_type} = 'm.reference' \
             ORDER BY e.stream"
        );
        let refs = sqlx::query(&references_sql)
            .bind(dialect::list(targets)?)
            .fetch_all(&self.pool)
            .await?;
        let references = refs
            .iter()
            .map(|row| Ok((id(row, 0)?, id(row, 1)?)))
            .collect::<StoreResult<_>>()?;
        Ok(RelationSummaries {
            threads: found,
            edits,
            references,
        })
    }

    /// The newest relation of `rel_type` to each target (per sender too
    /// when `per` is `", e.sender"`), with the target it relates to.
    async fn newest_relations(
        &self,
        targets: &[OwnedEventId],
        rel_type: &str,
        per: &'static str,
    ) -> StoreResult<Vec<(OwnedEventId, StoredEvent)>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.stream IN ( \
               SELECT MAX(e.stream) FROM events e WHERE {} AND {} = $2 \
               GROUP BY {}{per})",
            dialect::in_list(dialect::RELATES_TO, "$1"),
            dialect::REL_TYPE,
            dialect::RELATES_TO,
        );
        let rows = sqlx::query(&sql)
            .bind(dialect::list(targets)?)
            .bind(rel_type)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let event = rows::event(row)?;
            if let Some(to) = relates_to(&event) {
                out.push((to, event));
            }
        }
        Ok(out)
    }

    pub(super) async fn thread_roots(
        &self,
        room_id: &RoomId,
        participant: Option<&UserId>,
        before: Option<StreamPos>,
        limit: usize,
    ) -> StoreResult<Vec<(OwnedEventId, StreamPos)>> {
        let (target, rel_type) = (dialect::RELATES_TO, dialect::REL_TYPE);
        // A participant wrote a reply, or the root.
        let sql = format!(
            "SELECT {target}, MAX(e.stream) FROM events e \
             WHERE e.room_id = $1 AND {rel_type} = 'm.thread' GROUP BY {target} \
             HAVING ($2 IS NULL OR MAX(e.stream) < $2) AND ($3 IS NULL \
               OR MAX(CASE WHEN e.sender = $3 THEN 1 ELSE 0 END) = 1 \
               OR {target} IN (SELECT r.event_id FROM events r WHERE r.room_id = $1 AND r.sender = $3)) \
             ORDER BY MAX(e.stream) DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(room_id.as_str())
            .bind(before)
            .bind(participant.map(|p| p.as_str()))
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((id(row, 0)?, row.try_get(1)?)))
            .collect()
    }
}

/// The event an event relates to, from its content.
fn relates_to(event: &StoredEvent) -> Option<OwnedEventId> {
    let id = event.pdu["content"]["m.relates_to"]["event_id"].as_str()?;
    OwnedEventId::try_from(id).ok()
}
