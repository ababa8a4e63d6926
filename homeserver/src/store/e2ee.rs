//! Devices and end-to-end encryption: [`E2eeStore`].
//!
//! The server keeps what clients encrypt with and never sees a plaintext:
//! device identity keys as the devices signed them, one-time and fallback
//! keys for Olm sessions, cross-signing keys and the signatures between
//! keys, to-device messages until their device acknowledges them, the
//! user-interactive-auth sessions that guard key and device changes, and
//! encrypted key backups. Two positioned streams come with it: whose
//! device lists changed, and every device's to-device inbox.

use async_trait::async_trait;
use ruma_common::{
    DeviceId, OwnedDeviceId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId,
};
use serde_json::Value;

use super::{StoreResult, StreamPos};

/// A device of a user, with where it was last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    pub device_id: OwnedDeviceId,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<i64>,
}

/// A one-time or fallback key: `algorithm:key_id` and its signed JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct OneTimeKey {
    pub algorithm: String,
    pub key_id: String,
    pub key: Value,
}

/// A device's signed identity keys and its display name.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceKeys {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub keys: Value,
    pub display_name: Option<String>,
}

/// The kind of a cross-signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrossSigningKind {
    Master,
    SelfSigning,
    UserSigning,
}

impl CrossSigningKind {
    pub const ALL: [Self; 3] = [Self::Master, Self::SelfSigning, Self::UserSigning];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::SelfSigning => "self_signing",
            Self::UserSigning => "user_signing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A signature of `user_id`'s key `key_id` (a device id, or a cross-signing
/// public key) by `signer`'s key `signer_key_id` (`ed25519:...`).
#[derive(Debug, Clone, PartialEq)]
pub struct KeySignature {
    pub user_id: OwnedUserId,
    pub key_id: String,
    pub signer: OwnedUserId,
    pub signer_key_id: String,
    pub signature: String,
}

/// A to-device message for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct ToDeviceMessage {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub kind: String,
    pub content: Value,
}

/// An EDU of to-device messages for another server, kept until it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundEdu {
    /// Set by the store.
    pub id: i64,
    pub destination: OwnedServerName,
    pub edu: String,
}

/// A to-device message as its device receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxMessage {
    pub stream: StreamPos,
    pub sender: OwnedUserId,
    pub kind: String,
    pub content: Value,
}

/// A user-interactive-auth session: who it is for, for what, and the
/// stages done so far.
#[derive(Debug, Clone, PartialEq)]
pub struct UiaSession {
    pub session_id: String,
    pub user_id: OwnedUserId,
    pub operation: String,
    pub completed: Vec<String>,
    pub expires_ts: i64,
}

/// A version of a user's key backup.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: Value,
    pub etag: i64,
    pub count: i64,
}

/// One backed-up session key.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupKey {
    pub room_id: OwnedRoomId,
    pub session_id: String,
    pub data: Value,
}

/// Whether backed-up session data (the first) should replace the stored
/// copy (the second). An alias, so that `async_trait` leaves its
/// higher-ranked lifetimes alone.
pub type Better = dyn Fn(&Value, &Value) -> bool + Send + Sync;

/// Everything of this module, as one object for the service layer.
pub trait E2eeStore: DeviceStore + KeyStore + ToDeviceStore + KeyBackupStore {}

impl<T: DeviceStore + KeyStore + ToDeviceStore + KeyBackupStore> E2eeStore for T {}

/// Devices, the device-list stream and the UIA sessions that guard changes.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>>;
    /// Renames a device; `false` if the user has no such device.
    async fn set_device_name(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        name: Option<&str>,
    ) -> StoreResult<bool>;
    async fn record_seen(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        ip: &str,
        ts: i64,
    ) -> StoreResult<()>;
    /// Deletes devices with everything bound to them (access tokens,
    /// identity, one-time and fallback keys, to-device inbox) and notes the
    /// change in the device-list stream. Returns the deleted tokens' hashes.
    async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> StoreResult<Vec<String>>;

    /// Notes that `user_id`'s devices changed (a remote user's, told by
    /// their server).
    async fn note_device_list_change(&self, user_id: &UserId) -> StoreResult<StreamPos>;
    async fn device_list_position(&self) -> StoreResult<StreamPos>;
    /// Users whose device lists changed in `(since, upto]` and who are
    /// `user_id` or share a joined room with them.
    async fn device_list_changes(
        &self,
        user_id: &UserId,
        since: StreamPos,
        upto: StreamPos,
    ) -> StoreResult<Vec<OwnedUserId>>;
    /// Users who stopped sharing every joined room with `user_id` through a
    /// membership change in `(since, upto]` (theirs or `user_id`'s).
    async fn parted(
        &self,
        user_id: &UserId,
        since: StreamPos,
        upto: StreamPos,
    ) -> StoreResult<Vec<OwnedUserId>>;
    /// Which of `candidates` share a joined room with `user_id`.
    async fn sharing_a_room(
        &self,
        user_id: &UserId,
        candidates: &[OwnedUserId],
    ) -> StoreResult<Vec<OwnedUserId>>;

    async fn uia_session(&self, session_id: &str) -> StoreResult<Option<UiaSession>>;
    /// Creates or updates a session; also drops the sessions expired before `now_ts`.
    async fn save_uia_session(&self, session: &UiaSession, now_ts: i64) -> StoreResult<()>;
    async fn delete_uia_session(&self, session_id: &str) -> StoreResult<()>;
}

/// Identity, one-time, fallback and cross-signing keys, and signatures.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a device's identity keys and notes the change.
    async fn set_device_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &Value,
    ) -> StoreResult<StreamPos>;
    /// The identity keys of every device of these users that has any.
    async fn device_keys(&self, users: &[OwnedUserId]) -> StoreResult<Vec<DeviceKeys>>;
    /// Adds one-time keys; a key id already stored with other content is a
    /// `StoreError::Conflict` and nothing is added.
    async fn add_one_time_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &[OneTimeKey],
    ) -> StoreResult<()>;
    /// Sets the fallback key of each algorithm given (a key sent again
    /// keeps its `used` mark).
    async fn set_fallback_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &[OneTimeKey],
    ) -> StoreResult<()>;
    /// The device's unclaimed one-time keys per algorithm, and the
    /// algorithms of its unused fallback keys.
    async fn key_counts(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<(Vec<(String, u64)>, Vec<String>)>;
    /// Takes one key of `algorithm` for the device: a one-time key (gone
    /// once taken), else its fallback key (then marked used).
    async fn claim_key(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        algorithm: &str,
    ) -> StoreResult<Option<OneTimeKey>>;

    /// Stores cross-signing keys and notes the change.
    async fn set_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: &[(CrossSigningKind, Value)],
    ) -> StoreResult<StreamPos>;
    async fn cross_signing_keys(
        &self,
        users: &[OwnedUserId],
    ) -> StoreResult<Vec<(OwnedUserId, CrossSigningKind, Value)>>;
    /// Stores signatures and notes a change for every user whose keys gained one.
    async fn add_signatures(&self, signatures: &[KeySignature]) -> StoreResult<StreamPos>;
    /// The signatures stored for keys of these users.
    async fn signatures(&self, users: &[OwnedUserId]) -> StoreResult<Vec<KeySignature>>;
}

/// Every device's to-device inbox.
#[async_trait]
pub trait ToDeviceStore: Send + Sync {
    /// Queues to-device messages sent by `sender`'s device in transaction
    /// `txn_id`, and the EDUs for other servers' users (their ids set);
    /// `None` when that transaction was queued before. The position
    /// returned is the last local message's.
    async fn queue_to_device(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        txn_id: &str,
        now_ts: i64,
        messages: &[ToDeviceMessage],
        remote: &mut [OutboundEdu],
    ) -> StoreResult<Option<StreamPos>>;
    /// The EDUs for other servers not yet sent, oldest first.
    async fn pending_outbound(&self) -> StoreResult<Vec<OutboundEdu>>;
    /// These EDUs reached their servers.
    async fn outbound_sent(&self, ids: &[i64]) -> StoreResult<()>;
    /// A device's messages in `(since, upto]`, oldest first, at most `limit`.
    async fn to_device_inbox(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        since: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<InboxMessage>>;
    /// The device's client holds everything up to `upto`: deletes it.
    async fn acknowledge_to_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        upto: StreamPos,
    ) -> StoreResult<()>;
    /// How many messages wait for each device of `user_id` that has any.
    async fn inbox_sizes(&self, user_id: &UserId) -> StoreResult<Vec<(OwnedDeviceId, u64)>>;
    async fn to_device_position(&self) -> StoreResult<StreamPos>;
}

/// Server-side key backups.
#[async_trait]
pub trait KeyBackupStore: Send + Sync {
    /// Creates a backup version (one more than any the user had).
    async fn create_backup(
        &self,
        user_id: &UserId,
        algorithm: &str,
        auth_data: &Value,
    ) -> StoreResult<i64>;
    /// The version given, or the latest; deleted versions are not found.
    async fn backup_version(
        &self,
        user_id: &UserId,
        version: Option<i64>,
    ) -> StoreResult<Option<BackupVersion>>;
    /// `false` if there is no such (undeleted) version.
    async fn update_backup(
        &self,
        user_id: &UserId,
        version: i64,
        auth_data: &Value,
    ) -> StoreResult<bool>;
    /// Deletes a version and its keys; `false` if there was none.
    async fn delete_backup(&self, user_id: &UserId, version: i64) -> StoreResult<bool>;
    /// Stores keys in a version, each replacing the one of its session only
    /// if `better(new, stored)` says so; returns the version's new etag and
    /// count, `None` if there is no such (undeleted) version.
    async fn put_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        keys: &[BackupKey],
        better: &Better,
    ) -> StoreResult<Option<(i64, i64)>>;
    /// A version's keys, of one room or one session if given.
    async fn backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        room_id: Option<&RoomId>,
        session_id: Option<&str>,
    ) -> StoreResult<Vec<BackupKey>>;
    /// Deletes keys of a version (of one room or one session if given);
    /// returns the new etag and count, `None` if there is no such version.
    async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        room_id: Option<&RoomId>,
        session_id: Option<&str>,
    ) -> StoreResult<Option<(i64, i64)>>;
}
