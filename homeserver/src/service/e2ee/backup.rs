//! Server-side key backups (`/room_keys/...`): versions of a user's
//! backup, and the encrypted session keys in the current one.

use std::collections::BTreeMap;

use ruma_common::{OwnedRoomId, RoomId, UserId};
use serde::Serialize;
use serde_json::{json, Value};

use super::E2eeService;
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::store::e2ee::{BackupKey, BackupVersion};

/// Session keys one upload may carry.
const MAX_KEYS_PER_UPLOAD: usize = 100_000;

/// A backup version as `GET /room_keys/version` answers it.
#[derive(Debug, Serialize)]
pub struct BackupVersionInfo {
    pub algorithm: String,
    pub auth_data: Value,
    pub count: i64,
    pub etag: String,
    pub version: String,
}

impl From<BackupVersion> for BackupVersionInfo {
    fn from(v: BackupVersion) -> Self {
        Self {
            algorithm: v.algorithm,
            auth_data: v.auth_data,
            count: v.count,
            etag: v.etag.to_string(),
            version: v.version.to_string(),
        }
    }
}

fn no_backup() -> ServiceError {
    ServiceError::not_found("No such backup version")
}

/// A version as the path names it; a name that is no number names none.
fn parse_version(version: &str) -> ServiceResult<i64> {
    version.parse().map_err(|_| no_backup())
}

/// Whether backed-up session data `new` should replace `old`, by the
/// spec's order: verified beats unverified, then the lower first message
/// index, then the lower forwarded count.
fn better(new: &Value, old: &Value) -> bool {
    let verified = |v: &Value| v["is_verified"].as_bool().unwrap_or(false);
    let index = |v: &Value| v["first_message_index"].as_u64().unwrap_or(u64::MAX);
    let forwarded = |v: &Value| v["forwarded_count"].as_u64().unwrap_or(u64::MAX);
    if verified(new) != verified(old) {
        return verified(new);
    }
    if index(new) != index(old) {
        return index(new) < index(old);
    }
    forwarded(new) < forwarded(old)
}

/// Checks one session's backup data: the fields the spec requires.
fn check_key_data(data: &Value) -> ServiceResult<()> {
    let ok = data["first_message_index"].is_u64()
        && data["forwarded_count"].is_u64()
        && data["is_verified"].is_boolean()
        && data["session_data"].is_object();
    if ok {
        Ok(())
    } else {
        Err(ServiceError::bad_json(
            "Key backup data needs first_message_index, forwarded_count, is_verified \
             and session_data",
        ))
    }
}

impl E2eeService {
    pub async fn create_backup(
        &self,
        user_id: &UserId,
        algorithm: &str,
        auth_data: &Value,
    ) -> ServiceResult<String> {
        if algorithm.is_empty() || !auth_data.is_object() {
            return Err(ServiceError::bad_json(
                "algorithm and auth_data are required",
            ));
        }
        let version = self
            .store
            .create_backup(user_id, algorithm, auth_data)
            .await?;
        Ok(version.to_string())
    }

    /// The version named, or the current one.
    pub async fn backup_version(
        &self,
        user_id: &UserId,
        version: Option<&str>,
    ) -> ServiceResult<BackupVersionInfo> {
        let version = version.map(parse_version).transpose()?;
        self.store
            .backup_version(user_id, version)
            .await?
            .map(Into::into)
            .ok_or_else(no_backup)
    }

    pub async fn update_backup(
        &self,
        user_id: &UserId,
        version: &str,
        body: &Value,
    ) -> ServiceResult<()> {
        let current = self.backup_version(user_id, Some(version)).await?;
        if body
            .get("version")
            .is_some_and(|v| v.as_str() != Some(version))
        {
            return Err(ServiceError::invalid_param(
                "version in the body differs from the path",
            ));
        }
        if body.get("algorithm").and_then(Value::as_str) != Some(current.algorithm.as_str()) {
            return Err(ServiceError::invalid_param(
                "algorithm cannot change; create a new version",
            ));
        }
        let auth_data = body
            .get("auth_data")
            .filter(|a| a.is_object())
            .ok_or_else(|| ServiceError::bad_json("auth_data must be an object"))?;
        if !self
            .store
            .update_backup(user_id, parse_version(version)?, auth_data)
            .await?
        {
            return Err(no_backup());
        }
        Ok(())
    }

    pub async fn delete_backup(&self, user_id: &UserId, version: &str) -> ServiceResult<()> {
        if !self
            .store
            .delete_backup(user_id, parse_version(version)?)
            .await?
        {
            return Err(no_backup());
        }
        Ok(())
    }

    /// Keys go only into the current version: a client holding an old one
    /// hears which is current.
    async fn current_backup(&self, user_id: &UserId, version: &str) -> ServiceResult<i64> {
        let current = self.store.backup_version(user_id, None).await?;
        match current {
            Some(c) if c.version.to_string() == version => Ok(c.version),
            Some(c) => Err(ServiceError::new(
                ErrorKind::WrongRoomKeysVersion {
                    current_version: c.version.to_string(),
                },
                "Keys go into the current backup version",
            )),
            None => Err(no_backup()),
        }
    }

    /// Stores session keys (`rooms.{room}.sessions.{session}`), keeping the
    /// better copy of each session; answers the new etag and count.
    pub async fn put_backup_keys(
        &self,
        user_id: &UserId,
        version: &str,
        keys: Vec<BackupKey>,
    ) -> ServiceResult<Value> {
        if keys.len() > MAX_KEYS_PER_UPLOAD {
            return Err(ServiceError::invalid_param("Too many keys in one upload"));
        }
        for key in &keys {
            check_key_data(&key.data)?;
        }
        let version = self.current_backup(user_id, version).await?;
        let (etag, count) = self
            .store
            .put_backup_keys(user_id, version, &keys, &better)
            .await?
            .ok_or_else(no_backup)?;
        Ok(json!({ "etag": etag.to_string(), "count": count }))
    }

    /// The keys of a version, of one room or session if given.
    pub async fn backup_keys(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: Option<&RoomId>,
        session_id: Option<&str>,
    ) -> ServiceResult<Vec<BackupKey>> {
        let version = self.backup_version(user_id, Some(version)).await?.version;
        Ok(self
            .store
            .backup_keys(user_id, parse_version(&version)?, room_id, session_id)
            .await?)
    }

    pub async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: Option<&RoomId>,
        session_id: Option<&str>,
    ) -> ServiceResult<Value> {
        let (etag, count) = self
            .store
            .delete_backup_keys(user_id, parse_version(version)?, room_id, session_id)
            .await?
            .ok_or_else(no_backup)?;
        Ok(json!({ "etag": etag.to_string(), "count": count }))
    }
}

/// Keys by room and session, as `GET /room_keys/keys` answers them.
pub fn by_room(keys: Vec<BackupKey>) -> BTreeMap<OwnedRoomId, Value> {
    let mut rooms: BTreeMap<OwnedRoomId, Value> = BTreeMap::new();
    for key in keys {
        let room = rooms
            .entry(key.room_id)
            .or_insert_with(|| json!({ "sessions": {} }));
        room["sessions"][key.session_id] = key.data;
    }
    rooms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_better_backup_copy_is_verified_then_earlier_then_less_forwarded() {
        let data = |verified: bool, index: u64, forwarded: u64| {
            json!({"is_verified": verified, "first_message_index": index,
                   "forwarded_count": forwarded, "session_data": {}})
        };
        assert!(better(&data(true, 9, 9), &data(false, 0, 0)));
        assert!(!better(&data(false, 0, 0), &data(true, 9, 9)));
        assert!(better(&data(false, 1, 9), &data(false, 2, 0)));
        assert!(better(&data(false, 1, 0), &data(false, 1, 1)));
        assert!(!better(&data(false, 1, 1), &data(false, 1, 1)));
    }
}
