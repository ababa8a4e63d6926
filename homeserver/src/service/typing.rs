//! Typing notifications (spec: "Typing Notifications").
//!
//! Who types where lives behind the `Ephemeral` trait with a time limit per
//! typist. Every change (start, stop, expiry, or the typist sending a
//! message) moves the typing stream and is announced on the bus, which wakes
//! the room's members' syncs. One task sleeps until the earliest expiry, so
//! nothing polls while nobody types.

use std::sync::Arc;
use std::time::Duration;

use ruma_common::{RoomId, ServerName, UserId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::error::{ServiceError, ServiceResult};
use super::rooms::{now_ms, Requester, RoomService};
use crate::store::{EventBus, StreamNotice, StreamPos, TypingStore};

/// Longest a client may claim to be typing without renewing.
const MAX_TIMEOUT_MS: u64 = 120_000;
/// Used when the client gives no timeout.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;

pub struct TypingService {
    store: Arc<dyn TypingStore>,
    bus: Arc<dyn EventBus>,
    /// Wakes the expiry task when a new typist may expire sooner.
    nudge: Arc<Notify>,
}

impl TypingService {
    pub fn new(
        store: Arc<dyn TypingStore>,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Self {
        let nudge = Arc::new(Notify::new());
        tokio::spawn(expire_loop(
            store.clone(),
            bus.clone(),
            nudge.clone(),
            shutdown,
        ));
        Self { store, bus, nudge }
    }

    /// `PUT /typing`: only a joined member, only for themselves.
    pub async fn set(
        &self,
        rooms: &RoomService,
        who: &Requester,
        room_id: &RoomId,
        user_id: &UserId,
        typing: bool,
        timeout_ms: Option<u64>,
    ) -> ServiceResult<()> {
        if user_id != who.user_id {
            return Err(ServiceError::forbidden(
                "You can only set your own typing state",
            ));
        }
        rooms.require_joined(room_id, &who.user_id).await?;
        let changed = self.record(room_id, user_id, typing, timeout_ms).await?;
        // A typist renews before the other servers' timeout runs out:
        // each renewal goes to them too.
        if typing || changed {
            share(rooms, room_id, user_id, typing).await;
        }
        Ok(())
    }

    /// An `m.typing` EDU from another server: only about a user of that
    /// server who is joined to the room. Remote typists expire after the
    /// default timeout unless renewed.
    pub async fn set_remote(
        &self,
        rooms: &RoomService,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        typing: bool,
    ) -> ServiceResult<()> {
        if user_id.server_name() != origin {
            return Err(ServiceError::forbidden(format!(
                "{user_id} is not a user of {origin}"
            )));
        }
        let state = rooms.require_joined(room_id, user_id).await?;
        if !state.server_allowed(origin) {
            return Err(ServiceError::forbidden("denied by the room's server ACL"));
        }
        self.record(room_id, user_id, typing, None).await.map(drop)
    }

    /// Stores the typist and announces the change; whether there was one.
    async fn record(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        typing: bool,
        timeout_ms: Option<u64>,
    ) -> ServiceResult<bool> {
        let until = typing.then(|| {
            let timeout = timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).min(MAX_TIMEOUT_MS);
            now_ms() + timeout as i64
        });
        let changed = self.store.set_typing(room_id, user_id, until).await?;
        if typing {
            self.nudge.notify_one();
        }
        if let Some(stream) = changed {
            announce(self.bus.as_ref(), room_id, stream).await;
        }
        Ok(changed.is_some())
    }

    /// A typist who sends a message has stopped typing.
    pub async fn stop(
        &self,
        rooms: &RoomService,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> ServiceResult<()> {
        if let Some(stream) = self.store.set_typing(room_id, user_id, None).await? {
            announce(self.bus.as_ref(), room_id, stream).await;
            share(rooms, room_id, user_id, false).await;
        }
        Ok(())
    }
}

/// Tells the room's other servers (if any) that a local user types or stopped.
async fn share(rooms: &RoomService, room_id: &RoomId, user_id: &UserId, typing: bool) {
    let content = serde_json::json!({ "room_id": room_id, "user_id": user_id, "typing": typing });
    rooms.share_edu(room_id, "m.typing", content).await;
}

async fn announce(bus: &dyn EventBus, room_id: &RoomId, stream: StreamPos) {
    let notice = StreamNotice::Typing {
        stream,
        room_id: room_id.to_owned(),
    };
    if let Err(err) = bus.publish(notice).await {
        tracing::warn!(%err, "publishing a typing notice failed");
    }
}

/// Sleeps until the earliest typist runs out (or a new one may run out
/// sooner), then drops the expired ones and announces the change.
async fn expire_loop(
    store: Arc<dyn TypingStore>,
    bus: Arc<dyn EventBus>,
    nudge: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let wait = match store.next_typing_expiry().await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).max(0) as u64 + 1),
            Ok(None) => Duration::from_secs(3600),
            Err(err) => {
                tracing::warn!(%err, "reading typing expiries failed");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = nudge.notified() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        match store.expire_typing(now_ms()).await {
            Ok(changed) => {
                for (room_id, stream) in changed {
                    announce(bus.as_ref(), &room_id, stream).await;
                }
            }
            Err(err) => tracing::warn!(%err, "expiring typists failed"),
        }
    }
}
