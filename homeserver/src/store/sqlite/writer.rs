//! The group-commit writer: one thread, one connection, one transaction per batch.
//!
//! Every append queued while a batch is being committed joins the next batch,
//! so under load one commit (and its fsync) is shared by many sends, and
//! under light load a send waits for no timer. The writer runs on its own OS
//! thread with a plain rusqlite connection: a batch executes start to finish
//! without handing each statement to another thread, which on a busy machine
//! cost more than the statements themselves.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection};
use tokio::sync::{mpsc, oneshot};

use super::sql::Job;
use crate::store::{NewEvent, NewReceipt, StoreError, StoreResult, StreamPos};

/// Most appends folded into one transaction; bounds a batch's latency.
const MAX_BATCH: usize = 512;

/// The writer's stream counters and the committed positions it publishes.
pub struct Positions {
    pub events: StreamPos,
    pub receipts: StreamPos,
    pub committed_events: Arc<AtomicI64>,
    pub committed_receipts: Arc<AtomicI64>,
}

fn db_error(err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict,
        _ => StoreError::database("sqlite writer", err),
    }
}

/// Opens the writer's connection on an existing (migrated) database.
pub fn open(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(db_error)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(db_error)?;
    // FULL: an acknowledged write is on disk, not only in the OS cache.
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .map_err(db_error)?;
    Ok(conn)
}

/// Runs the writer until every sender is gone; call on a dedicated thread.
pub fn run(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<Job>, mut pos: Positions) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (start_events, start_receipts) = (pos.events, pos.receipts);
        let mut done = Done::default();
        match write_batch(&mut conn, &mut batch, &mut pos, &mut done) {
            Ok(()) => {
                pos.committed_events.store(pos.events, Ordering::Release);
                pos.committed_receipts
                    .store(pos.receipts, Ordering::Release);
                for (reply, result) in done.appends {
                    let _ = reply.send(result);
                }
                for (reply, result) in done.receipts {
                    let _ = reply.send(result);
                }
            }
            Err(err) => {
                // Nothing of this batch is durable: fail every job in it.
                let err = StoreError::database("group commit", err);
                tracing::error!(error = %crate::store::chain(&err), "group commit failed");
                pos.events = start_events;
                pos.receipts = start_receipts;
                let failed = || err.clone();
                for (reply, _) in done.appends {
                    let _ = reply.send(Err(failed()));
                }
                for (reply, _) in done.receipts {
                    let _ = reply.send(Err(failed()));
                }
            }
        }
        for flush in done.flushes {
            let _ = flush.send(());
        }
    }
}

/// A reply owed once the batch's outcome is known, with the job's own result.
type Owed<T> = (oneshot::Sender<StoreResult<T>>, StoreResult<T>);

/// Replies owed once the batch's outcome is known.
#[derive(Default)]
struct Done {
    appends: Vec<Owed<Vec<StreamPos>>>,
    receipts: Vec<Owed<Vec<Option<StreamPos>>>>,
    flushes: Vec<oneshot::Sender<()>>,
}

fn write_batch(
    conn: &mut Connection,
    batch: &mut Vec<Job>,
    pos: &mut Positions,
    done: &mut Done,
) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock first. A batch may begin with a read
    // (the state-head check), and in WAL mode a deferred transaction whose
    // snapshot went stale (another connection, such as `create_room` on the
    // pool, committed meanwhile) fails its first write at once with "database
    // is locked" instead of waiting.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let last = &mut pos.events;
    for job in batch.drain(..) {
        match job {
            Job::Flush(flush) => done.flushes.push(flush),
            Job::Receipts { receipts, reply } => {
                tx.execute_batch("SAVEPOINT job")?;
                let before = pos.receipts;
                match insert_receipts(&tx, &receipts, &mut pos.receipts) {
                    Ok(positions) => {
                        tx.execute_batch("RELEASE job")?;
                        done.receipts.push((reply, Ok(positions)));
                    }
                    Err(err) => {
                        tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                        pos.receipts = before;
                        done.receipts.push((reply, Err(db_error(err))));
                    }
                }
            }
            Job::Append { events, reply } => {
                // A savepoint per job: one bad job (say, a duplicate
                // transaction id) fails alone, not the whole batch.
                tx.execute_batch("SAVEPOINT job")?;
                let before = *last;
                let mut positions = Vec::with_capacity(events.len());
                let mut failure = None;
                for event in &events {
                    let pos = *last + 1;
                    let written = match built_on_current_state(&tx, event) {
                        Ok(true) => insert_event(&tx, event, pos).map_err(db_error),
                        Ok(false) => Err(StoreError::Stale),
                        Err(err) => Err(db_error(err)),
                    };
                    match written {
                        Ok(()) => {
                            *last = pos;
                            positions.push(pos);
                        }
                        Err(err) => {
                            failure = Some(err);
                            break;
                        }
                    }
                }
                match failure {
                    None => {
                        tx.execute_batch("RELEASE job")?;
                        done.appends.push((reply, Ok(positions)));
                    }
                    Some(err) => {
                        tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                        *last = before;
                        done.appends.push((reply, Err(err)));
                    }
                }
            }
        }
    }
    tx.commit()
}

/// Whether the room's state is still what `event` was authorized against
/// (see `NewEvent::built_on`); a state event then becomes the new head.
fn built_on_current_state(conn: &Connection, event: &NewEvent) -> rusqlite::Result<bool> {
    if let Some(built_on) = &event.built_on {
        let head: Option<String> = conn
            .prepare_cached("SELECT state_head FROM rooms WHERE room_id = ?")?
            .query_row(params![event.room_id.as_str()], |row| row.get(0))
            .or_else(|err| match err {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                err => Err(err),
            })?;
        if head.is_some_and(|head| built_on != &head) {
            return Ok(false);
        }
    }
    if let Some(head) = &event.state.head {
        conn.prepare_cached("UPDATE rooms SET state_head = ? WHERE room_id = ?")?
            .execute(params![head.as_str(), event.room_id.as_str()])?;
    }
    Ok(true)
}

fn insert_event(conn: &Connection, event: &NewEvent, pos: StreamPos) -> rusqlite::Result<()> {
    let (txn_device, txn_id) = match &event.txn {
        Some((device, txn)) => (Some(device.as_str()), Some(txn.as_str())),
        None => (None, None),
    };
    insert_state_groups(conn, event)?;
    conn.prepare_cached(
        "INSERT INTO events (stream, event_id, room_id, sender, type, state_key, pdu, \
         txn_device, txn_id, visibility, state_group) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        pos,
        event.event_id.as_str(),
        event.room_id.as_str(),
        event.sender.as_str(),
        event.kind,
        event.state_key,
        event.pdu.to_string(),
        txn_device,
        txn_id,
        event.visibility,
        event.state.group.as_ref().map(|g| g.as_str()),
    ])?;
    if let Some(state_key) = &event.state_key {
        conn.prepare_cached(
            "INSERT INTO current_state (room_id, type, state_key, stream) VALUES (?, ?, ?, ?) \
             ON CONFLICT (room_id, type, state_key) DO UPDATE SET stream = excluded.stream",
        )?
        .execute(params![event.room_id.as_str(), event.kind, state_key, pos])?;
        if let Some(membership) = &event.membership {
            conn.prepare_cached(
                "INSERT INTO memberships (room_id, user_id, membership, event_id, stream) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, user_id) DO UPDATE SET \
                 membership = excluded.membership, event_id = excluded.event_id, \
                 stream = excluded.stream",
            )?
            .execute(params![
                event.room_id.as_str(),
                state_key,
                membership.as_str(),
                event.event_id.as_str(),
                pos
            ])?;
        }
    }
    if let Some((target, redacted)) = &event.redaction {
        conn.prepare_cached("UPDATE events SET pdu = ? WHERE event_id = ?")?
            .execute(params![redacted.to_string(), target.as_str()])?;
    }
    reset_current_state(conn, event)
}

/// The state groups the event brings (a group named twice, by two imports
/// that resolved the same states, is the same group: kept once).
fn insert_state_groups(conn: &Connection, event: &NewEvent) -> rusqlite::Result<()> {
    for group in &event.state.new_groups {
        let added = conn
            .prepare_cached(
                "INSERT INTO state_groups (group_id, room_id, parent, snapshot) \
                 VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                group.id.as_str(),
                group.room_id.as_str(),
                group.parent.as_ref().map(|p| p.as_str()),
                group.snapshot,
            ])?;
        if added == 0 {
            continue;
        }
        let mut insert = conn.prepare_cached(
            "INSERT INTO state_group_entries (group_id, type, state_key, event_id) \
             VALUES (?, ?, ?, ?)",
        )?;
        for entry in &group.entries {
            insert.execute(params![
                group.id.as_str(),
                entry.kind,
                entry.state_key,
                entry.event_id.as_str()
            ])?;
        }
    }
    Ok(())
}

/// Current state a state resolution moved to events already stored.
fn reset_current_state(conn: &Connection, event: &NewEvent) -> rusqlite::Result<()> {
    for reset in &event.state.resets {
        let entry = &reset.entry;
        if reset.dropped {
            let room = event.room_id.as_str();
            conn.prepare_cached(
                "DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
            )?
            .execute(params![room, entry.kind, entry.state_key])?;
            if entry.kind == "m.room.member" {
                conn.prepare_cached("DELETE FROM memberships WHERE room_id = ? AND user_id = ?")?
                    .execute(params![room, entry.state_key])?;
            }
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO current_state (room_id, type, state_key, stream) \
             SELECT room_id, type, state_key, stream FROM events WHERE event_id = ? \
             ON CONFLICT (room_id, type, state_key) DO UPDATE SET stream = excluded.stream",
        )?
        .execute(params![entry.event_id.as_str()])?;
        if let Some(membership) = &reset.membership {
            conn.prepare_cached(
                "INSERT INTO memberships (room_id, user_id, membership, event_id, stream) \
                 SELECT room_id, state_key, ?, event_id, stream FROM events WHERE event_id = ? \
                 ON CONFLICT (room_id, user_id) DO UPDATE SET \
                 membership = excluded.membership, event_id = excluded.event_id, \
                 stream = excluded.stream",
            )?
            .execute(params![membership.as_str(), entry.event_id.as_str()])?;
        }
    }
    Ok(())
}

/// Moves each receipt forward if it covers a later event than the stored one,
/// logging every advance.
fn insert_receipts(
    conn: &Connection,
    receipts: &[NewReceipt],
    last: &mut StreamPos,
) -> rusqlite::Result<Vec<Option<StreamPos>>> {
    let mut positions = Vec::with_capacity(receipts.len());
    for r in receipts {
        let next = *last + 1;
        let changed = conn
            .prepare_cached(
                "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, \
                 event_sender, event_stream, ts, stream) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET \
                 event_id = excluded.event_id, event_sender = excluded.event_sender, \
                 event_stream = excluded.event_stream, \
                 ts = excluded.ts, stream = excluded.stream \
                 WHERE excluded.event_stream > receipts.event_stream",
            )?
            .execute(params![
                r.room_id.as_str(),
                r.user_id.as_str(),
                r.receipt_type,
                r.thread_id.as_deref().unwrap_or(""),
                r.event_id.as_str(),
                r.event_sender.as_str(),
                r.event_stream,
                r.ts,
                next,
            ])?;
        if changed == 0 {
            positions.push(None);
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO receipt_log (room_id, user_id, receipt_type, event_stream, ts) \
             VALUES (?, ?, ?, ?, ?)",
        )?
        .execute(params![
            r.room_id.as_str(),
            r.user_id.as_str(),
            r.receipt_type,
            r.event_stream,
            r.ts
        ])?;
        *last = next;
        positions.push(Some(next));
    }
    Ok(positions)
}
