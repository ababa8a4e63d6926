//! In-process engines for the embedded deployment: the event bus is a tokio
//! broadcast channel and ephemeral data lives in a map with expiry times.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

use super::{Ephemeral, EventBus, PresenceRecord, StoreResult, StreamNotice};

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

/// What a subscriber sees when it fell behind: a notice that wakes all syncs.
pub const LAGGED: StreamNotice = StreamNotice::RoomEvent {
    stream: i64::MAX,
    room_id: String::new(),
    affected_user: None,
};

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
                Err(BroadcastStreamRecvError::Lagged(_)) => LAGGED,
            })
            .boxed()
    }
}

/// Typing and presence in memory. `std::sync::Mutex` because no lock is held
/// across an await and the critical sections are a few map operations.
#[derive(Default)]
pub struct MemoryEphemeral {
    typing: Mutex<HashMap<String, HashMap<String, i64>>>,
    presence: Mutex<HashMap<String, PresenceRecord>>,
}

#[async_trait]
impl Ephemeral for MemoryEphemeral {
    async fn set_typing(
        &self,
        room_id: &str,
        user_id: &str,
        until_ts: Option<i64>,
    ) -> StoreResult<()> {
        let mut typing = self.typing.lock().expect("typing lock");
        let room = typing.entry(room_id.to_owned()).or_default();
        match until_ts {
            Some(ts) => {
                room.insert(user_id.to_owned(), ts);
            }
            None => {
                room.remove(user_id);
            }
        }
        if room.is_empty() {
            typing.remove(room_id);
        }
        Ok(())
    }

    async fn typing_users(&self, room_id: &str, now_ts: i64) -> StoreResult<Vec<String>> {
        let mut typing = self.typing.lock().expect("typing lock");
        let Some(room) = typing.get_mut(room_id) else {
            return Ok(Vec::new());
        };
        room.retain(|_, until| *until > now_ts);
        let mut users: Vec<String> = room.keys().cloned().collect();
        users.sort();
        Ok(users)
    }

    async fn set_presence(&self, user_id: &str, presence: PresenceRecord) -> StoreResult<()> {
        self.presence
            .lock()
            .expect("presence lock")
            .insert(user_id.to_owned(), presence);
        Ok(())
    }

    async fn get_presence(&self, user_id: &str) -> StoreResult<Option<PresenceRecord>> {
        Ok(self
            .presence
            .lock()
            .expect("presence lock")
            .get(user_id)
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;

    use super::*;
    use crate::store::conformance;

    #[tokio::test]
    async fn ephemeral_conformance() {
        conformance::ephemeral(Arc::new(MemoryEphemeral::default())).await;
    }

    #[tokio::test]
    async fn bus_delivers_to_every_subscriber() {
        let bus = MemoryBus::new(16);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        let notice = StreamNotice::AccountData {
            stream: 3,
            user_id: "@a:test".into(),
        };
        bus.publish(notice.clone()).await.unwrap();
        assert_eq!(a.next().await.unwrap(), notice);
        assert_eq!(b.next().await.unwrap(), notice);
    }
}
