//! What an encrypting client puts on the wire, in the real shapes and
//! sizes: the Olm-encrypted `m.room_key` each recipient device gets over
//! to-device, and the Megolm-encrypted message. A ciphertext is filler of
//! the length the real encryption would give for the real plaintext: the
//! server only stores and forwards it, so size and shape are all that count.

use serde_json::{json, Value};

use super::keys::{DeviceKeys, MEGOLM_ALGORITHM, OLM_ALGORITHM};
use crate::chat_layout::pick;

/// Length of an exported Megolm session key (`session_key` of
/// `m.room_key`): version, index, 128-byte ratchet, 32-byte public key,
/// 64-byte signature, in unpadded base64.
const SESSION_KEY_BYTES: usize = 1 + 4 + 128 + 32 + 64;

/// Unpadded base64 length of `n` bytes.
pub fn base64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Bytes of a protobuf varint.
fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// AES-256-CBC with PKCS#7 padding: 1 to 16 bytes more, up to a whole block.
fn cbc_len(plaintext: usize) -> usize {
    (plaintext / 16 + 1) * 16
}

/// An Olm message (vodozemac's v3 format): version byte, ratchet key field
/// (tag, length, 32 bytes), chain index field, ciphertext field, 8-byte MAC.
fn olm_message_len(plaintext: usize) -> usize {
    let ct = cbc_len(plaintext);
    1 + (2 + 32) + (1 + varint_len(0)) + (1 + varint_len(ct) + ct) + 8
}

/// The `body` length of an Olm message carrying `plaintext` bytes. A
/// pre-key message (type 0, the sender has not heard back on the session
/// yet) wraps the message with the one-time, base and identity keys.
pub fn olm_body_len(plaintext: usize, pre_key: bool) -> usize {
    let message = olm_message_len(plaintext);
    if !pre_key {
        return base64_len(message);
    }
    base64_len(1 + 3 * (2 + 32) + 1 + varint_len(message) + message)
}

/// The `ciphertext` length of a Megolm message carrying `plaintext` bytes
/// at ratchet index `index`: version, index field, ciphertext field, 8-byte
/// MAC and the 64-byte ed25519 signature.
pub fn megolm_ciphertext_len(plaintext: usize, index: u64) -> usize {
    let ct = cbc_len(plaintext);
    base64_len(1 + (1 + varint_len(index as usize)) + (1 + varint_len(ct) + ct) + 8 + 64)
}

/// `len` base64 characters, different per `seed`: a ciphertext's stand-in
/// (cheap; the run makes megabytes of it).
pub fn filler(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(len);
    let mut word = 0u64;
    for i in 0..len {
        if i % 10 == 0 {
            word = pick(seed, i as u64, 0xf111);
        }
        out.push(ALPHABET[(word & 63) as usize] as char);
        word >>= 6;
    }
    out
}

/// The plaintext an Olm session encrypts to share a Megolm session with
/// one device: the `m.room_key` event with sender and recipient keys, and
/// the sender's device keys (MSC4147, spec v1.15).
pub fn room_key_plaintext(
    sender: &DeviceKeys,
    recipient: &DeviceKeys,
    room_id: &str,
    session_id: &str,
    seed: u64,
) -> String {
    json!({
        "type": "m.room_key",
        "content": {
            "algorithm": MEGOLM_ALGORITHM,
            "room_id": room_id,
            "session_id": session_id,
            "session_key": filler(seed, base64_len(SESSION_KEY_BYTES)),
        },
        "sender": sender.user_id,
        "sender_device": sender.device_id,
        "keys": {"ed25519": sender.ed25519},
        "recipient": recipient.user_id,
        "recipient_keys": {"ed25519": recipient.ed25519},
        "sender_device_keys": sender.device_keys(),
    })
    .to_string()
}

/// The `m.room.encrypted` to-device content for one recipient device.
/// `marker` (the run's id for the share and the send time) rides along in
/// plain fields, as `org.matrix.msgid` does in Element's.
pub fn olm_content(
    sender: &DeviceKeys,
    recipient: &DeviceKeys,
    body_len: usize,
    pre_key: bool,
    seed: u64,
    marker: (&str, u64),
) -> Value {
    json!({
        "algorithm": OLM_ALGORITHM,
        "sender_key": sender.curve25519,
        "ciphertext": {
            recipient.curve25519.clone(): {
                "type": if pre_key { 0 } else { 1 },
                "body": filler(seed, body_len),
            },
        },
        "org.matrix.msgid": filler(seed ^ 1, 32),
        "tern_bench_id": marker.0,
        "tern_bench_ts": marker.1,
    })
}

/// The plaintext Megolm encrypts for a text message in `room_id`.
pub fn message_plaintext(room_id: &str, body: &str) -> String {
    json!({
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": body, "m.mentions": {}},
        "room_id": room_id,
    })
    .to_string()
}

/// The `m.room.encrypted` content of message `index` of a Megolm session.
/// `marker` is the run's message id and send time, which the sync loops
/// read (the server never looks inside).
pub fn megolm_content(
    sender: &DeviceKeys,
    session_id: &str,
    ciphertext_len: usize,
    seed: u64,
    marker: (&str, u64),
) -> Value {
    json!({
        "algorithm": MEGOLM_ALGORITHM,
        "sender_key": sender.curve25519,
        "device_id": sender.device_id,
        "session_id": session_id,
        "ciphertext": filler(seed, ciphertext_len),
        "tern_bench_id": marker.0,
        "tern_bench_ts": marker.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn sizes_follow_the_wire_formats() {
        assert_eq!(base64_len(32), 43);
        assert_eq!(base64_len(64), 86);
        assert_eq!(base64_len(SESSION_KEY_BYTES), 306);
        assert_eq!(
            (varint_len(127), varint_len(128), varint_len(16_384)),
            (1, 2, 3)
        );
        assert_eq!((cbc_len(0), cbc_len(15), cbc_len(16)), (16, 16, 32));
        // 100 bytes: 112 of ciphertext; 1 + 34 + 2 + (1 + 1 + 112) + 8 = 159.
        assert_eq!(olm_message_len(100), 159);
        assert_eq!(olm_body_len(100, false), base64_len(159));
        // Pre-key: 1 + 3 * 34 + 1 + 2 (varint of 159) + 159 = 265.
        assert_eq!(olm_body_len(100, true), base64_len(265));
        // 1 + 2 + (1 + 1 + 112) + 8 + 64 = 189.
        assert_eq!(megolm_ciphertext_len(100, 0), base64_len(189));
        assert_eq!(megolm_ciphertext_len(100, 200), base64_len(190));
    }

    #[test]
    fn filler_is_base64_of_the_length_asked_and_varies_by_seed() {
        let a = filler(1, 1_300);
        assert_eq!(a.len(), 1_300);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
        assert_ne!(a, filler(2, 1_300));
        assert_eq!(a, filler(1, 1_300));
    }

    /// With the run's user ids, a room key's Olm body comes to about the
    /// size Element's are, and a short text message's Megolm ciphertext to
    /// a few hundred characters.
    #[test]
    fn realistic_sizes() {
        let rng = SystemRandom::new();
        let a = DeviceKeys::generate(&rng, "@tb0123abcd-u123:localhost", "ABCDEFGHIJ").unwrap();
        let b = DeviceKeys::generate(&rng, "@tb0123abcd-u456:localhost", "KLMNOPQRST").unwrap();
        let room = "!abcdefghijklmnopqr:localhost";
        let plaintext = room_key_plaintext(&a, &b, room, &"s".repeat(43), 7);
        let body = olm_body_len(plaintext.len(), true);
        assert!((1_200..1_900).contains(&body), "{body}");
        let content = olm_content(&a, &b, body, true, 7, ("id", 1));
        assert_eq!(
            content["ciphertext"][&b.curve25519]["body"]
                .as_str()
                .unwrap()
                .len(),
            body
        );
        assert_eq!(content["ciphertext"][&b.curve25519]["type"], 0);
        let text = message_plaintext(
            room,
            "tern-bench chat message 1234 from @tb0123abcd-u123:localhost",
        );
        let len = megolm_ciphertext_len(text.len(), 0);
        assert!((200..400).contains(&len), "{len}");
    }
}
