//! Building a send: each request authorized against the room head, built
//! and signed, and the head advanced as if it were appended.

use std::sync::Arc;

use ruma_common::{EventId, OwnedDeviceId, OwnedEventId, OwnedUserId, RoomId, UserId};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::commit::{Batch, Owed};
use super::txns::DurableTxns;
use super::{Advance, Core, Job, RoomHandle, SendJob, TxnKey};
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::service::pdu::{build_pdu, redact_pdu, rules_for, PduParts};
use crate::service::rooms::auth::{authorize, Proposed};
use crate::service::rooms::state::{membership_of, RoomState, StateEntry};
use crate::service::rooms::{now_ms, EventRequest};
use crate::store::{NewEvent, StoredEvent};

/// Attempts per request before a conflicting room gives up on it.
const MAX_ATTEMPTS: u8 = 8;

/// What another attempt at a send needs besides its requests: another node
/// of a cluster can change a room's state between authorizing an event here
/// and appending it. The requests are read back from the events built (or
/// handed back by a refusal), so a send in flight keeps no copy of them.
#[derive(Clone, Copy)]
pub(super) struct Retry {
    create: bool,
    attempt: u8,
}

impl Retry {
    /// The send again, as a job for the room's actor.
    pub fn into_job(
        self,
        sender: OwnedUserId,
        requests: Vec<EventRequest>,
        txn: Option<TxnKey>,
        reply: oneshot::Sender<ServiceResult<Vec<OwnedEventId>>>,
    ) -> Job {
        Job::Send(SendJob {
            sender,
            requests,
            txn,
            create: self.create,
            reply,
            attempt: self.attempt,
        })
    }
}

/// The request an event was built from.
pub(super) fn request_of(kind: &str, state_key: Option<&str>, pdu: &Value) -> EventRequest {
    EventRequest {
        kind: kind.to_owned(),
        state_key: state_key.map(str::to_owned),
        content: pdu.get("content").cloned().unwrap_or_else(|| json!({})),
    }
}

/// A send refused while building, with its requests handed back (all of
/// them when the refusal came before any content was used).
struct Refused {
    err: ServiceError,
    requests: Vec<EventRequest>,
}

impl Core {
    /// Builds one send into the round's batch on the head, or answers it at
    /// once: sent already, refused, or (in a cluster) sent back to the queue
    /// to be tried against a fresh head.
    pub(super) async fn build(
        self: &Arc<Self>,
        room_id: &RoomId,
        head: &mut Option<RoomHandle>,
        durable_txns: &DurableTxns,
        job: SendJob,
        batch: &mut Batch,
    ) {
        let SendJob {
            sender,
            requests,
            txn,
            create,
            reply,
            attempt,
        } = job;
        if let Some((event_id, from_store)) = self.sent_already(txn.as_ref(), durable_txns) {
            self.answer_sent_already(reply, event_id, from_store);
            return;
        }
        if let Err(err) = durable_txns {
            let _ = reply.send(Err(err.clone()));
            return;
        }
        let base = match (head.as_ref(), create) {
            (None, true) => RoomHandle::default(),
            (Some(h), false) => h.clone(),
            (Some(_), true) => {
                let _ = reply.send(Err(ServiceError::forbidden("The room already exists")));
                return;
            }
            (None, false) => {
                let _ = reply.send(Err(ServiceError::not_found("Unknown room")));
                return;
            }
        };
        let retry = (attempt < MAX_ATTEMPTS).then_some(Retry {
            create,
            attempt: attempt + 1,
        });
        match self
            .prepare_all(base, room_id, &sender, requests, txn.as_ref())
            .await
        {
            Ok((next, built)) => {
                let ids: Vec<OwnedEventId> = built.iter().map(|e| e.event_id.clone()).collect();
                if let (Some(key), Some(id)) = (&txn, ids.first()) {
                    self.remember_txn(key, id);
                }
                *head = Some(next);
                batch.add(
                    built,
                    Owed {
                        reply,
                        ids,
                        txn,
                        retry,
                    },
                );
            }
            // This head may lag a change that another node of a cluster made
            // and that allows the request: if the store's head is another,
            // confirm the refusal once against a fresh head.
            Err(Refused { err, requests })
                if err.kind == ErrorKind::Forbidden
                    && attempt == 0
                    && self.head_moved(room_id, head.as_ref()).await =>
            {
                let again = Retry { create, attempt: 1 };
                self.submit(room_id, Job::Reload);
                self.submit(room_id, again.into_job(sender, requests, txn, reply));
            }
            Err(Refused { err, .. }) => {
                let _ = reply.send(Err(err));
            }
        }
    }

    /// Reads a room's head from the store; `None` if the room has no events.
    pub(super) async fn load(&self, room_id: &RoomId) -> ServiceResult<Option<RoomHandle>> {
        // The stored head is read before the state: should another node
        // change the state in between, the head is the older one, and what
        // this node builds on it is refused as stale and built again. Read
        // the other way round, a new head over old state would let an event
        // the new state forbids through.
        let stored_head = self.store.state_head(room_id).await?;
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
        // The stored head names the current state's group; a room whose
        // head was never stored has one chain, and its newest current
        // state event is the head.
        let state_head = match stored_head {
            Some(head) => Some(head),
            None => state_events
                .iter()
                .max_by_key(|e| e.stream)
                .map(|e| e.event_id.clone()),
        };
        // Groups since the last snapshot, so the next one comes in time
        // (unknown: store the next group in full).
        let deltas = match &state_head {
            Some(head) => self.store.state_group_deltas(head).await?,
            None => None,
        };
        Ok(Some(RoomHandle {
            state_head,
            deltas: deltas.unwrap_or(usize::MAX),
            state: Arc::new(state),
            extremities: latest.iter().map(|e| e.event_id.clone()).collect(),
            depth: latest
                .as_ref()
                .and_then(|e| e.pdu.get("depth").and_then(Value::as_i64))
                .unwrap_or(0),
        }))
    }

    /// Whether the store's state head is not the one `head` builds on: some
    /// other node changed the room's state (or an append is in flight).
    async fn head_moved(&self, room_id: &RoomId, head: Option<&RoomHandle>) -> bool {
        let ours = head.and_then(|h| h.state_head.as_ref());
        self.store
            .state_head(room_id)
            .await
            .is_ok_and(|stored| stored.as_ref() != ours)
    }

    /// Builds several events on a copy of the head, so the head changes only
    /// if all of them are valid.
    async fn prepare_all(
        &self,
        mut scratch: RoomHandle,
        room_id: &RoomId,
        sender: &UserId,
        requests: Vec<EventRequest>,
        txn: Option<&TxnKey>,
    ) -> Result<(RoomHandle, Vec<NewEvent>), Refused> {
        let mut events: Vec<NewEvent> = Vec::with_capacity(requests.len());
        let txn = txn.map(|(_, _, device, txn)| (device.clone(), txn.clone()));
        let mut rest = requests.into_iter();
        while let Some(request) = rest.next() {
            match self
                .prepare(&mut scratch, room_id, sender, request, txn.clone())
                .await
            {
                Ok(event) => events.push(event),
                Err((err, failed)) => {
                    let built = events.iter().map(|e| {
                        let (kind, key) = (&e.kind, e.state_key.as_deref());
                        request_of(kind, key, &e.pdu)
                    });
                    let requests = built.chain(failed).chain(rest).collect();
                    return Err(Refused { err, requests });
                }
            }
        }
        Ok((scratch, events))
    }

    /// Authorizes, builds and signs one event against the room head, and
    /// advances the head as if it were appended.
    async fn prepare(
        &self,
        handle: &mut RoomHandle,
        room_id: &RoomId,
        sender: &UserId,
        request: EventRequest,
        txn: Option<(OwnedDeviceId, String)>,
    ) -> Result<NewEvent, (ServiceError, Option<EventRequest>)> {
        let redaction_target = match self.admit(&handle.state, room_id, sender, &request).await {
            Ok(target) => target,
            Err(err) => return Err((err, Some(request))),
        };
        let EventRequest {
            kind,
            state_key,
            content,
        } = request;
        let auth_events =
            handle
                .state
                .auth_event_ids(&kind, sender, state_key.as_deref(), &content);
        let visibility = handle.state.history_visibility().to_owned();
        let prev_events = handle.prev_events();
        let (event_id, pdu) = build_pdu(
            &self.key,
            &self.server_name,
            PduParts {
                room_id,
                sender,
                kind: &kind,
                state_key: state_key.as_deref(),
                content,
                prev_events: prev_events.clone(),
                auth_events,
                depth: handle.depth + 1,
                origin_server_ts: now_ms(),
                rules: rules_for(handle.state.room_version()),
            },
        )
        .map_err(|err| (err, None))?;
        let redaction = match redaction_target {
            Some(target) => Some((
                target.event_id.clone(),
                redact_pdu(&target.pdu, &event_id, &pdu).map_err(|err| (err, None))?,
            )),
            None => None,
        };
        let membership = (kind == "m.room.member")
            .then(|| membership_of(&pdu["content"]))
            .flatten();
        let depth = handle.depth + 1;
        let (built_on, state) = handle.advance(
            room_id,
            Advance {
                event_id: &event_id,
                sender,
                kind: &kind,
                state_key: state_key.as_deref(),
                content: &pdu["content"],
                prev_events: &prev_events,
                depth,
            },
        );
        Ok(NewEvent {
            built_on,
            state,
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

    /// Whether the room's rules let `sender` send `request` now; for a
    /// redaction, the event it redacts.
    async fn admit(
        &self,
        state: &RoomState,
        room_id: &RoomId,
        sender: &UserId,
        request: &EventRequest,
    ) -> ServiceResult<Option<StoredEvent>> {
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
        let state_key = state_key.as_deref();
        authorize(
            state,
            &Proposed {
                kind,
                sender,
                state_key,
                content,
            },
        )?;
        if kind != "m.room.redaction" {
            return Ok(None);
        }
        let target = self
            .check_redaction(state, room_id, sender, content)
            .await?;
        Ok(Some(target))
    }

    /// A redaction must name an event of this room that the sender sent or
    /// has the power to redact.
    async fn check_redaction(
        &self,
        state: &RoomState,
        room_id: &RoomId,
        sender: &UserId,
        content: &Value,
    ) -> ServiceResult<StoredEvent> {
        let target_id = content
            .get("redacts")
            .and_then(Value::as_str)
            .and_then(|id| <&EventId>::try_from(id).ok())
            .ok_or_else(|| ServiceError::bad_json("content.redacts must be an event id"))?;
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
