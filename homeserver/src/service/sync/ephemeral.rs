//! Typing and receipts (each joined room's `ephemeral`).

use std::collections::BTreeMap;

use ruma_common::OwnedRoomId;
use serde_json::json;

use super::join::room_entry;
use super::plan::{Pass, Plan};
use super::response::JoinedRoom;
use super::SyncService;
use crate::service::error::ServiceResult;

impl SyncService {
    /// Typing: rooms whose typists changed since the token, and every room
    /// shown in full.
    pub(super) async fn add_typing(
        &self,
        pass: &Pass<'_>,
        plan: &Plan<'_>,
        join: &mut BTreeMap<OwnedRoomId, JoinedRoom>,
    ) -> ServiceResult<()> {
        // Typing positions start over when the server restarts, so a token
        // from before then counts as "from the start".
        let since = pass
            .since
            .map(|s| s.typing)
            .filter(|t| *t <= pass.upto.typing)
            .unwrap_or(0);
        let mut typing = self.typing.typing_since(&plan.incremental, since).await?;
        typing.extend(self.typing.typing_since(&plan.full, 0).await?);
        for (room_id, users) in typing {
            let event = json!({"type": "m.typing", "content": {"user_ids": users}});
            let entry = room_entry(join, &room_id, pass.upto.events);
            entry.ephemeral.events.push(event);
        }
        Ok(())
    }

    /// Receipts that moved since the token; all current ones for rooms
    /// shown in full.
    pub(super) async fn add_receipts(
        &self,
        pass: &Pass<'_>,
        plan: &Plan<'_>,
        join: &mut BTreeMap<OwnedRoomId, JoinedRoom>,
    ) -> ServiceResult<()> {
        let user_id = &pass.who.user_id;
        let since = pass.since.map(|s| s.receipts).unwrap_or(0);
        let mut receipts = if since < pass.upto.receipts {
            self.receipts
                .receipt_events(&plan.incremental, since, user_id)
                .await?
        } else {
            Vec::new()
        };
        receipts.extend(self.receipts.receipt_events(&plan.full, 0, user_id).await?);
        for (room_id, event) in receipts {
            let entry = room_entry(join, &room_id, pass.upto.events);
            entry.ephemeral.events.push(event);
        }
        Ok(())
    }
}
