//! Receiving a PDU, the checks that need no room state (the first steps of
//! "Checks performed on receipt of a PDU"): the format of its room
//! version, its event id (the reference hash), the signatures of the
//! servers that must have signed it, and its content hash: an event whose
//! signatures hold but whose content does not match its hash is kept
//! redacted, anything else wrong refuses it. Then authorization against
//! its own auth events, with `ruma-state-res`'s rules of its room version.
//!
//! What comes out is a [`RemotePdu`], which is also what the state
//! resolution and authorization of `ruma-state-res` work on.

use std::collections::{BTreeMap, HashMap};

use ruma_common::canonical_json::{redact, CanonicalJsonObject, CanonicalJsonValue};
use ruma_common::room_version_rules::RoomVersionRules;
use ruma_common::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, UserId,
};
use ruma_events::{StateEventType, TimelineEventType};
use ruma_signatures::Verified;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{FederationError, FederationService};
use crate::service::pdu::MAX_PDU_BYTES;

/// Why a PDU was refused.
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("room version {0} is not supported")]
    UnsupportedVersion(String),
    #[error("malformed PDU: {0}")]
    Malformed(String),
    #[error("signatures do not hold: {0}")]
    BadSignature(String),
    #[error("no key to check a signature with: {0}")]
    NoKey(#[from] FederationError),
    #[error("not authorized by its auth events: {0}")]
    Unauthorized(String),
}

/// A PDU that passed the checks: its fields, and its JSON as it will be
/// stored (redacted if its content did not match its hash).
#[derive(Debug, Clone)]
pub struct RemotePdu {
    pub event_id: OwnedEventId,
    /// `None` for the create event of a room version 12 room, whose id is
    /// derived from it.
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Box<RawValue>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
    pub json: CanonicalJsonObject,
    /// The content hash did not match: `json` is the redacted form.
    pub redacted: bool,
}

/// The fields read out of a checked PDU.
#[derive(Deserialize)]
struct Fields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    state_key: Option<String>,
    content: Box<RawValue>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: u64,
}

impl ruma_state_res::Event for RemotePdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &OwnedEventId {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&OwnedEventId> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

/// The rules of a room version we support (10, 11 and 12).
pub fn rules_of(version: &RoomVersionId) -> Result<RoomVersionRules, PduError> {
    match version.as_str() {
        "10" | "11" | "12" => version
            .rules()
            .ok_or_else(|| PduError::UnsupportedVersion(version.to_string())),
        other => Err(PduError::UnsupportedVersion(other.to_owned())),
    }
}

impl FederationService {
    /// Checks a PDU of a room of `version`: format, id, signatures (keys
    /// fetched as needed) and content hash.
    pub async fn check_pdu(
        &self,
        raw: &RawValue,
        version: &RoomVersionId,
    ) -> Result<RemotePdu, PduError> {
        let rules = rules_of(version)?;
        let object = parse(raw)?;
        let keys = self.signing_keys(&object, &rules).await?;
        verify(object, &rules, &keys)
    }

    /// The public keys of every server whose signature the PDU needs,
    /// valid when the event was sent.
    async fn signing_keys(
        &self,
        object: &CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<ruma_signatures::PublicKeyMap, PduError> {
        let servers =
            ruma_signatures::required_server_signatures_to_verify_event(object, &rules.signatures)
                .map_err(|e| PduError::Malformed(e.to_string()))?;
        let ts = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
            _ => return Err(PduError::Malformed("no origin_server_ts".into())),
        };
        let mut map = BTreeMap::new();
        for server in servers {
            let key_ids: Vec<String> = match object.get("signatures").and_then(|s| match s {
                CanonicalJsonValue::Object(by_server) => by_server.get(server.as_str()),
                _ => None,
            }) {
                Some(CanonicalJsonValue::Object(keys)) => keys.keys().cloned().collect(),
                _ => return Err(PduError::BadSignature(format!("no signature of {server}"))),
            };
            let ids: Vec<&str> = key_ids.iter().map(String::as_str).collect();
            let set = self
                .keys
                .any_public_keys(&self.client, &server, &ids, ts)
                .await?;
            map.insert(server.to_string(), set);
        }
        Ok(map)
    }
}

/// A PDU as canonical JSON, within the size limit.
pub fn parse(raw: &RawValue) -> Result<CanonicalJsonObject, PduError> {
    if raw.get().len() > MAX_PDU_BYTES {
        return Err(PduError::Malformed("larger than 64 KiB".into()));
    }
    serde_json::from_str(raw.get()).map_err(|e| PduError::Malformed(e.to_string()))
}

/// The id a PDU has by its room version's rules (its reference hash),
/// whether or not it passes the checks: what an answer about it names.
pub fn event_id_of(raw: &RawValue, rules: &RoomVersionRules) -> Result<OwnedEventId, PduError> {
    let object = parse(raw)?;
    let hash = ruma_signatures::reference_hash(&object, rules)
        .map_err(|e| PduError::Malformed(e.to_string()))?;
    EventId::parse(format!("${hash}")).map_err(|e| PduError::Malformed(e.to_string()))
}

/// The checks once the keys are known: format, signatures, hash, fields.
pub fn verify(
    object: CanonicalJsonObject,
    rules: &RoomVersionRules,
    keys: &ruma_signatures::PublicKeyMap,
) -> Result<RemotePdu, PduError> {
    ruma_state_res::check_pdu_format(&object, &rules.event_format).map_err(PduError::Malformed)?;
    let hash = ruma_signatures::reference_hash(&object, rules)
        .map_err(|e| PduError::Malformed(e.to_string()))?;
    let event_id =
        EventId::parse(format!("${hash}")).map_err(|e| PduError::Malformed(e.to_string()))?;
    let verified = ruma_signatures::verify_event(keys, &object, rules)
        .map_err(|e| PduError::BadSignature(e.to_string()))?;
    let (json, redacted) = match verified {
        Verified::All => (object, false),
        Verified::Signatures => {
            tracing::info!(%event_id, "content hash mismatch: keeping the event redacted");
            let redacted = redact(object, &rules.redaction, None)
                .map_err(|e| PduError::Malformed(e.to_string()))?;
            (redacted, true)
        }
    };
    let value = serde_json::to_value(&json).map_err(|e| PduError::Malformed(e.to_string()))?;
    RemotePdu::new(event_id, &value, json, redacted)
}

impl RemotePdu {
    fn new(
        event_id: OwnedEventId,
        value: &serde_json::Value,
        json: CanonicalJsonObject,
        redacted: bool,
    ) -> Result<Self, PduError> {
        let fields = Fields::deserialize(value).map_err(|e| PduError::Malformed(e.to_string()))?;
        Ok(Self {
            event_id,
            room_id: fields.room_id,
            sender: fields.sender,
            origin_server_ts: fields.origin_server_ts,
            kind: fields.kind,
            state_key: fields.state_key,
            content: fields.content,
            prev_events: fields.prev_events,
            auth_events: fields.auth_events,
            redacts: fields.redacts,
            depth: fields.depth,
            json,
            redacted,
        })
    }
}

/// An event this server already accepted, read back from the store (no
/// checks: it passed them when it came).
pub fn trusted(event_id: OwnedEventId, json: &serde_json::Value) -> Result<RemotePdu, PduError> {
    let object =
        CanonicalJsonObject::deserialize(json).map_err(|e| PduError::Malformed(e.to_string()))?;
    RemotePdu::new(event_id, json, object, false)
}

/// Authorizes `pdu` against the room's current state: an event that its
/// auth events allow but the current state does not is soft-failed (kept
/// out of the timeline), e.g. from a user banned meanwhile.
pub fn authorize_by_state(
    pdu: &RemotePdu,
    rules: &RoomVersionRules,
    state: &HashMap<(StateEventType, String), RemotePdu>,
) -> Result<(), PduError> {
    let fetch_state =
        |kind: &StateEventType, key: &str| state.get(&(kind.clone(), key.to_owned())).cloned();
    ruma_state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
        .map_err(PduError::Unauthorized)
}

/// Authorizes `pdu` against its own auth events (`auth` holds at least
/// those), by the rules of its room version: the check that decides
/// whether it is accepted at all, before any check against room state.
pub fn authorize_by_auth_events(
    pdu: &RemotePdu,
    rules: &RoomVersionRules,
    auth: &HashMap<OwnedEventId, RemotePdu>,
) -> Result<(), PduError> {
    let fetch_event = |id: &EventId| auth.get(id).cloned();
    ruma_state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)
        .map_err(PduError::Unauthorized)?;
    let by_key: HashMap<(StateEventType, String), &RemotePdu> = pdu
        .auth_events
        .iter()
        .filter_map(|id| auth.get(id))
        .filter_map(|event| {
            let key = event.state_key.clone()?;
            Some(((event.kind.to_string().into(), key), event))
        })
        .collect();
    // The create event is implied, never listed, from room version 12.
    let create = auth
        .values()
        .find(|event| event.kind == TimelineEventType::RoomCreate);
    let fetch_state = |kind: &StateEventType, key: &str| {
        by_key
            .get(&(kind.clone(), key.to_owned()))
            .copied()
            .or_else(|| (*kind == StateEventType::RoomCreate && key.is_empty()).then_some(create?))
            .cloned()
    };
    ruma_state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
        .map_err(PduError::Unauthorized)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::service::keys::ServerKey;
    use crate::service::pdu::sign_with_rules;

    struct Signer {
        key: ServerKey,
        _dir: tempfile::TempDir,
    }

    impl Signer {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let key = ServerKey::load_or_generate(dir.path()).unwrap();
            Self { key, _dir: dir }
        }

        /// Signs as `a.example`, returning the PDU as sent.
        fn sign(
            &self,
            pdu: Value,
            rules: &RoomVersionRules,
        ) -> (OwnedEventId, CanonicalJsonObject) {
            let name = <&ruma_common::ServerName>::try_from("a.example").unwrap();
            let (id, json) = sign_with_rules(&self.key, name, pdu, rules).unwrap();
            (id, serde_json::from_value(json).unwrap())
        }

        fn keys(&self) -> ruma_signatures::PublicKeyMap {
            let key = ruma_common::serde::Base64::new(self.key.pair.public_key().to_vec());
            BTreeMap::from([(
                "a.example".to_owned(),
                BTreeMap::from([(self.key.key_id(), key)]),
            )])
        }
    }

    fn event(room: Option<&str>, kind: &str, key: Option<&str>, content: Value) -> Value {
        let mut pdu = json!({
            "type": kind, "sender": "@alice:a.example", "content": content,
            "origin_server_ts": 1_700_000_000_000u64, "depth": 2,
            "prev_events": [], "auth_events": [],
        });
        if let Some(room) = room {
            pdu["room_id"] = json!(room);
        }
        if let Some(key) = key {
            pdu["state_key"] = json!(key);
        }
        pdu
    }

    fn with(mut pdu: Value, prev: &[&OwnedEventId], auth: &[&OwnedEventId]) -> Value {
        pdu["prev_events"] = json!(prev);
        pdu["auth_events"] = json!(auth);
        pdu
    }

    #[test]
    fn a_v11_room_checks_and_authorizes_and_refuses_outsiders() {
        let rules = RoomVersionRules::V11;
        let a = Signer::new();
        let room = Some("!room:a.example");
        let (create_id, create) = a.sign(
            event(
                room,
                "m.room.create",
                Some(""),
                json!({"room_version": "11"}),
            ),
            &rules,
        );
        let create = verify(create, &rules, &a.keys()).unwrap();
        assert_eq!(create.event_id, create_id, "the id is the reference hash");
        assert!(!create.redacted);

        let join = with(
            event(
                room,
                "m.room.member",
                Some("@alice:a.example"),
                json!({"membership": "join"}),
            ),
            &[&create_id],
            &[&create_id],
        );
        let (_, join) = a.sign(join, &rules);
        let join = verify(join, &rules, &a.keys()).unwrap();
        let auth = HashMap::from([(create_id.clone(), create.clone())]);
        authorize_by_auth_events(&join, &rules, &auth).unwrap();

        // Bob never joined: his message is not authorized.
        let mut message = with(
            event(room, "m.room.message", None, json!({"body": "hi"})),
            &[&join.event_id],
            &[&create_id],
        );
        message["sender"] = json!("@bob:a.example");
        let (_, message) = a.sign(message, &rules);
        let message = verify(message, &rules, &a.keys()).unwrap();
        assert!(matches!(
            authorize_by_auth_events(&message, &rules, &auth),
            Err(PduError::Unauthorized(_))
        ));
    }

    #[test]
    fn a_bad_content_hash_is_kept_redacted_and_a_bad_signature_refused() {
        let rules = RoomVersionRules::V11;
        let a = Signer::new();
        let room = Some("!room:a.example");
        let (_, mut message) = a.sign(
            event(room, "m.room.message", None, json!({"body": "hi"})),
            &rules,
        );
        // The content changed on the way: the signature (over the redacted
        // form) holds, the content hash does not.
        message.insert(
            "content".into(),
            serde_json::from_value(json!({"body": "changed"})).unwrap(),
        );
        let kept = verify(message, &rules, &a.keys()).unwrap();
        assert!(kept.redacted);
        assert_eq!(kept.content.get(), "{}");

        // The sender changed: the signature itself fails.
        let (_, mut forged) = a.sign(
            event(room, "m.room.message", None, json!({"body": "hi"})),
            &rules,
        );
        forged.insert(
            "sender".into(),
            CanonicalJsonValue::String("@mallory:a.example".into()),
        );
        assert!(matches!(
            verify(forged, &rules, &a.keys()),
            Err(PduError::BadSignature(_))
        ));

        // Signed by a key we were not given.
        let other = Signer::new();
        let (_, unknown) = a.sign(
            event(room, "m.room.message", None, json!({"body": "x"})),
            &rules,
        );
        assert!(verify(unknown, &rules, &other.keys()).is_err());
    }

    #[test]
    fn room_version_12_create_events_have_no_room_id_and_name_the_room() {
        let rules = RoomVersionRules::V12;
        let a = Signer::new();
        let (create_id, create) = a.sign(
            event(
                None,
                "m.room.create",
                Some(""),
                json!({"room_version": "12"}),
            ),
            &rules,
        );
        let create = verify(create, &rules, &a.keys()).unwrap();
        assert!(create.room_id.is_none());
        let room_id = format!("!{}", &create_id.as_str()[1..]);
        let join = with(
            event(
                Some(&room_id),
                "m.room.member",
                Some("@alice:a.example"),
                json!({"membership": "join"}),
            ),
            &[&create_id],
            &[],
        );
        let (_, join) = a.sign(join, &rules);
        let join = verify(join, &rules, &a.keys()).unwrap();
        let auth = HashMap::from([(create_id.clone(), create)]);
        authorize_by_auth_events(&join, &rules, &auth).unwrap();
    }

    #[test]
    fn unsupported_versions_and_malformed_pdus_are_refused() {
        assert!(matches!(
            rules_of(&RoomVersionId::V9),
            Err(PduError::UnsupportedVersion(_))
        ));
        let raw = RawValue::from_string(r#"{"type": "m.room.message"}"#.into()).unwrap();
        let rules = RoomVersionRules::V11;
        let object = parse(&raw).unwrap();
        assert!(matches!(
            verify(object, &rules, &BTreeMap::new()),
            Err(PduError::Malformed(_))
        ));
        let huge = RawValue::from_string(format!(r#"{{"x": "{}"}}"#, "a".repeat(70_000))).unwrap();
        assert!(matches!(parse(&huge), Err(PduError::Malformed(_))));
    }
}
