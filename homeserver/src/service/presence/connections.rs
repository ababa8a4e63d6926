//! Which user is connected to which node, for a cluster: leases in the shared
//! ephemeral engine (Redis), so a node deciding whether to push to a user
//! knows that they are syncing on another node.
//!
//! A user's lease is written when a sync starts on this node and the lease is
//! not fresh, and renewed in one batch for everyone syncing here (or within
//! the offline grace period) every third of its length. A node that dies
//! stops renewing, and its users' leases run out by themselves.
//!
//! The leases also keep presence right across nodes. A user who moved to
//! another node is that node's to time out: this node's record of them is
//! stale, and it drops it rather than announce it. A user whose node died has
//! nobody to time them out: every node sweeps the leases that ran out (Redis
//! hands each to one node) and sets those users offline, keeping last seen.

use std::sync::Arc;
use std::time::Duration;

use ruma_common::{OwnedUserId, UserId};
use tokio_util::sync::CancellationToken;

use super::tracker::{Inner, Leases};
use crate::service::rooms::now_ms;
use crate::store::PresenceState;

/// How long a lease lasts without renewal.
pub(super) const LEASE: Duration = Duration::from_secs(20);
/// How often each node looks for leases that ran out.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Lapsed leases taken at a time.
const SWEEP_BATCH: usize = 500;

impl Inner {
    /// Length of a lease: past its renewal, a user counts as connected for
    /// the offline grace period, as on a single node.
    fn lease_ms(&self) -> i64 {
        (LEASE + self.config.offline_after).as_millis() as i64
    }

    /// A sync of `user_id` began here: make sure the cluster knows.
    pub(super) async fn lease(&self, user_id: &UserId) {
        let Some(leases) = &self.leases else { return };
        let now = now_ms();
        let fresh = {
            let mut local = self.local.lock();
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
        if let Err(err) = leases
            .store
            .set_connected(&users, &leases.node, self.lease_ms())
            .await
        {
            tracing::warn!(%err, "recording a connection failed");
        }
    }

    /// Renews the leases of everyone connected here, until shutdown.
    pub(super) async fn renew_leases(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(leases) = &self.leases else {
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
            let users: Vec<OwnedUserId> = {
                let mut local = self.local.lock();
                local
                    .iter_mut()
                    .filter(|(_, e)| e.syncing > 0 || now - e.last_sync_end < grace)
                    .map(|(user, e)| {
                        e.leased_until = now + self.lease_ms();
                        user.clone()
                    })
                    .collect()
            };
            if let Err(err) = leases
                .store
                .set_connected(&users, &leases.node, self.lease_ms())
                .await
            {
                tracing::warn!(%err, "renewing connection leases failed");
            }
        }
    }

    /// Whether `user_id` now syncs on another node, which keeps their
    /// presence; this node's record of them is then dropped.
    pub(super) async fn moved_elsewhere(&self, user_id: &UserId) -> bool {
        let Some(leases) = &self.leases else {
            return false;
        };
        let holder = match leases.store.connected_node(user_id).await {
            Ok(Some(holder)) if holder != leases.node => holder,
            _ => return false,
        };
        let mut local = self.local.lock();
        if local.get(user_id).is_some_and(|e| e.syncing == 0) {
            tracing::debug!(user = %user_id, %holder, "presence moved to another node");
            local.remove(user_id);
            return true;
        }
        false
    }

    /// Sets offline the users whose lease ran out with no node left to do
    /// it, until shutdown.
    pub(super) async fn sweep_lapsed(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(leases) = &self.leases else {
            return;
        };
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            loop {
                let lapsed = match leases
                    .store
                    .take_lapsed_connections(now_ms(), SWEEP_BATCH)
                    .await
                {
                    Ok(lapsed) => lapsed,
                    Err(err) => {
                        tracing::warn!(%err, "reading lapsed connections failed");
                        break;
                    }
                };
                for user_id in &lapsed {
                    self.lapsed(leases, user_id).await;
                }
                if lapsed.len() < SWEEP_BATCH {
                    break;
                }
            }
        }
    }

    async fn lapsed(&self, leases: &Leases, user_id: &UserId) {
        // Known here: this node's own timers see to them.
        if self.local.lock().contains_key(user_id) {
            return;
        }
        // Back on some node meanwhile.
        if !matches!(leases.store.connected_node(user_id).await, Ok(None)) {
            return;
        }
        let offline = self
            .update(user_id, |entry, _| {
                let moved = entry.record.state != PresenceState::Offline;
                entry.record.state = PresenceState::Offline;
                moved
            })
            .await;
        if let Err(err) = offline {
            tracing::warn!(error = %err.message, "setting a lapsed user offline failed");
        }
        self.forget_if_idle(user_id);
    }
}
