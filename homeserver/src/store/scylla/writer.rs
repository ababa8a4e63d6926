//! The write path: one task copies committed appends to ScyllaDB in queue
//! order, and tracks how far every append of this process is readable there.
//!
//! Appends are committed by the relational engine in the order they were
//! queued; the task awaits their commits in that same order, gathers every
//! append queued meanwhile into one group, writes the group's rows
//! concurrently, and only then resolves the group's durable futures. So an
//! acknowledged event is readable from Scylla, and `written` (below which
//! every committed position is in Scylla) only grows.

use parking_lot::Mutex;
use ruma_common::{EventId, OwnedEventId};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::timeline::TimelineTables;
use crate::store::{Durable, NewEvent, RoomStore, StoreError, StoreResult, StoredEvent, StreamPos};

/// Appends gathered into one group at most.
const MAX_GROUP: usize = 512;
/// Events read from the relational engine per step of a catch-up.
const CATCH_UP_PAGE: usize = 1000;
/// Waits between attempts at writing a group.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(200), Duration::from_secs(1)];
/// How often a writer that failed tries to catch up when no append comes.
const REPAIR_EVERY: Duration = Duration::from_secs(5);

/// One append on its way to Scylla.
pub struct WriteJob {
    pub events: Vec<NewEvent>,
    /// The relational engine's commit of `events`.
    pub committed: Durable,
    pub reply: oneshot::Sender<StoreResult<Vec<StreamPos>>>,
}

/// How far Scylla has caught up with this process's appends.
#[derive(Debug, Default)]
pub struct Progress {
    state: Mutex<ProgressState>,
}

#[derive(Debug, Default)]
struct ProgressState {
    /// Appends queued and not yet written (or failed).
    in_flight: usize,
    /// Every position up to this one committed by this process is in Scylla.
    written: StreamPos,
    /// A group failed to reach Scylla: positions above `written` may be
    /// missing until a catch-up succeeds.
    dirty: bool,
}

impl Progress {
    pub fn new(written: StreamPos) -> Self {
        Self {
            state: Mutex::new(ProgressState {
                written,
                ..ProgressState::default()
            }),
        }
    }

    /// Called before an append is handed to the relational engine.
    pub fn begin(&self) {
        self.lock().in_flight += 1;
    }

    /// An append left the pipeline without being written (refused at queueing).
    pub fn abandon(&self) {
        self.lock().in_flight -= 1;
    }

    /// The highest position readers may rely on, given the relational
    /// engine's `head` read *before* this call: with nothing in flight every
    /// append that `head` covers is written, else only up to `written`.
    pub fn visible(&self, head: StreamPos) -> StreamPos {
        let state = self.lock();
        if state.in_flight == 0 && !state.dirty {
            head
        } else {
            head.min(state.written)
        }
    }

    fn finish(&self, jobs: usize, outcome: Result<Option<StreamPos>, ()>) {
        let mut state = self.lock();
        match outcome {
            Ok(high) => {
                state.written = state.written.max(high.unwrap_or(StreamPos::MIN));
                state.dirty = false;
            }
            Err(()) => state.dirty = true,
        }
        state.in_flight -= jobs;
    }

    fn dirty_from(&self) -> Option<StreamPos> {
        let state = self.lock();
        state.dirty.then_some(state.written)
    }

    fn written(&self) -> StreamPos {
        self.lock().written
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, ProgressState> {
        self.state.lock()
    }
}

/// The event as the relational engine committed it at `stream`.
pub fn stored(event: &NewEvent, stream: StreamPos) -> StoredEvent {
    StoredEvent {
        stream,
        event_id: event.event_id.clone(),
        room_id: event.room_id.clone(),
        sender: event.sender.clone(),
        kind: event.kind.clone(),
        state_key: event.state_key.clone(),
        pdu: event.pdu.clone(),
        txn: event.txn.clone(),
        visibility: event.visibility.clone(),
    }
}

/// The event a redaction PDU redacts (`content.redacts` from room version
/// 11, top-level `redacts` before).
fn redacts(pdu: &Value) -> Option<&EventId> {
    pdu.get("content")
        .and_then(|c| c.get("redacts"))
        .or_else(|| pdu.get("redacts"))
        .and_then(Value::as_str)
        .and_then(|id| id.try_into().ok())
}

/// Copies every event the relational engine committed after `from` to
/// Scylla, with the redactions they made, and records the progress under
/// `writer`. Returns the last position copied. Idempotent: rows are upserts
/// of what the relational engine holds now.
pub async fn catch_up(
    inner: &dyn RoomStore,
    timeline: &dyn TimelineTables,
    writer: &str,
    from: StreamPos,
) -> StoreResult<StreamPos> {
    let mut at = from;
    loop {
        let events = inner.events_after(at, CATCH_UP_PAGE).await?;
        let Some(last) = events.last() else {
            return Ok(at);
        };
        let last = last.stream;
        timeline.write_events(&events).await?;
        for event in events.iter().filter(|e| e.kind == "m.room.redaction") {
            let Some(target) = redacts(&event.pdu) else {
                continue;
            };
            // The target as the relational engine holds it now: redacted.
            if let Some(current) = inner.get_event(target).await? {
                timeline.redact(target, &current.pdu).await?;
            }
        }
        timeline.set_progress(writer, last).await?;
        at = last;
    }
}

/// The writer task: runs until every sender of `jobs` is gone.
pub async fn run(
    mut jobs: mpsc::UnboundedReceiver<WriteJob>,
    inner: Arc<dyn RoomStore>,
    timeline: Arc<dyn TimelineTables>,
    progress: Arc<Progress>,
    writer: String,
) {
    loop {
        let first = if progress.dirty_from().is_some() {
            match tokio::time::timeout(REPAIR_EVERY, jobs.recv()).await {
                Ok(None) => return,
                Ok(Some(job)) => Some(job),
                Err(_) => None,
            }
        } else {
            match jobs.recv().await {
                None => return,
                Some(job) => Some(job),
            }
        };
        let mut group: Vec<WriteJob> = first.into_iter().collect();
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        write_group(group, inner.as_ref(), timeline.as_ref(), &progress, &writer).await;
    }
}

async fn write_group(
    group: Vec<WriteJob>,
    inner: &dyn RoomStore,
    timeline: &dyn TimelineTables,
    progress: &Progress,
    writer: &str,
) {
    let jobs = group.len();
    // Commits resolve in queue order; awaiting them in order loses nothing.
    let mut outcomes = Vec::with_capacity(jobs);
    let mut rows = Vec::new();
    let mut redactions = Vec::new();
    for job in group {
        let result = job.committed.await;
        if let Ok(positions) = &result {
            for (event, &stream) in job.events.iter().zip(positions) {
                rows.push(stored(event, stream));
                if let Some((target, pdu)) = &event.redaction {
                    redactions.push((target.clone(), pdu.clone()));
                }
            }
        }
        outcomes.push((job.reply, result));
    }
    let high = rows.iter().map(|e| e.stream).max();
    let mut attempt = 0;
    let written = loop {
        let result = match progress.dirty_from() {
            // Something before this group may be missing: copy everything
            // after the last known-good position (this group included).
            Some(from) => catch_up(inner, timeline, writer, from).await.map(Some),
            None => write_rows(timeline, &rows, &redactions)
                .await
                .map(|()| high),
        };
        match result {
            Ok(high) => break Ok(high),
            Err(err) if attempt < RETRY_DELAYS.len() => {
                tracing::warn!(%err, attempt, "scylla timeline write failed, retrying");
                tokio::time::sleep(RETRY_DELAYS[attempt]).await;
                attempt += 1;
            }
            Err(err) => break Err(err),
        }
    };
    match written {
        Ok(high) => {
            progress.finish(jobs, Ok(high));
            for (reply, result) in outcomes {
                let _ = reply.send(result);
            }
            // After the replies: the checkpoint only shortens a later
            // catch-up, it need not delay an acknowledgement.
            if high.is_some() {
                if let Err(err) = timeline.set_progress(writer, progress.written()).await {
                    tracing::warn!(%err, "scylla timeline checkpoint failed");
                }
            }
        }
        Err(err) => {
            tracing::error!(%err, "scylla timeline write failed; catching up later");
            progress.finish(jobs, Err(()));
            for (reply, result) in outcomes {
                // Committed, but not readable: the client retries with the
                // same transaction id and gets the same event back.
                let _ = reply.send(result.and(Err(err.clone())));
            }
        }
    }
}

async fn write_rows(
    timeline: &dyn TimelineTables,
    rows: &[StoredEvent],
    redactions: &[(OwnedEventId, Value)],
) -> StoreResult<()> {
    timeline.write_events(rows).await?;
    // After the rows: a redaction may target an event of the same group.
    for (target, pdu) in redactions {
        timeline.redact(target, pdu).await?;
    }
    Ok(())
}

/// Queues `events` with the relational engine and the writer; see
/// [`RoomStore::append`].
pub fn append(
    inner: &dyn RoomStore,
    jobs: &mpsc::UnboundedSender<WriteJob>,
    progress: &Progress,
    events: Vec<NewEvent>,
) -> StoreResult<Durable> {
    progress.begin();
    let committed = match inner.append(events.clone()) {
        Ok(committed) => committed,
        Err(err) => {
            progress.abandon();
            return Err(err);
        }
    };
    let (reply, done) = oneshot::channel();
    if jobs
        .send(WriteJob {
            events,
            committed,
            reply,
        })
        .is_err()
    {
        progress.abandon();
        return Err(StoreError::Closed);
    }
    Ok(Box::pin(async move {
        done.await.map_err(|_| StoreError::Closed)?
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use ruma_common::event_id;

    #[test]
    fn readers_see_only_what_is_written() {
        let progress = Progress::new(10);
        // Nothing in flight: the relational engine's head is readable.
        assert_eq!(progress.visible(12), 12);
        progress.begin();
        progress.begin();
        // Two appends in flight: only what is known written.
        assert_eq!(progress.visible(14), 10);
        progress.finish(1, Ok(Some(12)));
        assert_eq!(progress.visible(14), 12);
        progress.finish(1, Ok(Some(14)));
        assert_eq!(progress.visible(14), 14);
        // A failed group holds readers back until a catch-up succeeds.
        progress.begin();
        progress.finish(1, Err(()));
        assert_eq!(progress.dirty_from(), Some(14));
        assert_eq!(progress.visible(20), 14);
        progress.begin();
        progress.finish(1, Ok(Some(20)));
        assert_eq!(progress.visible(20), 20);
        // A refused append leaves no trace.
        progress.begin();
        progress.abandon();
        assert_eq!(progress.visible(21), 21);
    }

    #[test]
    fn redactions_name_their_target_in_either_room_version() {
        assert_eq!(
            redacts(&json!({"content": {"redacts": "$new"}, "redacts": "$old"})),
            Some(event_id!("$new"))
        );
        assert_eq!(
            redacts(&json!({"content": {}, "redacts": "$old"})),
            Some(event_id!("$old"))
        );
        assert_eq!(redacts(&json!({"content": {}})), None);
    }
}
