//! End-to-end encryption: the keys clients encrypt with, the messages
//! they exchange device to device, and their encrypted key backups. The
//! server checks what it can (shapes, owners, signatures) and stores the
//! rest as the clients made it: it never holds a key that decrypts.
//!
//! `keys.rs` uploads, queries and claims device keys; `signing.rs` is
//! cross-signing and signatures; `to_device.rs` the inboxes; `backup.rs`
//! the key backups; `signatures.rs` the signature checks they share.
//! Devices themselves, and the user-interactive auth that guards their
//! changes, are the account service's.

mod backup;
mod federation;
mod keys;
mod signatures;
mod signing;
pub mod to_device;

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;
use ruma_common::{OwnedServerName, OwnedUserId, UserId};

pub use backup::{by_room, BackupVersionInfo};
pub use federation::DeviceChange;
use federation::RemoteKeys;
pub use keys::{ClaimResponse, KeyQueryResponse, UploadKeys};
pub use signing::{CrossSigningUpload, SignatureFailure};
pub use to_device::ToDeviceBatch;

use super::federation::sender::Outbox;
use super::federation::FederationService;
use crate::store::{E2eeStore, EventBus, FederationStore, StreamNotice, StreamPos};

pub struct E2eeService {
    store: Arc<dyn E2eeStore>,
    bus: Arc<dyn EventBus>,
    server_name: OwnedServerName,
    /// Other servers: asked for their users' keys, sent EDUs. `None` when
    /// this server does not federate.
    federation: Option<(Arc<FederationService>, Outbox)>,
    /// Which servers share a room with a user (where their device changes go).
    sharing: Arc<dyn FederationStore>,
    /// Other servers' users' keys as last fetched whole, until their server
    /// says they changed (`m.device_list_update`) or they grow old.
    remote_keys: Mutex<LruCache<OwnedUserId, RemoteKeys>>,
}

/// Rooms' worth of remote users whose keys are kept.
const CACHED_REMOTE_USERS: NonZeroUsize = NonZeroUsize::new(10_000).expect("non-zero");

/// What an [`E2eeService`] is built on.
pub struct E2eeParts {
    pub store: Arc<dyn E2eeStore>,
    pub bus: Arc<dyn EventBus>,
    pub server_name: OwnedServerName,
    pub federation: Option<(Arc<FederationService>, Outbox)>,
    pub sharing: Arc<dyn FederationStore>,
}

impl E2eeService {
    pub fn new(parts: E2eeParts) -> Self {
        let E2eeParts {
            store,
            bus,
            server_name,
            federation,
            sharing,
        } = parts;
        Self {
            store,
            bus,
            server_name,
            federation,
            sharing,
            remote_keys: Mutex::new(LruCache::new(CACHED_REMOTE_USERS)),
        }
    }

    /// Another server's user's devices changed: their cached keys go (a
    /// cluster node calls this for changes another node heard of).
    pub fn forget_remote_keys(&self, user_id: &UserId) {
        if !self.is_local(user_id) {
            self.remote_keys.lock().pop(user_id);
        }
    }

    /// A local user's devices or keys changed (durably, at `stream`): wakes
    /// the syncs of those who share a room with them, here and on the
    /// servers they share rooms with.
    pub async fn announce(&self, user_id: &UserId, stream: StreamPos, change: DeviceChange) {
        self.device_lists_changed(user_id, stream).await;
        self.share_change(user_id, stream, change);
    }

    /// Wakes the syncs of `user_id` and of whoever shares a room with them.
    async fn device_lists_changed(&self, user_id: &UserId, stream: StreamPos) {
        let notice = StreamNotice::DeviceLists {
            stream,
            user_id: user_id.to_owned(),
        };
        if let Err(err) = self.bus.publish(notice).await {
            tracing::warn!(%err, "publishing a device list notice failed");
        }
    }

    /// Whether `user_id` is one of ours (remote users' keys come through
    /// federation).
    fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name
    }
}
