//! In-process engines for the embedded deployment: the event bus is a tokio
//! broadcast channel and ephemeral data lives in a map with expiry times.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

use super::{
    ConnectionLeases, EventBus, PresenceRecord, PresenceStore, RateLimitStore, StoreResult,
    StreamNotice, StreamPos, TypingStore,
};

/// Fan-out within one process.
pub struct MemoryBus {
    sender: broadcast::Sender<StreamNotice>,
}

impl MemoryBus {
    /// `capacity` bounds how far a slow subscriber may fall behind before it
    /// is told it lagged (it then wakes everyone, which is always safe).
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self { sender }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, notice: StreamNotice) -> StoreResult<()> {
        // No subscribers is fine: nobody is waiting.
        let _ = self.sender.send(notice);
        Ok(())
    }

    fn subscribe(&self) -> BoxStream<'static, StreamNotice> {
        BroadcastStream::new(self.sender.subscribe())
            .map(|item| match item {
                Ok(notice) => notice,
                Err(BroadcastStreamRecvError::Lagged(_)) => StreamNotice::Lagged,
            })
            .boxed()
    }
}

/// One room's typists and when they last changed.
#[derive(Default)]
struct RoomTyping {
    /// Typist -> until (ms since the epoch).
    users: HashMap<OwnedUserId, i64>,
    changed_at: StreamPos,
}

#[derive(Default)]
struct Typing {
    position: StreamPos,
    /// Rooms stay after their last typist stops, so a sync since before the
    /// stop still learns of it; one small entry per room that ever had typing.
    rooms: HashMap<OwnedRoomId, RoomTyping>,
}

/// Typing and presence in memory. A blocking mutex (not tokio's) because no lock is held
/// across an await and the critical sections are a few map operations.
#[derive(Default)]
pub struct MemoryEphemeral {
    typing: Mutex<Typing>,
    presence: Mutex<Presence>,
    /// User -> (node, connected until, ms).
    connected: Mutex<HashMap<OwnedUserId, (String, i64)>>,
    /// Rate-limit buckets: key -> (tokens, last refill ms).
    buckets: Mutex<HashMap<String, (f64, i64)>>,
}

#[derive(Default)]
struct Presence {
    position: StreamPos,
    /// Each user's record and the position of its last announced change.
    users: HashMap<OwnedUserId, (PresenceRecord, StreamPos)>,
    /// Announced changes by position, one entry per user (the latest), so
    /// reading the changes since a token costs only the changes.
    changes: BTreeMap<StreamPos, OwnedUserId>,
}

#[async_trait]
impl TypingStore for MemoryEphemeral {
    async fn set_typing(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        until_ts: Option<i64>,
    ) -> StoreResult<Option<StreamPos>> {
        let mut typing = self.typing.lock();
        let next = typing.position + 1;
        let room = typing.rooms.entry(room_id.to_owned()).or_default();
        let changed = match until_ts {
            Some(until) => room.users.insert(user_id.to_owned(), until).is_none(),
            None => room.users.remove(user_id).is_some(),
        };
        if !changed {
            return Ok(None);
        }
        room.changed_at = next;
        typing.position = next;
        Ok(Some(next))
    }

    async fn expire_typing(&self, now_ts: i64) -> StoreResult<Vec<(OwnedRoomId, StreamPos)>> {
        let mut typing = self.typing.lock();
        let mut position = typing.position;
        let mut changed = Vec::new();
        for (room_id, room) in typing.rooms.iter_mut() {
            let before = room.users.len();
            room.users.retain(|_, until| *until > now_ts);
            if room.users.len() != before {
                position += 1;
                room.changed_at = position;
                changed.push((room_id.clone(), position));
            }
        }
        typing.position = position;
        Ok(changed)
    }

    async fn next_typing_expiry(&self) -> StoreResult<Option<i64>> {
        let typing = self.typing.lock();
        Ok(typing
            .rooms
            .values()
            .flat_map(|room| room.users.values().copied())
            .min())
    }

    async fn typing_since(
        &self,
        room_ids: &[OwnedRoomId],
        since: StreamPos,
    ) -> StoreResult<Vec<(OwnedRoomId, Vec<OwnedUserId>)>> {
        let typing = self.typing.lock();
        Ok(room_ids
            .iter()
            .filter_map(|room_id| {
                let room = typing.rooms.get(room_id)?;
                (room.changed_at > since).then(|| {
                    let mut users: Vec<OwnedUserId> = room.users.keys().cloned().collect();
                    users.sort();
                    (room_id.clone(), users)
                })
            })
            .collect())
    }

    async fn typing_position(&self) -> StoreResult<StreamPos> {
        Ok(self.typing.lock().position)
    }
}

#[async_trait]
impl PresenceStore for MemoryEphemeral {
    async fn set_presence(
        &self,
        user_id: &UserId,
        presence: PresenceRecord,
        announce: bool,
    ) -> StoreResult<Option<StreamPos>> {
        let mut guard = self.presence.lock();
        let state = &mut *guard;
        let previous = state.users.get(user_id).map(|(_, pos)| *pos).unwrap_or(0);
        let position = if announce {
            state.position += 1;
            state.changes.remove(&previous);
            state.changes.insert(state.position, user_id.to_owned());
            state.position
        } else {
            previous
        };
        state.users.insert(user_id.to_owned(), (presence, position));
        Ok(announce.then_some(position))
    }

    async fn get_presence(&self, user_id: &UserId) -> StoreResult<Option<PresenceRecord>> {
        let state = self.presence.lock();
        Ok(state.users.get(user_id).map(|(record, _)| record.clone()))
    }

    async fn presences(
        &self,
        user_ids: &[OwnedUserId],
    ) -> StoreResult<Vec<(OwnedUserId, PresenceRecord)>> {
        let state = self.presence.lock();
        Ok(user_ids
            .iter()
            .filter_map(|id| {
                let (record, _) = state.users.get(id)?;
                Some((id.clone(), record.clone()))
            })
            .collect())
    }

    async fn presence_since(
        &self,
        since: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<(OwnedUserId, PresenceRecord)>> {
        let state = self.presence.lock();
        Ok(state
            .changes
            .range(since + 1..)
            .take(limit)
            .filter_map(|(_, id)| {
                let (record, _) = state.users.get(id)?;
                Some((id.clone(), record.clone()))
            })
            .collect())
    }

    async fn presence_position(&self) -> StoreResult<StreamPos> {
        Ok(self.presence.lock().position)
    }
}

#[async_trait]
impl ConnectionLeases for MemoryEphemeral {
    async fn set_connected(
        &self,
        user_ids: &[OwnedUserId],
        node: &str,
        ttl_ms: i64,
    ) -> StoreResult<()> {
        let until = now_ms() + ttl_ms;
        let mut connected = self.connected.lock();
        // Entries long expired go whenever the map is written (the lapsed
        // ones are normally taken by `take_lapsed_connections` before).
        let now = now_ms();
        connected.retain(|_, (_, until)| *until > now - 3_600_000);
        for user in user_ids {
            connected.insert(user.clone(), (node.to_owned(), until));
        }
        Ok(())
    }

    async fn connected_node(&self, user_id: &UserId) -> StoreResult<Option<String>> {
        let connected = self.connected.lock();
        Ok(connected
            .get(user_id)
            .filter(|(_, until)| *until > now_ms())
            .map(|(node, _)| node.clone()))
    }

    async fn take_lapsed_connections(
        &self,
        now_ts: i64,
        limit: usize,
    ) -> StoreResult<Vec<OwnedUserId>> {
        let mut connected = self.connected.lock();
        let lapsed: Vec<OwnedUserId> = connected
            .iter()
            .filter(|(_, (_, until))| *until <= now_ts)
            .map(|(user, _)| user.clone())
            .take(limit)
            .collect();
        for user in &lapsed {
            connected.remove(user);
        }
        Ok(lapsed)
    }
}

#[async_trait]
impl RateLimitStore for MemoryEphemeral {
    async fn take_token(&self, key: &str, burst: f64, per_sec: f64) -> StoreResult<Option<u64>> {
        let now = now_ms();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Full buckets carry no information: dropping them is harmless.
            buckets
                .retain(|_, (tokens, at)| *tokens + (now - *at) as f64 / 1000.0 * per_sec < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + (now - *at) as f64 / 1000.0 * per_sec).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(None)
        } else {
            Ok(Some(((1.0 - *tokens) / per_sec * 1000.0).ceil() as u64))
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;

    use super::*;
    use crate::store::conformance;
    use ruma_common::owned_user_id;

    #[tokio::test]
    async fn ephemeral_conformance() {
        let store = Arc::new(MemoryEphemeral::default());
        conformance::typing_store(store.clone()).await;
        conformance::presence_store(store.clone()).await;
        conformance::connection_leases(store.clone()).await;
        conformance::rate_limit_store(store.clone()).await;
    }

    #[tokio::test]
    async fn bus_delivers_to_every_subscriber() {
        let bus = MemoryBus::new(16);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        let notice = StreamNotice::AccountData {
            stream: 3,
            user_id: owned_user_id!("@a:test"),
        };
        bus.publish(notice.clone()).await.unwrap();
        assert_eq!(a.next().await.unwrap(), notice);
        assert_eq!(b.next().await.unwrap(), notice);
    }
}
