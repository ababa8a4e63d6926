//! The group-commit writer: one task per process, one transaction per batch.
//!
//! Every append or receipt queued while a batch commits joins the next one,
//! so under load one commit (one WAL flush) is shared by many sends, and
//! under light load nothing waits for a timer. Queue order is commit order
//! within the process; across processes the counter rows in
//! `stream_positions`, locked at the start of each batch until its commit,
//! put every batch's positions after those of every batch committed before.

use std::collections::HashMap;

use ruma_common::{EventId, RoomId};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, Row};
use tokio::sync::{mpsc, oneshot};

use super::bulk;
use super::sql::Job;
use crate::store::{NewEvent, NewReceipt, StoreError, StoreResult, StreamPos};

/// Most jobs folded into one transaction; bounds a batch's latency.
const MAX_BATCH: usize = 512;

/// A reply owed once the batch's outcome is known, with the job's own result.
type Owed<T> = (oneshot::Sender<StoreResult<T>>, StoreResult<T>);

#[derive(Default)]
struct Done {
    appends: Vec<Owed<Vec<StreamPos>>>,
    receipts: Vec<Owed<Vec<Option<StreamPos>>>>,
    flushes: Vec<oneshot::Sender<()>>,
}

/// Runs until every sender is gone, on a connection of its own: the
/// transaction's first and last statements travel together with BEGIN and
/// COMMIT (simple-query batches), which a pooled transaction cannot do.
pub async fn run(options: PgConnectOptions, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut conn: Option<PgConnection> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut done = Done::default();
        let result = match connection(&mut conn, &options).await {
            Ok(c) => write_batch(c, &mut batch, &mut done).await,
            Err(err) => {
                // The jobs were never split into `done`: answer them here.
                split(&mut batch, &mut done);
                Err(err)
            }
        };
        match result {
            Ok(()) => {
                for (reply, result) in done.appends {
                    let _ = reply.send(result);
                }
                for (reply, result) in done.receipts {
                    let _ = reply.send(result);
                }
            }
            Err(err) => {
                // Nothing of this batch is durable: fail every job in it.
                // (A commit whose acknowledgement was lost may in fact have
                // committed; a retried send then finds its txn id.)
                tracing::error!(error = %crate::store::chain(&err), "postgres group commit failed");
                if let Some(mut c) = conn.take() {
                    // Reuse the connection only if it is sane again.
                    if c.execute("ROLLBACK").await.is_ok() {
                        conn = Some(c);
                    }
                }
                for (reply, _) in done.appends {
                    let _ = reply.send(Err(err.clone()));
                }
                for (reply, _) in done.receipts {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
        for flush in done.flushes {
            let _ = flush.send(());
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}

/// The writer's connection, (re)opened when there is none.
async fn connection<'a>(
    conn: &'a mut Option<PgConnection>,
    options: &PgConnectOptions,
) -> StoreResult<&'a mut PgConnection> {
    if conn.is_none() {
        *conn = Some(PgConnection::connect_with(options).await?);
    }
    Ok(conn.as_mut().expect("just connected"))
}

/// Moves each job's reply into `done`, owed an error until its job has run:
/// if the batch fails midway, `run` answers every one with the batch's error.
fn split(batch: &mut Vec<Job>, done: &mut Done) -> (Vec<Vec<NewEvent>>, Vec<Vec<NewReceipt>>) {
    let mut appends = Vec::new();
    let mut receipts = Vec::new();
    for job in batch.drain(..) {
        match job {
            Job::Flush(flush) => done.flushes.push(flush),
            Job::Append { events, reply } => {
                appends.push(events);
                done.appends.push((reply, Err(StoreError::Closed)));
            }
            Job::Receipts {
                receipts: list,
                reply,
            } => {
                receipts.push(list);
                done.receipts.push((reply, Err(StoreError::Closed)));
            }
        }
    }
    (appends, receipts)
}

/// Last used position of each stream this batch writes, read under the lock.
#[derive(Default, Clone, Copy)]
struct Counters {
    events: Option<StreamPos>,
    receipts: Option<StreamPos>,
}

async fn write_batch(
    tx: &mut PgConnection,
    batch: &mut Vec<Job>,
    done: &mut Done,
) -> StoreResult<()> {
    let (appends, receipts) = split(batch, done);
    if appends.is_empty() && receipts.is_empty() {
        return Ok(());
    }
    // One lone event is cheapest on its own; anything more goes in bulk
    // first (behind a savepoint), and job by job only when a conflict sent
    // it back.
    let lone = appends.len() == 1 && appends[0].len() == 1;
    let use_bulk = !appends.is_empty() && !lone;
    let start = begin(tx, !appends.is_empty(), !receipts.is_empty(), use_bulk).await?;
    let mut counters = start;
    if let Some(last) = counters.events.as_mut() {
        let bulk = match use_bulk {
            true => bulk::append_jobs(tx, &appends, last).await?,
            false => None,
        };
        match bulk {
            Some(positions) => {
                for (job_positions, owed) in positions.into_iter().zip(&mut done.appends) {
                    owed.1 = Ok(job_positions);
                }
            }
            None => {
                for (events, owed) in appends.iter().zip(&mut done.appends) {
                    owed.1 = append_job(tx, events, last).await?;
                }
            }
        }
    }
    if let Some(last) = counters.receipts.as_mut() {
        let positions = bulk::set_receipts(tx, &receipts, last).await?;
        for (job_positions, owed) in positions.into_iter().zip(&mut done.receipts) {
            owed.1 = Ok(job_positions);
        }
    }
    // The counters go back with the COMMIT, in one round trip; only those
    // that moved. They are integers we computed, so formatting them into
    // the statement is safe.
    let mut finish = String::new();
    for (name, before, after) in [
        ("events", start.events, counters.events),
        ("receipts", start.receipts, counters.receipts),
    ] {
        if let Some(after) = after.filter(|a| Some(*a) != before) {
            finish.push_str(&format!(
                "UPDATE stream_positions SET pos = {after} WHERE name = '{name}'; "
            ));
        }
    }
    finish.push_str("COMMIT");
    tx.execute(finish.as_str()).await?;
    Ok(())
}

/// Opens the transaction and locks the counter rows this batch needs, in one
/// round trip. Always in name order, so two processes' writers can never
/// deadlock; the locks are held until COMMIT (see the module docs).
async fn begin(
    tx: &mut PgConnection,
    events: bool,
    receipts: bool,
    savepoint: bool,
) -> StoreResult<Counters> {
    let names = match (events, receipts) {
        (true, true) => "'events', 'receipts'",
        (true, false) => "'events'",
        _ => "'receipts'",
    };
    let mut sql = format!(
        "BEGIN; SELECT name, pos FROM stream_positions WHERE name IN ({names}) \
         ORDER BY name FOR UPDATE;"
    );
    if savepoint {
        sql.push_str(" SAVEPOINT bulk;");
    }
    let rows = tx.fetch_all(sql.as_str()).await?;
    let mut counters = Counters::default();
    for row in rows {
        let name: String = row.try_get(0)?;
        let pos: i64 = row.try_get(1)?;
        match name.as_str() {
            "events" => counters.events = Some(pos),
            "receipts" => counters.receipts = Some(pos),
            _ => {}
        }
    }
    if counters.events.is_none() && events || counters.receipts.is_none() && receipts {
        return Err(StoreError::corrupt_says("stream_positions row missing"));
    }
    Ok(counters)
}

/// One append job: all of its events or none. A job of one event needs no
/// savepoint: its only expected failure, a duplicate event or transaction id,
/// writes nothing (`ON CONFLICT DO NOTHING`). Larger jobs (`createRoom`'s
/// initial state) roll back to a savepoint, so one bad job fails alone and
/// the rest of the batch commits. The outer error fails the whole batch.
async fn append_job(
    tx: &mut PgConnection,
    events: &[NewEvent],
    last: &mut StreamPos,
) -> StoreResult<StoreResult<Vec<StreamPos>>> {
    // Checked before anything is written, so a stale job needs no rollback.
    let Some(state_heads) = super::state_head::check(tx, events.iter()).await? else {
        return Ok(Err(StoreError::Stale));
    };
    let savepoint = events.len() > 1;
    if savepoint {
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
    }
    let before = *last;
    let mut positions = Vec::with_capacity(events.len());
    let mut heads: HashMap<&RoomId, (&EventId, StreamPos)> = HashMap::new();
    let mut failure = None;
    for event in events {
        let pos = *last + 1;
        match insert_event(tx, event, pos).await {
            Ok(true) => {
                *last = pos;
                positions.push(pos);
                heads.insert(&event.room_id, (&event.event_id, pos));
            }
            Ok(false) => {
                failure = Some(StoreError::Conflict);
                break;
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    if failure.is_none() {
        for (room_id, (event_id, pos)) in heads {
            if let Err(err) = advance_head(tx, room_id, event_id, pos).await {
                failure = Some(err);
                break;
            }
        }
    }
    if failure.is_none() {
        if let Err(err) = super::state_head::store(tx, &state_heads).await {
            failure = Some(err);
        }
    }
    match failure {
        None => {
            if savepoint {
                sqlx::query("RELEASE SAVEPOINT job")
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Ok(positions))
        }
        Some(err) => {
            *last = before;
            if savepoint {
                sqlx::query("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
                    .execute(&mut *tx)
                    .await?;
            } else if !matches!(err, StoreError::Conflict) {
                // Any other error aborted the transaction: the batch fails.
                return Err(err);
            }
            Ok(Err(err))
        }
    }
}

/// Moves the room's head to its newest event.
///
/// This is where a multi-writer room check belongs: add
/// `AND last_event_id IS NOT DISTINCT FROM $expected` (the head the event was
/// built on) and fail the job with `StoreError::Conflict` when no row
/// matches; with a savepoint for every job, that conflict fails the job
/// alone. The row lock taken here is held to commit, so the check and the
/// move are atomic across processes.
async fn advance_head(
    tx: &mut PgConnection,
    room_id: &RoomId,
    event_id: &EventId,
    pos: StreamPos,
) -> StoreResult<()> {
    sqlx::query("UPDATE rooms SET last_event_id = $2, last_stream = $3 WHERE room_id = $1")
        .bind(room_id.as_str())
        .bind(event_id.as_str())
        .bind(pos)
        .execute(tx)
        .await?;
    Ok(())
}

/// Writes one event and the views it changes; `false` when its event id or
/// transaction id is already taken (nothing written).
async fn insert_event(
    tx: &mut PgConnection,
    event: &NewEvent,
    pos: StreamPos,
) -> StoreResult<bool> {
    let (txn_device, txn_id) = match &event.txn {
        Some((device, txn)) => (Some(device.as_str()), Some(txn.as_str())),
        None => (None, None),
    };
    let inserted = sqlx::query(
        "INSERT INTO events (stream, event_id, room_id, sender, type, state_key, pdu, \
         txn_device, txn_id, visibility, state_group) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
    )
    .bind(pos)
    .bind(event.event_id.as_str())
    .bind(event.room_id.as_str())
    .bind(event.sender.as_str())
    .bind(&event.kind)
    .bind(&event.state_key)
    .bind(event.pdu.to_string())
    .bind(txn_device)
    .bind(txn_id)
    .bind(&event.visibility)
    .bind(event.state.group.as_ref().map(|g| g.as_str()))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    super::state_groups::insert(tx, std::iter::once(event)).await?;
    if let Some(state_key) = &event.state_key {
        sqlx::query(
            "INSERT INTO current_state (room_id, type, state_key, stream) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, type, state_key) DO UPDATE SET stream = excluded.stream",
        )
        .bind(event.room_id.as_str())
        .bind(&event.kind)
        .bind(state_key)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        if let Some(membership) = &event.membership {
            sqlx::query(
                "INSERT INTO memberships (room_id, user_id, membership, event_id, stream) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id) DO UPDATE SET \
                 membership = excluded.membership, event_id = excluded.event_id, \
                 stream = excluded.stream",
            )
            .bind(event.room_id.as_str())
            .bind(state_key)
            .bind(membership.as_str())
            .bind(event.event_id.as_str())
            .bind(pos)
            .execute(&mut *tx)
            .await?;
        }
    }
    if let Some((target, redacted)) = &event.redaction {
        sqlx::query("UPDATE events SET pdu = $1 WHERE event_id = $2")
            .bind(redacted.to_string())
            .bind(target.as_str())
            .execute(&mut *tx)
            .await?;
    }
    super::state_groups::reset_current_state(tx, event).await?;
    Ok(true)
}
