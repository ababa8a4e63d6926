//! Accounts: registration, login, access tokens, passwords and profiles.
//!
//! Passwords are hashed with argon2 on the blocking pool (hashing takes tens
//! of milliseconds by design and must not stall the async workers). Access
//! tokens are 256 random bits; only their SHA-256 is stored, and a small cache
//! spares the database a lookup on every request.

use parking_lot::Mutex;
use ruma_common::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, RoomId, UserId};
use std::num::NonZeroUsize;
use std::sync::Arc;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use lru::LruCache;
use rand::RngCore;
use sha2::{Digest, Sha256};

mod devices;
mod ignored;
mod profile;
mod tags;
pub mod uia;

pub use ignored::{IgnoredUsers, IGNORED_USERS_TYPE};
pub use tags::TAG_TYPE;

use super::e2ee::E2eeService;
use super::error::{ErrorKind, ServiceError, ServiceResult};
use super::identifiers::local_user_id;
use super::rooms::{now_ms, Requester};
use crate::store::cluster::ClusterMessage;
use crate::store::{
    AccountStore, E2eeStore, EventBus, StoreError, StreamNotice, TokenOwner, UserRecord,
};

/// What a successful login or registration hands the client.
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: Option<String>,
}

pub struct AccountService {
    store: Arc<dyn AccountStore>,
    /// Devices, their keys and the UIA sessions (see `devices.rs`, `uia.rs`).
    e2ee: Arc<dyn E2eeStore>,
    /// Announces device changes, here and to other servers.
    keys: Arc<E2eeService>,
    bus: Arc<dyn EventBus>,
    server_name: OwnedServerName,
    tokens: Mutex<LruCache<String, TokenOwner>>,
    hash_permits: tokio::sync::Semaphore,
    /// When each device's last-seen record was last written.
    seen: Mutex<LruCache<(OwnedUserId, OwnedDeviceId), i64>>,
    /// Serialises this node's read-modify-write edits of account data
    /// (tags, profile fields), which are rare, so two at once lose neither.
    edits: tokio::sync::Mutex<()>,
    /// Each user's ignored users, as every sync pass reads them.
    ignored: Mutex<LruCache<OwnedUserId, IgnoredUsers>>,
}

fn hash_token(token: &str) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

fn random_device_id() -> OwnedDeviceId {
    use rand::Rng;
    let id: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Uniform::from(b'A'..=b'Z'))
        .take(10)
        .map(char::from)
        .collect();
    id.into()
}

/// Argon2 takes ~19 MiB per hash by design; at most this many run at once so a
/// burst of logins cannot grow memory without bound.
const CONCURRENT_HASHES: usize = 2;

/// Tokens whose owners are kept in memory. Bounded, so a flood of valid
/// tokens cannot grow memory without limit; the least recently used goes.
const CACHED_TOKENS: NonZeroUsize = NonZeroUsize::new(100_000).expect("non-zero");

async fn hash_password(password: String) -> ServiceResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(ServiceError::internal)
    })
    .await
    .map_err(ServiceError::internal)?
}

async fn verify_password(password: String, hash: String) -> ServiceResult<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(ServiceError::internal)?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(ServiceError::internal)?
}

impl AccountService {
    pub fn new(
        store: Arc<dyn AccountStore>,
        e2ee: Arc<dyn E2eeStore>,
        keys: Arc<E2eeService>,
        bus: Arc<dyn EventBus>,
        server_name: OwnedServerName,
    ) -> Self {
        Self {
            store,
            e2ee,
            keys,
            bus,
            server_name,
            tokens: Mutex::new(LruCache::new(CACHED_TOKENS)),
            hash_permits: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
            seen: Mutex::new(LruCache::new(CACHED_TOKENS)),
            edits: tokio::sync::Mutex::new(()),
            ignored: Mutex::new(LruCache::new(CACHED_TOKENS)),
        }
    }

    pub async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> ServiceResult<()> {
        Ok(self.store.set_displayname(user_id, name).await?)
    }

    pub async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> ServiceResult<()> {
        Ok(self.store.set_avatar_url(user_id, url).await?)
    }

    pub async fn save_filter(
        &self,
        user_id: &UserId,
        filter: &serde_json::Value,
    ) -> ServiceResult<i64> {
        Ok(self.store.save_filter(user_id, filter).await?)
    }

    pub async fn get_filter(
        &self,
        user_id: &UserId,
        filter_id: i64,
    ) -> ServiceResult<Option<serde_json::Value>> {
        Ok(self.store.get_filter(user_id, filter_id).await?)
    }

    /// Stores account data and wakes the owner's syncs.
    pub async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: serde_json::Value,
    ) -> ServiceResult<()> {
        if !content.is_object() {
            return Err(ServiceError::bad_json("Account data must be a JSON object"));
        }
        if kind.is_empty() || kind.len() > 255 {
            return Err(ServiceError::invalid_param("Invalid account data type"));
        }
        let ignoring = room_id.is_none() && kind == IGNORED_USERS_TYPE;
        if ignoring {
            ignored::check_ignored_list(&content)?;
        }
        let stream = self
            .store
            .set_account_data(user_id, room_id, kind, &content)
            .await?;
        if ignoring {
            self.forget_ignored(user_id);
        }
        let notice = StreamNotice::AccountData {
            stream,
            user_id: user_id.to_owned(),
        };
        if let Err(err) = self.bus.publish(notice).await {
            tracing::warn!(%err, "publishing an account data notice failed");
        }
        Ok(())
    }

    pub async fn get_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> ServiceResult<Option<serde_json::Value>> {
        Ok(self.store.get_account_data(user_id, room_id, kind).await?)
    }

    /// Checks that a user name is well formed and free.
    pub async fn check_available(&self, username: &str) -> ServiceResult<OwnedUserId> {
        let user_id = local_user_id(username, &self.server_name)?;
        if self.store.get_user(&user_id).await?.is_some() {
            return Err(ServiceError::new(
                ErrorKind::UserInUse,
                "User ID already taken",
            ));
        }
        Ok(user_id)
    }

    pub async fn register(
        &self,
        username: Option<&str>,
        password: Option<&str>,
        device_id: Option<&DeviceId>,
        device_name: Option<&str>,
        inhibit_login: bool,
    ) -> ServiceResult<Session> {
        let user_id = match username {
            Some(name) => self.check_available(name).await?,
            None => local_user_id(
                &random_token(6).to_lowercase().replace(['-', '_'], "x"),
                &self.server_name,
            )?,
        };
        if let Some(p) = password {
            if p.len() > 512 {
                return Err(ServiceError::invalid_param("Password is too long"));
            }
        }
        let password_hash = match password {
            Some(p) => {
                let _permit = self
                    .hash_permits
                    .acquire()
                    .await
                    .map_err(ServiceError::internal)?;
                Some(hash_password(p.to_owned()).await?)
            }
            None => None,
        };
        let record = UserRecord {
            user_id: user_id.clone(),
            password_hash,
            displayname: Some(user_id.localpart().to_owned()),
            avatar_url: None,
            created_ts: now_ms(),
            deactivated: false,
        };
        self.store.create_user(&record).await.map_err(|e| match e {
            StoreError::Conflict => {
                ServiceError::new(ErrorKind::UserInUse, "User ID already taken")
            }
            other => other.into(),
        })?;
        if inhibit_login {
            return Ok(Session {
                user_id,
                device_id: device_id.map_or_else(|| "".into(), ToOwned::to_owned),
                access_token: None,
            });
        }
        self.open_session(&user_id, device_id, device_name).await
    }

    async fn open_session(
        &self,
        user_id: &UserId,
        device_id: Option<&DeviceId>,
        device_name: Option<&str>,
    ) -> ServiceResult<Session> {
        let device_id = match device_id {
            Some(d) if !d.as_str().is_empty() && d.as_str().len() <= 255 => d.to_owned(),
            Some(_) => return Err(ServiceError::invalid_param("Invalid device_id")),
            None => random_device_id(),
        };
        let token = random_token(32);
        let hash = hash_token(&token);
        self.store
            .create_device_with_token(user_id, &device_id, device_name, &hash)
            .await?;
        // Re-login with the same device id revoked its old token: forget cached ones.
        self.forget_device_tokens(user_id, &device_id);
        self.share_forgotten(Vec::new(), Some((user_id.to_owned(), device_id.clone())));
        Ok(Session {
            user_id: user_id.to_owned(),
            device_id,
            access_token: Some(token),
        })
    }

    /// Verifies a password for `user` (a localpart or full user id).
    pub async fn check_password(&self, user: &str, password: &str) -> ServiceResult<OwnedUserId> {
        let denied = || ServiceError::forbidden("Invalid username or password");
        let user_id = local_user_id(user, &self.server_name).map_err(|_| denied())?;
        let record = self.store.get_user(&user_id).await?.ok_or_else(denied)?;
        if record.deactivated {
            return Err(ServiceError::new(
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        let hash = record.password_hash.ok_or_else(denied)?;
        if password.len() > 512 {
            return Err(denied());
        }
        let _permit = self
            .hash_permits
            .acquire()
            .await
            .map_err(ServiceError::internal)?;
        if !verify_password(password.to_owned(), hash).await? {
            return Err(denied());
        }
        Ok(user_id)
    }

    pub async fn login(
        &self,
        user: &str,
        password: &str,
        device_id: Option<&DeviceId>,
        device_name: Option<&str>,
    ) -> ServiceResult<Session> {
        let user_id = self.check_password(user, password).await?;
        self.open_session(&user_id, device_id, device_name).await
    }

    /// The user and device behind an access token.
    pub async fn authenticate(&self, token: &str) -> ServiceResult<Requester> {
        let hash = hash_token(token);
        let cached = self.tokens.lock().get(&hash).cloned();
        let owner = match cached {
            Some(owner) => owner,
            None => {
                let owner = self.store.find_token(&hash).await?.ok_or_else(|| {
                    ServiceError::new(ErrorKind::UnknownToken, "Unknown access token")
                })?;
                self.tokens.lock().put(hash, owner.clone());
                owner
            }
        };
        Ok(Requester {
            user_id: owner.user_id,
            device_id: owner.device_id,
        })
    }

    /// Ends the session of `who`'s device: the device goes, with its keys.
    pub async fn logout(&self, who: &Requester) -> ServiceResult<()> {
        self.delete_devices(&who.user_id, std::slice::from_ref(&who.device_id))
            .await
    }

    /// Ends every session of the user, except on `keep_device` if given:
    /// their devices go, with their keys.
    pub async fn logout_all(
        &self,
        user_id: &UserId,
        keep_device: Option<&DeviceId>,
    ) -> ServiceResult<()> {
        let gone: Vec<OwnedDeviceId> = self
            .e2ee
            .devices(user_id)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .filter(|d| Some(d.as_ref()) != keep_device)
            .collect();
        self.delete_devices(user_id, &gone).await?;
        // A token whose device row is missing (none are made so) goes too.
        let hashes = self.store.delete_all_tokens(user_id, keep_device).await?;
        self.forget_tokens(&hashes);
        self.share_forgotten(hashes, None);
        Ok(())
    }

    /// Drops revoked tokens from this node's cache.
    pub fn forget_tokens(&self, hashes: &[String]) {
        let mut cache = self.tokens.lock();
        for hash in hashes {
            cache.pop(hash);
        }
    }

    /// Drops every cached token of one device.
    pub fn forget_device_tokens(&self, user_id: &UserId, device_id: &DeviceId) {
        let mut cache = self.tokens.lock();
        let revoked: Vec<String> = cache
            .iter()
            .filter(|(_, owner)| owner.user_id == user_id && owner.device_id == device_id)
            .map(|(hash, _)| hash.clone())
            .collect();
        for hash in revoked {
            cache.pop(&hash);
        }
    }

    /// Tells the other nodes of a cluster to drop revoked tokens too: a
    /// logout on one node must hold on all of them.
    fn share_forgotten(&self, hashes: Vec<String>, device: Option<(OwnedUserId, OwnedDeviceId)>) {
        self.bus.share(&|| ClusterMessage::ForgetTokens {
            hashes: hashes.clone(),
            device: device.clone(),
        });
    }

    pub async fn change_password(
        &self,
        who: &Requester,
        new_password: &str,
        logout_devices: bool,
    ) -> ServiceResult<()> {
        if new_password.is_empty() || new_password.len() > 512 {
            return Err(ServiceError::invalid_param(
                "Password must be 1 to 512 bytes",
            ));
        }
        let hash = {
            let _permit = self
                .hash_permits
                .acquire()
                .await
                .map_err(ServiceError::internal)?;
            hash_password(new_password.to_owned()).await?
        };
        self.store.set_password_hash(&who.user_id, &hash).await?;
        if logout_devices {
            self.logout_all(&who.user_id, Some(&who.device_id)).await?;
        }
        Ok(())
    }

    pub async fn profile(&self, user_id: &UserId) -> ServiceResult<UserRecord> {
        self.store
            .get_user(user_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Profile not found"))
    }

    /// A new OpenID token of the user (`POST /openid/request_token`): a
    /// third party learns who they are from it, nothing more.
    pub async fn request_openid_token(&self, user_id: &UserId) -> ServiceResult<String> {
        let token = random_token(32);
        let now = now_ms();
        let expires = now + OPENID_TOKEN_LIFETIME_MS;
        self.store
            .create_openid_token(&hash_token(&token), user_id, expires, now)
            .await?;
        Ok(token)
    }

    /// Whose OpenID token this is (`GET /openid/userinfo`); unknown or
    /// expired tokens are `M_UNKNOWN_TOKEN`.
    pub async fn openid_user(&self, token: &str) -> ServiceResult<OwnedUserId> {
        self.store
            .openid_token_user(&hash_token(token), now_ms())
            .await?
            .ok_or_else(|| {
                ServiceError::new(ErrorKind::UnknownToken, "Unknown or expired OpenID token")
            })
    }
}

/// How long an OpenID token is valid (the `expires_in` clients are told).
pub const OPENID_TOKEN_LIFETIME_MS: i64 = 3_600_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_hashed() {
        let token = random_token(32);
        assert!(token.len() >= 43);
        assert_ne!(hash_token(&token), token);
        assert_eq!(hash_token(&token), hash_token(&token));
    }

    #[tokio::test]
    async fn passwords_verify_only_with_the_right_one() {
        let hash = hash_password("secret".into()).await.unwrap();
        assert!(hash.starts_with("$argon2"));
        assert!(verify_password("secret".into(), hash.clone())
            .await
            .unwrap());
        assert!(!verify_password("wrong".into(), hash).await.unwrap());
    }
}
