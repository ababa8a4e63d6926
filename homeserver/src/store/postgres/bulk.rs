//! The fast path of a group commit: every event and every receipt of a batch
//! in a handful of statements, whatever the batch's size.
//!
//! Each statement binds whole columns as arrays (`unnest`), so a batch of a
//! hundred sends costs the same round trips as one. Any conflict (a retried
//! transaction id, a duplicate event id) rolls the fast path back to its
//! savepoint and the writer redoes the batch job by job, where each job
//! fails alone; conflicts are rare (retries after a crash), so that costs
//! nothing in the common case.

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;

use crate::store::{NewEvent, NewReceipt, StoreResult, StreamPos};

/// Appends every job's events after `last`, all or nothing. `None` when a
/// conflict made it back out to the savepoint `bulk`, which the caller set
/// (nothing written, `last` unchanged).
pub async fn append_jobs(
    tx: &mut PgConnection,
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
    // A state resolution's resets must land between the batch's own
    // upserts, in order: such a batch (rare) goes job by job.
    if events.iter().any(|(e, _)| !e.state.resets.is_empty()) {
        sqlx::query("ROLLBACK TO SAVEPOINT bulk")
            .execute(&mut *tx)
            .await?;
        return Ok(None);
    }
    // A stale event sends the batch job by job, where its job fails alone.
    let Some(state_heads) = super::state_head::check(tx, events.iter().map(|(e, _)| *e)).await?
    else {
        sqlx::query("ROLLBACK TO SAVEPOINT bulk")
            .execute(&mut *tx)
            .await?;
        return Ok(None);
    };
    if insert_events(tx, &events).await? != total as u64 {
        sqlx::query("ROLLBACK TO SAVEPOINT bulk")
            .execute(&mut *tx)
            .await?;
        return Ok(None);
    }
    super::state_groups::insert(tx, events.iter().map(|(e, _)| *e)).await?;
    update_state(tx, &events).await?;
    update_memberships(tx, &events).await?;
    for (event, _) in &events {
        if let Some((target, redacted)) = &event.redaction {
            sqlx::query("UPDATE events SET pdu = $1 WHERE event_id = $2")
                .bind(redacted.to_string())
                .bind(target.as_str())
                .execute(&mut *tx)
                .await?;
        }
    }
    advance_heads(tx, &events).await?;
    super::state_head::store(tx, &state_heads).await?;
    *last = pos;
    Ok(Some(positions))
}

/// Inserts the event rows; returns how many went in (fewer on a conflict).
async fn insert_events(
    tx: &mut PgConnection,
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
    let mut groups = Vec::with_capacity(n);
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
        groups.push(event.state.group.as_ref().map(|g| g.as_str()));
    }
    let done = sqlx::query(
        "INSERT INTO events (stream, event_id, room_id, sender, type, state_key, pdu, \
         txn_device, txn_id, visibility, state_group) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) \
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
    .bind(&groups)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// Points each state key the batch touched at its last event. One row per
/// key: an upsert may not touch the same row twice in one statement.
async fn update_state(tx: &mut PgConnection, events: &[(&NewEvent, StreamPos)]) -> StoreResult<()> {
    let mut latest: HashMap<(&str, &str, &str), StreamPos> = HashMap::new();
    for (event, pos) in events {
        if let Some(state_key) = &event.state_key {
            latest.insert((event.room_id.as_str(), &event.kind, state_key), *pos);
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
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Each member's latest membership of the batch, one row per (room, user).
async fn update_memberships(
    tx: &mut PgConnection,
    events: &[(&NewEvent, StreamPos)],
) -> StoreResult<()> {
    let mut latest: HashMap<(&str, &str), (&str, &str, StreamPos)> = HashMap::new();
    for (event, pos) in events {
        if let (Some(user), Some(membership)) = (&event.state_key, &event.membership) {
            let row = (membership.as_str(), event.event_id.as_str(), *pos);
            latest.insert((event.room_id.as_str(), user.as_str()), row);
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
    .execute(&mut *tx)
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
    tx: &mut PgConnection,
    events: &[(&NewEvent, StreamPos)],
) -> StoreResult<()> {
    let mut heads: HashMap<&str, (&str, StreamPos)> = HashMap::new();
    for (event, pos) in events {
        heads.insert(event.room_id.as_str(), (event.event_id.as_str(), *pos));
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
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The (room, user, type, thread) a receipt row is kept under.
type ReceiptKey<'a> = (&'a str, &'a str, &'a str, &'a str);

/// Moves every job's receipts forward in two statements: read where each
/// touched receipt stands, decide in order which ones advance (giving each
/// advance the next position), then write the latest row per key and a log
/// row per advance. Only writers holding the `receipts` counter row write
/// receipts, so what the first statement reads cannot change before commit.
pub async fn set_receipts(
    tx: &mut PgConnection,
    jobs: &[Vec<NewReceipt>],
    last: &mut StreamPos,
) -> StoreResult<Vec<Vec<Option<StreamPos>>>> {
    let key = |r: &'_ NewReceipt| -> (String, String, String, String) {
        (
            r.room_id.to_string(),
            r.user_id.to_string(),
            r.receipt_type.clone(),
            r.thread_id.clone().unwrap_or_default(),
        )
    };
    let mut current: HashMap<(String, String, String, String), StreamPos> = HashMap::new();
    {
        let mut seen = HashSet::new();
        let (mut rooms, mut users, mut types, mut threads) = (vec![], vec![], vec![], vec![]);
        for r in jobs.iter().flatten() {
            let k: ReceiptKey = (
                r.room_id.as_str(),
                r.user_id.as_str(),
                &r.receipt_type,
                r.thread_id.as_deref().unwrap_or(""),
            );
            if seen.insert(k) {
                rooms.push(k.0);
                users.push(k.1);
                types.push(k.2);
                threads.push(k.3);
            }
        }
        let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT r.room_id, r.user_id, r.receipt_type, r.thread_id, r.event_stream \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(room, usr, typ, thr) \
             JOIN receipts r ON r.room_id = k.room AND r.user_id = k.usr \
             AND r.receipt_type = k.typ AND r.thread_id = k.thr",
        )
        .bind(&rooms)
        .bind(&users)
        .bind(&types)
        .bind(&threads)
        .fetch_all(&mut *tx)
        .await?;
        for (room, user, kind, thread, stream) in rows {
            current.insert((room, user, kind, thread), stream);
        }
    }

    let mut results = Vec::with_capacity(jobs.len());
    // The latest advance per key (the row kept) and every advance (the log).
    let mut latest: HashMap<(String, String, String, String), (&NewReceipt, StreamPos)> =
        HashMap::new();
    let mut log: Vec<&NewReceipt> = Vec::new();
    for job in jobs {
        let mut positions = Vec::with_capacity(job.len());
        for r in job {
            let k = key(r);
            if current.get(&k).is_some_and(|&at| r.event_stream <= at) {
                positions.push(None);
                continue;
            }
            *last += 1;
            current.insert(k.clone(), r.event_stream);
            latest.insert(k, (r, *last));
            log.push(r);
            positions.push(Some(*last));
        }
        results.push(positions);
    }
    if log.is_empty() {
        return Ok(results);
    }

    let mut rows = ReceiptColumns::default();
    for (r, pos) in latest.values() {
        rows.push(r, *pos);
    }
    let mut logged = ReceiptColumns::default();
    for r in &log {
        logged.push(r, 0);
    }
    sqlx::query(
        "WITH kept AS (INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, \
         event_id, event_sender, event_stream, ts, stream) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::bigint[], $8::bigint[], $9::bigint[]) \
         ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET \
         event_id = excluded.event_id, event_sender = excluded.event_sender, \
         event_stream = excluded.event_stream, ts = excluded.ts, stream = excluded.stream) \
         INSERT INTO receipt_log (room_id, user_id, receipt_type, event_stream, ts) \
         SELECT * FROM unnest($10::text[], $11::text[], $12::text[], $13::bigint[], $14::bigint[])",
    )
    .bind(&rows.rooms)
    .bind(&rows.users)
    .bind(&rows.types)
    .bind(&rows.threads)
    .bind(&rows.event_ids)
    .bind(&rows.senders)
    .bind(&rows.event_streams)
    .bind(&rows.ts)
    .bind(&rows.streams)
    .bind(&logged.rooms)
    .bind(&logged.users)
    .bind(&logged.types)
    .bind(&logged.event_streams)
    .bind(&logged.ts)
    .execute(&mut *tx)
    .await?;
    Ok(results)
}

/// Receipts as columns, for binding as arrays.
#[derive(Default)]
struct ReceiptColumns<'a> {
    rooms: Vec<&'a str>,
    users: Vec<&'a str>,
    types: Vec<&'a str>,
    threads: Vec<&'a str>,
    event_ids: Vec<&'a str>,
    senders: Vec<&'a str>,
    event_streams: Vec<StreamPos>,
    ts: Vec<i64>,
    streams: Vec<StreamPos>,
}

impl<'a> ReceiptColumns<'a> {
    fn push(&mut self, r: &'a NewReceipt, stream: StreamPos) {
        self.rooms.push(r.room_id.as_str());
        self.users.push(r.user_id.as_str());
        self.types.push(&r.receipt_type);
        self.threads.push(r.thread_id.as_deref().unwrap_or(""));
        self.event_ids.push(r.event_id.as_str());
        self.senders.push(r.event_sender.as_str());
        self.event_streams.push(r.event_stream);
        self.ts.push(r.ts);
        self.streams.push(stream);
    }
}
