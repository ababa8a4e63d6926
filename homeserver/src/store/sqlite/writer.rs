//! The group-commit writer: one task, one connection, one transaction per batch.
//!
//! Every queued append that arrives while a batch is being committed joins the
//! next batch, so under load the cost of a commit (and its fsync) is shared by
//! many sends, and under light load a send waits for no timer.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::store::{NewEvent, StoreError, StoreResult, StreamPos};

/// Most appends folded into one transaction; bounds a batch's latency.
const MAX_BATCH: usize = 512;

pub enum AppendJob {
    Append {
        events: Vec<NewEvent>,
        reply: oneshot::Sender<StoreResult<Vec<StreamPos>>>,
    },
    /// Replies once everything queued before it has committed.
    Flush(oneshot::Sender<()>),
}

pub async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::UnboundedReceiver<AppendJob>,
    mut last: StreamPos,
    committed: Arc<AtomicI64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut replies = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        let start = last;
        let outcome =
            write_batch(&mut conn, &mut batch, &mut last, &mut replies, &mut flushes).await;
        match outcome {
            Ok(()) => {
                committed.store(last, Ordering::Release);
                for (reply, result) in replies {
                    let _ = reply.send(result);
                }
            }
            Err(err) => {
                // Nothing of this batch is durable: fail every job in it.
                tracing::error!(error = %err, "group commit failed");
                last = start;
                for (reply, _) in replies {
                    let _ = reply.send(Err(StoreError::Database(err.to_string())));
                }
            }
        }
        for flush in flushes {
            let _ = flush.send(());
        }
    }
    let _ = conn.close().await;
}

type Replies = Vec<(
    oneshot::Sender<StoreResult<Vec<StreamPos>>>,
    StoreResult<Vec<StreamPos>>,
)>;

async fn write_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<AppendJob>,
    last: &mut StreamPos,
    replies: &mut Replies,
    flushes: &mut Vec<oneshot::Sender<()>>,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    for job in batch.drain(..) {
        match job {
            AppendJob::Flush(done) => flushes.push(done),
            AppendJob::Append { events, reply } => {
                // A savepoint per job: one bad job (say, a duplicate
                // transaction id) fails alone, not the whole batch.
                sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
                let before = *last;
                let mut positions = Vec::with_capacity(events.len());
                let mut failure = None;
                for event in &events {
                    let pos = *last + 1;
                    match insert_event(&mut tx, event, pos).await {
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
                        sqlx::query("RELEASE job").execute(&mut *tx).await?;
                        replies.push((reply, Ok(positions)));
                    }
                    Some(err) => {
                        sqlx::query("ROLLBACK TO job").execute(&mut *tx).await?;
                        sqlx::query("RELEASE job").execute(&mut *tx).await?;
                        *last = before;
                        replies.push((reply, Err(err.into())));
                    }
                }
            }
        }
    }
    tx.commit().await
}

async fn insert_event(
    conn: &mut SqliteConnection,
    event: &NewEvent,
    pos: StreamPos,
) -> Result<(), sqlx::Error> {
    let pdu = event.pdu.to_string();
    let (txn_device, txn_id) = match &event.txn {
        Some((device, txn)) => (Some(device.as_str()), Some(txn.as_str())),
        None => (None, None),
    };
    sqlx::query(
        "INSERT INTO events (stream, event_id, room_id, sender, type, state_key, pdu, \
         txn_device, txn_id, visibility) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(pos)
    .bind(&event.event_id)
    .bind(&event.room_id)
    .bind(&event.sender)
    .bind(&event.kind)
    .bind(&event.state_key)
    .bind(&pdu)
    .bind(txn_device)
    .bind(txn_id)
    .bind(&event.visibility)
    .execute(&mut *conn)
    .await?;
    if let Some(state_key) = &event.state_key {
        sqlx::query(
            "INSERT INTO current_state (room_id, type, state_key, stream) VALUES (?, ?, ?, ?) \
             ON CONFLICT (room_id, type, state_key) DO UPDATE SET stream = excluded.stream",
        )
        .bind(&event.room_id)
        .bind(&event.kind)
        .bind(state_key)
        .bind(pos)
        .execute(&mut *conn)
        .await?;
        if let Some(membership) = &event.membership {
            sqlx::query(
                "INSERT INTO memberships (room_id, user_id, membership, event_id, stream) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, user_id) DO UPDATE SET \
                 membership = excluded.membership, event_id = excluded.event_id, \
                 stream = excluded.stream",
            )
            .bind(&event.room_id)
            .bind(state_key)
            .bind(membership)
            .bind(&event.event_id)
            .bind(pos)
            .execute(&mut *conn)
            .await?;
        }
    }
    if let Some((target, redacted)) = &event.redaction {
        sqlx::query("UPDATE events SET pdu = ? WHERE event_id = ?")
            .bind(redacted.to_string())
            .bind(target)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
