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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::auth::{authorize, Proposed};
use super::state::{RoomState, StateEntry};
use super::{now_ms, EventRequest};
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::service::keys::ServerKey;
use crate::service::pdu::{build_pdu, redact_pdu, PduParts};
use crate::service::timeline_cache::TimelineCache;
use crate::store::cluster::ClusterMessage;
use crate::store::{
    Durable, EventBus, NewEvent, RoomStore, StoreError, StoredEvent, StreamNotice, StreamPos,
};

/// How long an actor waits for work before it stops.
const IDLE: Duration = Duration::from_secs(30);
/// Most requests built in one round.
const ROUND: usize = 512;
/// How long a send waits for its events to be on the cluster bus before it
/// is answered anyway (they are committed in the store either way).
const BUS_WAIT: Duration = Duration::from_secs(5);
/// Recent transactions remembered; far more than can be in flight at once.
const RECENT_TXNS: usize = 65_536;

/// `(room, user, device, txn)` of a client transaction.
pub type TxnKey = (String, String, String, String);

/// In-memory head of one room. The state is shared copy-on-write with
/// readers that took a snapshot.
#[derive(Clone, Default)]
pub(super) struct RoomHandle {
    pub state: Arc<RoomState>,
    pub last_event_id: Option<String>,
    pub depth: i64,
    /// The latest state event: what new events are authorized against, and
    /// what the store checks is still current when they are appended.
    pub state_head: Option<String>,
}

/// Work for a room's actor.
pub(super) enum Job {
    /// Build these events atomically (all or none) and reply, once durable,
    /// with their ids.
    Send {
        sender: String,
        requests: Vec<EventRequest>,
        txn: Option<TxnKey>,
        /// The room is being created: start from empty state.
        create: bool,
        reply: oneshot::Sender<ServiceResult<Vec<String>>>,
        /// Earlier attempts that met a state change from another node.
        attempt: u8,
    },
    /// Reply with the current state, `None` if the room is unknown.
    Snapshot(oneshot::Sender<ServiceResult<Option<Arc<RoomState>>>>),
    /// An append failed: reload the head from the store.
    Reload,
}

/// Transaction ids of recent sends, queued or durable. A retry that arrives
/// while its first attempt is still in flight finds its event id here; older
/// ones are found in the store.
#[derive(Default)]
struct RecentTxns {
    ids: HashMap<TxnKey, String>,
    order: VecDeque<TxnKey>,
}

impl RecentTxns {
    fn insert(&mut self, key: TxnKey, event_id: String) {
        if self.order.len() >= RECENT_TXNS {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.ids.insert(key, event_id);
    }
}

/// What building and committing events needs, shared by the room service,
/// every actor and the tasks that finish appends.
pub(super) struct Core {
    pub store: Arc<dyn RoomStore>,
    pub key: Arc<ServerKey>,
    pub server_name: String,
    bus: Arc<dyn EventBus>,
    cache: Arc<TimelineCache>,
    actors: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
    recent_txns: Mutex<RecentTxns>,
}

/// An event as it will be cached once its position is known.
struct Committed {
    event: StoredEvent,
    redaction: Option<(String, Arc<Value>)>,
}

impl Committed {
    fn from_new(e: &NewEvent) -> Self {
        Self {
            event: StoredEvent {
                stream: 0,
                event_id: e.event_id.clone(),
                room_id: e.room_id.clone(),
                sender: e.sender.clone(),
                kind: e.kind.clone(),
                state_key: e.state_key.clone(),
                pdu: e.pdu.clone(),
                txn: e.txn.clone(),
                visibility: e.visibility.clone(),
            },
            redaction: e
                .redaction
                .as_ref()
                .map(|(target, pdu)| (target.clone(), Arc::new(pdu.clone()))),
        }
    }
}

/// A reply owed once a round's append is durable, and (on a node of a
/// cluster) what is needed to build the request again.
type Owed = (
    oneshot::Sender<ServiceResult<Vec<String>>>,
    Vec<String>,
    Option<TxnKey>,
    Option<Retry>,
);

/// A request kept for another attempt: in a cluster, another node can change
/// a room's state between authorizing an event here and appending it.
struct Retry {
    sender: String,
    requests: Vec<EventRequest>,
    create: bool,
    attempt: u8,
}

/// Attempts per request before a conflicting room gives up on it.
const MAX_ATTEMPTS: u8 = 8;

impl Core {
    pub fn new(
        store: Arc<dyn RoomStore>,
        bus: Arc<dyn EventBus>,
        cache: Arc<TimelineCache>,
        key: Arc<ServerKey>,
        server_name: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            key,
            server_name,
            bus,
            cache,
            actors: Mutex::new(HashMap::new()),
            recent_txns: Mutex::new(RecentTxns::default()),
        })
    }

    pub fn recent_txn(&self, key: &TxnKey) -> Option<String> {
        self.recent_txns
            .lock()
            .expect("txn lock")
            .ids
            .get(key)
            .cloned()
    }

    /// Has a running actor reload its head from the store before its next
    /// round: another node appended to the room. An idle room has no actor
    /// and loads afresh on first use anyway.
    pub fn reload_if_running(&self, room_id: &str) {
        if let Some(tx) = self.actors.lock().expect("actors lock").get(room_id) {
            let _ = tx.send(Job::Reload);
        }
    }

    /// Hands a job to the room's actor, starting one if none runs.
    pub fn submit(self: &Arc<Self>, room_id: &str, mut job: Job) {
        let mut actors = self.actors.lock().expect("actors lock");
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

    async fn run(self: Arc<Self>, room_id: String, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut head: Option<RoomHandle> = None;
        let mut loaded = false;
        let mut jobs = Vec::with_capacity(ROUND);
        loop {
            let received = tokio::time::timeout(IDLE, rx.recv_many(&mut jobs, ROUND)).await;
            if !matches!(received, Ok(n) if n > 0) {
                // Idle: stop, unless a job slipped in while we decided to.
                let mut actors = self.actors.lock().expect("actors lock");
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
                let mut actors = self.actors.lock().expect("actors lock");
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
        room_id: &str,
        head: &mut Option<RoomHandle>,
        loaded: &mut bool,
        jobs: &mut Vec<Job>,
    ) {
        let (durable_txns, durable_txns_error) = match self.durable_txns(room_id, jobs).await {
            Ok(found) => (found, Ok(())),
            Err(err) => (HashMap::new(), Err(err)),
        };
        let mut events: Vec<NewEvent> = Vec::new();
        let mut owed: Vec<Owed> = Vec::new();
        for job in jobs.drain(..) {
            match job {
                // Reload at once if nothing of this round was built on the
                // old head yet, so the jobs behind it see the fresh one.
                Job::Reload if events.is_empty() => match self.load(room_id).await {
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
                Job::Send {
                    sender,
                    requests,
                    txn,
                    create,
                    reply,
                    attempt,
                } => {
                    // Sent already: by this node (remembered), or found in
                    // the store (committed before a restart, or by another
                    // node).
                    let seen = txn.as_ref().and_then(|k| {
                        self.recent_txn(k).map(|id| (id, false)).or_else(|| {
                            durable_txns
                                .get(&(k.1.clone(), k.2.clone(), k.3.clone()))
                                .map(|id| (id.clone(), true))
                        })
                    });
                    if let Some((event_id, from_store)) = seen {
                        if from_store && self.bus.clustered() {
                            // Committed by a node that died before it
                            // answered, and maybe before Kafka had the
                            // event: the push group decides from Kafka, so
                            // it is shared again before the answer. Nodes
                            // and the push group ignore what they have.
                            let core = self.clone();
                            tokio::spawn(async move {
                                core.share_again(&event_id).await;
                                let _ = reply.send(Ok(vec![event_id]));
                            });
                        } else {
                            let _ = reply.send(Ok(vec![event_id]));
                        }
                        continue;
                    }
                    if let Err(err) = &durable_txns_error {
                        let _ = reply.send(Err(err.clone()));
                        continue;
                    }
                    let base = match (head.as_ref(), create) {
                        (None, true) => RoomHandle::default(),
                        (Some(h), false) => h.clone(),
                        (Some(_), true) => {
                            let _ =
                                reply.send(Err(ServiceError::forbidden("The room already exists")));
                            continue;
                        }
                        (None, false) => {
                            let _ = reply.send(Err(ServiceError::not_found("Unknown room")));
                            continue;
                        }
                    };
                    // Only a cluster can race: a single node keeps no copy.
                    let retry = (self.bus.clustered() && attempt < MAX_ATTEMPTS).then(|| Retry {
                        sender: sender.clone(),
                        requests: requests.clone(),
                        create,
                        attempt: attempt + 1,
                    });
                    match self
                        .prepare_all(base, room_id, &sender, requests, txn.as_ref())
                        .await
                    {
                        Ok((next, built)) => {
                            let ids: Vec<String> =
                                built.iter().map(|e| e.event_id.clone()).collect();
                            if let (Some(key), Some(id)) = (&txn, ids.first()) {
                                self.recent_txns
                                    .lock()
                                    .expect("txn lock")
                                    .insert(key.clone(), id.clone());
                            }
                            *head = Some(next);
                            events.extend(built);
                            owed.push((reply, ids, txn, retry));
                        }
                        // In a cluster this head may lag a change made on
                        // another node that allows the request: confirm the
                        // refusal once against a fresh head.
                        Err(err)
                            if err.kind == ErrorKind::Forbidden
                                && attempt == 0
                                && retry.is_some() =>
                        {
                            let retry = retry.expect("checked above");
                            self.submit(room_id, Job::Reload);
                            self.submit(
                                room_id,
                                Job::Send {
                                    sender: retry.sender,
                                    requests: retry.requests,
                                    txn,
                                    create: retry.create,
                                    reply,
                                    attempt: retry.attempt,
                                },
                            );
                        }
                        Err(err) => {
                            let _ = reply.send(Err(err));
                        }
                    }
                }
            }
        }
        if events.is_empty() {
            return;
        }
        let committed: Vec<Committed> = events.iter().map(Committed::from_new).collect();
        match self.store.append(events) {
            Ok(durable) => {
                let core = self.clone();
                let room_id = room_id.to_owned();
                tokio::spawn(async move { core.finish(&room_id, durable, committed, owed).await });
            }
            Err(err) => {
                *loaded = false;
                self.forget_txns(&owed);
                for (reply, _, _, _) in owed {
                    let _ = reply.send(Err(err.clone().into()));
                }
            }
        }
    }

    /// Transactions of this round already durable in the store (retries after
    /// a restart), looked up in one query for the whole round.
    async fn durable_txns(
        &self,
        room_id: &str,
        jobs: &[Job],
    ) -> ServiceResult<HashMap<(String, String, String), String>> {
        let wanted: Vec<(String, String, String)> = jobs
            .iter()
            .filter_map(|job| match job {
                Job::Send { txn: Some(k), .. } if self.recent_txn(k).is_none() => {
                    Some((k.1.clone(), k.2.clone(), k.3.clone()))
                }
                _ => None,
            })
            .collect();
        Ok(self
            .store
            .find_txns(room_id, &wanted)
            .await?
            .into_iter()
            .collect())
    }

    /// Puts a committed event on the cluster bus again, durably (bounded
    /// like a send's wait). Not a redaction: followers apply those only
    /// with the message that commits them, and redactions push nobody.
    async fn share_again(&self, event_id: &str) {
        let event = match self.store.get_event(event_id).await {
            Ok(Some(event)) if event.kind != "m.room.redaction" => event,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(%err, "reading a retried event failed");
                return;
            }
        };
        let on_bus = self.bus.share_durable(ClusterMessage::Events {
            events: vec![event],
            redactions: Vec::new(),
        });
        if tokio::time::timeout(BUS_WAIT, on_bus).await.is_err() {
            tracing::warn!(
                event_id,
                "a retried event was not on the cluster bus in time"
            );
        }
    }

    fn forget_txns(&self, owed: &[Owed]) {
        let mut recent = self.recent_txns.lock().expect("txn lock");
        for key in owed.iter().filter_map(|(_, _, txn, _)| txn.as_ref()) {
            recent.ids.remove(key);
        }
    }

    /// Waits for a round to be durable, makes its events visible to syncs,
    /// tells every node, and answers the requests.
    async fn finish(
        self: Arc<Self>,
        room_id: &str,
        durable: Durable,
        committed: Vec<Committed>,
        owed: Vec<Owed>,
    ) {
        match durable.await {
            Ok(positions) => {
                let on_bus = self.publish(room_id, committed, &positions).await;
                // On a cluster the sender hears back once the events are on
                // Kafka too: the push consumer group decides notifications
                // from the log, so an event acknowledged but still in a
                // dead node's producer would never be pushed. Bounded, so a
                // Kafka outage slows sends but does not stop them (the store
                // has the events; syncs read them there).
                if tokio::time::timeout(BUS_WAIT, on_bus).await.is_err() {
                    tracing::warn!(
                        room_id,
                        "events not on the cluster bus in time; answering anyway"
                    );
                }
                for (reply, ids, _, _) in owed {
                    let _ = reply.send(Ok(ids));
                }
            }
            Err(err) => {
                // Nothing of the round was committed, but the head names its
                // events: have the actor reload it from the store.
                self.forget_txns(&owed);
                self.submit(room_id, Job::Reload);
                for (reply, _, txn, retry) in owed {
                    match (&err, retry) {
                        // Another node changed the state: authorize again
                        // against the reloaded head (which may now refuse).
                        // A conflict in a cluster is either a retried txn
                        // that another node committed (the retry finds it in
                        // the store and answers with its event id) or a
                        // byte-identical event built on the same stale
                        // parent elsewhere (the reloaded head gives it
                        // another parent, so another id).
                        (StoreError::Stale | StoreError::Conflict, Some(retry)) => self.submit(
                            room_id,
                            Job::Send {
                                sender: retry.sender,
                                requests: retry.requests,
                                txn,
                                create: retry.create,
                                reply,
                                attempt: retry.attempt,
                            },
                        ),
                        _ => {
                            let _ = reply.send(Err(err.clone().into()));
                        }
                    }
                }
            }
        }
    }

    /// Makes a round's events visible and shares them with the other
    /// nodes; returns what resolves once the bus holds them durably.
    async fn publish(
        &self,
        room_id: &str,
        committed: Vec<Committed>,
        positions: &[StreamPos],
    ) -> BoxFuture<'static, ()> {
        let mut events = Vec::with_capacity(committed.len());
        let mut redactions = Vec::new();
        for (mut c, pos) in committed.into_iter().zip(positions) {
            c.event.stream = *pos;
            if let Some((target, pdu)) = c.redaction {
                redactions.push((room_id.to_owned(), target, pdu));
            }
            events.push(c.event);
        }
        // Other nodes cache the events from this message; one of a room
        // goes to one partition, so they arrive in commit order.
        let on_bus = if self.bus.clustered() {
            self.bus.share_durable(ClusterMessage::Events {
                events: events.clone(),
                redactions: redactions.clone(),
            })
        } else {
            futures::future::ready(()).boxed()
        };
        for visible in self.cache.insert(events, redactions) {
            let notice = StreamNotice::RoomEvent {
                stream: visible.stream,
                room_id: visible.room_id,
                affected_user: visible.affected_user,
            };
            if let Err(err) = self.bus.publish(notice).await {
                tracing::warn!(%err, "publishing a stream notice failed");
            }
        }
        on_bus
    }

    /// Reads a room's head from the store; `None` if the room has no events.
    async fn load(&self, room_id: &str) -> ServiceResult<Option<RoomHandle>> {
        let state_events = self.store.current_state(room_id).await?;
        if state_events.is_empty() {
            return Ok(None);
        }
        let mut state = RoomState::default();
        for event in &state_events {
            state.insert(
                &event.kind,
                event.state_key.as_deref().unwrap_or(""),
                StateEntry {
                    event_id: event.event_id.clone(),
                    sender: event.sender.clone(),
                    content: event.pdu.get("content").cloned().unwrap_or(json!({})),
                },
            );
        }
        let latest = self.store.latest_event(room_id).await?;
        // Each (type, key)'s newest event is current, so the newest of those
        // is the room's latest state event.
        let state_head = state_events
            .iter()
            .max_by_key(|e| e.stream)
            .map(|e| e.event_id.clone());
        Ok(Some(RoomHandle {
            state_head,
            state: Arc::new(state),
            last_event_id: latest.as_ref().map(|e| e.event_id.clone()),
            depth: latest
                .as_ref()
                .and_then(|e| e.pdu.get("depth").and_then(Value::as_i64))
                .unwrap_or(0),
        }))
    }

    /// Builds several events on a copy of the head, so the head changes only
    /// if all of them are valid.
    async fn prepare_all(
        &self,
        mut scratch: RoomHandle,
        room_id: &str,
        sender: &str,
        requests: Vec<EventRequest>,
        txn: Option<&TxnKey>,
    ) -> ServiceResult<(RoomHandle, Vec<NewEvent>)> {
        let mut events = Vec::with_capacity(requests.len());
        let txn = txn.map(|(_, _, device, txn)| (device.clone(), txn.clone()));
        for request in requests {
            events.push(
                self.prepare(&mut scratch, room_id, sender, request, txn.clone())
                    .await?,
            );
        }
        Ok((scratch, events))
    }

    /// Authorizes, builds and signs one event against the room head, and
    /// advances the head as if it were appended.
    async fn prepare(
        &self,
        handle: &mut RoomHandle,
        room_id: &str,
        sender: &str,
        request: EventRequest,
        txn: Option<(String, String)>,
    ) -> ServiceResult<NewEvent> {
        let EventRequest {
            kind,
            state_key,
            content,
        } = request;
        if !content.is_object() {
            return Err(ServiceError::bad_json(
                "Event content must be a JSON object",
            ));
        }
        authorize(
            &handle.state,
            &Proposed {
                kind: &kind,
                sender,
                state_key: state_key.as_deref(),
                content: &content,
            },
        )?;
        let redaction_target = if kind == "m.room.redaction" {
            Some(
                self.check_redaction(&handle.state, room_id, sender, &content)
                    .await?,
            )
        } else {
            None
        };
        let auth_events =
            handle
                .state
                .auth_event_ids(&kind, sender, state_key.as_deref(), &content);
        let visibility = handle.state.history_visibility().to_owned();
        let (event_id, pdu) = build_pdu(
            &self.key,
            &self.server_name,
            PduParts {
                room_id,
                sender,
                kind: &kind,
                state_key: state_key.as_deref(),
                content,
                prev_events: handle.last_event_id.iter().cloned().collect(),
                auth_events,
                depth: handle.depth + 1,
                origin_server_ts: now_ms(),
            },
        )?;
        let redaction = match redaction_target {
            Some(target) => Some((
                target.event_id.clone(),
                redact_pdu(&target.pdu, &event_id, &pdu)?,
            )),
            None => None,
        };
        let membership = (kind == "m.room.member")
            .then(|| pdu["content"]["membership"].as_str().map(str::to_owned))
            .flatten();
        if let Some(key) = &state_key {
            // Only state events keep their content in the room head.
            Arc::make_mut(&mut handle.state).insert(
                &kind,
                key,
                StateEntry {
                    event_id: event_id.clone(),
                    sender: sender.to_owned(),
                    content: pdu["content"].clone(),
                },
            );
        }
        handle.last_event_id = Some(event_id.clone());
        handle.depth += 1;
        let built_on = if state_key.is_some() {
            handle.state_head.replace(event_id.clone())
        } else {
            handle.state_head.clone()
        };
        Ok(NewEvent {
            built_on,
            event_id,
            room_id: room_id.to_owned(),
            sender: sender.to_owned(),
            kind,
            state_key,
            pdu: Arc::new(pdu),
            txn,
            visibility,
            membership,
            redaction,
        })
    }

    /// A redaction must name an event of this room that the sender sent or
    /// has the power to redact.
    async fn check_redaction(
        &self,
        state: &RoomState,
        room_id: &str,
        sender: &str,
        content: &Value,
    ) -> ServiceResult<crate::store::StoredEvent> {
        let target_id = content
            .get("redacts")
            .and_then(Value::as_str)
            .ok_or_else(|| ServiceError::bad_json("content.redacts is required"))?;
        let target = self
            .store
            .get_event(target_id)
            .await?
            .filter(|e| e.room_id == room_id)
            .ok_or_else(|| ServiceError::not_found("Event not found"))?;
        let levels = state.power_levels();
        if target.sender != sender && levels.user_level(sender) < levels.redact {
            return Err(ServiceError::forbidden(
                "You do not have permission to redact this event",
            ));
        }
        Ok(target)
    }
}

fn fail(job: Job, err: ServiceError) {
    match job {
        Job::Send { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Job::Snapshot(reply) => {
            let _ = reply.send(Err(err));
        }
        Job::Reload => {}
    }
}
