//! One device's keys as an encrypting client makes them. The ed25519
//! signing key is real, because the server verifies the device keys'
//! signature; the curve25519 identity and one-time keys only need the right
//! shape (random 32 bytes), since nothing in the run ever decrypts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::anyhow;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Map, Value};

pub const OLM_ALGORITHM: &str = "m.olm.v1.curve25519-aes-sha2";
pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";
pub const ONE_TIME_KEY_ALGORITHM: &str = "signed_curve25519";

pub struct DeviceKeys {
    pub user_id: String,
    pub device_id: String,
    signing: Ed25519KeyPair,
    /// Public halves, unpadded base64 (43 characters each).
    pub ed25519: String,
    pub curve25519: String,
    /// Number of the next one-time key: ids never repeat, as the server
    /// refuses an id reused with another key.
    next_key: AtomicU64,
}

impl DeviceKeys {
    pub fn generate(rng: &SystemRandom, user_id: &str, device_id: &str) -> anyhow::Result<Self> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| anyhow!("ed25519 key generation"))?;
        let signing = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| anyhow!("ed25519 key parsing"))?;
        Ok(Self {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            ed25519: STANDARD_NO_PAD.encode(signing.public_key().as_ref()),
            signing,
            curve25519: random_key(rng)?,
            next_key: AtomicU64::new(1),
        })
    }

    fn key_id(&self) -> String {
        format!("ed25519:{}", self.device_id)
    }

    /// `object` with this device's signature added to its `signatures`.
    pub fn signed(&self, mut object: Value) -> Value {
        let signature = self.signing.sign(signing_bytes(&object).as_bytes());
        let signature = STANDARD_NO_PAD.encode(signature.as_ref());
        let by_user = object
            .as_object_mut()
            .expect("only objects are signed")
            .entry("signatures")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("signatures is an object")
            .entry(self.user_id.clone())
            .or_insert_with(|| json!({}));
        by_user[self.key_id()] = Value::String(signature);
        object
    }

    /// The signed `device_keys` of `/keys/upload`.
    pub fn device_keys(&self) -> Value {
        self.signed(json!({
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": [OLM_ALGORITHM, MEGOLM_ALGORITHM],
            "keys": {
                format!("curve25519:{}", self.device_id): self.curve25519,
                self.key_id(): self.ed25519,
            },
        }))
    }

    /// `n` new signed one-time keys, `{"signed_curve25519:<id>": {"key": ...,
    /// "signatures": ...}}`, each signed as clients sign them (the server
    /// does not check, but claimers do, and it is their size).
    pub fn one_time_keys(&self, rng: &SystemRandom, n: u64) -> anyhow::Result<Value> {
        let mut keys = Map::new();
        for _ in 0..n {
            let (id, key) = self.new_key(rng)?;
            keys.insert(id, self.signed(json!({ "key": key })));
        }
        Ok(Value::Object(keys))
    }

    /// A signed fallback key, handed out once the one-time keys run out.
    pub fn fallback_key(&self, rng: &SystemRandom) -> anyhow::Result<Value> {
        let (id, key) = self.new_key(rng)?;
        Ok(json!({ id: self.signed(json!({"key": key, "fallback": true})) }))
    }

    /// A fresh `signed_curve25519:<id>` and key. Ids are unpadded base64 of
    /// a big-endian counter, as vodozemac writes them.
    fn new_key(&self, rng: &SystemRandom) -> anyhow::Result<(String, String)> {
        let n = self.next_key.fetch_add(1, Relaxed);
        let id = STANDARD_NO_PAD.encode(n.to_be_bytes());
        Ok((format!("{ONE_TIME_KEY_ALGORITHM}:{id}"), random_key(rng)?))
    }
}

/// 32 random bytes in unpadded base64: the shape of a curve25519 public key.
pub fn random_key(rng: &SystemRandom) -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).map_err(|_| anyhow!("random bytes"))?;
    Ok(STANDARD_NO_PAD.encode(bytes))
}

/// What a signature covers: the canonical JSON of the object without
/// `signatures` and `unsigned`.
pub fn signing_bytes(object: &Value) -> String {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    canonical_json(&object)
}

/// Matrix canonical JSON: keys sorted, no whitespace. Sorted here rather
/// than by relying on `serde_json::Map` being ordered, which it stops being
/// when any crate in the build turns on `preserve_order`. Numbers and
/// strings are written as serde_json writes them, which for the integers
/// and ASCII strings of key objects is the canonical form.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_without_whitespace() {
        let v = json!({"b": 1, "a": {"d": [3, {"z": true, "y": null}], "c": "x y"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x y","d":[3,{"y":null,"z":true}]},"b":1}"#
        );
        // The spec's own examples.
        assert_eq!(
            canonical_json(&json!({"one": 1, "two": "Two"})),
            r#"{"one":1,"two":"Two"}"#
        );
        assert_eq!(
            canonical_json(&json!({"a": "\"quoted\""})),
            r#"{"a":"\"quoted\""}"#
        );
    }

    #[test]
    fn signing_leaves_out_signatures_and_unsigned() {
        let v = json!({"k": 1, "signatures": {"x": {}}, "unsigned": {"age": 3}});
        assert_eq!(signing_bytes(&v), r#"{"k":1}"#);
    }

    /// Verifies the device keys' signature as the server does: over the
    /// canonical JSON without `signatures` and `unsigned`, with the key the
    /// object itself names.
    #[test]
    fn device_keys_carry_a_signature_that_verifies() {
        let rng = SystemRandom::new();
        let device = DeviceKeys::generate(&rng, "@a:localhost", "DEV").unwrap();
        let mut keys = device.device_keys();
        let public = STANDARD_NO_PAD
            .decode(keys["keys"]["ed25519:DEV"].as_str().unwrap())
            .unwrap();
        let signature = STANDARD_NO_PAD
            .decode(
                keys["signatures"]["@a:localhost"]["ed25519:DEV"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let verify = |keys: &Value| {
            UnparsedPublicKey::new(&ED25519, &public)
                .verify(signing_bytes(keys).as_bytes(), &signature)
                .is_ok()
        };
        assert!(verify(&keys));
        assert_eq!(keys["keys"]["curve25519:DEV"].as_str().unwrap().len(), 43);
        assert_eq!(device.ed25519.len(), 43);
        assert_eq!(signature.len(), 64);
        // `unsigned` may be added by the server; the content may not change.
        keys["unsigned"] = json!({"device_display_name": "x"});
        assert!(verify(&keys));
        keys["device_id"] = json!("OTHER");
        assert!(!verify(&keys));
    }

    #[test]
    fn one_time_keys_have_fresh_ids_and_signatures() {
        let rng = SystemRandom::new();
        let device = DeviceKeys::generate(&rng, "@a:localhost", "DEV").unwrap();
        let first = device.one_time_keys(&rng, 3).unwrap();
        let second = device.one_time_keys(&rng, 2).unwrap();
        let ids: Vec<&String> = first.as_object().unwrap().keys().collect();
        assert_eq!(
            ids,
            [
                "signed_curve25519:AAAAAAAAAAE",
                "signed_curve25519:AAAAAAAAAAI",
                "signed_curve25519:AAAAAAAAAAM"
            ]
        );
        assert!(second
            .as_object()
            .unwrap()
            .keys()
            .all(|id| !first.as_object().unwrap().contains_key(id)));
        let key = &first["signed_curve25519:AAAAAAAAAAE"];
        assert!(key["signatures"]["@a:localhost"]["ed25519:DEV"].is_string());
        let fallback = device.fallback_key(&rng).unwrap();
        let (_, fallback) = fallback.as_object().unwrap().iter().next().unwrap();
        assert_eq!(fallback["fallback"], true);
    }
}
