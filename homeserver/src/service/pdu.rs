//! Room-version-11 PDUs: building, hashing and signing them, and turning the
//! stored PDU into the client format.
//!
//! Canonical JSON, content hashes, signatures and reference hashes come from
//! `ruma-common`/`ruma-signatures`, checked against the spec's test vectors.

use ruma_common::canonical_json::{redact, CanonicalJsonObject, CanonicalJsonValue};
use ruma_common::room_version_rules::RoomVersionRules;
use ruma_common::{DeviceId, EventId, OwnedEventId, RoomId, ServerName, UserId};
use serde_json::{json, Map, Value};

use super::error::{ServiceError, ServiceResult};
use super::keys::ServerKey;

/// The one room version this server creates rooms in.
pub const ROOM_VERSION: &str = "11";

/// Largest PDU the spec allows, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

/// The parts of a new event that the room service decides.
pub struct PduParts<'a> {
    pub room_id: &'a RoomId,
    pub sender: &'a UserId,
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub content: Value,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: i64,
    pub origin_server_ts: i64,
    /// The room version's rules (hashing, signing, the event id).
    pub rules: &'a RoomVersionRules,
}

/// Builds, hashes and signs a PDU; returns its event id and JSON.
pub fn build_pdu(
    key: &ServerKey,
    server_name: &ServerName,
    parts: PduParts<'_>,
) -> ServiceResult<(OwnedEventId, Value)> {
    let mut pdu = json!({
        "auth_events": parts.auth_events,
        "content": parts.content,
        "depth": parts.depth,
        "origin_server_ts": parts.origin_server_ts,
        "prev_events": parts.prev_events,
        "room_id": parts.room_id,
        "sender": parts.sender,
        "type": parts.kind,
    });
    if let Some(state_key) = parts.state_key {
        pdu["state_key"] = json!(state_key);
    }
    sign_with_rules(key, server_name, pdu, parts.rules)
}

/// The rules of room `version` (one this server supports: 10, 11, 12).
pub fn rules_for(version: &str) -> &'static RoomVersionRules {
    match version {
        "10" => &RoomVersionRules::V10,
        "12" => &RoomVersionRules::V12,
        _ => &RoomVersionRules::V11,
    }
}

/// Hashes and signs `pdu` in place and derives the reference-hash event id.
pub fn sign_pdu(
    key: &ServerKey,
    server_name: &ServerName,
    pdu: Value,
) -> ServiceResult<(OwnedEventId, Value)> {
    sign_with_rules(key, server_name, pdu, &RoomVersionRules::V11)
}

pub fn sign_with_rules(
    key: &ServerKey,
    server_name: &ServerName,
    pdu: Value,
    rules: &RoomVersionRules,
) -> ServiceResult<(OwnedEventId, Value)> {
    let mut object = to_canonical_object(pdu)?;
    ruma_signatures::hash_and_sign_event(
        server_name.as_str(),
        &key.pair,
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| match e {
        ruma_signatures::JsonError::PduTooLarge => {
            ServiceError::new(super::error::ErrorKind::TooLarge, "Event is too large")
        }
        other => ServiceError::bad_json(format!("Event cannot be signed: {other}")),
    })?;
    let hash = ruma_signatures::reference_hash(&object, rules).map_err(|e| match e {
        ruma_signatures::JsonError::PduTooLarge => {
            ServiceError::new(super::error::ErrorKind::TooLarge, "Event is too large")
        }
        other => ServiceError::bad_json(format!("Event cannot be hashed: {other}")),
    })?;
    let value = serde_json::to_value(&object).map_err(ServiceError::internal)?;
    let event_id = EventId::parse(format!("${hash}")).map_err(ServiceError::internal)?;
    Ok((event_id, value))
}

fn to_canonical_object(value: Value) -> ServiceResult<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        Ok(_) => Err(ServiceError::bad_json("Event must be a JSON object")),
        // Floats and out-of-range integers are not canonical JSON.
        Err(e) => Err(ServiceError::bad_json(format!(
            "Content is not canonical JSON: {e}"
        ))),
    }
}

/// The redacted form of a PDU under room-version-11 rules; `unsigned.redacted_because`
/// holds the redaction in the client format, as clients read it.
pub fn redact_pdu(
    pdu: &Value,
    redaction_id: &EventId,
    redaction_pdu: &Value,
) -> ServiceResult<Value> {
    let object = to_canonical_object(pdu.clone())?;
    let mut redacted =
        redact(object, &RoomVersionRules::V11.redaction, None).map_err(ServiceError::internal)?;
    let mut because = client_event(redaction_pdu, redaction_id, 0, None, true);
    if let Some(fields) = because.as_object_mut() {
        fields.remove("unsigned");
    }
    let because = to_canonical_object(because)?;
    redacted.insert(
        "unsigned".into(),
        CanonicalJsonValue::Object(CanonicalJsonObject::from([(
            "redacted_because".to_owned(),
            CanonicalJsonValue::Object(because),
        )])),
    );
    serde_json::to_value(&redacted).map_err(ServiceError::internal)
}

/// Federation-only keys, left out of the client format.
const FEDERATION_KEYS: &[&str] = &[
    "auth_events",
    "prev_events",
    "depth",
    "hashes",
    "signatures",
    "origin",
    "membership",
    "prev_state",
];

/// How a client sees an event: the PDU minus federation keys, plus `event_id`
/// and `unsigned` (age, and the transaction id for the sending device only).
pub fn client_event(
    pdu: &Value,
    event_id: &EventId,
    now_ms: i64,
    transaction_id: Option<&str>,
    with_room_id: bool,
) -> Value {
    let mut out = Map::with_capacity(10);
    if let Value::Object(fields) = pdu {
        for (key, value) in fields {
            if FEDERATION_KEYS.contains(&key.as_str()) || (!with_room_id && key == "room_id") {
                continue;
            }
            out.insert(key.clone(), value.clone());
        }
    }
    // Clients before room version 11 read `redacts` at the top level.
    if let Some(redacts) = pdu.get("content").and_then(|c| c.get("redacts")) {
        out.insert("redacts".into(), redacts.clone());
    }
    out.insert("event_id".into(), Value::String(event_id.to_string()));
    let ts = pdu
        .get("origin_server_ts")
        .and_then(Value::as_i64)
        .unwrap_or(now_ms);
    let unsigned = out
        .entry("unsigned")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(unsigned) = unsigned {
        unsigned.insert("age".into(), json!((now_ms - ts).max(0)));
        if let Some(txn) = transaction_id {
            unsigned.insert("transaction_id".into(), json!(txn));
        }
    }
    Value::Object(out)
}

/// [`client_event`] of a stored event as `user_id` on `device_id` sees it:
/// the transaction id goes only to the device that sent the event.
pub fn client_event_for(
    event: &crate::store::StoredEvent,
    user_id: &UserId,
    device_id: &DeviceId,
    now_ms: i64,
    with_room_id: bool,
) -> Value {
    let txn = match &event.txn {
        Some((device, txn)) if event.sender == user_id && device == device_id => Some(txn.as_str()),
        _ => None,
    };
    client_event(&event.pdu, &event.event_id, now_ms, txn, with_room_id)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use ruma_signatures::Ed25519KeyPair;

    use super::*;
    use ruma_common::{event_id, owned_event_id, room_id, server_name, user_id};

    /// The signing key of the spec's "Cryptographic test vectors" (appendices).
    fn spec_key() -> ServerKey {
        // The spec's seed has non-zero trailing bits, so decode leniently.
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::general_purpose::NO_PAD.with_decode_allow_trailing_bits(true),
        );
        let seed = engine
            .decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
            .unwrap();
        // PKCS#8 v1 wrapping of a raw ed25519 seed.
        let mut der = hex_prefix();
        der.extend_from_slice(&seed);
        ServerKey {
            pair: Ed25519KeyPair::from_der(&der, "1".into()).unwrap(),
            old: Vec::new(),
        }
    }

    fn hex_prefix() -> Vec<u8> {
        vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ]
    }

    #[test]
    fn signs_minimal_event_like_the_spec() {
        // appendices.md, "Event Signing". The vectors predate room version 11,
        // whose redaction algorithm drops `origin`, so they use version 1 rules.
        let event = json!({
            "auth_events": [], "content": {}, "depth": 3, "hashes": {}, "origin": "domain",
            "origin_server_ts": 1000000, "prev_events": [], "room_id": "!x:domain",
            "sender": "@a:domain", "signatures": {}, "type": "X",
            "unsigned": {"age_ts": 1000000}
        });
        let (_, signed) = sign_with_rules(
            &spec_key(),
            server_name!("domain"),
            event,
            &RoomVersionRules::V1,
        )
        .unwrap();
        assert_eq!(
            signed["hashes"]["sha256"],
            "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
        );
        assert_eq!(
            signed["signatures"]["domain"]["ed25519:1"],
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        );
    }

    #[test]
    fn signs_redactable_event_like_the_spec() {
        // appendices.md, "Event Signing", the event with redactable content.
        let event = json!({
            "content": {"body": "Here is the message content"},
            "event_id": "$0:domain", "origin": "domain", "origin_server_ts": 1000000,
            "type": "m.room.message", "room_id": "!r:domain", "sender": "@u:domain",
            "signatures": {}, "unsigned": {"age_ts": 1000000}
        });
        let (_, signed) = sign_with_rules(
            &spec_key(),
            server_name!("domain"),
            event,
            &RoomVersionRules::V1,
        )
        .unwrap();
        assert_eq!(
            signed["hashes"]["sha256"],
            "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
        );
        assert_eq!(
            signed["signatures"]["domain"]["ed25519:1"],
            "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        );
    }

    #[test]
    fn signs_json_like_the_spec() {
        let mut object = to_canonical_object(json!({"one": 1, "two": "Two"})).unwrap();
        ruma_signatures::sign_json("domain", &spec_key().pair, &mut object).unwrap();
        let signed = serde_json::to_value(&object).unwrap();
        assert_eq!(
            signed["signatures"]["domain"]["ed25519:1"],
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
    }

    #[test]
    fn event_ids_are_url_safe_reference_hashes() {
        let key = spec_key();
        let parts = PduParts {
            room_id: room_id!("!r:test"),
            sender: user_id!("@a:test"),
            kind: "m.room.message",
            state_key: None,
            content: json!({"body": "hi", "msgtype": "m.text"}),
            prev_events: vec![owned_event_id!("$p")],
            auth_events: vec![],
            depth: 2,
            origin_server_ts: 5,
            rules: &RoomVersionRules::V11,
        };
        let (id, pdu) = build_pdu(&key, server_name!("test"), parts).unwrap();
        let id = id.as_str();
        assert!(id.starts_with('$'));
        assert_eq!(id.len(), 44);
        assert!(id[1..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        // The id does not depend on unsigned data or signatures.
        let (again, _) = sign_pdu(&key, server_name!("test"), pdu).unwrap();
        assert_eq!(id, again.as_str());
    }

    #[test]
    fn floats_are_refused() {
        let parts = PduParts {
            room_id: room_id!("!r:test"),
            sender: user_id!("@a:test"),
            kind: "m.room.message",
            state_key: None,
            content: json!({"n": 1.5}),
            prev_events: vec![],
            auth_events: vec![],
            depth: 1,
            origin_server_ts: 5,
            rules: &RoomVersionRules::V11,
        };
        assert!(build_pdu(&spec_key(), server_name!("test"), parts).is_err());
    }

    #[test]
    fn client_event_hides_federation_keys() {
        let pdu = json!({"type": "m.room.message", "content": {}, "depth": 3,
            "hashes": {}, "signatures": {}, "origin_server_ts": 100, "sender": "@a:t",
            "room_id": "!r:t", "prev_events": [], "auth_events": []});
        let ev = client_event(&pdu, event_id!("$e"), 150, Some("txn1"), false);
        assert!(ev.get("depth").is_none() && ev.get("room_id").is_none());
        assert_eq!(ev["unsigned"]["age"], 50);
        assert_eq!(ev["unsigned"]["transaction_id"], "txn1");
        assert_eq!(ev["event_id"], "$e");
    }
}
