//! Events other servers send us (`PUT /send/{txnId}`) for rooms we hold,
//! each checked, authorized by its auth events (else rejected) and by the
//! room's current state (else soft-failed: accepted, never shown), then
//! appended by the room's actor.
//!
//! Not yet: fetching missing `prev_events` or auth events from the sender
//! (`get_missing_events`, `/event_auth`), state resolution when the room's
//! history forks, and EDUs (issue 18).

use std::collections::{BTreeMap, HashMap};

use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, ServerName};
use ruma_events::StateEventType;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::actor::{ImportJob, Job};
use super::remote_join::imported;
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
        let rules = rules_of(&version).map_err(|e| e.to_string())?;
        let id = event_id_of(raw, &rules).map_err(|e| e.to_string())?;
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
        let result = self
            .accept(
                pdu,
                &rules,
                state.get("m.room.create", "").map(|c| c.event_id.clone()),
            )
            .await;
        Ok((id, result.map_err(|e| e.to_string())))
    }

    async fn accept(
        &self,
        pdu: RemotePdu,
        rules: &ruma_common::room_version_rules::RoomVersionRules,
        create: Option<OwnedEventId>,
    ) -> Result<(), ServiceError> {
        if self.store.get_event(&pdu.event_id).await?.is_some() {
            return Ok(()); // sent again: already ours
        }
        let mut auth = HashMap::new();
        for id in pdu.auth_events.iter().cloned().chain(create) {
            if let Some(stored) = self.store.get_event(&id).await? {
                auth.insert(id.clone(), trusted(id, &stored.pdu).map_err(reject)?);
            }
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
        let (reply, answer) = oneshot::channel();
        let events = vec![imported(pdu)?];
        self.core.submit(
            &room_id,
            Job::Import(ImportJob {
                events,
                new_room: false,
                forward: false,
                reply,
            }),
        );
        answer
            .await
            .map_err(|_| ServiceError::internal("the room actor stopped"))??;
        Ok(())
    }
}

fn reject(cause: impl std::fmt::Display) -> ServiceError {
    ServiceError::forbidden(format!("rejected: {cause}"))
}
