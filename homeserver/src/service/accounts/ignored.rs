//! Ignored users (`m.ignored_user_list`): their messages and invites are
//! kept from the user who ignores them.
//!
//! Every sync pass asks for the list, so it is cached per user; a change
//! on this node drops the entry, and a change on another node does too
//! through the account-data notice (`service/cluster.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use ruma_common::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::AccountService;
use crate::service::error::{ServiceError, ServiceResult};

/// The global account data type that lists ignored users.
pub const IGNORED_USERS_TYPE: &str = "m.ignored_user_list";

/// The users one user ignores.
pub type IgnoredUsers = Arc<HashSet<OwnedUserId>>;

#[derive(Deserialize)]
struct IgnoredUserList {
    ignored_users: std::collections::BTreeMap<OwnedUserId, Map<String, Value>>,
}

/// Checks the content a client stores, so the list is always readable.
pub(super) fn check_ignored_list(content: &Value) -> ServiceResult<()> {
    IgnoredUserList::deserialize(content)
        .map(|_| ())
        .map_err(|e| {
            ServiceError::bad_json(format!(
                "m.ignored_user_list must map user ids to objects under ignored_users: {e}"
            ))
        })
}

impl AccountService {
    pub async fn ignored_users(&self, user_id: &UserId) -> ServiceResult<IgnoredUsers> {
        if let Some(list) = self.ignored.lock().get(user_id) {
            return Ok(list.clone());
        }
        let content = self
            .store
            .get_account_data(user_id, None, IGNORED_USERS_TYPE)
            .await?;
        // Stored content was checked when it was set.
        let list: HashSet<OwnedUserId> = content
            .and_then(|c| IgnoredUserList::deserialize(&c).ok())
            .map(|l| l.ignored_users.into_keys().collect())
            .unwrap_or_default();
        let list = Arc::new(list);
        self.ignored.lock().put(user_id.to_owned(), list.clone());
        Ok(list)
    }

    /// Drops the cached list after a change.
    pub fn forget_ignored(&self, user_id: &UserId) {
        self.ignored.lock().pop(user_id);
    }
}
