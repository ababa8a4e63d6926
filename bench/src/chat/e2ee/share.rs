//! A sender's side of encryption: the room-key share before its first
//! message in a room (and after every `ROTATE_AFTER`), and the encrypted
//! message content.
//!
//! The share is what Element (matrix-rust-sdk) does: fetch the device keys
//! of members it does not track yet, claim a one-time key for each device
//! it has no Olm session with, and send the room key to every other
//! member's device in one `sendToDevice`. A sender's shares in one room are
//! serialised (a second message waits for the first one's share), as the
//! SDK does per room.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::keys::ONE_TIME_KEY_ALGORITHM;
use super::payload::{
    filler, megolm_ciphertext_len, megolm_content, message_plaintext, olm_body_len, olm_content,
    room_key_plaintext,
};
use super::{E2ee, OlmSession, Share, ROTATE_AFTER};
use crate::api::now_micros;
use crate::chat::{Shared, World};
use crate::chat_layout::pick;
use crate::load::note_error;

/// The `timeout` of `/keys/query` and `/keys/claim` (for remote servers;
/// the SDK's value).
const KEYS_TIMEOUT_MS: u64 = 10_000;

/// What a message needs of its sender's Megolm session.
pub(in crate::chat) struct Megolm {
    session_id: String,
    index: u64,
}

/// The key of an Olm session: the two devices, lower index first.
fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// Whether `sender`'s next message over `session` is a pre-key message
/// (type 0): it claimed the session and has not heard back on it yet. The
/// other side, which has received over it, sends normal ones (type 1);
/// once it has, the claimer has heard back.
fn next_is_pre_key(session: &mut OlmSession, sender: usize) -> bool {
    if session.creator != sender {
        session.replied = true;
        return false;
    }
    !session.replied
}

impl E2ee {
    /// `sender`'s Megolm session in `room`, shared with every other
    /// member's device first when it is new or used up. A failed share is
    /// counted and noted; the message is still sent.
    pub async fn prepare(
        &self,
        shared: &Shared,
        world: &World,
        sender: usize,
        room: usize,
    ) -> Megolm {
        let slot = self
            .outbound
            .lock()
            .unwrap()
            .entry((sender, room))
            .or_default()
            .clone();
        let mut out = slot.lock().await;
        if out.session_id.is_none() || out.sent >= ROTATE_AFTER {
            let n = self.next_share.fetch_add(1, Relaxed);
            // A Megolm session id is its ed25519 public key.
            let session_id = filler(pick(shared.seed, n, 0x5e55), 43);
            if let Err(err) = self
                .share(shared, world, sender, room, n, &session_id)
                .await
            {
                note_error(&shared.errors, &err);
            }
            out.session_id = Some(session_id);
            out.sent = 0;
        }
        let index = out.sent;
        out.sent += 1;
        Megolm {
            session_id: out.session_id.clone().unwrap_or_default(),
            index,
        }
    }

    /// The `m.room.encrypted` content of a text message `body` into
    /// `room_id`; `marker` is the run's message id and send time.
    pub fn message_content(
        &self,
        sender: usize,
        room_id: &str,
        megolm: &Megolm,
        body: &str,
        seed: u64,
        marker: (&str, u64),
    ) -> Value {
        let plaintext = message_plaintext(room_id, body);
        let len = megolm_ciphertext_len(plaintext.len(), megolm.index);
        let content = megolm_content(&self.devices[sender], &megolm.session_id, len, seed, marker);
        self.c.messages.fetch_add(1, Relaxed);
        let bytes = content.to_string().len() as u64;
        self.c.message_bytes.fetch_add(bytes, Relaxed);
        content
    }

    /// Share `n`: a new Megolm session's key to every other member's device.
    async fn share(
        &self,
        shared: &Shared,
        world: &World,
        sender: usize,
        room: usize,
        n: u64,
        session_id: &str,
    ) -> anyhow::Result<()> {
        self.c.shares.fetch_add(1, Relaxed);
        let token = &world.users[sender].token;
        let members = &world.rooms[room].members;
        self.track(shared, token, sender, members).await?;
        let others: Vec<usize> = members.iter().copied().filter(|&m| m != sender).collect();
        let recipients = self.claim_missing(shared, token, sender, &others).await?;
        let room_id = &world.rooms[room].room_id;
        let ts_us = now_micros();
        let id = format!("{}{n}", self.id_prefix);
        let mut messages: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
        for &r in &recipients {
            let pre_key = {
                let mut olm = self.olm.lock().unwrap();
                let session = olm.get_mut(&pair(sender, r)).expect("claimed");
                next_is_pre_key(session, sender)
            };
            let (from, to) = (&self.devices[sender], &self.devices[r]);
            let seed = pick(shared.seed, n, 0x1000 + r as u64);
            let plaintext = room_key_plaintext(from, to, room_id, session_id, seed);
            let body_len = olm_body_len(plaintext.len(), pre_key);
            let content = olm_content(from, to, body_len, pre_key, seed, (&id, ts_us));
            messages
                .entry(&to.user_id)
                .or_default()
                .insert(to.device_id.clone(), content);
        }
        let body = json!({ "messages": messages });
        let bytes = body.to_string().len() as u64;
        self.c.to_device_requests.fetch_add(1, Relaxed);
        self.c.to_device_bytes.fetch_add(bytes, Relaxed);
        self.c.to_device_max_bytes.fetch_max(bytes, Relaxed);
        let t = Instant::now();
        let sent = shared
            .api
            .send_to_device(token, "m.room.encrypted", &id, &body)
            .await;
        if let Err(err) = sent {
            self.c.to_device_errors.fetch_add(1, Relaxed);
            return Err(err);
        }
        let us = t.elapsed().as_micros() as u64;
        self.samples.to_device_us.lock().unwrap().push(us);
        self.c
            .to_device_messages
            .fetch_add(recipients.len() as u64, Relaxed);
        self.shares.lock().unwrap().push(Share {
            n,
            ts_us,
            recipients,
        });
        Ok(())
    }

    /// `/keys/query` for the members (the sender included: clients track
    /// their own user) whose device keys `sender` has not fetched yet; each
    /// answer must be the keys the device uploaded.
    async fn track(
        &self,
        shared: &Shared,
        token: &str,
        sender: usize,
        members: &[usize],
    ) -> anyhow::Result<()> {
        let untracked: Vec<usize> = {
            let tracked = self.tracked[sender].lock().unwrap();
            members
                .iter()
                .copied()
                .filter(|m| !tracked.contains(m))
                .collect()
        };
        if untracked.is_empty() {
            return Ok(());
        }
        let users: Map<String, Value> = untracked
            .iter()
            .map(|&m| (self.devices[m].user_id.clone(), json!([])))
            .collect();
        let body = json!({"device_keys": users, "timeout": KEYS_TIMEOUT_MS});
        self.c.query_requests.fetch_add(1, Relaxed);
        let t = Instant::now();
        let answer = shared
            .api
            .keys(token, "query", &body)
            .await
            .inspect_err(|_| {
                self.c.query_errors.fetch_add(1, Relaxed);
            })?;
        let us = t.elapsed().as_micros() as u64;
        self.samples.query_us.lock().unwrap().push(us);
        for &m in &untracked {
            let d = &self.devices[m];
            let keys = answer
                .get("device_keys")
                .and_then(|k| k.get(&d.user_id))
                .and_then(|u| u.get(&d.device_id))
                .and_then(|k| k.get("keys"));
            let key = |kind: &str| {
                keys.and_then(|k| k.get(format!("{kind}:{}", d.device_id)))
                    .and_then(Value::as_str)
            };
            if key("curve25519") != Some(&d.curve25519) || key("ed25519") != Some(&d.ed25519) {
                self.c.query_mismatches.fetch_add(1, Relaxed);
            }
        }
        self.tracked[sender].lock().unwrap().extend(untracked);
        Ok(())
    }

    /// Claims a one-time key of each of `others`' devices `sender` has no
    /// Olm session with; returns those it now has a session with.
    async fn claim_missing(
        &self,
        shared: &Shared,
        token: &str,
        sender: usize,
        others: &[usize],
    ) -> anyhow::Result<Vec<usize>> {
        let missing: Vec<usize> = {
            let olm = self.olm.lock().unwrap();
            others
                .iter()
                .copied()
                .filter(|&r| !olm.contains_key(&pair(sender, r)))
                .collect()
        };
        if missing.is_empty() {
            self.c.shares_without_claim.fetch_add(1, Relaxed);
            return Ok(others.to_vec());
        }
        let mut wanted: Map<String, Value> = Map::new();
        for &r in &missing {
            let d = &self.devices[r];
            wanted.insert(
                d.user_id.clone(),
                json!({ d.device_id.clone(): ONE_TIME_KEY_ALGORITHM }),
            );
        }
        let body = json!({"one_time_keys": wanted, "timeout": KEYS_TIMEOUT_MS});
        self.c.claim_requests.fetch_add(1, Relaxed);
        let t = Instant::now();
        let answer = shared
            .api
            .keys(token, "claim", &body)
            .await
            .inspect_err(|_| {
                self.c.claim_errors.fetch_add(1, Relaxed);
            })?;
        let us = t.elapsed().as_micros() as u64;
        self.samples.claim_us.lock().unwrap().push(us);
        let mut olm = self.olm.lock().unwrap();
        for &r in &missing {
            let d = &self.devices[r];
            let claimed = answer
                .get("one_time_keys")
                .and_then(|k| k.get(&d.user_id))
                .and_then(|u| u.get(&d.device_id))
                .and_then(Value::as_object)
                .is_some_and(|keys| {
                    keys.keys()
                        .any(|id| id.starts_with(&format!("{ONE_TIME_KEY_ALGORITHM}:")))
                });
            if claimed {
                self.c.keys_claimed.fetch_add(1, Relaxed);
                // A concurrent share may have made one meanwhile: keep it.
                olm.entry(pair(sender, r)).or_insert(OlmSession {
                    creator: sender,
                    replied: false,
                });
            } else {
                self.c.keys_missing.fetch_add(1, Relaxed);
            }
        }
        Ok(others
            .iter()
            .copied()
            .filter(|&r| olm.contains_key(&pair(sender, r)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_unordered() {
        assert_eq!(pair(3, 1), pair(1, 3));
    }

    #[test]
    fn the_claimer_sends_pre_key_messages_until_it_hears_back() {
        let mut s = OlmSession {
            creator: 1,
            replied: false,
        };
        assert!(next_is_pre_key(&mut s, 1));
        assert!(next_is_pre_key(&mut s, 1));
        assert!(!next_is_pre_key(&mut s, 2));
        assert!(!next_is_pre_key(&mut s, 1));
    }
}
