//! The fast path of a group commit: every event of a batch in a handful of
//! statements, whatever the batch's size.
//!
//! Each statement binds whole columns as arrays (`unnest`), so a batch of a
//! hundred sends costs the same round trips as one. Any conflict (a retried
//! transaction id, a duplicate event id) rolls the fast path back to its
//! savepoint and the writer redoes the batch job by job, where each job
//! fails alone; conflicts are rare (retries after a crash), so that costs
//! nothing in the common case.

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use crate::store::{NewEvent, StoreResult, StreamPos};

/// Appends every job's events after `last`, all or nothing. `None` when a
/// conflict made it back out (nothing written, `last` unchanged).
pub async fn append_jobs(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[Vec<NewEvent>],
    last: &mut StreamPos,
) -> StoreResult<Option<Vec<Vec<StreamPos>>>> {
    let total: usize = jobs.iter().map(Vec::len).sum();
    let mut positions = Vec::with_capacity(jobs.len());
    let mut events: Vec<(&NewEvent, StreamPos)> = Vec::with_capacity(total);
    let mut pos = *last;
    for job in jobs {
        let mut job_positions = Vec::with_capacity(job.len());
        for event in job {
            pos += 1;
            events.push((event, pos));
            job_positions.push(pos);
        }
        positions.push(job_positions);
    }
    sqlx::query("SAVEPOINT bulk").execute(&mut **tx).await?;
    if insert_events(tx, &events).await? != total as u64 {
        sqlx::query("ROLLBACK TO SAVEPOINT bulk")
            .execute(&mut **tx)
            .await?;
        return Ok(None);
    }
    update_state(tx, &events).await?;
    update_memberships(tx, &events).await?;
    for (event, _) in &events {
        if let Some((target, redacted)) = &event.redaction {
            sqlx::query("UPDATE events SET pdu = $1 WHERE event_id = $2")
                .bind(redacted.to_string())
                .bind(target)
                .execute(&mut **tx)
                .await?;
        }
    }
    advance_heads(tx, &events).await?;
    *last = pos;
    Ok(Some(positions))
}

/// Inserts the event rows; returns how many went in (fewer on a conflict).
async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(&NewEvent, StreamPos)],
) -> StoreResult<u64> {
    let n = events.len();
    let (mut streams, mut ids, mut rooms, mut senders, mut kinds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut state_keys, mut pdus, mut devices, mut txn_ids, mut visibilities) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (event, pos) in events {
        streams.push(*pos);
        ids.push(event.event_id.as_str());
        rooms.push(event.room_id.as_str());
        senders.push(event.sender.as_str());
        kinds.push(event.kind.as_str());
        state_keys.push(event.state_key.as_deref());
        pdus.push(event.pdu.to_string());
        devices.push(event.txn.as_ref().map(|(device, _)| device.as_str()));
        txn_ids.push(event.txn.as_ref().map(|(_, txn)| txn.as_str()));
        visibilities.push(event.visibility.as_str());
    }
    let done = sqlx::query(
        "INSERT INTO events (stream, event_id, room_id, sender, type, state_key, pdu, \
         txn_device, txn_id, visibility) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&streams)
    .bind(&ids)
    .bind(&rooms)
    .bind(&senders)
    .bind(&kinds)
    .bind(&state_keys)
    .bind(&pdus)
    .bind(&devices)
    .bind(&txn_ids)
    .bind(&visibilities)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Points each state key the batch touched at its last event. One row per
/// key: an upsert may not touch the same row twice in one statement.
async fn update_state(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(&NewEvent, StreamPos)],
) -> StoreResult<()> {
    let mut latest: HashMap<(&str, &str, &str), StreamPos> = HashMap::new();
    for (event, pos) in events {
        if let Some(state_key) = &event.state_key {
            latest.insert((&event.room_id, &event.kind, state_key), *pos);
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    let (mut rooms, mut kinds, mut keys, mut streams) = (vec![], vec![], vec![], vec![]);
    for ((room, kind, key), pos) in latest {
        rooms.push(room);
        kinds.push(kind);
        keys.push(key);
        streams.push(pos);
    }
    sqlx::query(
        "INSERT INTO current_state (room_id, type, state_key, stream) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) \
         ON CONFLICT (room_id, type, state_key) DO UPDATE SET stream = excluded.stream",
    )
    .bind(&rooms)
    .bind(&kinds)
    .bind(&keys)
    .bind(&streams)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Each member's latest membership of the batch, one row per (room, user).
async fn update_memberships(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(&NewEvent, StreamPos)],
) -> StoreResult<()> {
    let mut latest: HashMap<(&str, &str), (&str, &str, StreamPos)> = HashMap::new();
    for (event, pos) in events {
        if let (Some(user), Some(membership)) = (&event.state_key, &event.membership) {
            latest.insert((&event.room_id, user), (membership, &event.event_id, *pos));
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    let (mut rooms, mut users, mut memberships, mut ids, mut streams) =
        (vec![], vec![], vec![], vec![], vec![]);
    for ((room, user), (membership, event_id, pos)) in latest {
        rooms.push(room);
        users.push(user);
        memberships.push(membership);
        ids.push(event_id);
        streams.push(pos);
    }
    sqlx::query(
        "INSERT INTO memberships (room_id, user_id, membership, event_id, stream) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, \
         event_id = excluded.event_id, stream = excluded.stream",
    )
    .bind(&rooms)
    .bind(&users)
    .bind(&memberships)
    .bind(&ids)
    .bind(&streams)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves each room's head to its last event of the batch.
///
/// A multi-writer room check fits here as it does in the writer's
/// `advance_head`: bind each room's expected head (the one its first event
/// of the batch was built on) as one more array, add
/// `AND r.last_event_id IS NOT DISTINCT FROM u.expected`, and back out to the
/// savepoint when fewer rows than rooms matched; the job-by-job path then
/// finds the job that lost the race.
async fn advance_heads(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(&NewEvent, StreamPos)],
) -> StoreResult<()> {
    let mut heads: HashMap<&str, (&str, StreamPos)> = HashMap::new();
    for (event, pos) in events {
        heads.insert(&event.room_id, (&event.event_id, *pos));
    }
    let (mut rooms, mut ids, mut streams) = (vec![], vec![], vec![]);
    for (room, (event_id, pos)) in heads {
        rooms.push(room);
        ids.push(event_id);
        streams.push(pos);
    }
    sqlx::query(
        "UPDATE rooms r SET last_event_id = u.event_id, last_stream = u.stream \
         FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(room_id, event_id, stream) \
         WHERE r.room_id = u.room_id",
    )
    .bind(&rooms)
    .bind(&ids)
    .bind(&streams)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
