//! Accounts, devices, tokens, filters and account data: [`AccountStore`].

use async_trait::async_trait;
use ruma_common::{
    DeviceId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde_json::Value;

use super::{StoreResult, StreamPos};

/// A registered account.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub user_id: OwnedUserId,
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub created_ts: i64,
    /// Deactivated accounts keep their row so the name is never reissued.
    pub deactivated: bool,
}

/// A user the directory search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub user_id: OwnedUserId,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// A report of an event, a room or a user, for the administrators.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Assigned by the store; ignored when adding.
    pub id: i64,
    pub reporter: OwnedUserId,
    pub room_id: Option<OwnedRoomId>,
    pub event_id: Option<OwnedEventId>,
    pub user_id: Option<OwnedUserId>,
    pub reason: Option<String>,
    pub score: Option<i64>,
    pub received_ts: i64,
}

/// The user and device an access token acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

/// One account-data entry; `room_id` is `None` for global account data.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountDataEntry {
    pub room_id: Option<OwnedRoomId>,
    pub kind: String,
    pub content: Value,
    pub stream: StreamPos,
}

/// Accounts, devices, access tokens, profiles, filters and account data.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account; `StoreError::Conflict` if the id is taken.
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn get_user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>>;
    async fn set_password_hash(&self, user_id: &UserId, hash: &str) -> StoreResult<()>;
    async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> StoreResult<()>;
    async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> StoreResult<()>;

    /// Creates (or replaces) a device and binds a new access token to it.
    /// Tokens are stored hashed; the caller passes the hash.
    async fn create_device_with_token(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
        token_hash: &str,
    ) -> StoreResult<()>;
    async fn find_token(&self, token_hash: &str) -> StoreResult<Option<TokenOwner>>;
    /// Deletes the token and the device it belongs to.
    async fn delete_token(&self, token_hash: &str) -> StoreResult<()>;
    /// Deletes every token and device of a user, except `keep_device` if given.
    /// Returns the hashes of the deleted tokens so caches can drop them.
    async fn delete_all_tokens(
        &self,
        user_id: &UserId,
        keep_device: Option<&DeviceId>,
    ) -> StoreResult<Vec<String>>;

    async fn save_filter(&self, user_id: &UserId, filter: &Value) -> StoreResult<i64>;
    async fn get_filter(&self, user_id: &UserId, filter_id: i64) -> StoreResult<Option<Value>>;

    /// Stores account data and returns its position in the account-data stream.
    async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: &Value,
    ) -> StoreResult<StreamPos>;
    async fn get_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> StoreResult<Option<Value>>;
    /// Account data changed after `since` (all of it when `since` is 0).
    async fn account_data_since(
        &self,
        user_id: &UserId,
        since: StreamPos,
    ) -> StoreResult<Vec<AccountDataEntry>>;
    async fn account_data_position(&self) -> StoreResult<StreamPos>;
    /// Records an OpenID token (its hash) of `user_id` valid until
    /// `expires_ts`, and drops the tokens that expired before `now_ts`.
    async fn create_openid_token(
        &self,
        token_hash: &str,
        user_id: &UserId,
        expires_ts: i64,
        now_ts: i64,
    ) -> StoreResult<()>;
    /// Whose OpenID token this is, if it is valid at `now_ts`.
    async fn openid_token_user(
        &self,
        token_hash: &str,
        now_ts: i64,
    ) -> StoreResult<Option<OwnedUserId>>;
    /// The user forgot a room they left; `stream` is the position of the
    /// membership (leave or ban) they forgot it at.
    async fn forget_room(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        stream: StreamPos,
    ) -> StoreResult<()>;
    /// The rooms the user forgot, each with the membership position it was
    /// forgotten at (it counts only while that is still their membership).
    async fn forgotten_rooms(&self, user_id: &UserId)
        -> StoreResult<Vec<(OwnedRoomId, StreamPos)>>;

    /// Marks the account deactivated, clears its password, profile and
    /// profile fields, and deletes its tokens and devices; returns the
    /// tokens' hashes so caches can drop them.
    async fn deactivate_user(&self, user_id: &UserId, now_ts: i64) -> StoreResult<Vec<String>>;
    /// The profile fields beyond display name and avatar, by name.
    async fn profile_fields(&self, user_id: &UserId) -> StoreResult<Vec<(String, Value)>>;
    /// Sets a profile field, or removes it when `value` is `None`.
    async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Option<&Value>,
    ) -> StoreResult<()>;
    async fn add_report(&self, report: &Report) -> StoreResult<()>;
    /// Reports with ids above `after`, oldest first.
    async fn reports(&self, after: i64, limit: usize) -> StoreResult<Vec<Report>>;
    /// Users `searcher` shares a room with or who are in public rooms,
    /// whose id or display name contains `term` (any case), at most
    /// `limit`, ordered by id.
    async fn search_users(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> StoreResult<Vec<DirectoryUser>>;
}
