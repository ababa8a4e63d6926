//! Events known here beside the timeline: auth events a PDU names that
//! never reached us (read from the outliers, else fetched from its sender
//! with `/event_auth`, checked and kept as outliers), and the events this
//! server refused or soft-failed (kept with why, so a copy sent again gets
//! the same answer without the checks, and a later event that names a
//! soft-failed one as a parent finds it known).

use std::collections::HashMap;
use std::sync::Arc;

use ruma_common::{OwnedEventId, ServerName};

use super::remote_events::{PduResult, Room};
use super::RoomService;
use crate::service::error::ServiceResult;
use crate::service::federation::event::{authorize_by_auth_events, trusted, RemotePdu};
use crate::store::Refused;

/// PDUs of one run whose auth events are fetched from their sender, at
/// most: a flood of events naming unknown auth events costs a bounded
/// number of requests.
const FETCHES_PER_RUN: usize = 5;

impl RoomService {
    /// Adds to `auth` the auth events of `pdus` it lacks: the room's
    /// outliers first (a join's auth chain), then, for up to
    /// [`FETCHES_PER_RUN`] PDUs still lacking some, the PDU's auth chain
    /// from `origin`, each event checked (format, signatures, hashes) and
    /// authorized by its own auth events, oldest first, then kept as an
    /// outlier. What cannot be had stays missing: the PDU is then rejected
    /// by its authorization.
    pub(super) async fn complete_auth_events(
        &self,
        origin: &ServerName,
        room: &Room,
        pdus: &[RemotePdu],
        auth: &mut HashMap<OwnedEventId, RemotePdu>,
    ) -> ServiceResult<()> {
        let missing = |auth: &HashMap<OwnedEventId, RemotePdu>| -> Vec<OwnedEventId> {
            let mut ids: Vec<OwnedEventId> = pdus
                .iter()
                .flat_map(|p| p.auth_events.iter())
                .filter(|id| !auth.contains_key(*id) && !pdus.iter().any(|p| &p.event_id == *id))
                .cloned()
                .collect();
            ids.sort();
            ids.dedup();
            ids
        };
        let wanted = missing(auth);
        if wanted.is_empty() {
            return Ok(());
        }
        for outlier in self.store.outliers(&wanted).await? {
            let usable = !matches!(outlier.refused, Some((false, _)));
            if usable && outlier.room_id == room.room_id {
                let pdu = trusted(outlier.event_id, &outlier.pdu)
                    .map_err(super::remote_events::reject)?;
                auth.insert(pdu.event_id.clone(), pdu);
            }
        }
        let Some(federation) = &self.federation else {
            return Ok(());
        };
        let lacking: Vec<&RemotePdu> = pdus
            .iter()
            .filter(|p| p.auth_events.iter().any(|id| !auth.contains_key(id)))
            .take(FETCHES_PER_RUN)
            .collect();
        for pdu in lacking {
            let chain = match federation
                .event_auth(origin, &room.room_id, &pdu.event_id)
                .await
            {
                Ok(chain) => chain,
                Err(err) => {
                    tracing::info!(%origin, event_id = %pdu.event_id, error = %err, "could not fetch auth events");
                    continue;
                }
            };
            let mut fetched = Vec::with_capacity(chain.len());
            for raw in &chain {
                match federation.check_pdu(raw, &room.version).await {
                    Ok(event) if event.room_id.as_ref() == Some(&room.room_id) => {
                        fetched.push(event)
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::info!(%origin, error = %err, "refused a fetched auth event")
                    }
                }
            }
            fetched.sort_by_key(|event| event.depth);
            let mut kept = Vec::new();
            for event in fetched {
                if auth.contains_key(&event.event_id) {
                    continue;
                }
                if let Err(err) = authorize_by_auth_events(&event, &room.rules, auth) {
                    tracing::info!(event_id = %event.event_id, %err, "refused a fetched auth event");
                    continue;
                }
                let json = serde_json::to_value(&event.json)
                    .map_err(crate::service::error::ServiceError::internal)?;
                kept.push((event.event_id.clone(), Arc::new(json)));
                auth.insert(event.event_id.clone(), event);
            }
            self.store.add_outliers(&room.room_id, &kept).await?;
        }
        Ok(())
    }

    /// The answers already given to those of `pdus` this server refused or
    /// soft-failed before.
    pub(super) async fn answered_before(
        &self,
        pdus: &[RemotePdu],
    ) -> ServiceResult<HashMap<OwnedEventId, PduResult>> {
        let ids: Vec<OwnedEventId> = pdus.iter().map(|p| p.event_id.clone()).collect();
        let mut answers = HashMap::new();
        for outlier in self.store.outliers(&ids).await? {
            match outlier.refused {
                Some((true, _)) => answers.insert(outlier.event_id, Ok(())),
                Some((false, reason)) => answers.insert(outlier.event_id, Err(reason)),
                None => None,
            };
        }
        Ok(answers)
    }

    /// Keeps what was refused or soft-failed, with why. A failure to keep
    /// them costs only the shortcut for a copy sent again: logged.
    pub(super) async fn keep_refused(&self, room: &Room, refused: Vec<Refused>) {
        if refused.is_empty() {
            return;
        }
        if let Err(err) = self.store.add_refused(&room.room_id, &refused).await {
            tracing::warn!(room_id = %room.room_id, error = %err, "could not keep refused events");
        }
    }
}

/// A refused (or soft-failed) PDU as kept.
pub(super) fn refused(pdu: &RemotePdu, soft_failed: bool, reason: &str) -> Refused {
    Refused {
        event_id: pdu.event_id.clone(),
        pdu: Arc::new(serde_json::to_value(&pdu.json).unwrap_or_default()),
        soft_failed,
        reason: reason.to_owned(),
    }
}
