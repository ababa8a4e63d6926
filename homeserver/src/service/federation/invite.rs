//! Inviting another server's user: the invite goes to the invitee's server
//! first (`PUT /invite` v2), which countersigns it; only then is it
//! appended and sent to the room's other servers.

use std::sync::Arc;

use ruma_common::{EventId, RoomId, RoomVersionId, ServerName};
use ruma_federation_api::membership::{create_invite, RawStrippedState};
use serde_json::Value;

use super::event::RemotePdu;
use super::FederationService;
use crate::service::error::{ServiceError, ServiceResult};

impl FederationService {
    /// Has `destination` countersign our invite event; returns the event
    /// as it came back, checked (signatures included) and still the same
    /// event.
    pub async fn invite_remote(
        &self,
        destination: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        version: &RoomVersionId,
        pdu: &Value,
        room_state: &[Arc<Value>],
    ) -> ServiceResult<RemotePdu> {
        let raw = serde_json::value::to_raw_value(pdu).map_err(ServiceError::internal)?;
        // Matrix 1.16: the room's state travels as full PDUs.
        let state = room_state
            .iter()
            .map(|pdu| serde_json::value::to_raw_value(pdu).map(RawStrippedState::Pdu))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ServiceError::internal)?;
        let request = create_invite::v2::Request::new(
            room_id.to_owned(),
            event_id.to_owned(),
            version.clone(),
            raw,
            state,
        );
        let answer = self.client.send(destination, request).await?;
        let signed = self.check_pdu(&answer.event, version).await?;
        if signed.event_id != event_id || signed.redacted {
            return Err(ServiceError::from(super::FederationError::BadResponse {
                server: destination.to_owned(),
                cause: format!("the invite came back changed, as {}", signed.event_id),
            }));
        }
        Ok(signed)
    }
}
