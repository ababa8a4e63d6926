//! One task per active room builds that room's events.
//!
//! Events of a room must be built one after another: each names the previous
//! one in `prev_events` and is checked against the state the previous ones
//! left. Requests for a room are sent to its actor, which drains everything
//! queued since its last round, builds those events in order and queues them
//! on the store as one append. A busy room thus pays one task hand-off per
//! round rather than a lock hand-off per event, and nothing a request started
//! is left half done if the client hangs up: the actor owns the work.
//!
//! Rooms are independent, so their actors run in parallel. An actor stops
//! when its room is idle and is started again by the next request.
//!
//! A round (`Core::round`) takes its steps from the files here: look up
//! retried transactions (`txns.rs`), build each request on the head
//! (`build.rs`), append the round and answer once it is durable
//! (`commit.rs`).

use parking_lot::Mutex;
use ruma_common::{
    OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

mod build;
mod commit;
mod import;
mod txns;

pub(super) use import::{ImportJob, Imported, Placed};

use self::commit::Batch;
use self::txns::RecentTxns;
use super::state::{RoomState, StateEntry};
use super::EventRequest;
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::federation::sender::Outbox;
use crate::service::keys::ServerKey;
use crate::service::timeline_cache::TimelineCache;
use crate::store::{EventBus, EventState, NewStateGroup, RoomStore, StateKeyed};

/// How long an actor waits for work before it stops.
const IDLE: Duration = Duration::from_secs(30);
/// Most requests built in one round.
const ROUND: usize = 512;
/// How long a send waits for its events to be on the cluster bus before it
/// is answered anyway (they are committed in the store either way).
const BUS_WAIT: Duration = Duration::from_secs(5);

/// `(room, user, device, txn)` of a client transaction.
pub type TxnKey = (OwnedRoomId, OwnedUserId, OwnedDeviceId, String);

/// In-memory head of one room. The state is shared copy-on-write with
/// readers that took a snapshot.
#[derive(Clone, Default)]
pub(super) struct RoomHandle {
    pub state: Arc<RoomState>,
    /// The forward extremities: events no other event names as a
    /// `prev_event` yet, newest last. A local event names them all (up to
    /// [`MAX_PREV_EVENTS`]), which merges forks another server's events
    /// opened. After a restart only the latest event is known (a fork is
    /// merged again by the next remote event that names both sides).
    pub extremities: Vec<OwnedEventId>,
    pub depth: i64,
    /// The state group of the current state (on a one-chain history, the
    /// latest state event): what new events are authorized against, and
    /// what the store checks is still current when they are appended.
    pub state_head: Option<OwnedEventId>,
    /// State groups stored as a difference since the last full one
    /// (`usize::MAX` when unknown: the next state event stores the state
    /// in full).
    pub deltas: usize,
}

impl RoomHandle {
    /// The `prev_events` of a new local event: the newest extremities.
    pub fn prev_events(&self) -> Vec<OwnedEventId> {
        let skip = self.extremities.len().saturating_sub(MAX_PREV_EVENTS);
        self.extremities[skip..].to_vec()
    }

    /// Moves the head past a new event that follows the current state (a
    /// local event, or a remote one on the same state): its state (only
    /// state events keep their content here), the extremities and depth.
    /// Returns the state head it was built on and where it stands in the
    /// room's state: a state event makes a group (its parent's plus itself,
    /// or the whole state every [`SNAPSHOT_EVERY`] groups) and becomes the
    /// head.
    pub fn advance(
        &mut self,
        room_id: &RoomId,
        event: Advance<'_>,
    ) -> (Option<OwnedEventId>, EventState) {
        let event_id = event.event_id.clone();
        let kind = event.kind.to_owned();
        let state_key = event.state_key.map(str::to_owned);
        let built_on = self.advance_head(event);
        let Some(state_key) = state_key else {
            let state = EventState {
                group: built_on.clone(),
                ..EventState::default()
            };
            return (built_on, state);
        };
        let snapshot = built_on.is_none() || self.deltas >= SNAPSHOT_EVERY;
        let entries = if snapshot {
            self.deltas = 0;
            self.state
                .entries()
                .map(|((kind, state_key), entry)| StateKeyed {
                    kind: kind.clone(),
                    state_key: state_key.clone(),
                    event_id: entry.event_id.clone(),
                })
                .collect()
        } else {
            self.deltas += 1;
            vec![StateKeyed {
                kind,
                state_key,
                event_id: event_id.clone(),
            }]
        };
        let state = EventState {
            group: Some(event_id.clone()),
            new_groups: vec![NewStateGroup {
                id: event_id.clone(),
                room_id: room_id.to_owned(),
                parent: built_on.clone(),
                snapshot,
                entries,
            }],
            head: Some(event_id),
            resets: Vec::new(),
        };
        (built_on, state)
    }

    /// Moves the head past an event that state resolution placed: the
    /// state entries it changes, the extremities and depth. Returns the
    /// state head it was built on and its state.
    pub fn place(
        &mut self,
        event: Advance<'_>,
        placed: Placed,
    ) -> (Option<OwnedEventId>, EventState) {
        let Placed {
            state,
            changes,
            dropped,
        } = placed;
        if !changes.is_empty() || !dropped.is_empty() {
            let current = Arc::make_mut(&mut self.state);
            for (kind, state_key, entry) in changes {
                current.insert(&kind, &state_key, entry);
            }
            for (kind, state_key) in dropped {
                current.remove(&kind, &state_key);
            }
        }
        self.extremities
            .retain(|id| !event.prev_events.contains(id));
        self.extremities.push(event.event_id.clone());
        self.depth = self.depth.max(event.depth);
        let built_on = self.state_head.clone();
        if let Some(head) = &state.head {
            self.state_head = Some(head.clone());
        }
        (built_on, state)
    }

    /// Moves the head past an event; returns the state head it was built
    /// on.
    fn advance_head(&mut self, event: Advance<'_>) -> Option<OwnedEventId> {
        let Advance {
            event_id,
            sender,
            kind,
            state_key,
            content,
            prev_events,
            depth,
        } = event;
        if let Some(key) = state_key {
            Arc::make_mut(&mut self.state).insert(
                kind,
                key,
                StateEntry {
                    event_id: event_id.clone(),
                    sender: sender.to_owned(),
                    content: content.clone(),
                },
            );
        }
        self.extremities.retain(|id| !prev_events.contains(id));
        self.extremities.push(event_id.clone());
        self.depth = self.depth.max(depth);
        if state_key.is_some() {
            self.state_head.replace(event_id.clone())
        } else {
            self.state_head.clone()
        }
    }
}

/// Most `prev_events` a local event names (the spec allows 20).
const MAX_PREV_EVENTS: usize = 10;
/// State groups stored as differences before one is stored in full: bounds
/// the walk that reads a group back.
const SNAPSHOT_EVERY: usize = 100;

/// What moving the head past one event needs to know of it.
pub(super) struct Advance<'a> {
    pub event_id: &'a OwnedEventId,
    pub sender: &'a UserId,
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub content: &'a Value,
    pub prev_events: &'a [OwnedEventId],
    pub depth: i64,
}

/// Work for a room's actor.
pub(super) enum Job {
    Send(SendJob),
    /// Reply with the current state, `None` if the room is unknown.
    Snapshot(oneshot::Sender<ServiceResult<Option<Arc<RoomState>>>>),
    /// Reply with the whole head (state, extremities, depth): what a
    /// template for another server's event is built on.
    Head(oneshot::Sender<ServiceResult<Option<RoomHandle>>>),
    /// An append failed: reload the head from the store.
    Reload,
    /// Events another server built, for a room this server joins.
    Import(ImportJob),
}

/// Build these events atomically (all or none) and reply, once durable,
/// with their ids.
pub(super) struct SendJob {
    pub sender: OwnedUserId,
    pub requests: Vec<EventRequest>,
    pub txn: Option<TxnKey>,
    /// The room is being created: start from empty state.
    pub create: bool,
    pub reply: oneshot::Sender<ServiceResult<Vec<OwnedEventId>>>,
    /// Earlier attempts that met a state change from another node.
    pub attempt: u8,
}

/// What building and committing events needs, shared by the room service,
/// every actor and the tasks that finish appends.
pub(super) struct Core {
    pub store: Arc<dyn RoomStore>,
    pub key: Arc<ServerKey>,
    pub server_name: OwnedServerName,
    bus: Arc<dyn EventBus>,
    cache: Arc<TimelineCache>,
    actors: Mutex<HashMap<OwnedRoomId, mpsc::UnboundedSender<Job>>>,
    recent_txns: Mutex<RecentTxns>,
    /// Where events go to the room's other servers; `None` when not
    /// federating.
    outbox: Option<Outbox>,
}

impl Core {
    pub fn new(
        store: Arc<dyn RoomStore>,
        bus: Arc<dyn EventBus>,
        cache: Arc<TimelineCache>,
        key: Arc<ServerKey>,
        server_name: OwnedServerName,
        outbox: Option<Outbox>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            key,
            server_name,
            bus,
            cache,
            actors: Mutex::new(HashMap::new()),
            recent_txns: Mutex::new(RecentTxns::default()),
            outbox,
        })
    }

    /// Where events and EDUs go to other servers, when federating.
    pub fn outbox(&self) -> Option<&Outbox> {
        self.outbox.as_ref()
    }

    /// Has a running actor reload its head from the store before its next
    /// round: another node appended to the room. An idle room has no actor
    /// and loads afresh on first use anyway.
    pub fn reload_if_running(&self, room_id: &RoomId) {
        if let Some(tx) = self.actors.lock().get(room_id) {
            let _ = tx.send(Job::Reload);
        }
    }

    /// Hands a job to the room's actor, starting one if none runs.
    pub fn submit(self: &Arc<Self>, room_id: &RoomId, mut job: Job) {
        let mut actors = self.actors.lock();
        if let Some(tx) = actors.get(room_id) {
            match tx.send(job) {
                Ok(()) => return,
                // The actor stopped after we looked it up: start a new one.
                Err(mpsc::error::SendError(back)) => job = back,
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(job);
        actors.insert(room_id.to_owned(), tx);
        tokio::spawn(self.clone().run(room_id.to_owned(), rx));
    }

    async fn run(self: Arc<Self>, room_id: OwnedRoomId, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut head: Option<RoomHandle> = None;
        let mut loaded = false;
        let mut jobs = Vec::with_capacity(ROUND);
        loop {
            let received = tokio::time::timeout(IDLE, rx.recv_many(&mut jobs, ROUND)).await;
            if !matches!(received, Ok(n) if n > 0) {
                // Idle: stop, unless a job slipped in while we decided to.
                let mut actors = self.actors.lock();
                if !rx.is_empty() {
                    continue;
                }
                actors.remove(&room_id);
                return;
            }
            if !loaded {
                match self.load(&room_id).await {
                    Ok(h) => head = h,
                    Err(err) => {
                        for job in jobs.drain(..) {
                            fail(job, err.clone());
                        }
                        continue;
                    }
                }
                loaded = true;
            }
            self.round(&room_id, &mut head, &mut loaded, &mut jobs)
                .await;
            if head.is_none() && loaded && rx.is_empty() {
                // Unknown rooms keep no actor: a flood of bogus ids costs nothing.
                let mut actors = self.actors.lock();
                if rx.is_empty() {
                    actors.remove(&room_id);
                    return;
                }
            }
        }
    }

    /// One round: build every queued request in order, queue all the events
    /// as one append, and leave a task to reply once they are durable.
    async fn round(
        self: &Arc<Self>,
        room_id: &RoomId,
        head: &mut Option<RoomHandle>,
        loaded: &mut bool,
        jobs: &mut Vec<Job>,
    ) {
        let durable_txns = self.durable_txns(room_id, jobs).await;
        let mut batch = Batch::default();
        for job in jobs.drain(..) {
            match job {
                // Reload at once if nothing of this round was built on the
                // old head yet, so the jobs behind it see the fresh one.
                Job::Reload if batch.is_empty() => match self.load(room_id).await {
                    Ok(fresh) => {
                        *head = fresh;
                        *loaded = true;
                    }
                    Err(_) => *loaded = false,
                },
                Job::Reload => *loaded = false,
                Job::Snapshot(reply) => {
                    let _ = reply.send(Ok(head.as_ref().map(|h| h.state.clone())));
                }
                Job::Head(reply) => {
                    let _ = reply.send(Ok(head.clone()));
                }
                Job::Send(job) => {
                    self.build(room_id, head, &durable_txns, job, &mut batch)
                        .await
                }
                Job::Import(job) => self.import(room_id, head, job, &mut batch),
            }
        }
        if !batch.is_empty() {
            if let (Some(_), Some(head)) = (&self.outbox, head.as_ref()) {
                if batch.has_outgoing() {
                    batch.destinations = head.state.other_servers(&self.server_name);
                }
            }
            self.append(room_id, loaded, batch);
        }
    }
}

fn fail(job: Job, err: ServiceError) {
    match job {
        Job::Send(SendJob { reply, .. }) => {
            let _ = reply.send(Err(err));
        }
        Job::Snapshot(reply) => {
            let _ = reply.send(Err(err));
        }
        Job::Head(reply) => {
            let _ = reply.send(Err(err));
        }
        Job::Import(ImportJob { reply, .. }) => {
            let _ = reply.send(Err(err));
        }
        Job::Reload => {}
    }
}
