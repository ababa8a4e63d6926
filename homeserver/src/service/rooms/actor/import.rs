//! Events another server built (a remote room's state and our join to it):
//! already checked and authorized by the federation layer, appended here by
//! the room's one writer so the head, syncs and the cluster see them as
//! they see local events.

use std::sync::Arc;

use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::commit::{Batch, Owed};
use super::{Advance, Core, RoomHandle};
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::rooms::state::membership_of;
use crate::service::rooms::state::StateEntry;
use crate::store::{EventState, NewEvent};

/// One event to import: its id, sender, type, state key, depth and PDU.
#[derive(Clone)]
pub struct Imported {
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    pub kind: String,
    pub state_key: Option<String>,
    pub depth: i64,
    pub pdu: Value,
    /// For a redaction: the event it redacts and that event's redacted PDU.
    pub redaction: Option<(OwnedEventId, Value)>,
    /// Where it stands in the room's state when that is not simply after
    /// the current state (the room's history forks): `None` for an event
    /// on the current state, which moves the head as a local event does.
    pub placed: Option<Placed>,
}

/// An event placed by state resolution: the groups it brings, the room's
/// new state head and the current state entries that change.
#[derive(Clone)]
pub struct Placed {
    pub state: EventState,
    /// The head's state entries that change (the event's own among them
    /// only if the resolution chose it).
    pub changes: Vec<(String, String, StateEntry)>,
    /// The head's state keys the resolution left out.
    pub dropped: Vec<(String, String)>,
}

/// Import these events in order (all or none): into a room this server
/// does not hold yet (a join), or onto one it holds (events another server
/// sent).
pub struct ImportJob {
    pub events: Vec<Imported>,
    pub new_room: bool,
    /// Send them on to the room's other servers: a join, leave or invite
    /// this server accepted as the room's resident, which the room's
    /// other servers learn of from us.
    pub forward: bool,
    pub reply: oneshot::Sender<ServiceResult<Vec<OwnedEventId>>>,
}

impl Core {
    /// Adds an import to the round's batch, advancing the head.
    pub(super) fn import(
        &self,
        room_id: &RoomId,
        head: &mut Option<RoomHandle>,
        job: ImportJob,
        batch: &mut Batch,
    ) {
        let ImportJob {
            events,
            new_room,
            forward,
            reply,
        } = job;
        let mut scratch = match (head.as_ref(), new_room) {
            (None, true) => RoomHandle::default(),
            // A room known only by invites: its state comes now, on top
            // of the invites (the caller leaves out the events already
            // here); the room's own extremities replace the invites.
            (Some(held), true) if held.state.get("m.room.create", "").is_none() => RoomHandle {
                extremities: Vec::new(),
                ..held.clone()
            },
            (Some(held), false) => held.clone(),
            (Some(_), true) => {
                let _ = reply.send(Err(ServiceError::forbidden(
                    "This server already holds the room",
                )));
                return;
            }
            (None, false) => {
                let _ = reply.send(Err(ServiceError::not_found("Unknown room")));
                return;
            }
        };
        let built: Vec<NewEvent> = events
            .into_iter()
            .map(|event| advance(&mut scratch, room_id.to_owned(), event))
            .collect();
        let ids = built.iter().map(|e| e.event_id.clone()).collect();
        if new_room {
            // A join's state is what the room held before it, not events
            // at the end of its history: the join is the only extremity.
            if let Some(join) = built.last() {
                scratch.extremities = vec![join.event_id.clone()];
            }
        }
        *head = Some(scratch);
        let owed = Owed {
            reply,
            ids,
            txn: None,
            retry: None,
        };
        if forward {
            batch.add(built, owed);
        } else {
            batch.add_imported(built, owed);
        }
    }
}

/// The event as the store takes it, and the head moved past it.
fn advance(handle: &mut RoomHandle, room_id: OwnedRoomId, event: Imported) -> NewEvent {
    let Imported {
        event_id,
        sender,
        kind,
        state_key,
        depth,
        pdu,
        redaction,
        placed,
    } = event;
    let content = pdu.get("content").cloned().unwrap_or_else(|| json!({}));
    let visibility = handle.state.history_visibility().to_owned();
    let membership = (kind == "m.room.member")
        .then(|| membership_of(&content))
        .flatten();
    let prev_events: Vec<OwnedEventId> = pdu
        .get("prev_events")
        .and_then(|prev| serde_json::from_value(prev.clone()).ok())
        .unwrap_or_default();
    let advance = Advance {
        event_id: &event_id,
        sender: &sender,
        kind: &kind,
        state_key: state_key.as_deref(),
        content: &content,
        prev_events: &prev_events,
        depth,
    };
    let (built_on, state) = match placed {
        None => handle.advance(&room_id, advance),
        Some(placed) => handle.place(advance, placed),
    };
    NewEvent {
        built_on,
        state,
        event_id,
        room_id,
        sender,
        kind,
        state_key,
        pdu: Arc::new(pdu),
        txn: None,
        visibility,
        membership,
        redaction,
    }
}
