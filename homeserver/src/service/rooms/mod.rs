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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

pub use create::CreateRoomRequest;
pub use read::{MessagesPage, PageRequest, RoomEventFilter};

use self::auth::{authorize, Proposed};
use self::state::{RoomState, StateEntry};
use super::error::{ErrorKind, ServiceError, ServiceResult};
use super::keys::ServerKey;
use super::pdu::{build_pdu, redact_pdu, PduParts};
use crate::store::{AccountStore, EventBus, NewEvent, RoomStore, StreamNotice, StreamPos};

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
struct RoomHandle {
    state: RoomState,
    last_event_id: Option<String>,
    depth: i64,
}

/// `(room, user, device, txn)` of a send that is queued but not yet durable.
type TxnKey = (String, String, String, String);

type RoomSlot = Arc<AsyncMutex<Option<RoomHandle>>>;

pub struct RoomService {
    store: Arc<dyn RoomStore>,
    accounts: Arc<dyn AccountStore>,
    bus: Arc<dyn EventBus>,
    key: Arc<ServerKey>,
    server_name: String,
    rooms: Mutex<HashMap<String, RoomSlot>>,
    /// Sends queued but not yet durable, so a quick retry finds its event id.
    in_flight: Mutex<HashMap<TxnKey, String>>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl RoomService {
    pub fn new(
        store: Arc<dyn RoomStore>,
        accounts: Arc<dyn AccountStore>,
        bus: Arc<dyn EventBus>,
        key: Arc<ServerKey>,
        server_name: String,
    ) -> Self {
        Self {
            store,
            accounts,
            bus,
            key,
            server_name,
            rooms: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    fn slot(&self, room_id: &str) -> RoomSlot {
        self.rooms
            .lock()
            .expect("rooms lock")
            .entry(room_id.to_owned())
            .or_default()
            .clone()
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
        let mut guard = self.lock_room(room_id).await?;
        let handle = guard
            .as_mut()
            .ok_or_else(|| ServiceError::not_found("Unknown room"))?;
        let txn_key = txn_id.map(|t| {
            (
                room_id.to_owned(),
                who.user_id.clone(),
                who.device_id.clone(),
                t.to_owned(),
            )
        });
        if let Some(key) = &txn_key {
            if let Some(event_id) = self.in_flight.lock().expect("txn lock").get(key) {
                return Ok(event_id.clone());
            }
            if let Some(event_id) = self
                .store
                .find_txn(room_id, &who.user_id, &who.device_id, &key.3)
                .await?
            {
                return Ok(event_id);
            }
        }
        let txn = txn_id.map(|t| (who.device_id.clone(), t.to_owned()));
        let event = self
            .prepare(handle, room_id, &who.user_id, request, txn)
            .await?;
        let event_id = event.event_id.clone();
        if let Some(key) = &txn_key {
            self.in_flight
                .lock()
                .expect("txn lock")
                .insert(key.clone(), event_id.clone());
        }
        let affected = event.membership.as_ref().and(event.state_key.clone());
        let queued = self.store.append(vec![event]).await;
        drop(guard);
        let result = match queued {
            Ok(durable) => durable.await,
            Err(err) => Err(err),
        };
        if let Some(key) = &txn_key {
            self.in_flight.lock().expect("txn lock").remove(key);
        }
        let positions = self.settle(room_id, result).await?;
        self.announce(room_id, &positions, std::slice::from_ref(&affected))
            .await;
        Ok(event_id)
    }

    /// Sends several events to one room as one atomic append, in order.
    async fn send_events_locked(
        &self,
        handle: &mut RoomHandle,
        room_id: &str,
        sender: &str,
        requests: Vec<EventRequest>,
    ) -> ServiceResult<(Vec<String>, crate::store::Durable, Vec<Option<String>>)> {
        let mut events = Vec::with_capacity(requests.len());
        for request in requests {
            events.push(self.prepare(handle, room_id, sender, request, None).await?);
        }
        let ids = events.iter().map(|e| e.event_id.clone()).collect();
        let affected = events
            .iter()
            .map(|e| e.membership.as_ref().and(e.state_key.clone()))
            .collect();
        let durable = self.store.append(events).await?;
        Ok((ids, durable, affected))
    }

    /// After a failed append the cached head may name events that never
    /// became durable: drop it so the next use reloads it from the store.
    async fn settle(
        &self,
        room_id: &str,
        result: crate::store::StoreResult<Vec<StreamPos>>,
    ) -> ServiceResult<Vec<StreamPos>> {
        match result {
            Ok(positions) => Ok(positions),
            Err(err) => {
                *self.slot(room_id).lock().await = None;
                Err(err.into())
            }
        }
    }

    /// Tells every node that new events are durable.
    async fn announce(&self, room_id: &str, positions: &[StreamPos], affected: &[Option<String>]) {
        for (i, pos) in positions.iter().enumerate() {
            let notice = StreamNotice::RoomEvent {
                stream: *pos,
                room_id: room_id.to_owned(),
                affected_user: affected.get(i).cloned().flatten(),
            };
            if let Err(err) = self.bus.publish(notice).await {
                tracing::warn!(%err, "publishing a stream notice failed");
            }
        }
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
