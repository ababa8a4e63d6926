//! Ephemeral data other servers send in transactions (EDUs): typing and
//! receipts are applied as a local user's would be, after checking that
//! the origin speaks for the user and the user is in the room; presence of
//! the origin's users who share a room with us is stored
//! (`presence/remote.rs`); to-device messages and device-list changes go
//! to the encryption service (`e2ee/federation.rs`). An EDU that does not
//! hold is dropped (EDUs get no answer); other kinds are ignored.

use ruma_common::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, ServerName};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::receipts::RemoteReceipt;
use super::rooms::now_ms;
use super::Services;

#[derive(Deserialize)]
struct Edu {
    edu_type: String,
    content: Value,
}

#[derive(Deserialize)]
struct Typing {
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    typing: bool,
}

/// `{room_id: {receipt_type: {user_id: {event_ids, data}}}}`.
type Receipts = BTreeMap<OwnedRoomId, BTreeMap<String, BTreeMap<OwnedUserId, UserReceipt>>>;

#[derive(Deserialize)]
struct UserReceipt {
    event_ids: Vec<OwnedEventId>,
    #[serde(default)]
    data: ReceiptData,
}

#[derive(Deserialize, Default)]
struct ReceiptData {
    ts: Option<i64>,
    thread_id: Option<String>,
}

/// Most receipts one EDU may carry before the rest are dropped.
const MAX_RECEIPTS_PER_EDU: usize = 500;

impl Services {
    /// Applies the EDUs of one transaction from `origin`.
    pub async fn receive_edus(&self, origin: &ServerName, edus: &[Value]) {
        for edu in edus {
            let Ok(Edu { edu_type, content }) = Edu::deserialize(edu) else {
                tracing::debug!(%origin, "dropped a malformed EDU");
                continue;
            };
            match edu_type.as_str() {
                "m.typing" => self.remote_typing(origin, content).await,
                "m.receipt" => self.remote_receipts(origin, content).await,
                "m.presence" => self.presence.receive_remote(origin, content).await,
                "m.direct_to_device" => self.e2ee.receive_to_device(origin, content).await,
                "m.device_list_update" | "m.signing_key_update" => {
                    self.e2ee.receive_device_change(origin, content).await
                }
                _ => {}
            }
        }
    }

    async fn remote_typing(&self, origin: &ServerName, content: Value) {
        let Ok(typing) = Typing::deserialize(content) else {
            return;
        };
        let set = self.typing.set_remote(
            &self.rooms,
            origin,
            &typing.room_id,
            &typing.user_id,
            typing.typing,
        );
        if let Err(err) = set.await {
            tracing::debug!(%origin, error = %err.message, "dropped a typing EDU");
        }
    }

    async fn remote_receipts(&self, origin: &ServerName, content: Value) {
        let Ok(rooms) = Receipts::deserialize(content) else {
            return;
        };
        let mut budget = MAX_RECEIPTS_PER_EDU;
        for (room_id, kinds) in &rooms {
            for (receipt_type, users) in kinds {
                for (user_id, receipt) in users {
                    // One event per receipt: the spec's list holds one.
                    let Some(event_id) = receipt.event_ids.first() else {
                        continue;
                    };
                    if budget == 0 {
                        return;
                    }
                    budget -= 1;
                    self.remote_receipt(origin, room_id, receipt_type, user_id, event_id, receipt)
                        .await;
                }
            }
        }
    }

    async fn remote_receipt(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        receipt_type: &str,
        user_id: &OwnedUserId,
        event_id: &EventId,
        receipt: &UserReceipt,
    ) {
        let remote = RemoteReceipt {
            room_id,
            receipt_type,
            user_id,
            event_id,
            thread_id: receipt.data.thread_id.clone(),
            // Their clock, but never in our future.
            ts: receipt.data.ts.unwrap_or_else(now_ms).min(now_ms()),
        };
        let recorded = self.receipts.receive_remote(&self.rooms, origin, remote);
        if let Err(err) = recorded.await {
            tracing::debug!(%origin, error = %err.message, "dropped a receipt EDU");
        }
    }
}
