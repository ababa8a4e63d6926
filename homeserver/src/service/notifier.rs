//! Wakes waiting `/sync` requests the moment something they would return is
//! durable, with no polling of the database.
//!
//! One task per node reads the event bus. For a room event it wakes the
//! room's joined and invited members (and the target of a membership change);
//! for typing and receipts, the room's members; for account data and
//! to-device messages, their owner; for presence and device lists, the user
//! and whoever shares a room with them. A waiting sync holds a `watch`
//! receiver for its user, so an idle sync costs one small channel and no
//! work.

use parking_lot::Mutex;
use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use ruma_events::room::member::MembershipState;
use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;

use futures::StreamExt;
use lru::LruCache;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::{EventBus, RoomStore, StreamNotice};

/// Rooms whose members are kept; past this the least recently used room's
/// list goes (and is read again from the store when a notice needs it).
const MAX_ROOMS: NonZeroUsize = NonZeroUsize::new(50_000).expect("non-zero");

/// How long presence changes are gathered before the wake-ups go out.
const PRESENCE_BATCH: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Default)]
struct Waiters {
    users: HashMap<OwnedUserId, watch::Sender<u64>>,
}

pub struct Notifier {
    waiters: Mutex<Waiters>,
    /// Joined and invited members per room, loaded on first use and dropped
    /// whenever the room's membership changes.
    members: Mutex<LruCache<OwnedRoomId, Arc<HashSet<OwnedUserId>>>>,
    store: Arc<dyn RoomStore>,
}

impl Notifier {
    pub fn new(store: Arc<dyn RoomStore>) -> Arc<Self> {
        Arc::new(Self {
            waiters: Mutex::new(Waiters::default()),
            members: Mutex::new(LruCache::new(MAX_ROOMS)),
            store,
        })
    }

    /// Starts the task that turns bus notices into wake-ups.
    pub fn spawn(self: &Arc<Self>, bus: &dyn EventBus, shutdown: CancellationToken) {
        let mut notices = bus.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            // Presence changes come in bursts (a team logging in, a server
            // start): they are gathered for PRESENCE_BATCH and each
            // co-member woken once for the lot, not once per change.
            let mut presence: HashSet<OwnedUserId> = HashSet::new();
            let flush = tokio::time::sleep(PRESENCE_BATCH);
            tokio::pin!(flush);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = &mut flush, if !presence.is_empty() => {
                        this.wake_for_presence(std::mem::take(&mut presence)).await;
                    }
                    next = notices.next() => match next {
                        Some(StreamNotice::Presence { user_id, .. }) => {
                            if presence.is_empty() {
                                flush.as_mut().reset(tokio::time::Instant::now() + PRESENCE_BATCH);
                            }
                            presence.insert(user_id);
                        }
                        Some(notice) => this.handle(notice).await,
                        None => break,
                    },
                }
            }
            // Release every waiting sync so shutdown is not held up.
            this.wake_all();
        });
    }

    /// A receiver that changes whenever something arrives for `user_id`.
    /// Subscribe *before* reading the store, so nothing slips in between.
    pub fn subscribe(&self, user_id: &UserId) -> watch::Receiver<u64> {
        let mut waiters = self.waiters.lock();
        waiters
            .users
            .entry(user_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn wake(&self, user_id: &UserId) {
        let mut waiters = self.waiters.lock();
        if let Some(sender) = waiters.users.get(user_id) {
            if sender.receiver_count() == 0 {
                waiters.users.remove(user_id);
            } else {
                sender.send_modify(|n| *n += 1);
            }
        }
    }

    fn wake_all(&self) {
        let mut waiters = self.waiters.lock();
        waiters.users.retain(|_, sender| {
            sender.send_modify(|n| *n += 1);
            sender.receiver_count() > 0
        });
    }

    /// The joined and invited members of a room, cached until its
    /// membership changes.
    pub async fn room_members(&self, room_id: &RoomId) -> Arc<HashSet<OwnedUserId>> {
        if let Some(found) = self.members.lock().get(room_id) {
            return found.clone();
        }
        let loaded: HashSet<OwnedUserId> = match self.store.members(room_id).await {
            Ok(list) => list
                .into_iter()
                .filter(|m| {
                    matches!(
                        m.membership,
                        MembershipState::Join | MembershipState::Invite
                    )
                })
                .map(|m| m.user_id)
                .collect(),
            Err(err) => {
                tracing::warn!(%err, "loading room members for wake-ups failed");
                self.wake_all();
                return Arc::new(HashSet::new());
            }
        };
        let loaded = Arc::new(loaded);
        self.members.lock().put(room_id.to_owned(), loaded.clone());
        loaded
    }

    /// Wakes each user whose presence (or device list) changed and everyone
    /// who shares a joined room with one of them, once.
    async fn wake_for_presence(&self, changed: HashSet<OwnedUserId>) {
        let mut targets: HashSet<OwnedUserId> = HashSet::new();
        for user_id in changed {
            match self.store.memberships_of_user(&user_id).await {
                Ok(list) => {
                    for m in list
                        .iter()
                        .filter(|m| m.membership == MembershipState::Join)
                    {
                        targets.extend(self.room_members(&m.room_id).await.iter().cloned());
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "loading rooms for a presence wake-up failed");
                    self.wake_all();
                    return;
                }
            }
            targets.insert(user_id);
        }
        for user in &targets {
            self.wake(user);
        }
    }

    async fn handle(&self, notice: StreamNotice) {
        match notice {
            StreamNotice::AccountData { user_id, .. } | StreamNotice::ToDevice { user_id, .. } => {
                self.wake(&user_id)
            }
            StreamNotice::DeviceLists { user_id, .. } => {
                self.wake_for_presence(HashSet::from([user_id])).await
            }
            StreamNotice::Presence { user_id, .. } => {
                self.wake_for_presence(HashSet::from([user_id])).await
            }
            StreamNotice::Lagged => {
                // The bus says we missed notices: wake everyone, which is safe.
                self.members.lock().clear();
                self.wake_all();
            }
            StreamNotice::Receipt {
                only_user: Some(user),
                ..
            } => self.wake(&user),
            StreamNotice::Typing { room_id, .. } | StreamNotice::Receipt { room_id, .. } => {
                let members = self.room_members(&room_id).await;
                for user in members.iter() {
                    self.wake(user);
                }
            }
            StreamNotice::RoomEvent {
                room_id,
                affected_user,
                ..
            } => {
                if let Some(user) = &affected_user {
                    self.members.lock().pop(&room_id);
                    self.wake(user);
                }
                let members = self.room_members(&room_id).await;
                for user in members.iter() {
                    self.wake(user);
                }
            }
        }
    }
}
