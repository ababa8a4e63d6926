//! Writing state groups and current-state resets, for both of the
//! writer's paths (job by job and the bulk fast path).

use sqlx::PgConnection;

use crate::store::{NewEvent, StateKeyed, StoreResult};

/// The state groups these events bring, all in two statements (a group
/// named twice, by two imports that resolved the same states, is the same
/// group: kept once).
pub async fn insert<'a>(
    tx: &mut PgConnection,
    events: impl Iterator<Item = &'a NewEvent>,
) -> StoreResult<()> {
    let (mut ids, mut rooms, mut parents, mut snapshots) = (vec![], vec![], vec![], vec![]);
    let (mut of, mut kinds, mut keys, mut event_ids) = (vec![], vec![], vec![], vec![]);
    for group in events.flat_map(|e| &e.state.new_groups) {
        ids.push(group.id.as_str());
        rooms.push(group.room_id.as_str());
        parents.push(group.parent.as_ref().map(|p| p.as_str()));
        snapshots.push(group.snapshot);
        for entry in &group.entries {
            of.push(group.id.as_str());
            kinds.push(entry.kind.as_str());
            keys.push(entry.state_key.as_str());
            event_ids.push(entry.event_id.as_str());
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO state_groups (group_id, room_id, parent, snapshot) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&rooms)
    .bind(&parents)
    .bind(&snapshots)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO state_group_entries (group_id, type, state_key, event_id) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&of)
    .bind(&kinds)
    .bind(&keys)
    .bind(&event_ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Current state a state resolution moved to events already stored.
pub async fn reset_current_state(tx: &mut PgConnection, event: &NewEvent) -> StoreResult<()> {
    for reset in &event.state.resets {
        if reset.dropped {
            drop_current_state(tx, event, &reset.entry).await?;
            continue;
        }
        let event_id = reset.entry.event_id.as_str();
        sqlx::query(
            "INSERT INTO current_state (room_id, type, state_key, stream) \
             SELECT room_id, type, state_key, stream FROM events WHERE event_id = $1 \
             ON CONFLICT (room_id, type, state_key) DO UPDATE SET stream = excluded.stream",
        )
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
        if let Some(membership) = &reset.membership {
            sqlx::query(
                "INSERT INTO memberships (room_id, user_id, membership, event_id, stream) \
                 SELECT room_id, state_key, $1, event_id, stream FROM events WHERE event_id = $2 \
                 ON CONFLICT (room_id, user_id) DO UPDATE SET \
                 membership = excluded.membership, event_id = excluded.event_id, \
                 stream = excluded.stream",
            )
            .bind(membership.as_str())
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

/// A current-state key a resolution left out: its row goes, and a
/// member's membership with it.
async fn drop_current_state(
    tx: &mut PgConnection,
    event: &NewEvent,
    entry: &StateKeyed,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3")
        .bind(event.room_id.as_str())
        .bind(&entry.kind)
        .bind(&entry.state_key)
        .execute(&mut *tx)
        .await?;
    if entry.kind == "m.room.member" {
        sqlx::query("DELETE FROM memberships WHERE room_id = $1 AND user_id = $2")
            .bind(event.room_id.as_str())
            .bind(&entry.state_key)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
