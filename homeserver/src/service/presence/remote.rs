//! Presence across servers (`m.presence` EDUs): what our users' changes
//! look like to other servers, and what other servers say of theirs.
//!
//! A remote user's record is stored like a local one and reaches syncs
//! through the same stream; no timer runs for it: its server says when it
//! goes idle or offline.

use ruma_common::{OwnedUserId, ServerName, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{parse_state, state_name, PresenceService, MAX_STATUS_MSG_BYTES};
use crate::service::rooms::now_ms;
use crate::store::{PresenceRecord, StreamNotice};
use ruma_events::room::member::MembershipState;

/// Most updates one EDU may carry before the rest are dropped.
const MAX_PER_EDU: usize = 100;

/// One user's presence in an `m.presence` EDU's `push` list.
#[derive(Debug, Deserialize, Serialize)]
pub struct RemotePresence {
    pub user_id: OwnedUserId,
    pub presence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_ago: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currently_active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
}

impl PresenceService {
    /// The `m.presence` EDU content that tells other servers of a local
    /// user's presence now; a user who hides it shows as offline.
    pub async fn federation_edu(&self, user_id: &UserId) -> Option<Value> {
        let record = match self.inner.store.get_presence(user_id).await {
            Ok(record) => record?,
            Err(err) => {
                tracing::warn!(%err, "reading a presence to share failed");
                return None;
            }
        };
        let now = now_ms();
        let update = if record.hidden {
            RemotePresence {
                user_id: user_id.to_owned(),
                presence: "offline".to_owned(),
                last_active_ago: None,
                currently_active: None,
                status_msg: None,
            }
        } else {
            let content = super::presence_content(user_id, &record, user_id, now);
            RemotePresence {
                user_id: user_id.to_owned(),
                presence: state_name(record.state).to_owned(),
                last_active_ago: content.last_active_ago,
                currently_active: content.currently_active,
                status_msg: content.status_msg,
            }
        };
        Some(json!({ "push": [update] }))
    }

    /// An `m.presence` EDU from `origin`: each update of one of its users
    /// who is in a room with us is stored and announced; the rest dropped.
    pub async fn receive_remote(&self, origin: &ServerName, content: Value) {
        if !self.enabled() {
            return;
        }
        #[derive(Deserialize)]
        struct Push {
            push: Vec<Value>,
        }
        let Ok(Push { push }) = Push::deserialize(content) else {
            tracing::debug!(%origin, "dropped a malformed presence EDU");
            return;
        };
        for update in push.into_iter().take(MAX_PER_EDU) {
            match RemotePresence::deserialize(update) {
                Ok(update) => self.apply_remote(origin, update).await,
                Err(err) => tracing::debug!(%origin, %err, "dropped a presence update"),
            }
        }
    }

    async fn apply_remote(&self, origin: &ServerName, update: RemotePresence) {
        let user_id = &update.user_id;
        if user_id.server_name() != origin {
            tracing::debug!(%origin, %user_id, "dropped presence of another server's user");
            return;
        }
        let Ok(state) = parse_state(&update.presence) else {
            return;
        };
        if update
            .status_msg
            .as_ref()
            .is_some_and(|m| m.len() > MAX_STATUS_MSG_BYTES)
        {
            return;
        }
        // Only users our users can see: a server cannot fill the store with
        // presence of users nobody here shares a room with.
        match self.rooms.memberships_of_user(user_id).await {
            Ok(memberships)
                if memberships
                    .iter()
                    .any(|m| m.membership == MembershipState::Join) => {}
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(%err, "reading memberships for remote presence failed");
                return;
            }
        }
        let now = now_ms();
        let ago = update.last_active_ago.unwrap_or(0).clamp(0, now);
        let record = PresenceRecord {
            state,
            status_msg: update.status_msg,
            last_active_ts: now - ago,
            hidden: false,
        };
        // Only a change of state or status is news for syncs; a refresh
        // (a server's periodic ping) just moves last active.
        let announce = match self.inner.store.get_presence(user_id).await {
            Ok(Some(known)) => known.state != record.state || known.status_msg != record.status_msg,
            _ => true,
        };
        match self
            .inner
            .store
            .set_presence(user_id, record, announce)
            .await
        {
            Ok(Some(stream)) => {
                let notice = StreamNotice::Presence {
                    stream,
                    user_id: user_id.clone(),
                };
                if let Err(err) = self.inner.bus.publish(notice).await {
                    tracing::warn!(%err, "publishing a presence notice failed");
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "storing remote presence failed"),
        }
    }
}
