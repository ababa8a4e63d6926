//! A user's devices: listing, naming, where each was last seen, and
//! deletion with everything bound to a device.

use std::net::IpAddr;

use ruma_common::{DeviceId, OwnedDeviceId, UserId};

use super::AccountService;
use crate::service::e2ee::DeviceChange;
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::rooms::{now_ms, Requester};
use crate::store::e2ee::DeviceRecord;

/// How often a device's last-seen time and address are written: a request
/// every few seconds must not cost a write each.
const SEEN_EVERY_MS: i64 = 60_000;

impl AccountService {
    pub async fn devices(&self, user_id: &UserId) -> ServiceResult<Vec<DeviceRecord>> {
        Ok(self.e2ee.devices(user_id).await?)
    }

    pub async fn device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> ServiceResult<DeviceRecord> {
        self.e2ee
            .devices(user_id)
            .await?
            .into_iter()
            .find(|d| d.device_id == device_id)
            .ok_or_else(|| ServiceError::not_found("Unknown device"))
    }

    /// Renames a device (`None`: leaves the name as it is); its owner's
    /// contacts see the new name in their key queries, so the device list
    /// counts as changed.
    pub async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        name: Option<&str>,
    ) -> ServiceResult<()> {
        let Some(name) = name else {
            // Nothing to change, but an unknown device is still unknown.
            return self.device(user_id, device_id).await.map(|_| ());
        };
        let name = Some(name);
        if name.is_some_and(|n| n.len() > 255) {
            return Err(ServiceError::invalid_param("display_name is too long"));
        }
        if !self.e2ee.set_device_name(user_id, device_id, name).await? {
            return Err(ServiceError::not_found("Unknown device"));
        }
        let stream = self.e2ee.note_device_list_change(user_id).await?;
        let change = DeviceChange::Updated(device_id.to_owned());
        self.keys.announce(user_id, stream, change).await;
        Ok(())
    }

    /// Deletes devices of `user_id` with their access tokens, keys and
    /// to-device inboxes (pushers are the pusher service's).
    pub async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> ServiceResult<()> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let hashes = self.e2ee.delete_devices(user_id, device_ids).await?;
        self.forget_tokens(&hashes);
        self.share_forgotten(hashes, None);
        let stream = self.e2ee.device_list_position().await?;
        let change = DeviceChange::Deleted(device_ids.to_vec());
        self.keys.announce(user_id, stream, change).await;
        Ok(())
    }

    /// Notes that `who` made a request from `ip`, at most once a minute per
    /// device; the write happens in the background.
    pub fn seen(&self, who: &Requester, ip: IpAddr) {
        let now = now_ms();
        let key = (who.user_id.clone(), who.device_id.clone());
        {
            let mut seen = self.seen.lock();
            if seen
                .get(&key)
                .is_some_and(|last| now - *last < SEEN_EVERY_MS)
            {
                return;
            }
            seen.put(key, now);
        }
        let store = self.e2ee.clone();
        let who = who.clone();
        tokio::spawn(async move {
            let ip = ip.to_canonical().to_string();
            if let Err(err) = store
                .record_seen(&who.user_id, &who.device_id, &ip, now)
                .await
            {
                tracing::debug!(%err, "recording where a device was seen failed");
            }
        });
    }
}
