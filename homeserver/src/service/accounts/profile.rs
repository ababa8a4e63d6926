//! Profile fields beyond display name and avatar, and deactivation.

use ruma_common::UserId;
use serde_json::{Map, Value};

use super::AccountService;
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::service::rooms::now_ms;
use crate::store::Report;

/// Longest profile field name, in bytes.
const MAX_FIELD_NAME_BYTES: usize = 255;
/// Largest profile (every field, as JSON), in bytes.
const MAX_PROFILE_BYTES: usize = 64 * 1024;

impl AccountService {
    /// The fields beyond display name and avatar, by name.
    pub async fn profile_fields(&self, user_id: &UserId) -> ServiceResult<Map<String, Value>> {
        Ok(self
            .store
            .profile_fields(user_id)
            .await?
            .into_iter()
            .collect())
    }

    /// The profile: display name, avatar and the other fields, by name.
    pub async fn profile_object(&self, user_id: &UserId) -> ServiceResult<Map<String, Value>> {
        let user = self.profile(user_id).await?;
        let mut profile = self.profile_fields(user_id).await?;
        if let Some(name) = user.displayname {
            profile.insert("displayname".into(), name.into());
        }
        if let Some(url) = user.avatar_url {
            profile.insert("avatar_url".into(), url.into());
        }
        Ok(profile)
    }

    /// Sets (or with `None` removes) a field other than display name and
    /// avatar, which have their own setters.
    pub async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Option<Value>,
    ) -> ServiceResult<()> {
        if field.is_empty() || field.len() > MAX_FIELD_NAME_BYTES {
            return Err(ServiceError::new(
                ErrorKind::KeyTooLarge,
                "A profile field name is 1 to 255 bytes",
            ));
        }
        let _edit = self.edits.lock().await;
        if let Some(value) = &value {
            let mut profile = self.profile_object(user_id).await?;
            profile.insert(field.to_owned(), value.clone());
            if Value::Object(profile).to_string().len() > MAX_PROFILE_BYTES {
                return Err(ServiceError::new(
                    ErrorKind::ProfileTooLarge,
                    "The profile would be over 64 KiB",
                ));
            }
        }
        Ok(self
            .store
            .set_profile_field(user_id, field, value.as_ref())
            .await?)
    }

    /// Deactivates the account: its devices (with keys and tokens) go, its
    /// password and profile are cleared, and the name stays taken. Leaving
    /// rooms and removing pushers are the room and pusher services'.
    pub async fn deactivate(&self, user_id: &UserId) -> ServiceResult<()> {
        let devices: Vec<_> = self
            .e2ee
            .devices(user_id)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        self.delete_devices(user_id, &devices).await?;
        let hashes = self.store.deactivate_user(user_id, now_ms()).await?;
        self.forget_tokens(&hashes);
        self.share_forgotten(hashes, None);
        Ok(())
    }

    /// Keeps a report for the administrators.
    pub async fn report(&self, report: Report) -> ServiceResult<()> {
        if report.reason.as_ref().is_some_and(|r| r.len() > 4096) {
            return Err(ServiceError::invalid_param(
                "A reason is at most 4096 bytes",
            ));
        }
        Ok(self.store.add_report(&report).await?)
    }

    /// Reports with ids above `after`, oldest first, for administrators.
    pub async fn reports(&self, after: i64, limit: usize) -> ServiceResult<Vec<Report>> {
        Ok(self.store.reports(after, limit).await?)
    }
}

/// Most users one directory search returns.
const MAX_DIRECTORY_RESULTS: usize = 50;

impl AccountService {
    /// Users `searcher` may find whose id or name contains `term`: those
    /// sharing a room with them and those in public rooms. `true` with the
    /// list when more matched than `limit`.
    pub async fn search_users(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> ServiceResult<(Vec<crate::store::DirectoryUser>, bool)> {
        let limit = limit.clamp(1, MAX_DIRECTORY_RESULTS);
        let term = term.trim();
        if term.is_empty() {
            return Ok((Vec::new(), false));
        }
        let mut found = self.store.search_users(searcher, term, limit + 1).await?;
        let limited = found.len() > limit;
        found.truncate(limit);
        Ok((found, limited))
    }
}
