//! Events other servers send us (`PUT /send/{txnId}`) for rooms we hold,
//! each checked, authorized by its auth events (else rejected) and by the
//! room's current state (else soft-failed: accepted, never shown), then
//! appended by the room's actor.
//!
//! A transaction's PDUs are taken in runs, one per room: each PDU is checked
//! on its own (format, id, signatures, hashes, sender), then each run is
//! authorized in order against state that advances with each accepted
//! state event (the auth events, the room's state and what is already here
//! read once per run) and appended as one import, the rooms' runs at once:
//! a transaction of 50 messages costs a commit or two, not 50.
//!
//! An event whose `prev_events` are unknown here first has the gap filled
//! from the sender (`get_missing_events`). An event whose place needs a
//! state resolution (the room's history forks) is taken alone, in
//! `forks.rs`. Not yet: fetching missing auth events (`/event_auth`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ruma_common::room_version_rules::RoomVersionRules;
use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, ServerName};
use ruma_events::{StateEventType, TimelineEventType};
use ruma_state_res::auth_types_for_event;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::actor::Imported;
use super::known_events;
use super::remote_join::{imported, ImportAs};
use super::state::{PowerLevels, RoomState};
use super::RoomService;
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::federation::event::{
    authorize_by_auth_events, authorize_by_state, event_id_of, rules_of, trusted, RemotePdu,
};
use crate::service::pdu::redact_pdu;
use crate::store::StoredEvent;

/// What a PDU says about itself before it is checked.
#[derive(Deserialize)]
struct Peek {
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    signatures: BTreeMap<String, serde::de::IgnoredAny>,
}

/// A membership event that `origin` says it signed too: a join or leave
/// it accepted as the room's resident and now sends on. Relaying cannot
/// forge: the sender's own server's signature is still required and
/// checked as for any PDU.
fn relayed_membership(origin: &ServerName, peek: &Peek) -> bool {
    peek.kind == "m.room.member" && peek.signatures.contains_key(origin.as_str())
}

/// The answer for one PDU: accepted (or soft-failed), or why not.
pub type PduResult = Result<(), String>;
type Results = BTreeMap<OwnedEventId, PduResult>;

/// A room PDUs arrive for, as this server holds it.
pub(super) struct Room {
    pub room_id: OwnedRoomId,
    pub state: Arc<RoomState>,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    pub create: Option<OwnedEventId>,
    /// The state group of the current state.
    pub head_group: Option<OwnedEventId>,
    /// The forward extremities.
    pub extremities: Vec<OwnedEventId>,
}

/// A transaction's checked PDUs of one room, in the order sent: authorized
/// and appended together.
struct Run {
    room: Arc<Room>,
    pdus: Vec<RemotePdu>,
}

impl RoomService {
    /// The PDUs of one transaction from `origin`; a result per event whose
    /// id could be worked out. Each room's PDUs are taken in the order
    /// sent; different rooms' at once, so their appends share commits.
    pub async fn receive_pdus(&self, origin: &ServerName, pdus: &[Box<RawValue>]) -> Results {
        let mut results = BTreeMap::new();
        let mut runs: Vec<Run> = Vec::new();
        for raw in pdus {
            let peek: Peek = match serde_json::from_str(raw.get()) {
                Ok(peek) => peek,
                Err(err) => {
                    tracing::info!(%origin, %err, "dropped a PDU");
                    continue;
                }
            };
            let held = runs.iter().position(|r| r.room.room_id == peek.room_id);
            let room = match held {
                Some(n) => runs[n].room.clone(),
                None => match self.room_for_pdus(&peek.room_id).await {
                    Ok(room) => Arc::new(room),
                    Err(reason) => {
                        tracing::info!(%origin, %reason, "dropped a PDU");
                        continue;
                    }
                },
            };
            let pdu = match self.check_incoming(origin, &room, &peek, raw).await {
                Ok(Ok(pdu)) => pdu,
                Ok(Err((id, reason))) => {
                    results.insert(id, Err(reason));
                    continue;
                }
                Err(reason) => {
                    tracing::info!(%origin, %reason, "dropped a PDU");
                    continue;
                }
            };
            match held {
                Some(n) => runs[n].pdus.push(pdu),
                None => runs.push(Run {
                    room,
                    pdus: vec![pdu],
                }),
            }
        }
        let accepted = runs.into_iter().map(|run| self.accept_run(origin, run));
        for outcome in futures::future::join_all(accepted).await {
            results.extend(outcome);
        }
        results
    }

    pub(super) async fn room_for_pdus(&self, room_id: &RoomId) -> Result<Room, String> {
        let head = self
            .head(room_id)
            .await
            .map_err(|e| e.message)?
            .ok_or_else(|| format!("unknown room {room_id}"))?;
        let state = head.state;
        let version = RoomVersionId::try_from(state.room_version()).map_err(|e| e.to_string())?;
        let rules = rules_of(&version).map_err(|e| e.to_string())?;
        let create = state.get("m.room.create", "").map(|c| c.event_id.clone());
        Ok(Room {
            room_id: room_id.to_owned(),
            state,
            version,
            rules,
            create,
            head_group: head.state_head,
            extremities: head.extremities,
        })
    }

    /// The checks one PDU passes on its own. `Err` when it cannot even be
    /// identified; `Ok(Err)` with its id and why it is refused.
    async fn check_incoming(
        &self,
        origin: &ServerName,
        room: &Room,
        peek: &Peek,
        raw: &RawValue,
    ) -> Result<Result<RemotePdu, (OwnedEventId, String)>, String> {
        let federation = self.federation.as_ref().ok_or("not federating")?;
        let id = event_id_of(raw, &room.rules).map_err(|e| e.to_string())?;
        if !room.state.server_allowed(origin) {
            let reason = format!("the room's server ACL denies {origin}");
            return Ok(Err((id, reason)));
        }
        // An origin speaks only for its own users (checked before the
        // signatures, so a stranger's PDU costs no key fetch), but for the
        // membership events it accepted as the room's resident for
        // another server (`send_join`, `send_leave`) and countersigned.
        if peek.sender.server_name() != origin && !relayed_membership(origin, peek) {
            let reason = format!("{} is not a user of {origin}", peek.sender);
            return Ok(Err((id, reason)));
        }
        let pdu = match federation.check_pdu(raw, &room.version).await {
            Ok(pdu) => pdu,
            Err(err) => return Ok(Err((id, err.to_string()))),
        };
        // A room we hold has its create event: another one, or any event
        // without a parent, would start the room again.
        if pdu.kind == TimelineEventType::RoomCreate || pdu.prev_events.is_empty() {
            let reason = "the room exists: no second create event or root".to_owned();
            return Ok(Err((id, reason)));
        }
        Ok(Ok(pdu))
    }

    /// Fills the run's gaps, then authorizes and appends it.
    async fn accept_run(&self, origin: &ServerName, run: Run) -> Vec<(OwnedEventId, PduResult)> {
        let Run { mut room, pdus } = run;
        if self.fill_gaps(origin, &room, &pdus).await {
            // What the gap brought (a join, a power change) is state the
            // run is authorized against.
            if let Ok(fresh) = self.room_for_pdus(&room.room_id).await {
                room = Arc::new(fresh);
            }
        }
        let ids: Vec<OwnedEventId> = pdus.iter().map(|p| p.event_id.clone()).collect();
        match self.authorize_and_import(origin, &room, pdus).await {
            Ok(each) => each,
            Err(err) => {
                let reason = err.to_string();
                ids.into_iter()
                    .map(|id| (id, Err(reason.clone())))
                    .collect()
            }
        }
    }

    /// When some of the run's `prev_events` are neither here nor earlier
    /// in the run, asks `origin` for the events between our forward
    /// extremities and the run's PDUs that lack them, and accepts those
    /// (checked and authorized like any PDU; sent by any server's users,
    /// since they are the room's history) oldest first. A gap that cannot
    /// be filled is left open: the run is still accepted. Whether any event
    /// was imported.
    async fn fill_gaps(&self, origin: &ServerName, room: &Room, pdus: &[RemotePdu]) -> bool {
        let Some(federation) = &self.federation else {
            return false;
        };
        let in_run: HashSet<&OwnedEventId> = pdus.iter().map(|p| &p.event_id).collect();
        let mut prevs: Vec<OwnedEventId> = pdus
            .iter()
            .flat_map(|p| p.prev_events.iter())
            .filter(|id| !in_run.contains(id))
            .cloned()
            .collect();
        prevs.sort();
        prevs.dedup();
        let mut known: HashSet<OwnedEventId> = match self.store.get_events(&prevs).await {
            Ok(known) => known.into_iter().map(|e| e.event_id).collect(),
            Err(_) => return false,
        };
        // Kept beside the timeline is known too (a soft-failed or refused
        // parent is not a gap to fill); asked only when some are missing.
        let unfound: Vec<OwnedEventId> = prevs
            .iter()
            .filter(|id| !known.contains(*id))
            .cloned()
            .collect();
        if !unfound.is_empty() {
            match self.store.outliers(&unfound).await {
                Ok(beside) => known.extend(beside.into_iter().map(|o| o.event_id)),
                Err(_) => return false,
            }
        }
        let latest: Vec<OwnedEventId> = pdus
            .iter()
            .filter(|p| {
                p.prev_events
                    .iter()
                    .any(|id| !known.contains(id) && !in_run.contains(id))
            })
            .map(|p| p.event_id.clone())
            .collect();
        if latest.is_empty() {
            return false;
        }
        let earliest = match self.head(&room.room_id).await {
            Ok(Some(head)) => head.extremities,
            _ => return false,
        };
        let missing = federation
            .missing_events(origin, &room.room_id, earliest, latest)
            .await;
        let missing = match missing {
            Ok(missing) => missing,
            Err(err) => {
                tracing::info!(%origin, room_id = %room.room_id, error = %err, "could not fetch missing events");
                return false;
            }
        };
        let mut checked = Vec::with_capacity(missing.len());
        for raw in &missing {
            match federation.check_pdu(raw, &room.version).await {
                Ok(event)
                    if event.room_id.as_ref() == Some(&room.room_id)
                        && !in_run.contains(&event.event_id) =>
                {
                    checked.push(event)
                }
                Ok(_) => {}
                Err(err) => tracing::info!(%origin, error = %err, "refused a missing event"),
            }
        }
        if checked.is_empty() {
            return false;
        }
        checked.sort_by_key(|event| event.depth);
        match self.authorize_and_import(origin, room, checked).await {
            Ok(each) => {
                for (event_id, result) in each {
                    if let Err(error) = result {
                        tracing::info!(%origin, %event_id, %error, "refused a missing event");
                    }
                }
                true
            }
            Err(err) => {
                tracing::info!(%origin, error = %err, "missing events not imported");
                false
            }
        }
    }

    /// Authorizes and appends `pdus` (one room's, oldest first): those on
    /// the room's current state together (see `authorize_and_import_linear`),
    /// each one whose place needs a state resolution (the history forks)
    /// on its own, with the room's head read again after it.
    async fn authorize_and_import(
        &self,
        origin: &ServerName,
        room: &Room,
        mut pdus: Vec<RemotePdu>,
    ) -> ServiceResult<Vec<(OwnedEventId, PduResult)>> {
        let mut outcome = Vec::with_capacity(pdus.len());
        // The room as read again after a forked event moved its head.
        let mut reread: Option<Room> = None;
        loop {
            let at = self
                .first_forked(reread.as_ref().unwrap_or(room), &pdus)
                .await?;
            let Some(at) = at else {
                let room = reread.as_ref().unwrap_or(room);
                outcome.extend(self.authorize_and_import_linear(origin, room, pdus).await?);
                return Ok(outcome);
            };
            let mut rest = pdus.split_off(at);
            let forked = rest.remove(0);
            if !pdus.is_empty() {
                let on = reread.as_ref().unwrap_or(room);
                outcome.extend(self.authorize_and_import_linear(origin, on, pdus).await?);
                reread = Some(self.room_for_pdus(&room.room_id).await.map_err(reject)?);
            }
            let on = reread.as_ref().unwrap_or(room);
            outcome.push(self.import_forked(origin, on, forked).await?);
            reread = Some(self.room_for_pdus(&room.room_id).await.map_err(reject)?);
            if rest.is_empty() {
                return Ok(outcome);
            }
            pdus = rest;
        }
    }

    /// Authorizes `pdus` (one room's, oldest first, each on the state the
    /// one before left) against their auth events and against the room's
    /// state as each accepted state event moves it, then appends the
    /// accepted ones in one import. Events already here are accepted again
    /// without a copy.
    async fn authorize_and_import_linear(
        &self,
        origin: &ServerName,
        room: &Room,
        pdus: Vec<RemotePdu>,
    ) -> ServiceResult<Vec<(OwnedEventId, PduResult)>> {
        let targets: Vec<OwnedEventId> = pdus.iter().filter_map(redaction_target).collect();
        let mut wanted: Vec<OwnedEventId> = pdus
            .iter()
            .flat_map(|p| std::iter::once(&p.event_id).chain(&p.auth_events))
            .chain(&room.create)
            .chain(&targets)
            .cloned()
            .collect();
        wanted.sort();
        wanted.dedup();
        let stored = self.store.get_events(&wanted).await?;
        let mut auth = HashMap::with_capacity(stored.len());
        let mut redactable = HashMap::new();
        // Another room's events are never this room's auth events (and its
        // create event must not stand in for this room's), nor redacted by
        // its redactions.
        for event in stored.into_iter().filter(|e| e.room_id == room.room_id) {
            let id = event.event_id.clone();
            if targets.contains(&id) {
                redactable.insert(id.clone(), event.clone());
            }
            auth.insert(event.event_id, trusted(id, &event.pdu).map_err(reject)?);
        }
        self.complete_auth_events(origin, room, &pdus, &mut auth)
            .await?;
        let (answered, mut state) = futures::try_join!(
            self.answered_before(&pdus),
            self.state_for_auth(room, &pdus)
        )?;
        let mut outcome = Vec::with_capacity(pdus.len());
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        let mut seen = HashSet::with_capacity(pdus.len());
        for pdu in pdus {
            let id = pdu.event_id.clone();
            if !seen.insert(id.clone()) {
                continue; // twice in one transaction: the first answer stands
            }
            if auth.contains_key(&id) {
                outcome.push((id, Ok(()))); // sent again: already ours
                continue;
            }
            if let Some(answer) = answered.get(&id) {
                outcome.push((id, answer.clone())); // refused before
                continue;
            }
            if let Err(err) = authorize_by_auth_events(&pdu, &room.rules, &auth) {
                let reason = reject(err).to_string();
                refused.push(known_events::refused(&pdu, false, &reason));
                outcome.push((id, Err(reason)));
                continue;
            }
            outcome.push((id, Ok(())));
            if let Err(err) = authorize_by_state(&pdu, &room.rules, &state) {
                tracing::info!(event_id = %pdu.event_id, %err, "soft-failed an event");
                refused.push(known_events::refused(&pdu, true, &err.to_string()));
                continue;
            }
            // Later events of the run may cite it, or be authorized by it.
            if let Some(key) = &pdu.state_key {
                let kind = StateEventType::from(pdu.kind.to_string());
                state.insert((kind, key.clone()), pdu.clone());
                auth.insert(pdu.event_id.clone(), pdu.clone());
            }
            let redaction = redaction_of(&pdu, &state, &redactable);
            let mut event = imported(pdu)?;
            event.redaction = redaction;
            accepted.push(event);
        }
        self.keep_refused(room, refused).await;
        self.import_each_if_need_be(&room.room_id, accepted, &mut outcome)
            .await;
        Ok(outcome)
    }

    /// Appends the accepted events in one import; should that fail (one of
    /// them arrived meanwhile by another transaction, say), one by one, so
    /// each gets its own answer and none is lost for another's sake. An
    /// event found stored after a failed append is accepted.
    async fn import_each_if_need_be(
        &self,
        room_id: &RoomId,
        accepted: Vec<Imported>,
        outcome: &mut [(OwnedEventId, PduResult)],
    ) {
        let one_by_one = match accepted.len() {
            0 => return,
            1 => None,
            _ => Some(accepted.clone()),
        };
        let ids: Vec<OwnedEventId> = accepted.iter().map(|e| e.event_id.clone()).collect();
        let Err(err) = self.import(room_id, accepted, ImportAs::Received).await else {
            return;
        };
        let mut answers: Vec<(OwnedEventId, PduResult)> = Vec::with_capacity(ids.len());
        match one_by_one {
            None => {
                for id in ids {
                    let result = self.stored_after_all(&id, &err).await;
                    answers.push((id, result));
                }
            }
            Some(events) => {
                for event in events {
                    let id = event.event_id.clone();
                    let result = match self.import(room_id, vec![event], ImportAs::Received).await {
                        Ok(_) => Ok(()),
                        Err(err) => self.stored_after_all(&id, &err).await,
                    };
                    answers.push((id, result));
                }
            }
        }
        for (id, result) in answers {
            if let Some((_, slot)) = outcome.iter_mut().find(|(o, _)| *o == id) {
                *slot = result;
            }
        }
    }

    /// After a failed append: accepted if another transaction stored the
    /// event meanwhile, else the failure.
    pub(super) async fn stored_after_all(
        &self,
        id: &OwnedEventId,
        err: &ServiceError,
    ) -> PduResult {
        match self.store.get_event(id).await {
            Ok(Some(_)) => Ok(()),
            _ => Err(err.to_string()),
        }
    }

    /// The part of the room's current state that the authorization rules
    /// read for `pdus` (the create event, power levels, join rules, the
    /// members concerned...): looked up in the state held in memory and
    /// read in one query, however large the room.
    pub(super) async fn state_for_auth(
        &self,
        room: &Room,
        pdus: &[RemotePdu],
    ) -> ServiceResult<HashMap<(StateEventType, String), RemotePdu>> {
        let lookup = |kind: &StateEventType, key: &str| {
            let entry = room.state.get(&kind.to_string(), key)?;
            Some(entry.event_id.clone())
        };
        self.auth_state_of(&room.rules, pdus, lookup).await
    }

    /// The part of a state (`lookup` finds its entries) that the
    /// authorization rules read for `pdus`, read in one query.
    pub(super) async fn auth_state_of(
        &self,
        rules: &RoomVersionRules,
        pdus: &[RemotePdu],
        lookup: impl Fn(&StateEventType, &str) -> Option<OwnedEventId>,
    ) -> ServiceResult<HashMap<(StateEventType, String), RemotePdu>> {
        let mut keys: HashSet<(StateEventType, String)> = HashSet::new();
        keys.insert((StateEventType::RoomCreate, String::new()));
        for pdu in pdus {
            let needed = auth_types_for_event(
                &pdu.kind,
                &pdu.sender,
                pdu.state_key.as_deref(),
                &pdu.content,
                &rules.authorization,
            );
            keys.extend(needed.unwrap_or_default());
        }
        let ids: Vec<OwnedEventId> = keys
            .iter()
            .filter_map(|(kind, key)| lookup(kind, key))
            .collect();
        let mut state = HashMap::with_capacity(ids.len());
        for event in self.store.get_events(&ids).await? {
            let key = (
                StateEventType::from(event.kind.as_str()),
                event.state_key.clone().unwrap_or_default(),
            );
            state.insert(key, trusted(event.event_id, &event.pdu).map_err(reject)?);
        }
        Ok(state)
    }
}

/// The event a redaction names (`content.redacts` from room version 11,
/// the top-level `redacts` before).
fn redaction_target(pdu: &RemotePdu) -> Option<OwnedEventId> {
    if pdu.kind != TimelineEventType::RoomRedaction {
        return None;
    }
    #[derive(Deserialize)]
    struct Redacts {
        redacts: Option<OwnedEventId>,
    }
    let in_content = serde_json::from_str::<Redacts>(pdu.content.get())
        .ok()
        .and_then(|c| c.redacts);
    in_content.or_else(|| pdu.redacts.clone())
}

/// For an accepted redaction of an event we hold: that event and its
/// redacted PDU, when the redaction may take effect: its sender's server
/// sent the event, or its sender has the room's `redact` power (checked
/// here because the authorization rules cannot know the target).
fn redaction_of(
    pdu: &RemotePdu,
    state: &HashMap<(StateEventType, String), RemotePdu>,
    redactable: &HashMap<OwnedEventId, StoredEvent>,
) -> Option<(OwnedEventId, serde_json::Value)> {
    let target = redactable.get(&redaction_target(pdu)?)?;
    let same_server = target.sender.server_name() == pdu.sender.server_name();
    let empowered = || {
        let levels = state.get(&(StateEventType::RoomPowerLevels, String::new()))?;
        let content: serde_json::Value = serde_json::from_str(levels.content.get()).ok()?;
        let levels = PowerLevels::from_content(&content);
        Some(levels.user_level(&pdu.sender) >= levels.redact)
    };
    if !same_server && empowered() != Some(true) {
        tracing::info!(event_id = %pdu.event_id, "a redaction without the power to redact: kept, not applied");
        return None;
    }
    let json = serde_json::to_value(&pdu.json).ok()?;
    match redact_pdu(&target.pdu, &pdu.event_id, &json) {
        Ok(redacted) => Some((target.event_id.clone(), redacted)),
        Err(err) => {
            tracing::warn!(error = %err.message, "redacting an event failed");
            None
        }
    }
}

pub(super) fn reject(cause: impl std::fmt::Display) -> ServiceError {
    ServiceError::forbidden(format!("rejected: {cause}"))
}
