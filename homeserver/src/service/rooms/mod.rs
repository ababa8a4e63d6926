//! The room service: every room event this server creates passes through
//! [`RoomService::send_events`], which checks the authorization rules against
//! the room's current state, signs the PDU and queues it for durable append.
//!
//! Current state is cached per room in memory behind a per-room async lock:
//! events of one room are built one after another (each names the previous
//! one in `prev_events`), events of different rooms in parallel. The lock is
//! released as soon as an event is queued, before it is durable, so a busy
//! room is not limited to one commit per event: the writer commits queued
//! events in order, many per transaction.

mod auth;
mod create;
mod directory;
mod membership;
mod read;
pub mod state;
pub mod visibility;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::task::JoinHandle;

pub use create::CreateRoomRequest;
pub use read::{MessagesPage, PageRequest, RoomEventFilter};

use self::auth::{authorize, Proposed};
use self::state::{RoomState, StateEntry};
use super::error::{ErrorKind, ServiceError, ServiceResult};
use super::keys::ServerKey;
use super::pdu::{build_pdu, redact_pdu, PduParts};
use super::timeline_cache::TimelineCache;
use crate::store::{
    AccountStore, Durable, EventBus, NewEvent, RoomStore, StoredEvent, StreamNotice, StreamPos,
};

/// Who is acting: a user on one of their devices.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user_id: String,
    pub device_id: String,
}

/// An event a caller wants to send.
#[derive(Debug, Clone)]
pub struct EventRequest {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Value,
}

/// In-memory head of one room.
#[derive(Clone, Default)]
struct RoomHandle {
    state: RoomState,
    last_event_id: Option<String>,
    depth: i64,
}

/// `(room, user, device, txn)` of a client transaction.
type TxnKey = (String, String, String, String);

type RoomSlot = Arc<AsyncMutex<Option<RoomHandle>>>;

/// Transaction ids of recent sends, queued or durable. A retry that arrives
/// while its first attempt is still in flight finds its event id here; older
/// ones are found in the store.
#[derive(Default)]
struct RecentTxns {
    ids: HashMap<TxnKey, String>,
    order: VecDeque<TxnKey>,
}

/// Recent transactions remembered; far more than can be in flight at once.
const RECENT_TXNS: usize = 65_536;

impl RecentTxns {
    fn get(&self, key: &TxnKey) -> Option<String> {
        self.ids.get(key).cloned()
    }

    fn insert(&mut self, key: TxnKey, event_id: String) {
        if self.order.len() >= RECENT_TXNS {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.ids.insert(key, event_id);
    }

    fn remove(&mut self, key: &TxnKey) {
        self.ids.remove(key);
    }
}

/// What happens after an append is queued, shared with the task that waits
/// for it to be durable. That task runs to the end even if the request that
/// queued the events is cancelled, so every committed event reaches the cache
/// and the bus.
struct Committer {
    bus: Arc<dyn EventBus>,
    cache: Arc<TimelineCache>,
    rooms: Mutex<HashMap<String, RoomSlot>>,
    recent_txns: Mutex<RecentTxns>,
}

pub struct RoomService {
    store: Arc<dyn RoomStore>,
    accounts: Arc<dyn AccountStore>,
    key: Arc<ServerKey>,
    server_name: String,
    shared: Arc<Committer>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

impl Committer {
    fn slot(&self, room_id: &str) -> RoomSlot {
        self.rooms
            .lock()
            .expect("rooms lock")
            .entry(room_id.to_owned())
            .or_default()
            .clone()
    }

    fn recent_txn(&self, key: &TxnKey) -> Option<String> {
        self.recent_txns.lock().expect("txn lock").get(key)
    }

    async fn finish(
        &self,
        room_id: &str,
        durable: Durable,
        committed: Vec<Committed>,
        txn: Option<TxnKey>,
    ) -> ServiceResult<Vec<StreamPos>> {
        match durable.await {
            Ok(positions) => {
                let mut events = Vec::with_capacity(committed.len());
                let mut redactions = Vec::new();
                for (mut c, pos) in committed.into_iter().zip(&positions) {
                    c.event.stream = *pos;
                    if let Some((target, pdu)) = c.redaction {
                        redactions.push((room_id.to_owned(), target, pdu));
                    }
                    events.push(c.event);
                }
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
                Ok(positions)
            }
            Err(err) => {
                // Nothing was committed. The head may name these events:
                // drop it so the next use reloads it from the store.
                if let Some(key) = &txn {
                    self.recent_txns.lock().expect("txn lock").remove(key);
                }
                *self.slot(room_id).lock().await = None;
                Err(err.into())
            }
        }
    }
}

impl RoomService {
    pub fn new(
        store: Arc<dyn RoomStore>,
        accounts: Arc<dyn AccountStore>,
        bus: Arc<dyn EventBus>,
        cache: Arc<TimelineCache>,
        key: Arc<ServerKey>,
        server_name: String,
    ) -> Self {
        Self {
            store,
            accounts,
            key,
            server_name,
            shared: Arc::new(Committer {
                bus,
                cache,
                rooms: Mutex::new(HashMap::new()),
                recent_txns: Mutex::new(RecentTxns::default()),
            }),
        }
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    fn slot(&self, room_id: &str) -> RoomSlot {
        self.shared.slot(room_id)
    }

    /// Locks a room's head, loading it from the store on first use.
    /// `None` inside the guard means the room does not exist (yet).
    async fn lock_room(&self, room_id: &str) -> ServiceResult<OwnedMutexGuard<Option<RoomHandle>>> {
        let mut guard = self.slot(room_id).lock_owned().await;
        if guard.is_none() {
            let state_events = self.store.current_state(room_id).await?;
            if !state_events.is_empty() {
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
                *guard = Some(RoomHandle {
                    state,
                    last_event_id: latest.as_ref().map(|e| e.event_id.clone()),
                    depth: latest
                        .as_ref()
                        .and_then(|e| e.pdu.get("depth").and_then(Value::as_i64))
                        .unwrap_or(0),
                });
            }
        }
        Ok(guard)
    }

    /// A snapshot of a room's current state, or `None` if the room is unknown.
    pub async fn state_snapshot(&self, room_id: &str) -> ServiceResult<Option<RoomState>> {
        let guard = self.lock_room(room_id).await?;
        Ok(guard.as_ref().map(|h| h.state.clone()))
    }

    /// Sends one event; idempotent per `(device, txn_id)` when a txn id is given.
    pub async fn send_event(
        &self,
        who: &Requester,
        room_id: &str,
        request: EventRequest,
        txn_id: Option<&str>,
    ) -> ServiceResult<String> {
        let txn_key = txn_id.map(|t| {
            (
                room_id.to_owned(),
                who.user_id.clone(),
                who.device_id.clone(),
                t.to_owned(),
            )
        });
        if let Some(key) = &txn_key {
            // Durable transactions are looked up before taking the room lock,
            // so the read does not serialise the room's sends. A first attempt
            // queued meanwhile is caught in `recent_txns` under the lock.
            if let Some(event_id) = self.shared.recent_txn(key) {
                return Ok(event_id);
            }
            if let Some(event_id) = self
                .store
                .find_txn(room_id, &who.user_id, &who.device_id, &key.3)
                .await?
            {
                return Ok(event_id);
            }
        }
        let mut guard = self.lock_room(room_id).await?;
        let handle = guard
            .as_mut()
            .ok_or_else(|| ServiceError::not_found("Unknown room"))?;
        if let Some(event_id) = txn_key.as_ref().and_then(|k| self.shared.recent_txn(k)) {
            return Ok(event_id);
        }
        let txn = txn_id.map(|t| (who.device_id.clone(), t.to_owned()));
        // `prepare` advances the head after its last await, and `queue` does
        // not await: the head never names an event that was not queued.
        let event = self
            .prepare(handle, room_id, &who.user_id, request, txn)
            .await?;
        let event_id = event.event_id.clone();
        if let Some(key) = &txn_key {
            self.shared
                .recent_txns
                .lock()
                .expect("txn lock")
                .insert(key.clone(), event_id.clone());
        }
        let finishing = match self.queue(room_id, vec![event], txn_key) {
            Ok(finishing) => finishing,
            Err(err) => {
                *guard = None;
                return Err(err);
            }
        };
        drop(guard);
        finishing.await.map_err(ServiceError::internal)??;
        Ok(event_id)
    }

    /// Prepares several events for one room on a copy of its head, so the
    /// head changes only if all of them are valid.
    async fn prepare_all(
        &self,
        handle: &RoomHandle,
        room_id: &str,
        sender: &str,
        requests: Vec<EventRequest>,
    ) -> ServiceResult<(RoomHandle, Vec<NewEvent>)> {
        let mut scratch = handle.clone();
        let mut events = Vec::with_capacity(requests.len());
        for request in requests {
            events.push(
                self.prepare(&mut scratch, room_id, sender, request, None)
                    .await?,
            );
        }
        Ok((scratch, events))
    }

    /// Queues events (without awaiting) and starts the task that waits for
    /// them to be durable, then makes them visible to syncs and tells every
    /// node. The caller awaits the task's handle for the outcome.
    fn queue(
        &self,
        room_id: &str,
        events: Vec<NewEvent>,
        txn: Option<TxnKey>,
    ) -> ServiceResult<JoinHandle<ServiceResult<Vec<StreamPos>>>> {
        let committed: Vec<Committed> = events.iter().map(Committed::from_new).collect();
        let durable = self.store.append(events)?;
        let shared = self.shared.clone();
        let room_id = room_id.to_owned();
        Ok(tokio::spawn(async move {
            shared.finish(&room_id, durable, committed, txn).await
        }))
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
            handle.state.insert(
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
        Ok(NewEvent {
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

    pub fn check_room_id(room_id: &str) -> ServiceResult<()> {
        if room_id.starts_with('!') && room_id.contains(':') && room_id.len() <= 255 {
            Ok(())
        } else {
            Err(ServiceError::new(
                ErrorKind::InvalidParam,
                "Invalid room id",
            ))
        }
    }
}
