//! Keys and to-device messages across servers: asking other servers for
//! their users' keys (`/user/keys/query`, `/user/keys/claim`), answering
//! theirs, and the EDUs that carry device-list changes
//! (`m.device_list_update`, `m.signing_key_update`) and to-device messages
//! (`m.direct_to_device`) both ways.

use std::collections::BTreeMap;

use futures::future::join_all;
use ruma_common::OneTimeKeyAlgorithm;
use ruma_common::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UserId};
use ruma_federation_api::keys::{claim_keys, get_keys};
use serde::Deserialize;
use serde_json::{json, Value};

use super::keys::{ClaimResponse, KeyQueryResponse};
use super::E2eeService;
use crate::service::error::ServiceResult;
use crate::service::rooms::now_ms;
use crate::store::e2ee::{CrossSigningKind, OutboundEdu, ToDeviceMessage};
use crate::store::StreamNotice;

/// What changed of a local user's devices, for the servers they share
/// rooms with.
#[derive(Debug, Clone)]
pub enum DeviceChange {
    /// A device's keys or name.
    Updated(OwnedDeviceId),
    Deleted(Vec<OwnedDeviceId>),
    /// The master or self-signing key (or a signature of it).
    CrossSigning,
}

/// One remote user's keys as their server gave them, and when.
#[derive(Clone)]
pub(super) struct RemoteKeys {
    devices: BTreeMap<OwnedDeviceId, Value>,
    master: Option<Value>,
    self_signing: Option<Value>,
    fetched_ms: i64,
}

/// How long cached remote keys are trusted without word from their server
/// (which sends changes only while it shares a room with us).
const REMOTE_KEYS_MS: i64 = 5 * 60 * 1000;

/// `m.direct_to_device` content.
#[derive(Deserialize)]
struct DirectToDevice {
    sender: OwnedUserId,
    #[serde(rename = "type")]
    kind: String,
    message_id: String,
    messages: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
}

/// The user an `m.device_list_update` or `m.signing_key_update` is about.
#[derive(Deserialize)]
struct AboutUser {
    user_id: OwnedUserId,
}

fn unreachable(server: &ServerName, err: impl std::fmt::Display) -> (String, Value) {
    tracing::info!(%server, %err, "another server's keys could not be had");
    (
        server.to_string(),
        json!({"errcode": "M_UNAVAILABLE", "error": format!("{server} did not answer")}),
    )
}

/// Every server asked of is a failure: this server does not federate.
fn not_federating<'a>(
    servers: impl Iterator<Item = &'a OwnedServerName>,
    failures: &mut BTreeMap<String, Value>,
) {
    for server in servers {
        let (name, why) = unreachable(server, "this server does not federate");
        failures.insert(name, why);
    }
}

fn raw_value<T>(raw: &ruma_common::serde::Raw<T>) -> Option<Value> {
    serde_json::from_str(raw.json().get()).ok()
}

impl E2eeService {
    /// Asks each server for its users' keys, at once; a server that fails
    /// is reported in `failures`.
    pub(super) async fn query_remote(
        &self,
        remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>>,
        response: &mut KeyQueryResponse,
    ) {
        let Some((federation, _)) = &self.federation else {
            not_federating(remote.keys(), &mut response.failures);
            return;
        };
        let remote = self.answer_from_cache(remote, response);
        let asked = remote.into_iter().map(|(server, users)| async move {
            let whole: Vec<OwnedUserId> = users
                .iter()
                .filter(|(_, devices)| devices.is_empty())
                .map(|(user, _)| user.clone())
                .collect();
            let request = get_keys::v1::Request::new(users);
            let answer = federation.client.send(&server, request).await;
            (server, whole, answer)
        });
        for (server, whole, answer) in join_all(asked).await {
            let answer = match answer {
                Ok(answer) => answer,
                Err(err) => {
                    let (name, why) = unreachable(&server, err);
                    response.failures.insert(name, why);
                    continue;
                }
            };
            // Only what the server may speak for: its own users.
            let theirs = |user: &UserId| user.server_name() == server;
            for (user, devices) in answer.device_keys {
                if !theirs(&user) {
                    continue;
                }
                let entry = response.device_keys.entry(user).or_default();
                for (device, keys) in devices {
                    if let Some(keys) = raw_value(&keys) {
                        entry.insert(device, keys);
                    }
                }
            }
            for (user, key) in answer.master_keys {
                if let (true, Some(key)) = (theirs(&user), raw_value(&key)) {
                    response.master_keys.insert(user, key);
                }
            }
            for (user, key) in answer.self_signing_keys {
                if let (true, Some(key)) = (theirs(&user), raw_value(&key)) {
                    response.self_signing_keys.insert(user, key);
                }
            }
            self.keep(&whole, response);
        }
    }

    /// Answers from the cache the users asked for whole whose keys are
    /// cached and fresh; returns what is left to ask.
    fn answer_from_cache(
        &self,
        mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>>,
        response: &mut KeyQueryResponse,
    ) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>> {
        let now = now_ms();
        let mut cache = self.remote_keys.lock();
        for users in remote.values_mut() {
            users.retain(|user, devices| {
                if !devices.is_empty() {
                    return true;
                }
                let Some(found) = cache
                    .get(user)
                    .filter(|k| now - k.fetched_ms < REMOTE_KEYS_MS)
                else {
                    return true;
                };
                response
                    .device_keys
                    .insert(user.clone(), found.devices.clone());
                if let Some(master) = &found.master {
                    response.master_keys.insert(user.clone(), master.clone());
                }
                if let Some(ssk) = &found.self_signing {
                    response.self_signing_keys.insert(user.clone(), ssk.clone());
                }
                false
            });
        }
        remote.retain(|_, users| !users.is_empty());
        remote
    }

    /// Caches the keys of the users that were asked for whole.
    fn keep(&self, whole: &[OwnedUserId], response: &KeyQueryResponse) {
        let now = now_ms();
        let mut cache = self.remote_keys.lock();
        for user in whole {
            cache.put(
                user.clone(),
                RemoteKeys {
                    devices: response.device_keys.get(user).cloned().unwrap_or_default(),
                    master: response.master_keys.get(user).cloned(),
                    self_signing: response.self_signing_keys.get(user).cloned(),
                    fetched_ms: now,
                },
            );
        }
    }

    /// Claims one-time keys of other servers' devices, a server at a time
    /// in parallel.
    pub(super) async fn claim_remote(
        &self,
        remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>>,
        response: &mut ClaimResponse,
    ) {
        let Some((federation, _)) = &self.federation else {
            not_federating(remote.keys(), &mut response.failures);
            return;
        };
        let asked = remote.into_iter().map(|(server, users)| async move {
            let claims = users
                .into_iter()
                .map(|(user, devices)| {
                    let devices = devices
                        .into_iter()
                        .map(|(device, algorithm)| {
                            (device, OneTimeKeyAlgorithm::from(algorithm.as_str()))
                        })
                        .collect();
                    (user, devices)
                })
                .collect();
            let answer = federation
                .client
                .send(&server, claim_keys::v1::Request::new(claims))
                .await;
            (server, answer)
        });
        for (server, answer) in join_all(asked).await {
            let answer = match answer {
                Ok(answer) => answer,
                Err(err) => {
                    let (name, why) = unreachable(&server, err);
                    response.failures.insert(name, why);
                    continue;
                }
            };
            for (user, devices) in answer.one_time_keys {
                if user.server_name() != server {
                    continue;
                }
                let entry = response.one_time_keys.entry(user).or_default();
                for (device, keys) in devices {
                    let keys: BTreeMap<String, Value> = keys
                        .into_iter()
                        .filter_map(|(id, key)| Some((id.to_string(), raw_value(&key)?)))
                        .collect();
                    entry.insert(device, keys);
                }
            }
        }
    }

    /// To-device messages for other servers' users, as one
    /// `m.direct_to_device` EDU per server, to store with the local ones
    /// (none when this server does not federate: they cannot leave).
    pub(super) fn remote_to_device(
        &self,
        sender: &UserId,
        kind: &str,
        remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, BTreeMap<String, Value>>>,
    ) -> Vec<OutboundEdu> {
        if self.federation.is_none() {
            if !remote.is_empty() {
                tracing::info!(%sender, "to-device messages for other servers dropped: not federating");
            }
            return Vec::new();
        }
        remote
            .into_iter()
            .map(|(destination, messages)| {
                let edu = json!({
                    "edu_type": "m.direct_to_device",
                    "content": {
                        "sender": sender,
                        "type": kind,
                        "message_id": crate::service::accounts::random_token(16),
                        "messages": messages,
                    },
                });
                OutboundEdu {
                    id: 0,
                    destination,
                    edu: edu.to_string(),
                }
            })
            .collect()
    }

    /// Hands stored to-device EDUs to the outbox.
    pub(super) fn send_stored(&self, edus: Vec<OutboundEdu>) {
        if let Some((_, outbox)) = &self.federation {
            for edu in edus {
                outbox.send_stored_edu(edu);
            }
        }
    }

    /// Tells the servers that share a room with `user_id` what changed of
    /// their devices. In the background: the change is already durable.
    pub(super) fn share_change(&self, user_id: &UserId, stream: i64, change: DeviceChange) {
        let Some((_, outbox)) = self.federation.clone() else {
            return;
        };
        let (store, sharing, ours) = (
            self.store.clone(),
            self.sharing.clone(),
            self.server_name.clone(),
        );
        let user_id = user_id.to_owned();
        tokio::spawn(async move {
            let servers = match sharing.servers_sharing_with(&user_id, &ours).await {
                Ok(servers) if !servers.is_empty() => servers,
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(%err, "finding where a device change goes failed");
                    return;
                }
            };
            let edus = match change_edus(store.as_ref(), &user_id, stream, change).await {
                Ok(edus) => edus,
                Err(err) => {
                    tracing::warn!(%err, "reading a device change to share failed");
                    return;
                }
            };
            for edu in edus {
                match serde_json::value::to_raw_value(&edu) {
                    Ok(raw) => outbox.send_edu(&raw, servers.iter().cloned()),
                    Err(err) => tracing::warn!(%err, "a device EDU could not be serialized"),
                }
            }
        });
    }

    /// `m.direct_to_device` from `origin`: delivered to our users' devices
    /// once (its `message_id` is the transaction id).
    pub async fn receive_to_device(&self, origin: &ServerName, content: Value) {
        let Ok(edu) = DirectToDevice::deserialize(content) else {
            tracing::debug!(%origin, "dropped a malformed m.direct_to_device");
            return;
        };
        if edu.sender.server_name() != origin || edu.kind.is_empty() || edu.kind.len() > 255 {
            tracing::debug!(%origin, "dropped an m.direct_to_device its origin may not send");
            return;
        }
        let mut queued = Vec::new();
        for (user_id, by_device) in edu.messages {
            if !self.is_local(&user_id) {
                continue;
            }
            if let Err(err) = self
                .expand(&user_id, &edu.kind, by_device, &mut queued)
                .await
            {
                tracing::debug!(%origin, error = %err.message, "dropped part of an m.direct_to_device");
            }
        }
        // The sending server's own name stands for the sending device: the
        // message id is unique per sender, not per device.
        let txn = format!("federation:{}", edu.message_id);
        let device: &DeviceId = origin.as_str().into();
        match self
            .store
            .queue_to_device(&edu.sender, device, &txn, now_ms(), &queued, &mut [])
            .await
        {
            Ok(Some(stream)) => self.notify_inboxes(&queued, stream).await,
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, %origin, "storing an m.direct_to_device failed"),
        }
    }

    /// Wakes the syncs of the users who got messages.
    pub(super) async fn notify_inboxes(&self, queued: &[ToDeviceMessage], stream: i64) {
        let mut users: Vec<&OwnedUserId> = queued.iter().map(|m| &m.user_id).collect();
        users.sort();
        users.dedup();
        for user_id in users {
            let notice = StreamNotice::ToDevice {
                stream,
                user_id: user_id.clone(),
            };
            if let Err(err) = self.bus.publish(notice).await {
                tracing::warn!(%err, "publishing a to-device notice failed");
            }
        }
    }

    /// `m.device_list_update` or `m.signing_key_update` from `origin`: the
    /// user's devices changed, so our users who share a room with them
    /// hear it in `device_lists.changed` and query the keys again.
    pub async fn receive_device_change(&self, origin: &ServerName, content: Value) {
        let Ok(AboutUser { user_id }) = AboutUser::deserialize(content) else {
            tracing::debug!(%origin, "dropped a malformed device list EDU");
            return;
        };
        if user_id.server_name() != origin {
            tracing::debug!(%origin, %user_id, "dropped a device list EDU for another server's user");
            return;
        }
        self.forget_remote_keys(&user_id);
        match self.store.note_device_list_change(&user_id).await {
            Ok(stream) => self.device_lists_changed(&user_id, stream).await,
            Err(err) => tracing::warn!(%err, "noting a remote device change failed"),
        }
    }

    /// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's
    /// devices with their keys (not their names: those stay on this
    /// server), and their cross-signing keys.
    pub async fn devices_for_federation(&self, user_id: &UserId) -> ServiceResult<Value> {
        let wanted = BTreeMap::from([(user_id.to_owned(), vec![])]);
        let keys = self.query_for_federation(&wanted).await?;
        let stream = self.store.device_list_position().await?;
        let devices: Vec<Value> = keys
            .device_keys
            .get(user_id)
            .into_iter()
            .flatten()
            .map(|(device_id, keys)| json!({"device_id": device_id, "keys": keys}))
            .collect();
        let mut answer = json!({"user_id": user_id, "stream_id": stream, "devices": devices});
        if let Some(master) = keys.master_keys.get(user_id) {
            answer["master_key"] = master.clone();
        }
        if let Some(ssk) = keys.self_signing_keys.get(user_id) {
            answer["self_signing_key"] = ssk.clone();
        }
        Ok(answer)
    }
}

/// The EDUs that tell other servers about one change.
async fn change_edus(
    store: &dyn crate::store::E2eeStore,
    user_id: &UserId,
    stream: i64,
    change: DeviceChange,
) -> crate::store::StoreResult<Vec<Value>> {
    let update = |device_id: &DeviceId, extra: Value| {
        let mut content = json!({
            "user_id": user_id, "device_id": device_id, "stream_id": stream, "prev_id": [],
        });
        if let (Some(content), Some(extra)) = (content.as_object_mut(), extra.as_object()) {
            content.extend(extra.clone());
        }
        json!({"edu_type": "m.device_list_update", "content": content})
    };
    match change {
        DeviceChange::Deleted(devices) => Ok(devices
            .iter()
            .map(|d| update(d, json!({"deleted": true})))
            .collect()),
        DeviceChange::Updated(device_id) => {
            let found = store
                .device_keys(&[user_id.to_owned()])
                .await?
                .into_iter()
                .find(|d| d.device_id == device_id);
            Ok(found
                // Without the device's name: names stay on this server.
                .map(|d| vec![update(&device_id, json!({"keys": d.keys}))])
                .unwrap_or_default())
        }
        DeviceChange::CrossSigning => {
            let mut content = json!({"user_id": user_id});
            for (_, kind, key) in store.cross_signing_keys(&[user_id.to_owned()]).await? {
                match kind {
                    CrossSigningKind::Master => content["master_key"] = key,
                    CrossSigningKind::SelfSigning => content["self_signing_key"] = key,
                    CrossSigningKind::UserSigning => {}
                }
            }
            Ok(vec![
                json!({"edu_type": "m.signing_key_update", "content": content}),
            ])
        }
    }
}
