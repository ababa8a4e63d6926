//! To-device messages: `PUT /sendToDevice`, and each device's inbox as its
//! syncs read and acknowledge it.

use std::collections::{BTreeMap, BTreeSet};

use ruma_common::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde::Serialize;
use serde_json::Value;

use super::E2eeService;
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::rooms::{now_ms, Requester};
use crate::store::e2ee::ToDeviceMessage;
use crate::store::StreamPos;

/// Messages one sync hands a device, as the spec bounds it.
pub const PER_SYNC: usize = 100;

/// Messages a device's inbox holds; past it, new ones for that device are
/// dropped (a device that has not synced this many is gone in all but name).
const MAX_INBOX: u64 = 10_000;

/// Messages one request may send.
const MAX_PER_REQUEST: usize = 10_000;

/// A to-device message as a sync delivers it.
#[derive(Debug, Serialize)]
pub struct ToDeviceEvent {
    pub sender: OwnedUserId,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: Value,
}

/// What one sync delivers, and the position it reaches.
pub struct ToDeviceBatch {
    pub events: Vec<ToDeviceEvent>,
    pub upto: StreamPos,
}

impl E2eeService {
    /// Queues messages of `kind` from `who` for devices (`*`: every device
    /// of that user); a transaction id seen before queues nothing.
    pub async fn send_to_device(
        &self,
        who: &Requester,
        kind: &str,
        txn_id: &str,
        messages: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
    ) -> ServiceResult<()> {
        if kind.is_empty() || kind.len() > 255 {
            return Err(ServiceError::invalid_param("Invalid event type"));
        }
        if txn_id.is_empty() || txn_id.len() > 255 {
            return Err(ServiceError::invalid_param("Invalid transaction id"));
        }
        let total: usize = messages.values().map(BTreeMap::len).sum();
        if total > MAX_PER_REQUEST {
            return Err(ServiceError::invalid_param(
                "Too many messages in one request",
            ));
        }
        let mut queued = Vec::new();
        let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, BTreeMap<String, Value>>> =
            BTreeMap::new();
        for (user_id, by_device) in messages {
            if !self.is_local(&user_id) {
                remote
                    .entry(user_id.server_name().to_owned())
                    .or_default()
                    .insert(user_id, by_device);
                continue;
            }
            self.expand(&user_id, kind, by_device, &mut queued).await?;
        }
        // One transaction records the txn id, the local messages and the
        // EDUs for other servers: a retry sends nothing anywhere again, and
        // what is acknowledged survives a crash.
        let mut outbound = self.remote_to_device(&who.user_id, kind, remote);
        let Some(stream) = self
            .store
            .queue_to_device(
                &who.user_id,
                &who.device_id,
                txn_id,
                now_ms(),
                &queued,
                &mut outbound,
            )
            .await?
        else {
            return Ok(());
        };
        self.send_stored(outbound);
        self.notify_inboxes(&queued, stream).await;
        Ok(())
    }

    /// One user's messages, per existing device with room in its inbox.
    pub(super) async fn expand(
        &self,
        user_id: &UserId,
        kind: &str,
        by_device: BTreeMap<String, Value>,
        out: &mut Vec<ToDeviceMessage>,
    ) -> ServiceResult<()> {
        let devices: Vec<OwnedDeviceId> = self
            .store
            .devices(user_id)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        let full: BTreeSet<OwnedDeviceId> = self
            .store
            .inbox_sizes(user_id)
            .await?
            .into_iter()
            .filter(|(_, size)| *size >= MAX_INBOX)
            .map(|(device, _)| device)
            .collect();
        for (target, content) in by_device {
            if !content.is_object() {
                return Err(ServiceError::bad_json(
                    "Each message's content must be an object",
                ));
            }
            let chosen: Vec<&OwnedDeviceId> = match target.as_str() {
                "*" => devices.iter().collect(),
                one => devices.iter().filter(|d| d.as_str() == one).collect(),
            };
            for device_id in chosen {
                if full.contains(device_id) {
                    tracing::warn!(%user_id, %device_id, "to-device inbox full: message dropped");
                    continue;
                }
                out.push(ToDeviceMessage {
                    user_id: user_id.to_owned(),
                    device_id: device_id.clone(),
                    kind: kind.to_owned(),
                    content: content.clone(),
                });
            }
        }
        Ok(())
    }

    /// The device's messages after `since`, up to `upto`, at most
    /// [`PER_SYNC`]; `upto` of the batch is where the next sync starts.
    pub async fn inbox(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        since: StreamPos,
        upto: StreamPos,
    ) -> ServiceResult<ToDeviceBatch> {
        if since >= upto {
            return Ok(ToDeviceBatch {
                events: Vec::new(),
                upto: since.max(upto),
            });
        }
        let messages = self
            .store
            .to_device_inbox(user_id, device_id, since, upto, PER_SYNC)
            .await?;
        let upto = match messages.last() {
            Some(last) if messages.len() == PER_SYNC => last.stream,
            _ => upto,
        };
        let events = messages
            .into_iter()
            .map(|m| ToDeviceEvent {
                sender: m.sender,
                kind: m.kind,
                content: m.content,
            })
            .collect();
        Ok(ToDeviceBatch { events, upto })
    }

    /// The device's client holds every message up to `upto`: they go.
    pub async fn acknowledge_to_device(
        &self,
        who: &Requester,
        upto: StreamPos,
    ) -> ServiceResult<()> {
        if upto > 0 {
            self.store
                .acknowledge_to_device(&who.user_id, &who.device_id, upto)
                .await?;
        }
        Ok(())
    }

    pub async fn to_device_position(&self) -> ServiceResult<StreamPos> {
        Ok(self.store.to_device_position().await?)
    }

    pub async fn device_list_position(&self) -> ServiceResult<StreamPos> {
        Ok(self.store.device_list_position().await?)
    }

    /// The device's one-time key counts and unused fallback key algorithms.
    pub async fn key_counts(
        &self,
        who: &Requester,
    ) -> ServiceResult<(BTreeMap<String, u64>, Vec<String>)> {
        let (counts, fallbacks) = self.store.key_counts(&who.user_id, &who.device_id).await?;
        Ok((counts.into_iter().collect(), fallbacks))
    }

    /// Users whose devices changed in `(since, upto]` that `user_id` shares
    /// a room with (or is).
    pub async fn device_list_changes(
        &self,
        user_id: &UserId,
        since: StreamPos,
        upto: StreamPos,
    ) -> ServiceResult<Vec<OwnedUserId>> {
        Ok(self.store.device_list_changes(user_id, since, upto).await?)
    }

    /// Users who stopped sharing every room with `user_id` through a
    /// membership change at an event position in `(since, upto]`.
    pub async fn parted(
        &self,
        user_id: &UserId,
        since: StreamPos,
        upto: StreamPos,
    ) -> ServiceResult<Vec<OwnedUserId>> {
        Ok(self.store.parted(user_id, since, upto).await?)
    }
}
