//! Events a server sent us refer to events we never got (a server catching
//! up after an outage sends only its latest events): asked for with
//! `get_missing_events`, between our forward extremities and the new event.

use js_int::UInt;
use ruma_common::{EventId, OwnedEventId, RoomId, ServerName};
use ruma_federation_api::authorization::get_event_authorization;
use ruma_federation_api::event::get_missing_events;
use serde_json::value::RawValue;

use super::{FederationError, FederationService};

/// Most events one gap is filled with; a longer gap is left open (the
/// history is then paged from the other server as it is read).
pub const MAX_MISSING: u32 = 50;

impl FederationService {
    /// The events `origin` holds between `earliest` (what we hold) and
    /// `latest`, unchecked, as it answered (oldest first by the spec).
    pub async fn missing_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: Vec<OwnedEventId>,
        latest: Vec<OwnedEventId>,
    ) -> Result<Vec<Box<RawValue>>, FederationError> {
        let mut request =
            get_missing_events::v1::Request::new(room_id.to_owned(), earliest, latest);
        request.limit = UInt::from(MAX_MISSING);
        Ok(self.client.send(origin, request).await?.events)
    }

    /// The auth chain of `event_id` as `origin` holds it (`/event_auth`),
    /// unchecked: what an event we were sent needs for its authorization
    /// when some of its auth events never reached us.
    pub async fn event_auth(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Vec<Box<RawValue>>, FederationError> {
        let request =
            get_event_authorization::v1::Request::new(room_id.to_owned(), event_id.to_owned());
        Ok(self.client.send(origin, request).await?.auth_chain)
    }
}
