//! Which user is connected to which node, for a cluster: leases in the shared
//! ephemeral engine (Redis), so a node deciding whether to push to a user
//! knows that they are syncing on another node.
//!
//! A user's lease is written when a sync starts on this node and the lease is
//! not fresh, and renewed in one batch for everyone syncing here (or within
//! the offline grace period) every third of its length. A node that dies
//! stops renewing, and its users' leases run out by themselves.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::tracker::Inner;
use crate::service::rooms::now_ms;

/// How long a lease lasts without renewal.
pub(super) const LEASE: Duration = Duration::from_secs(20);

impl Inner {
    /// Length of a lease: past its renewal, a user counts as connected for
    /// the offline grace period, as on a single node.
    fn lease_ms(&self) -> i64 {
        (LEASE + self.config.offline_after).as_millis() as i64
    }

    /// A sync of `user_id` began here: make sure the cluster knows.
    pub(super) async fn lease(&self, user_id: &str) {
        let Some(node) = &self.node else { return };
        let now = now_ms();
        let fresh = {
            let mut local = self.local.lock().expect("presence lock");
            match local.get_mut(user_id) {
                Some(entry) if entry.leased_until > now + self.lease_ms() / 2 => true,
                Some(entry) => {
                    entry.leased_until = now + self.lease_ms();
                    false
                }
                None => false,
            }
        };
        if fresh {
            return;
        }
        let users = [user_id.to_owned()];
        if let Err(err) = self
            .ephemeral
            .set_connected(&users, node, self.lease_ms())
            .await
        {
            tracing::warn!(%err, "recording a connection failed");
        }
    }

    /// Renews the leases of everyone connected here, until shutdown.
    pub(super) async fn renew_leases(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(node) = self.node.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(LEASE / 3);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = now_ms();
            let grace = self.config.offline_after.as_millis() as i64;
            let users: Vec<String> = {
                let mut local = self.local.lock().expect("presence lock");
                local
                    .iter_mut()
                    .filter(|(_, e)| e.syncing > 0 || now - e.last_sync_end < grace)
                    .map(|(user, e)| {
                        e.leased_until = now + self.lease_ms();
                        user.clone()
                    })
                    .collect()
            };
            if let Err(err) = self
                .ephemeral
                .set_connected(&users, &node, self.lease_ms())
                .await
            {
                tracing::warn!(%err, "renewing connection leases failed");
            }
        }
    }
}
