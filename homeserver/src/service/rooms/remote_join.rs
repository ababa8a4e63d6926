//! Joining a room this server does not hold: the federation layer joins
//! through another server and checks what it answers; the room is then
//! created here with that state and our join, appended by the room's actor.
//!
//! Not yet: events the room's other servers send afterwards, and our events
//! sent to them (the rest of issue 18).

use ruma_common::{OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, ServerName};
use ruma_events::TimelineEventType;
use tokio::sync::oneshot;

use super::actor::{ImportJob, Imported, Job};
use super::{Requester, RoomService};
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::federation::event::RemotePdu;
use crate::service::federation::not_federating;

impl RoomService {
    pub(super) async fn join_remote(
        &self,
        who: &Requester,
        room_id: &RoomId,
        mut servers: Vec<OwnedServerName>,
    ) -> ServiceResult<OwnedRoomId> {
        let federation = self.federation.as_ref().ok_or_else(not_federating)?;
        servers.extend(self.invite_servers(room_id, &who.user_id).await?);
        let ours: &ServerName = &self.server_name;
        servers.retain(|server| server != ours);
        let mut seen = std::collections::HashSet::new();
        servers.retain(|server| seen.insert(server.clone()));
        if servers.is_empty() {
            return Err(ServiceError::not_found(
                "Unknown room: name a server to join it through (via)",
            ));
        }
        let mut last = ServiceError::not_found("No server could let you join");
        for server in &servers {
            match federation.join_room(server, room_id, &who.user_id).await {
                Ok(joined) => {
                    self.import_joined(room_id, joined).await?;
                    return Ok(room_id.to_owned());
                }
                Err(err) => {
                    tracing::info!(%server, %room_id, error = %err.message, "remote join failed");
                    last = err;
                }
            }
        }
        Err(last)
    }

    /// Creates the room here: its state before the join, then the join.
    async fn import_joined(
        &self,
        room_id: &RoomId,
        joined: crate::service::federation::join::JoinedRemote,
    ) -> ServiceResult<Vec<OwnedEventId>> {
        let creator = joined
            .state
            .iter()
            .find(|pdu| pdu.kind == TimelineEventType::RoomCreate)
            .map(|pdu| pdu.sender.clone())
            .ok_or_else(|| ServiceError::internal("a joined room without a create event"))?;
        // A room known by an invite is in the store already.
        if !self.store.room_exists(room_id).await? {
            self.store
                .create_room(room_id, joined.version.as_str(), &creator)
                .await?;
        }
        let outliers = joined
            .auth_chain
            .iter()
            .map(|pdu| {
                let json = serde_json::to_value(&pdu.json).map_err(ServiceError::internal)?;
                Ok((pdu.event_id.clone(), std::sync::Arc::new(json)))
            })
            .collect::<ServiceResult<Vec<_>>>()?;
        self.store.add_outliers(room_id, &outliers).await?;
        // Invites kept here before the join are part of that state already.
        let ids: Vec<OwnedEventId> = joined.state.iter().map(|e| e.event_id.clone()).collect();
        let known: std::collections::HashSet<OwnedEventId> = self
            .store
            .get_events(&ids)
            .await?
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        let events = joined
            .state
            .into_iter()
            .filter(|e| !known.contains(&e.event_id))
            .chain(std::iter::once(joined.join))
            .map(imported)
            .collect::<ServiceResult<Vec<_>>>()?;
        self.import(room_id, events, ImportAs::NewRoom).await
    }

    /// Has the room's actor append events another server built (checked
    /// already), all or none; resolves once they are durable.
    pub(super) async fn import(
        &self,
        room_id: &RoomId,
        events: Vec<Imported>,
        how: ImportAs,
    ) -> ServiceResult<Vec<OwnedEventId>> {
        let (reply, answer) = oneshot::channel();
        let job = ImportJob {
            events,
            new_room: matches!(how, ImportAs::NewRoom),
            forward: matches!(how, ImportAs::Forwarded),
            reply,
        };
        self.core.submit(room_id, Job::Import(job));
        answer
            .await
            .map_err(|_| ServiceError::internal("the room actor stopped"))?
    }
}

/// How imported events join a room here.
#[derive(Clone, Copy)]
pub(super) enum ImportAs {
    /// A room's state from a join: the room is new here (or known only by
    /// invites).
    NewRoom,
    /// Events of a room we hold, kept here only.
    Received,
    /// Events of a room we hold that its other servers get from us (we
    /// accepted them as the room's resident).
    Forwarded,
}

pub(super) fn imported(pdu: RemotePdu) -> ServiceResult<Imported> {
    Ok(Imported {
        event_id: pdu.event_id,
        sender: pdu.sender,
        kind: pdu.kind.to_string(),
        state_key: pdu.state_key,
        depth: i64::try_from(pdu.depth).unwrap_or(i64::MAX),
        pdu: serde_json::to_value(&pdu.json).map_err(ServiceError::internal)?,
        redaction: None,
        placed: None,
    })
}
