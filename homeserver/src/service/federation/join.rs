//! Joining a room another server holds: `make_join` for a template,
//! signed here, then `send_join`, whose answer (the room's state before the
//! join and its auth chain) is checked whole before anything is kept: a
//! join is all or nothing (matrix-spec#752).

use std::collections::HashMap;
use std::time::Duration;

use ruma_common::{OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, ServerName, UserId};
use ruma_events::TimelineEventType;
use ruma_federation_api::membership::{
    create_join_event, create_leave_event, prepare_join_event, prepare_leave_event,
};
use serde_json::Value;

use super::client::Limits;
use super::event::{authorize_by_auth_events, rules_of, PduError, RemotePdu};
use super::{FederationError, FederationService};
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::pdu::sign_with_rules;
use crate::service::rooms::now_ms;

/// A room's state can be large: its own time and size limits.
const SEND_JOIN_LIMITS: Limits = Limits {
    timeout: Duration::from_secs(120),
    max_bytes: 64 * 1024 * 1024,
};

/// A remote room as joining it left it.
pub struct JoinedRemote {
    pub version: RoomVersionId,
    /// The state before the join, checked and authorized, create first.
    pub state: Vec<RemotePdu>,
    pub join: RemotePdu,
    /// The state's auth chain beyond the state itself: kept as outliers,
    /// for state resolution later.
    pub auth_chain: Vec<RemotePdu>,
}

impl From<PduError> for ServiceError {
    fn from(err: PduError) -> Self {
        tracing::info!(error = %err, "refused an event from another server");
        ServiceError::new(
            crate::service::error::ErrorKind::BadGateway,
            format!("The other server sent an event that does not hold: {err}"),
        )
    }
}

impl FederationService {
    /// Joins `user_id` to `room_id` through `via`.
    pub async fn join_room(
        &self,
        via: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> ServiceResult<JoinedRemote> {
        let mut ask = prepare_join_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
        ask.ver = vec![RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];
        let template = self.client.send(via, ask).await?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        let rules = supported(&version)?;
        let (event_id, pdu) = self.sign_template(template.event.get(), &rules)?;
        let raw = serde_json::value::to_raw_value(&pdu).map_err(ServiceError::internal)?;
        let mut send =
            create_join_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw);
        send.omit_members = false;
        let answer = self
            .client
            .send_limited(via, send, SEND_JOIN_LIMITS)
            .await?
            .room_state;
        let mut known: HashMap<OwnedEventId, RemotePdu> = HashMap::new();
        let mut state_ids = Vec::with_capacity(answer.state.len());
        for (raw, in_state) in answer
            .auth_chain
            .iter()
            .map(|raw| (raw, false))
            .chain(answer.state.iter().map(|raw| (raw, true)))
        {
            let pdu = self.check_pdu(raw, &version).await?;
            if in_state {
                state_ids.push(pdu.event_id.clone());
            }
            known.insert(pdu.event_id.clone(), pdu);
        }
        let join = match &answer.event {
            // The resident server's copy carries its signature too.
            Some(raw) => self.check_pdu(raw, &version).await?,
            None => {
                self.check_pdu(
                    &serde_json::value::to_raw_value(&pdu).map_err(ServiceError::internal)?,
                    &version,
                )
                .await?
            }
        };
        if join.event_id != event_id {
            return Err(bad(format!("the join came back as {}", join.event_id)));
        }
        check_room(room_id, &version, &known)?;
        for pdu in known.values().chain(std::iter::once(&join)) {
            authorize_by_auth_events(pdu, &rules, &known)?;
        }
        let mut state: Vec<RemotePdu> = state_ids
            .iter()
            .filter_map(|id| known.remove(id))
            .filter(|pdu| pdu.state_key.is_some())
            .collect();
        // Create first, then by depth: the order they were sent in.
        state.sort_by_key(|pdu| (pdu.kind != TimelineEventType::RoomCreate, pdu.depth));
        Ok(JoinedRemote {
            version,
            state,
            join,
            auth_chain: known.into_values().collect(),
        })
    }

    /// Leaves `room_id` for `user_id` through `via` (rejecting an invite
    /// to a room this server does not hold): `make_leave`, signed here,
    /// then `send_leave`. Returns the leave as sent.
    pub async fn leave_room(
        &self,
        via: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        version: &RoomVersionId,
    ) -> ServiceResult<RemotePdu> {
        let ask = prepare_leave_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
        let template = self.client.send(via, ask).await?;
        let version = template.room_version.unwrap_or_else(|| version.clone());
        let rules = supported(&version)?;
        let (event_id, pdu) = self.sign_template(template.event.get(), &rules)?;
        let raw = serde_json::value::to_raw_value(&pdu).map_err(ServiceError::internal)?;
        let send = create_leave_event::v2::Request::new(room_id.to_owned(), event_id, raw.clone());
        // Only what we asked for is signed and sent: a leave of our user.
        let leave = self.check_pdu(&raw, &version).await?;
        let membership = serde_json::from_str::<Value>(leave.content.get())
            .ok()
            .and_then(|c| {
                c.get("membership")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        if leave.kind != TimelineEventType::RoomMember
            || leave.sender != user_id
            || leave.state_key.as_deref() != Some(user_id.as_str())
            || leave.room_id.as_deref() != Some(room_id)
            || membership.as_deref() != Some("leave")
        {
            return Err(bad("the leave template is not a leave of our user".into()));
        }
        self.client.send(via, send).await?;
        Ok(leave)
    }

    /// The template with our time, hashed and signed by the room version's
    /// rules.
    fn sign_template(
        &self,
        template: &str,
        rules: &ruma_common::room_version_rules::RoomVersionRules,
    ) -> ServiceResult<(OwnedEventId, Value)> {
        let mut event: serde_json::Map<String, Value> =
            serde_json::from_str(template).map_err(|e| bad(format!("join template: {e}")))?;
        for field in ["event_id", "hashes", "signatures", "unsigned"] {
            event.remove(field);
        }
        event.insert("origin_server_ts".into(), now_ms().into());
        let key = self.keys.own_key();
        sign_with_rules(key, &self.server_name, Value::Object(event), rules)
    }
}

/// The rules of a room version this server can join rooms of.
fn supported(
    version: &RoomVersionId,
) -> ServiceResult<ruma_common::room_version_rules::RoomVersionRules> {
    rules_of(version).map_err(|_| {
        ServiceError::new(
            crate::service::error::ErrorKind::UnsupportedRoomVersion,
            format!("The room is of version {version}, which this server does not support"),
        )
    })
}

/// Every event names the room (a version 12 room is named by its create
/// event), and there is exactly one create event.
fn check_room(
    room_id: &RoomId,
    version: &RoomVersionId,
    known: &HashMap<OwnedEventId, RemotePdu>,
) -> ServiceResult<()> {
    let creates: Vec<&RemotePdu> = known
        .values()
        .filter(|pdu| pdu.kind == TimelineEventType::RoomCreate)
        .collect();
    let [create] = creates.as_slice() else {
        return Err(bad(format!("{} create events", creates.len())));
    };
    let expected: OwnedRoomId = match create.room_id.clone() {
        Some(id) => id,
        None => RoomId::parse(format!("!{}", &create.event_id.as_str()[1..]))
            .map_err(|e| bad(e.to_string()))?,
    };
    if expected != room_id {
        return Err(bad(format!("the create event is of room {expected}")));
    }
    let stated = serde_json::from_str::<Value>(create.content.get())
        .ok()
        .and_then(|c| {
            c.get("room_version")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "1".into());
    if stated != version.as_str() {
        return Err(bad(format!(
            "the create event says version {stated}, not {version}"
        )));
    }
    let stray = known.values().find(|pdu| {
        pdu.kind != TimelineEventType::RoomCreate && pdu.room_id.as_deref() != Some(room_id)
    });
    match stray {
        Some(pdu) => Err(bad(format!("{} is of another room", pdu.event_id))),
        None => Ok(()),
    }
}

fn bad(cause: String) -> ServiceError {
    ServiceError::from(FederationError::BadResponse {
        server: ruma_common::owned_server_name!("unknown.invalid"),
        cause,
    })
}
