//! Presence (spec: "Presence"): online, unavailable, offline, last seen.
//!
//! Presence is Synapse's best-known CPU and memory sink, so this keeps it
//! cheap by construction:
//! - Only *state* changes (online, unavailable, offline, status message,
//!   hiding) are announced and fan out to co-members. Activity just moves
//!   `last_active_ts`, written silently and at most once a minute per user;
//!   `last_active_ago` and `currently_active` are computed when read.
//! - Timers are one heap of deadlines with at most one live entry per user
//!   and one task sleeping until the earliest; nobody is polled.
//! - Bookkeeping is held only for users who are online or syncing on this
//!   node; an offline user costs one record in the `Ephemeral` store.
//! - A sync reads only the changes since its token and keeps those of users
//!   who share a room with it.
//!
//! Rules (as Synapse's, with our periods configurable): starting a sync
//! brings an offline user online (unless it says `set_presence=offline`); an
//! online user with no activity for `idle_after` becomes unavailable, and any
//! activity (sending, typing, receipts) brings them back; a user whose last
//! sync ended `offline_after` ago becomes offline. A user may hide their
//! presence with the account data `tern.presence` `{"hidden": true}`: others
//! then see them as offline, without a last-seen time, as WhatsApp lets
//! people hide "last seen".

use parking_lot::Mutex;
use ruma_common::{OwnedRoomId, OwnedUserId, UserId};
use ruma_events::room::member::MembershipState;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod connections;
mod remote;
mod tracker;

use super::accounts::random_token;
use super::error::{ServiceError, ServiceResult};
use super::notifier::Notifier;
use super::rooms::now_ms;
use crate::config::PresenceConfig;
use crate::store::{
    AccountStore, ConnectionLeases, EventBus, PresenceRecord, PresenceState, PresenceStore,
    RoomStore, StreamPos,
};
pub use remote::RemotePresence;
use tracker::{Inner, Leases, Timers};

/// The account data type with which a user hides their presence.
pub const HIDE_PRESENCE_TYPE: &str = "tern.presence";
/// A user active this recently is `currently_active`; also the most often a
/// user's `last_active_ts` is written without a state change.
const ACTIVE_GRANULARITY_MS: i64 = 60_000;
/// Longest status message accepted.
const MAX_STATUS_MSG_BYTES: usize = 1024;
/// Past this many changes since a token, a sync gets everyone's presence.
const MAX_CHANGES_PER_SYNC: usize = 5_000;

pub struct PresenceService {
    inner: Arc<Inner>,
    rooms: Arc<dyn RoomStore>,
    notifier: Arc<Notifier>,
}

/// Held for the length of one sync request; its drop marks the end of the
/// connection (also when the client goes away mid-wait).
pub struct SyncGuard {
    inner: Option<(Arc<Inner>, OwnedUserId)>,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        let Some((inner, user_id)) = self.inner.take() else {
            return;
        };
        let now = now_ms();
        let mut local = inner.local.lock();
        if let Some(entry) = local.get_mut(&user_id) {
            entry.syncing = entry.syncing.saturating_sub(1);
            entry.last_sync_end = now;
            if entry.syncing == 0 {
                let deadline = now + inner.config.offline_after.as_millis() as i64;
                inner.schedule(entry, &user_id, deadline);
            }
        }
    }
}

/// Parses a presence state as the spec spells it.
pub fn parse_state(text: &str) -> ServiceResult<PresenceState> {
    match text {
        "online" => Ok(PresenceState::Online),
        "unavailable" => Ok(PresenceState::Unavailable),
        "offline" => Ok(PresenceState::Offline),
        _ => Err(ServiceError::invalid_param(format!(
            "Unknown presence state {text:?}"
        ))),
    }
}

fn state_name(state: PresenceState) -> &'static str {
    match state {
        PresenceState::Online => "online",
        PresenceState::Unavailable => "unavailable",
        PresenceState::Offline => "offline",
    }
}

/// The `content` of an `m.presence` event, and the answer of `GET
/// .../status`. Offline without a last-seen time when hidden or unknown.
#[derive(Debug, PartialEq, Serialize)]
pub struct PresenceContent {
    pub presence: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_ago: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currently_active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
}

const OFFLINE: PresenceContent = PresenceContent {
    presence: "offline",
    last_active_ago: None,
    currently_active: None,
    status_msg: None,
};

/// An `m.presence` event of a sync.
#[derive(Debug, Serialize)]
pub struct PresenceEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub content: PresenceContent,
    pub sender: OwnedUserId,
}

/// The `content` of an `m.presence` event (and of `GET .../status`) as
/// `viewer` may see it.
pub fn presence_content(
    user_id: &UserId,
    record: &PresenceRecord,
    viewer: &UserId,
    now: i64,
) -> PresenceContent {
    if record.hidden && viewer != user_id {
        return OFFLINE;
    }
    PresenceContent {
        presence: state_name(record.state),
        last_active_ago: Some((now - record.last_active_ts).max(0)),
        currently_active: Some(
            record.state == PresenceState::Online
                && now - record.last_active_ts < ACTIVE_GRANULARITY_MS,
        ),
        status_msg: record.status_msg.clone(),
    }
}

fn presence_event(
    id: OwnedUserId,
    record: &PresenceRecord,
    viewer: &UserId,
    now: i64,
) -> PresenceEvent {
    PresenceEvent {
        kind: "m.presence",
        content: presence_content(&id, record, viewer, now),
        sender: id,
    }
}

/// What a [`PresenceService`] reads and writes.
pub struct PresenceSources {
    pub store: Arc<dyn PresenceStore>,
    /// Set on a node of a cluster: which node each user syncs on.
    pub leases: Option<Arc<dyn ConnectionLeases>>,
    pub bus: Arc<dyn EventBus>,
    pub accounts: Arc<dyn AccountStore>,
    pub rooms: Arc<dyn RoomStore>,
    pub notifier: Arc<Notifier>,
    /// Where announced changes of local users go to be sent to other
    /// servers (`None` when not federating).
    pub changes: Option<tokio::sync::mpsc::UnboundedSender<OwnedUserId>>,
}

impl PresenceService {
    pub fn new(
        config: PresenceConfig,
        sources: PresenceSources,
        shutdown: CancellationToken,
    ) -> Self {
        let PresenceSources {
            store,
            leases,
            bus,
            accounts,
            rooms,
            notifier,
            changes,
        } = sources;
        // Unique per process: leases name the node a user syncs on.
        let leases = leases.map(|store| Leases {
            store,
            node: format!("{}-{}", std::process::id(), random_token(6)),
        });
        let inner = Arc::new(Inner {
            config,
            store,
            bus,
            accounts,
            leases,
            local: Mutex::new(HashMap::new()),
            timers: Mutex::new(Timers::default()),
            nudge: Notify::new(),
            announcing: tokio::sync::Mutex::new(()),
            changes,
        });
        if inner.config.enabled {
            tokio::spawn(inner.clone().run_timers(shutdown.clone()));
            tokio::spawn(inner.clone().renew_leases(shutdown.clone()));
            tokio::spawn(inner.clone().sweep_lapsed(shutdown));
        }
        Self {
            inner,
            rooms,
            notifier,
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.config.enabled
    }

    /// A sync request begins. `set_presence` is the request's parameter
    /// (absent means online). Hold the guard until the request ends.
    pub async fn sync_started(
        &self,
        user_id: &UserId,
        set_presence: Option<PresenceState>,
    ) -> ServiceResult<SyncGuard> {
        if !self.enabled() {
            return Ok(SyncGuard { inner: None });
        }
        self.inner
            .update(user_id, |entry, now| {
                entry.syncing += 1;
                let record = &mut entry.record;
                match set_presence.unwrap_or(PresenceState::Online) {
                    PresenceState::Online if record.state == PresenceState::Offline => {
                        record.state = PresenceState::Online;
                        record.last_active_ts = now;
                        true
                    }
                    PresenceState::Unavailable if record.state != PresenceState::Unavailable => {
                        record.state = PresenceState::Unavailable;
                        true
                    }
                    _ => false,
                }
            })
            .await?;
        self.inner.lease(user_id).await;
        Ok(SyncGuard {
            inner: Some((self.inner.clone(), user_id.to_owned())),
        })
    }

    /// The user did something (sent, typed, read): they are active now, and
    /// back online if they had gone idle.
    /// Never fails the request it rides on: a lost bump only ages last seen.
    pub async fn activity(&self, user_id: &UserId) {
        if !self.enabled() {
            return;
        }
        let bumped = self
            .inner
            .update(user_id, |entry, now| {
                entry.record.last_active_ts = now;
                if entry.record.state == PresenceState::Unavailable {
                    entry.record.state = PresenceState::Online;
                    return true;
                }
                false
            })
            .await;
        if let Err(err) = bumped {
            tracing::warn!(error = %err.message, "recording presence activity failed");
        }
    }

    /// `PUT /presence/{userId}/status`.
    pub async fn set_status(
        &self,
        user_id: &UserId,
        state: PresenceState,
        status_msg: Option<String>,
    ) -> ServiceResult<()> {
        if status_msg
            .as_ref()
            .is_some_and(|m| m.len() > MAX_STATUS_MSG_BYTES)
        {
            return Err(ServiceError::invalid_param("status_msg is too long"));
        }
        if !self.enabled() {
            return Ok(());
        }
        self.inner
            .update(user_id, |entry, now| {
                let record = &mut entry.record;
                let changed = record.state != state || record.status_msg != status_msg;
                record.state = state;
                record.status_msg = status_msg;
                if state == PresenceState::Online {
                    record.last_active_ts = now;
                }
                changed
            })
            .await
    }

    /// The user changed their `tern.presence` account data.
    pub async fn set_hidden(&self, user_id: &UserId, hidden: bool) -> ServiceResult<()> {
        if !self.enabled() {
            return Ok(());
        }
        self.inner
            .update(user_id, |entry, _| {
                let changed = entry.record.hidden != hidden;
                entry.record.hidden = hidden;
                changed
            })
            .await?;
        self.inner.forget_if_idle(user_id);
        Ok(())
    }

    /// `GET /presence/{userId}/status`: for the user and those who share a
    /// room with them.
    pub async fn get_status(
        &self,
        viewer: &UserId,
        user_id: &UserId,
    ) -> ServiceResult<PresenceContent> {
        if viewer != user_id {
            let rooms: Vec<OwnedRoomId> = self
                .rooms
                .memberships_of_user(viewer)
                .await?
                .into_iter()
                .filter(|m| m.membership == MembershipState::Join)
                .map(|m| m.room_id)
                .collect();
            if !self.shares_room(user_id, &rooms).await {
                return Err(ServiceError::forbidden(
                    "You do not share a room with this user",
                ));
            }
        }
        let now = now_ms();
        Ok(match self.inner.store.get_presence(user_id).await? {
            Some(record) if self.enabled() => presence_content(user_id, &record, viewer, now),
            _ => OFFLINE,
        })
    }

    /// Whether the user has a sync open, or had one within the offline
    /// grace period (between two long-polls), and has not said they are
    /// offline: on this node, or in a cluster on any node. Always false with
    /// presence off.
    pub async fn is_connected(&self, user_id: &UserId) -> bool {
        let grace = self.inner.config.offline_after.as_millis() as i64;
        let here = {
            let local = self.inner.local.lock();
            local.get(user_id).is_some_and(|e| {
                // Offline said explicitly (closing the app, a background
                // sync) is disconnected at once, whatever the timers say.
                e.record.state != PresenceState::Offline
                    && (e.syncing > 0 || now_ms() - e.last_sync_end < grace)
            })
        };
        let Some(leases) = self
            .inner
            .leases
            .as_ref()
            .filter(|_| !here && self.enabled())
        else {
            return here;
        };
        match leases.store.connected_node(user_id).await {
            Ok(Some(_)) => self.not_offline(user_id).await,
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(%err, "reading a connection lease failed");
                false
            }
        }
    }

    /// Whether the user's stored presence is anything but offline (their
    /// connection lives on another node, which announced any change).
    async fn not_offline(&self, user_id: &UserId) -> bool {
        match self.inner.store.get_presence(user_id).await {
            Ok(record) => record.is_some_and(|r| r.state != PresenceState::Offline),
            Err(err) => {
                tracing::warn!(%err, "reading a presence failed");
                false
            }
        }
    }

    /// Position of the presence stream, for sync tokens.
    pub async fn position(&self) -> ServiceResult<StreamPos> {
        Ok(self.inner.store.presence_position().await?)
    }

    async fn shares_room(&self, user_id: &UserId, rooms: &[OwnedRoomId]) -> bool {
        for room_id in rooms {
            if self.notifier.room_members(room_id).await.contains(user_id) {
                return true;
            }
        }
        false
    }

    /// The `presence` section of a sync: changes since `since` of the user
    /// and of those who share a joined room with them, or (initial sync, or
    /// a token from before a restart) everyone's current presence.
    /// Current presence of `users` as `m.presence` events, for people who
    /// newly share a room with `viewer`: their presence may not have moved
    /// since the viewer's token, yet the viewer has never seen it. Hidden
    /// users are left out, as on a first sync.
    pub async fn current_events(
        &self,
        viewer: &UserId,
        users: &[OwnedUserId],
    ) -> ServiceResult<Vec<PresenceEvent>> {
        if !self.enabled() || users.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        Ok(self
            .inner
            .store
            .presences(users)
            .await?
            .into_iter()
            .filter(|(_, record)| !record.hidden)
            .map(|(id, record)| presence_event(id, &record, viewer, now))
            .collect())
    }

    pub async fn sync_events(
        &self,
        user_id: &UserId,
        joined_rooms: &[OwnedRoomId],
        since: Option<StreamPos>,
        upto: StreamPos,
    ) -> ServiceResult<Vec<PresenceEvent>> {
        if !self.enabled() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let event =
            |(id, record): (OwnedUserId, PresenceRecord)| presence_event(id, &record, user_id, now);
        if let Some(since) = since.filter(|s| *s <= upto) {
            if since == upto {
                return Ok(Vec::new());
            }
            let changes = self
                .inner
                .store
                .presence_since(since, MAX_CHANGES_PER_SYNC)
                .await?;
            if changes.len() < MAX_CHANGES_PER_SYNC {
                let mut events = Vec::new();
                for (id, record) in changes {
                    if id == user_id || self.shares_room(&id, joined_rooms).await {
                        events.push(event((id, record)));
                    }
                }
                return Ok(events);
            }
        }
        let mut users: HashSet<OwnedUserId> = HashSet::new();
        users.insert(user_id.to_owned());
        for room_id in joined_rooms {
            users.extend(self.notifier.room_members(room_id).await.iter().cloned());
        }
        let users: Vec<OwnedUserId> = users.into_iter().collect();
        Ok(self
            .inner
            .store
            .presences(&users)
            .await?
            .into_iter()
            // Nothing to say about a hidden user on a first sync.
            .filter(|(id, record)| id == user_id || !record.hidden)
            .map(event)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma_common::user_id;
    use serde_json::json;

    fn record(state: PresenceState, ts: i64, hidden: bool) -> PresenceRecord {
        PresenceRecord {
            state,
            status_msg: Some("lunch".into()),
            last_active_ts: ts,
            hidden,
        }
    }

    #[test]
    fn content_computes_ages_when_read() {
        let c = json!(presence_content(
            user_id!("@a:x"),
            &record(PresenceState::Online, 1_000, false),
            user_id!("@b:x"),
            31_000,
        ));
        assert_eq!(c["presence"], "online");
        assert_eq!(c["last_active_ago"], 30_000);
        assert_eq!(c["currently_active"], true);
        assert_eq!(c["status_msg"], "lunch");
        let c = json!(presence_content(
            user_id!("@a:x"),
            &record(PresenceState::Online, 0, false),
            user_id!("@b:x"),
            61_000,
        ));
        assert_eq!(c["currently_active"], false);
        let c = json!(presence_content(
            user_id!("@a:x"),
            &record(PresenceState::Unavailable, 0, false),
            user_id!("@b:x"),
            1,
        ));
        assert_eq!(c["currently_active"], false);
    }

    #[test]
    fn hidden_presence_shows_only_to_its_owner() {
        let hidden = record(PresenceState::Online, 1_000, true);
        assert_eq!(
            presence_content(user_id!("@a:x"), &hidden, user_id!("@b:x"), 2_000),
            OFFLINE
        );
        assert_eq!(
            presence_content(user_id!("@a:x"), &hidden, user_id!("@a:x"), 2_000).presence,
            "online"
        );
    }

    #[test]
    fn states_parse_as_the_spec_spells_them() {
        assert_eq!(parse_state("online").unwrap(), PresenceState::Online);
        assert_eq!(
            parse_state("unavailable").unwrap(),
            PresenceState::Unavailable
        );
        assert_eq!(parse_state("offline").unwrap(), PresenceState::Offline);
        assert!(parse_state("busy").is_err());
    }
}
