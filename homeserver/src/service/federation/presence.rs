//! Our users' presence to the servers they share rooms with: each change
//! the presence service announces becomes an `m.presence` EDU for those
//! servers, on the node that announced it.

use std::sync::Arc;

use ruma_common::{OwnedServerName, OwnedUserId};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::sender::Outbox;
use crate::service::presence::PresenceService;
use crate::store::FederationStore;

/// What the sharing task reads.
pub struct PresenceSharing {
    pub presence: Arc<PresenceService>,
    pub store: Arc<dyn FederationStore>,
    pub outbox: Outbox,
    pub server_name: OwnedServerName,
}

/// Sends each announced change until shutdown.
pub fn spawn(
    sharing: PresenceSharing,
    mut changes: UnboundedReceiver<OwnedUserId>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let user_id = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = changes.recv() => match next {
                    Some(user_id) => user_id,
                    None => return,
                },
            };
            sharing.share(&user_id).await;
        }
    });
}

impl PresenceSharing {
    async fn share(&self, user_id: &ruma_common::UserId) {
        let servers = match self
            .store
            .servers_sharing_with(user_id, &self.server_name)
            .await
        {
            Ok(servers) if !servers.is_empty() => servers,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(%err, "finding where presence goes failed");
                return;
            }
        };
        let Some(content) = self.presence.federation_edu(user_id).await else {
            return;
        };
        let edu = serde_json::json!({ "edu_type": "m.presence", "content": content });
        match serde_json::value::to_raw_value(&edu) {
            Ok(raw) => self.outbox.send_edu(&raw, servers),
            Err(err) => tracing::warn!(%err, "a presence EDU could not be serialized"),
        }
    }
}
