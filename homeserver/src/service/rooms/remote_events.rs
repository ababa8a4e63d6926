//! Events other servers send us (`PUT /send/{txnId}`) for rooms we hold,
//! each checked, authorized by its auth events (else rejected) and by the
//! room's current state (else soft-failed: accepted, never shown), then
//! appended by the room's actor.
//!
//! An event whose `prev_events` are unknown here first has the gap filled
//! from the sender (`get_missing_events`). Not yet: fetching missing auth
//! events (`/event_auth`) and state resolution when the room's history
//! forks (issue 18).

use std::collections::{BTreeMap, HashMap};

use ruma_common::room_version_rules::RoomVersionRules;
use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, ServerName};
use ruma_events::StateEventType;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::remote_join::{imported, ImportAs};
use super::RoomService;
use crate::service::error::ServiceError;
use crate::service::federation::event::{
    authorize_by_auth_events, authorize_by_state, event_id_of, rules_of, trusted, RemotePdu,
};

/// What a PDU says about itself before it is checked.
#[derive(Deserialize)]
struct Peek {
    room_id: OwnedRoomId,
    sender: OwnedUserId,
}

/// The answer for one PDU: accepted (or soft-failed), or why not.
pub type PduResult = Result<(), String>;

impl RoomService {
    /// The PDUs of one transaction from `origin`, in order; a result per
    /// event whose id could be worked out.
    pub async fn receive_pdus(
        &self,
        origin: &ServerName,
        pdus: &[Box<RawValue>],
    ) -> BTreeMap<OwnedEventId, PduResult> {
        let mut results = BTreeMap::new();
        for raw in pdus {
            match self.receive_pdu(origin, raw).await {
                Ok((id, result)) => {
                    results.insert(id, result);
                }
                Err(reason) => tracing::info!(%origin, %reason, "dropped a PDU"),
            }
        }
        results
    }

    /// `Err` when the PDU cannot even be identified; otherwise its id and
    /// the result.
    async fn receive_pdu(
        &self,
        origin: &ServerName,
        raw: &RawValue,
    ) -> Result<(OwnedEventId, PduResult), String> {
        let federation = self.federation.as_ref().ok_or("not federating")?;
        let peek: Peek = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        let state = self
            .state_snapshot(&peek.room_id)
            .await
            .map_err(|e| e.message)?
            .ok_or_else(|| format!("unknown room {}", peek.room_id))?;
        let version = RoomVersionId::try_from(state.room_version()).map_err(|e| e.to_string())?;
        let acl_denied = !state.server_allowed(origin);
        let rules = rules_of(&version).map_err(|e| e.to_string())?;
        let id = event_id_of(raw, &rules).map_err(|e| e.to_string())?;
        if acl_denied {
            return Ok((id, Err(format!("the room's server ACL denies {origin}"))));
        }
        let pdu = match federation.check_pdu(raw, &version).await {
            Ok(pdu) => pdu,
            Err(err) => return Ok((id, Err(err.to_string()))),
        };
        // An origin speaks only for its own users.
        if peek.sender.server_name() != origin {
            return Ok((
                id,
                Err(format!("{} is not a user of {origin}", peek.sender)),
            ));
        }
        let create = state.get("m.room.create", "").map(|c| c.event_id.clone());
        self.fill_gap(origin, &pdu, &version, &rules, create.clone())
            .await;
        let result = self.accept(pdu, &rules, create).await;
        Ok((id, result.map_err(|e| e.to_string())))
    }

    /// When some of `pdu`'s `prev_events` are unknown here, asks `origin`
    /// for the events between our forward extremities and `pdu`, and
    /// accepts each (checked and authorized like any PDU; sent by any
    /// server's users, since they are the room's history) oldest first. A
    /// gap that cannot be filled is left open: `pdu` is still accepted.
    async fn fill_gap(
        &self,
        origin: &ServerName,
        pdu: &RemotePdu,
        version: &RoomVersionId,
        rules: &RoomVersionRules,
        create: Option<OwnedEventId>,
    ) {
        let (Some(federation), Some(room_id)) = (&self.federation, &pdu.room_id) else {
            return;
        };
        let known = match self.store.get_events(&pdu.prev_events).await {
            Ok(known) => known.len(),
            Err(_) => return,
        };
        if known == pdu.prev_events.len() {
            return;
        }
        let earliest = match self.head(room_id).await {
            Ok(Some(head)) => head.extremities,
            _ => return,
        };
        let latest = vec![pdu.event_id.clone()];
        let missing = match federation
            .missing_events(origin, room_id, earliest, latest)
            .await
        {
            Ok(missing) => missing,
            Err(err) => {
                tracing::info!(%origin, %room_id, error = %err, "could not fetch missing events");
                return;
            }
        };
        let mut checked = Vec::with_capacity(missing.len());
        for raw in &missing {
            match federation.check_pdu(raw, version).await {
                Ok(event) if event.room_id.as_deref() == Some(room_id) => checked.push(event),
                Ok(_) => {}
                Err(err) => tracing::info!(%origin, error = %err, "refused a missing event"),
            }
        }
        checked.sort_by_key(|event| event.depth);
        for event in checked {
            if event.event_id == pdu.event_id {
                continue;
            }
            let id = event.event_id.clone();
            if let Err(err) = self.accept(event, rules, create.clone()).await {
                tracing::info!(%origin, event_id = %id, error = %err, "refused a missing event");
            }
        }
    }

    async fn accept(
        &self,
        pdu: RemotePdu,
        rules: &RoomVersionRules,
        create: Option<OwnedEventId>,
    ) -> Result<(), ServiceError> {
        if self.store.get_event(&pdu.event_id).await?.is_some() {
            return Ok(()); // sent again: already ours
        }
        let ids: Vec<OwnedEventId> = pdu.auth_events.iter().cloned().chain(create).collect();
        let mut auth = HashMap::with_capacity(ids.len());
        for stored in self.store.get_events(&ids).await? {
            let id = stored.event_id.clone();
            auth.insert(stored.event_id, trusted(id, &stored.pdu).map_err(reject)?);
        }
        authorize_by_auth_events(&pdu, rules, &auth).map_err(reject)?;
        let room_id = pdu.room_id.clone().ok_or_else(|| reject("no room id"))?;
        let mut current = HashMap::new();
        for event in self.store.current_state(&room_id).await? {
            let key = (
                StateEventType::from(event.kind.as_str()),
                event.state_key.clone().unwrap_or_default(),
            );
            current.insert(key, trusted(event.event_id, &event.pdu).map_err(reject)?);
        }
        if let Err(err) = authorize_by_state(&pdu, rules, &current) {
            tracing::info!(event_id = %pdu.event_id, %err, "soft-failed an event");
            return Ok(());
        }
        self.import(&room_id, vec![imported(pdu)?], ImportAs::Received)
            .await
            .map(drop)
    }
}

fn reject(cause: impl std::fmt::Display) -> ServiceError {
    ServiceError::forbidden(format!("rejected: {cause}"))
}
