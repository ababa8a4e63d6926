//! Checking one ed25519 signature of a signed JSON object (device keys,
//! cross-signing keys), as clients make them: over the canonical JSON
//! without `signatures` and `unsigned`.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use ruma_common::CanonicalJsonObject;
use ruma_signatures::SigningKeyAlgorithm;
use serde_json::Value;

/// Unpadded base64 as Matrix writes keys and signatures; padding tolerated.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The signature of `signer` with `key_id` (`ed25519:...`) on `object`.
pub fn signature_of<'a>(object: &'a Value, signer: &str, key_id: &str) -> Option<&'a str> {
    object.get("signatures")?.get(signer)?.get(key_id)?.as_str()
}

/// Whether `object` carries a valid signature by `signer` with the ed25519
/// key `key_id` whose public half is `public_key` (base64).
pub fn signed_by(object: &Value, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = signature_of(object, signer, key_id) else {
        return false;
    };
    let (Ok(signature), Ok(public_key)) = (BASE64.decode(signature), BASE64.decode(public_key))
    else {
        return false;
    };
    let Ok(canonical) = serde_json::from_value::<CanonicalJsonObject>(object.clone()) else {
        return false;
    };
    let Ok(signed) = ruma_signatures::to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    ruma_signatures::verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        signed.as_bytes(),
    )
    .is_ok()
}

/// The one ed25519 public key of a cross-signing key object: its id (the
/// part after `ed25519:`) and value.
pub fn cross_signing_public_key(key: &Value) -> Option<(&str, &str)> {
    let keys = key.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (id, value) = keys.iter().next()?;
    let public = id.strip_prefix("ed25519:")?;
    let value = value.as_str()?;
    (public == value).then_some((public, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma_signatures::Ed25519KeyPair;
    use serde_json::json;

    fn key_pair() -> Ed25519KeyPair {
        let document = Ed25519KeyPair::generate();
        Ed25519KeyPair::from_der(&document, "DEV".into()).unwrap()
    }

    #[test]
    fn a_signature_verifies_only_over_the_same_content_and_key() {
        let pair = key_pair();
        let public = BASE64.encode(pair.public_key());
        let mut object: CanonicalJsonObject = serde_json::from_value(json!({
            "user_id": "@a:test", "device_id": "DEV", "keys": {"ed25519:DEV": public},
            "unsigned": {"device_display_name": "not signed"}
        }))
        .unwrap();
        ruma_signatures::sign_json("@a:test", &pair, &mut object).unwrap();
        let mut value = serde_json::to_value(&object).unwrap();
        assert!(signed_by(&value, "@a:test", "ed25519:DEV", &public));
        assert!(!signed_by(&value, "@b:test", "ed25519:DEV", &public));
        let other = BASE64.encode(key_pair().public_key());
        assert!(!signed_by(&value, "@a:test", "ed25519:DEV", &other));
        // `unsigned` may change; the signed content may not.
        value["unsigned"] = json!({"x": 1});
        assert!(signed_by(&value, "@a:test", "ed25519:DEV", &public));
        value["device_id"] = json!("OTHER");
        assert!(!signed_by(&value, "@a:test", "ed25519:DEV", &public));
    }

    #[test]
    fn a_cross_signing_key_names_its_one_public_key() {
        let key = json!({"keys": {"ed25519:abc": "abc"}});
        assert_eq!(cross_signing_public_key(&key), Some(("abc", "abc")));
        assert_eq!(
            cross_signing_public_key(&json!({"keys": {"ed25519:abc": "xyz"}})),
            None
        );
        assert_eq!(cross_signing_public_key(&json!({"keys": {}})), None);
    }
}
