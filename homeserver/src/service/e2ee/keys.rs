//! `/keys/upload`, `/keys/query` and `/keys/claim` for local users.

use std::collections::BTreeMap;

use ruma_common::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::signatures::{cross_signing_public_key, signed_by};
use super::{DeviceChange, E2eeService};
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::rooms::Requester;
use crate::service::token::SyncToken;
use crate::store::e2ee::{CrossSigningKind, OneTimeKey};
use crate::store::StoreError;

/// One-time keys a single upload may carry (clients send tens at a time).
const MAX_KEYS_PER_UPLOAD: usize = 1_000;

/// Users one query may ask about, and devices one claim may take keys of.
const MAX_USERS_PER_QUERY: usize = 10_000;
const MAX_CLAIMS: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
pub struct UploadKeys {
    pub device_keys: Option<Value>,
    #[serde(default)]
    pub one_time_keys: BTreeMap<String, Value>,
    #[serde(default)]
    pub fallback_keys: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Serialize)]
pub struct KeyQueryResponse {
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Value>>,
    pub master_keys: BTreeMap<OwnedUserId, Value>,
    pub self_signing_keys: BTreeMap<OwnedUserId, Value>,
    pub user_signing_keys: BTreeMap<OwnedUserId, Value>,
    pub failures: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Serialize)]
pub struct ClaimResponse {
    pub one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, Value>>>,
    pub failures: BTreeMap<String, Value>,
}

/// `algorithm:key_id` split, both parts non-empty and of sane length.
fn split_key_id(full: &str) -> ServiceResult<(&str, &str)> {
    match full.split_once(':') {
        Some((algorithm, id)) if !algorithm.is_empty() && !id.is_empty() && full.len() <= 255 => {
            Ok((algorithm, id))
        }
        _ => Err(ServiceError::invalid_param(format!(
            "Key id {full:?} is not of the form algorithm:id"
        ))),
    }
}

/// One-time or fallback keys as stored: the id checked, the key a string
/// or a signed object.
fn parse_keys(keys: &BTreeMap<String, Value>) -> ServiceResult<Vec<OneTimeKey>> {
    if keys.len() > MAX_KEYS_PER_UPLOAD {
        return Err(ServiceError::invalid_param("Too many keys in one upload"));
    }
    keys.iter()
        .map(|(full, key)| {
            let (algorithm, key_id) = split_key_id(full)?;
            // A plain key is a string; a signed one an object with the key
            // and its signatures (checked by the clients that claim it).
            let signed_shape = key.get("key").is_some_and(Value::is_string)
                && key.get("signatures").is_some_and(Value::is_object);
            if !(key.is_string() || signed_shape) {
                return Err(ServiceError::invalid_param(format!(
                    "Key {full} must be a string, or an object with key and signatures"
                )));
            }
            Ok(OneTimeKey {
                algorithm: algorithm.to_owned(),
                key_id: key_id.to_owned(),
                key: key.clone(),
            })
        })
        .collect()
}

/// Checks uploaded device keys: this device's, well formed, and signed by
/// the device's own ed25519 key. Returns them without `unsigned`.
fn checked_device_keys(who: &Requester, keys: &Value) -> ServiceResult<Value> {
    let invalid = |what: &str| ServiceError::invalid_param(format!("device_keys: {what}"));
    let object = keys
        .as_object()
        .ok_or_else(|| invalid("must be an object"))?;
    if object.get("user_id").and_then(Value::as_str) != Some(who.user_id.as_str()) {
        return Err(invalid("user_id must be the uploader"));
    }
    if object.get("device_id").and_then(Value::as_str) != Some(who.device_id.as_str()) {
        return Err(invalid("device_id must be the uploading device"));
    }
    let algorithms = object.get("algorithms").and_then(Value::as_array);
    if !algorithms.is_some_and(|a| a.iter().all(Value::is_string)) {
        return Err(invalid("algorithms must be a list of strings"));
    }
    let key_map = object
        .get("keys")
        .and_then(Value::as_object)
        .filter(|k| k.values().all(Value::is_string))
        .ok_or_else(|| invalid("keys must map key ids to strings"))?;
    let key_id = format!("ed25519:{}", who.device_id);
    let ed25519 = key_map
        .get(&key_id)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("keys lacks the device's ed25519 key"))?;
    if !signed_by(keys, who.user_id.as_str(), &key_id, ed25519) {
        return Err(invalid(
            "the signature of the device's ed25519 key does not verify",
        ));
    }
    let mut stored = object.clone();
    stored.remove("unsigned");
    Ok(Value::Object(stored))
}

impl E2eeService {
    /// Stores what a device uploads and answers its one-time key counts.
    pub async fn upload_keys(
        &self,
        who: &Requester,
        upload: UploadKeys,
    ) -> ServiceResult<BTreeMap<String, u64>> {
        let one_time = parse_keys(&upload.one_time_keys)?;
        let fallback = parse_keys(&upload.fallback_keys)?;
        if let Some(keys) = &upload.device_keys {
            let keys = checked_device_keys(who, keys)?;
            self.store_device_keys(who, keys).await?;
        }
        match self
            .store
            .add_one_time_keys(&who.user_id, &who.device_id, &one_time)
            .await
        {
            Err(StoreError::Conflict) => {
                return Err(ServiceError::invalid_param(
                    "A one-time key id is already in use with another key",
                ))
            }
            other => other?,
        }
        self.store
            .set_fallback_keys(&who.user_id, &who.device_id, &fallback)
            .await?;
        let (counts, _) = self.store.key_counts(&who.user_id, &who.device_id).await?;
        Ok(counts.into_iter().collect())
    }

    /// Stores device keys unless the same are stored (a client uploading
    /// again must not make every contact query its keys again).
    async fn store_device_keys(&self, who: &Requester, keys: Value) -> ServiceResult<()> {
        let stored = self
            .store
            .device_keys(std::slice::from_ref(&who.user_id))
            .await?;
        if stored
            .iter()
            .any(|d| d.device_id == who.device_id && d.keys == keys)
        {
            return Ok(());
        }
        let stream = self
            .store
            .set_device_keys(&who.user_id, &who.device_id, &keys)
            .await?;
        let change = DeviceChange::Updated(who.device_id.clone());
        self.announce(&who.user_id, stream, change).await;
        Ok(())
    }

    /// The device and cross-signing keys of the users asked about (all
    /// their devices when the list is empty), as `requester` may see them.
    pub async fn query_keys(
        &self,
        requester: &UserId,
        wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> ServiceResult<KeyQueryResponse> {
        self.query_keys_as(Some(requester), wanted).await
    }

    /// [`Self::query_keys`] for a requester of this server, or (`None`)
    /// another server, which sees only each owner's own signatures.
    async fn query_keys_as(
        &self,
        requester: Option<&UserId>,
        wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> ServiceResult<KeyQueryResponse> {
        if wanted.len() > MAX_USERS_PER_QUERY {
            return Err(ServiceError::invalid_param("Too many users in one query"));
        }
        let mut response = KeyQueryResponse::default();
        let mut local = Vec::new();
        let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>> =
            BTreeMap::new();
        for (user, devices) in wanted {
            if self.is_local(user) {
                local.push(user.clone());
            } else {
                remote
                    .entry(user.server_name().to_owned())
                    .or_default()
                    .insert(user.clone(), devices.clone());
            }
        }
        if !remote.is_empty() {
            self.query_remote(remote, &mut response).await;
        }
        if local.is_empty() {
            return Ok(response);
        }
        let mut signatures = self.signatures_seen_by(requester, &local).await?;
        for device in self.store.device_keys(&local).await? {
            let devices = &wanted[&device.user_id];
            if !devices.is_empty() && !devices.contains(&device.device_id) {
                continue;
            }
            let mut keys = device.keys;
            add_signatures(
                &mut keys,
                signatures.remove(&(device.user_id.clone(), device.device_id.to_string())),
            );
            keys["unsigned"] = json!({ "device_display_name": device.display_name });
            response
                .device_keys
                .entry(device.user_id)
                .or_default()
                .insert(device.device_id, keys);
        }
        for (user_id, kind, mut key) in self.store.cross_signing_keys(&local).await? {
            let target = match kind {
                CrossSigningKind::Master => &mut response.master_keys,
                CrossSigningKind::SelfSigning => &mut response.self_signing_keys,
                // Only its owner sees a user-signing key.
                CrossSigningKind::UserSigning if Some(user_id.as_ref()) == requester => {
                    &mut response.user_signing_keys
                }
                CrossSigningKind::UserSigning => continue,
            };
            if let Some((public, _)) = cross_signing_public_key(&key) {
                let found = signatures.remove(&(user_id.clone(), public.to_owned()));
                add_signatures(&mut key, found);
            }
            target.insert(user_id, key);
        }
        for user in local {
            response.device_keys.entry(user).or_default();
        }
        Ok(response)
    }

    /// Signatures uploaded for the users' keys that `requester` may see:
    /// the users' own, and the requester's of them. By (user, key id).
    async fn signatures_seen_by(
        &self,
        requester: Option<&UserId>,
        users: &[OwnedUserId],
    ) -> ServiceResult<BTreeMap<(OwnedUserId, String), Vec<(OwnedUserId, String, String)>>> {
        let mut found: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for s in self.store.signatures(users).await? {
            if s.signer == s.user_id || Some(s.signer.as_ref()) == requester {
                found.entry((s.user_id, s.key_id)).or_default().push((
                    s.signer,
                    s.signer_key_id,
                    s.signature,
                ));
            }
        }
        Ok(found)
    }

    /// Takes a one-time key (else the fallback key) of each device asked for.
    pub async fn claim_keys(
        &self,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    ) -> ServiceResult<ClaimResponse> {
        let claims: usize = wanted.values().map(BTreeMap::len).sum();
        if claims > MAX_CLAIMS {
            return Err(ServiceError::invalid_param("Too many devices in one claim"));
        }
        let mut response = ClaimResponse::default();
        let mut remote: BTreeMap<
            OwnedServerName,
            BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
        > = BTreeMap::new();
        for (user_id, devices) in wanted {
            if !self.is_local(user_id) {
                remote
                    .entry(user_id.server_name().to_owned())
                    .or_default()
                    .insert(user_id.clone(), devices.clone());
                continue;
            }
            for (device_id, algorithm) in devices {
                let Some(key) = self.store.claim_key(user_id, device_id, algorithm).await? else {
                    continue;
                };
                response
                    .one_time_keys
                    .entry(user_id.clone())
                    .or_default()
                    .entry(device_id.clone())
                    .or_default()
                    .insert(format!("{}:{}", key.algorithm, key.key_id), key.key);
            }
        }
        if !remote.is_empty() {
            self.claim_remote(remote, &mut response).await;
        }
        Ok(response)
    }
}

impl E2eeService {
    /// Another server's `/user/keys/query`: our users' keys only, without
    /// device names (they stay between a user and their contacts' clients
    /// on this server).
    pub async fn query_for_federation(
        &self,
        wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> ServiceResult<KeyQueryResponse> {
        let ours: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>> = wanted
            .iter()
            .filter(|(user, _)| self.is_local(user))
            .map(|(user, devices)| (user.clone(), devices.clone()))
            .collect();
        if ours.is_empty() {
            return Ok(KeyQueryResponse::default());
        }
        // As no user of ours sees them: each owner's own signatures only.
        let mut answer = self.query_keys_as(None, &ours).await?;
        for devices in answer.device_keys.values_mut() {
            for keys in devices.values_mut() {
                if let Some(object) = keys.as_object_mut() {
                    object.remove("unsigned");
                }
            }
        }
        Ok(answer)
    }

    /// Another server's `/user/keys/claim`: keys of our users' devices only.
    pub async fn claim_for_federation(
        &self,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    ) -> ServiceResult<ClaimResponse> {
        let ours = wanted
            .iter()
            .filter(|(user, _)| self.is_local(user))
            .map(|(user, devices)| (user.clone(), devices.clone()))
            .collect();
        self.claim_keys(&ours).await
    }

    /// `/keys/changes`: users whose devices changed between the tokens and
    /// who share a room with `user_id`, and those who stopped sharing any.
    pub async fn key_changes(
        &self,
        user_id: &UserId,
        from: &SyncToken,
        to: &SyncToken,
    ) -> ServiceResult<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
        let left = self.store.parted(user_id, from.events, to.events).await?;
        let changed = self
            .store
            .device_list_changes(user_id, from.device_lists, to.device_lists)
            .await?
            .into_iter()
            .filter(|u| !left.contains(u))
            .collect();
        Ok((changed, left))
    }
}

/// Merges stored signatures into a key object's `signatures`.
fn add_signatures(key: &mut Value, found: Option<Vec<(OwnedUserId, String, String)>>) {
    let (Some(found), Some(object)) = (found, key.as_object_mut()) else {
        return;
    };
    if !object.get("signatures").is_some_and(Value::is_object) {
        object.insert("signatures".into(), Value::Object(Map::new()));
    }
    let Some(Value::Object(signatures)) = object.get_mut("signatures") else {
        return;
    };
    for (signer, key_id, signature) in found {
        let by_signer = signatures
            .entry(signer.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(by_signer) = by_signer.as_object_mut() {
            by_signer.insert(key_id, Value::String(signature));
        }
    }
}
