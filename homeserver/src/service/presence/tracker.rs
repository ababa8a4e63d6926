//! The presence bookkeeping of this node: who is online or syncing here,
//! their deadlines in one timer heap, and the announcements of changes.
//! `PresenceService` (the parent module) applies the rules through it.

use parking_lot::Mutex;
use ruma_common::{OwnedUserId, UserId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{ACTIVE_GRANULARITY_MS, HIDE_PRESENCE_TYPE};
use crate::config::PresenceConfig;
use crate::service::error::ServiceResult;
use crate::service::rooms::now_ms;
use crate::store::{
    AccountStore, ConnectionLeases, EventBus, PresenceRecord, PresenceState, PresenceStore,
    StreamNotice,
};

/// What this node knows about a user who is online or syncing here.
pub(super) struct Local {
    pub(super) record: PresenceRecord,
    /// Syncs of this user in flight on this node.
    pub(super) syncing: u32,
    pub(super) last_sync_end: i64,
    /// `last_active_ts` as last written to the store.
    pub(super) stored_active: i64,
    /// The deadline of this user's live entry in the timer heap, if any.
    pub(super) scheduled: Option<i64>,
    /// Until when the cluster believes the user connected here (0: never
    /// told; see `connections.rs`).
    pub(super) leased_until: i64,
}

/// Where this node records who syncs on it.
pub struct Leases {
    pub store: Arc<dyn ConnectionLeases>,
    /// This node's name in the leases, unique per process.
    pub node: String,
}

#[derive(Default)]
pub(super) struct Timers {
    pub(super) heap: BinaryHeap<Reverse<(i64, OwnedUserId)>>,
}

pub(super) struct Inner {
    pub(super) config: PresenceConfig,
    pub(super) store: Arc<dyn PresenceStore>,
    pub(super) bus: Arc<dyn EventBus>,
    pub(super) accounts: Arc<dyn AccountStore>,
    /// Leases on connections, shared by the nodes of a cluster; `None` on
    /// a single node, which needs none.
    pub(super) leases: Option<Leases>,
    pub(super) local: Mutex<HashMap<OwnedUserId, Local>>,
    pub(super) timers: Mutex<Timers>,
    pub(super) nudge: Notify,
    /// Serialises announcements, so the store never ends on an older state
    /// than the last one announced.
    pub(super) announcing: tokio::sync::Mutex<()>,
    /// Told of each announced change of a local user, when other servers
    /// are to hear of it (federating).
    pub(super) changes: Option<tokio::sync::mpsc::UnboundedSender<OwnedUserId>>,
}

impl Inner {
    /// Puts the user's next deadline in the heap unless an earlier one is
    /// already there (which will reschedule when it fires).
    pub(super) fn schedule(&self, entry: &mut Local, user_id: &UserId, deadline: i64) {
        if entry.scheduled.is_some_and(|s| s <= deadline) {
            return;
        }
        entry.scheduled = Some(deadline);
        self.timers
            .lock()
            .heap
            .push(Reverse((deadline, user_id.to_owned())));
        self.nudge.notify_one();
    }

    /// Writes the user's current record and announces it.
    pub(super) async fn announce(&self, user_id: &UserId) {
        let _turn = self.announcing.lock().await;
        let record = {
            let mut local = self.local.lock();
            match local.get_mut(user_id) {
                Some(entry) => {
                    entry.stored_active = entry.record.last_active_ts;
                    entry.record.clone()
                }
                None => return,
            }
        };
        match self.store.set_presence(user_id, record, true).await {
            Ok(Some(stream)) => {
                let notice = StreamNotice::Presence {
                    stream,
                    user_id: user_id.to_owned(),
                };
                if let Err(err) = self.bus.publish(notice).await {
                    tracing::warn!(%err, "publishing a presence notice failed");
                }
                if let Some(changes) = &self.changes {
                    let _ = changes.send(user_id.to_owned());
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "storing presence failed"),
        }
    }

    /// Loads the user's bookkeeping if this node holds none: the stored
    /// record, else offline with the hidden flag from account data.
    pub(super) async fn load(&self, user_id: &UserId) -> ServiceResult<()> {
        if self.local.lock().contains_key(user_id) {
            return Ok(());
        }
        let record = match self.store.get_presence(user_id).await? {
            Some(record) => record,
            None => {
                let hidden = self
                    .accounts
                    .get_account_data(user_id, None, HIDE_PRESENCE_TYPE)
                    .await?
                    .is_some_and(|c| c.get("hidden") == Some(&Value::Bool(true)));
                PresenceRecord {
                    state: PresenceState::Offline,
                    status_msg: None,
                    last_active_ts: 0,
                    hidden,
                }
            }
        };
        self.local
            .lock()
            .entry(user_id.to_owned())
            .or_insert(Local {
                stored_active: record.last_active_ts,
                record,
                syncing: 0,
                last_sync_end: 0,
                leased_until: 0,
                scheduled: None,
            });
        Ok(())
    }

    /// Applies `change` to the user's bookkeeping; returns whether others
    /// should hear of it. Schedules the idle timer when the user is online.
    pub(super) async fn update(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut Local, i64) -> bool,
    ) -> ServiceResult<()> {
        self.load(user_id).await?;
        let now = now_ms();
        let (announce, silent) = {
            let mut local = self.local.lock();
            let Some(entry) = local.get_mut(user_id) else {
                return Ok(());
            };
            let announce = change(entry, now);
            if entry.record.state == PresenceState::Online {
                let idle = entry.record.last_active_ts + self.config.idle_after.as_millis() as i64;
                self.schedule(entry, user_id, idle);
            }
            // Online without a sync (set by `PUT /status`): offline once the
            // grace period after the last sync, or this change, runs out.
            if entry.syncing == 0 && entry.record.state != PresenceState::Offline {
                entry.last_sync_end = entry.last_sync_end.max(now);
                let offline = entry.last_sync_end + self.config.offline_after.as_millis() as i64;
                self.schedule(entry, user_id, offline);
            }
            let silent = !announce
                && entry.record.last_active_ts - entry.stored_active >= ACTIVE_GRANULARITY_MS;
            if silent {
                entry.stored_active = entry.record.last_active_ts;
            }
            (announce, silent.then(|| entry.record.clone()))
        };
        if announce {
            self.announce(user_id).await;
        } else if let Some(record) = silent {
            self.store.set_presence(user_id, record, false).await?;
        }
        Ok(())
    }

    /// Fires every deadline that is due.
    pub(super) async fn fire_due(&self) {
        let now = now_ms();
        let mut due = Vec::new();
        {
            let mut timers = self.timers.lock();
            while let Some(Reverse((at, _))) = timers.heap.peek() {
                if *at > now {
                    break;
                }
                let Some(Reverse(entry)) = timers.heap.pop() else {
                    break;
                };
                due.push(entry);
            }
        }
        let idle_after = self.config.idle_after.as_millis() as i64;
        let offline_after = self.config.offline_after.as_millis() as i64;
        let mut changed = Vec::new();
        let mut fired = Vec::new();
        {
            let mut local = self.local.lock();
            for (at, user_id) in due {
                let Some(entry) = local.get_mut(&user_id) else {
                    continue;
                };
                if entry.scheduled != Some(at) {
                    continue; // superseded by an earlier deadline
                }
                entry.scheduled = None;
                let record = &mut entry.record;
                let mut moved = false;
                if record.state == PresenceState::Online
                    && now - record.last_active_ts >= idle_after
                {
                    record.state = PresenceState::Unavailable;
                    moved = true;
                }
                if entry.syncing == 0
                    && record.state != PresenceState::Offline
                    && now - entry.last_sync_end >= offline_after
                {
                    record.state = PresenceState::Offline;
                    moved = true;
                }
                let mut next = None;
                if entry.record.state == PresenceState::Online {
                    next = Some(entry.record.last_active_ts + idle_after);
                }
                if entry.syncing == 0 && entry.record.state != PresenceState::Offline {
                    let offline = entry.last_sync_end + offline_after;
                    next = Some(next.map_or(offline, |n: i64| n.min(offline)));
                }
                if let Some(next) = next {
                    self.schedule(entry, &user_id, next);
                }
                if moved {
                    changed.push(user_id.clone());
                }
                fired.push(user_id);
            }
        }
        for user_id in changed {
            if !self.moved_elsewhere(&user_id).await {
                self.announce(&user_id).await;
            }
        }
        for user_id in fired {
            self.forget_if_idle(&user_id);
        }
    }

    /// Drops the bookkeeping of a user who is offline and not syncing: the
    /// store keeps their record (and last seen).
    pub(super) fn forget_if_idle(&self, user_id: &UserId) {
        let mut local = self.local.lock();
        if local.get(user_id).is_some_and(|e| {
            e.syncing == 0 && e.record.state == PresenceState::Offline && e.scheduled.is_none()
        }) {
            local.remove(user_id);
        }
    }

    pub(super) async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self.timers.lock().heap.peek().map(|Reverse((at, _))| *at);
            let wait = match next {
                Some(at) => Duration::from_millis((at - now_ms()).max(0) as u64),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.nudge.notified() => continue,
                _ = tokio::time::sleep(wait) => self.fire_due().await,
            }
        }
    }
}
