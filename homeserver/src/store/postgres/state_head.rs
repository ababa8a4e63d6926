//! The check that keeps rooms consistent across nodes: an event is appended
//! only if the room's state head (its latest state event) is still the one
//! the event was authorized against (`NewEvent::built_on`).
//!
//! Every event append holds the `events` counter row until commit, so no
//! other writer, in any process, can move a head between the read here and
//! the commit.

use std::collections::HashMap;

use sqlx::{PgConnection, Row};

use crate::store::{NewEvent, StoreResult};

/// Walks `events` in order against the rooms' stored heads. `Some(moved)`
/// with the heads to store when every event was built on the head current
/// at its turn; `None` when one was not (stale).
pub async fn check<'a>(
    tx: &mut PgConnection,
    events: impl Iterator<Item = &'a NewEvent> + Clone,
) -> StoreResult<Option<HashMap<&'a str, &'a str>>> {
    let mut rooms: Vec<&str> = events.clone().map(|e| e.room_id.as_str()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    let rows = sqlx::query("SELECT room_id, state_head FROM rooms WHERE room_id = ANY($1)")
        .bind(&rooms)
        .fetch_all(&mut *tx)
        .await?;
    let mut heads: HashMap<String, Option<String>> = HashMap::with_capacity(rows.len());
    for row in rows {
        heads.insert(row.try_get(0)?, row.try_get(1)?);
    }
    let mut moved: HashMap<&str, &str> = HashMap::new();
    for event in events {
        let room = event.room_id.as_str();
        let current = moved
            .get(room)
            .copied()
            .or_else(|| heads.get(room).and_then(|h| h.as_deref()));
        if let (Some(built_on), Some(current)) = (&event.built_on, current) {
            if built_on.as_str() != current {
                return Ok(None);
            }
        }
        if let Some(head) = &event.state.head {
            moved.insert(room, head.as_str());
        }
    }
    Ok(Some(moved))
}

/// Stores the heads `check` returned.
pub async fn store(tx: &mut PgConnection, moved: &HashMap<&str, &str>) -> StoreResult<()> {
    if moved.is_empty() {
        return Ok(());
    }
    let (rooms, ids): (Vec<&str>, Vec<&str>) = moved.iter().map(|(r, e)| (*r, *e)).unzip();
    sqlx::query(
        "UPDATE rooms r SET state_head = u.event_id \
         FROM unnest($1::text[], $2::text[]) AS u(room_id, event_id) WHERE r.room_id = u.room_id",
    )
    .bind(&rooms)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
