//! Account data (`account_data`, and each joined room's `account_data`).

use std::collections::BTreeMap;

use ruma_common::OwnedRoomId;
use serde_json::{json, Value};

use super::join::room_entry;
use super::plan::{Pass, Plan};
use super::response::JoinedRoom;
use super::SyncService;
use crate::service::error::ServiceResult;

impl SyncService {
    /// Account data changed since the token: room entries go into their
    /// joined room's entry; the global ones are returned.
    pub(super) async fn add_account_data(
        &self,
        pass: &Pass<'_>,
        plan: &Plan<'_>,
        join: &mut BTreeMap<OwnedRoomId, JoinedRoom>,
    ) -> ServiceResult<Vec<Value>> {
        let upto = pass.upto.account_data;
        let since = pass.since.map(|s| s.account_data).unwrap_or(0);
        let mut global = Vec::new();
        let changed = if since >= upto {
            Vec::new()
        } else {
            self.accounts
                .account_data_since(&pass.who.user_id, since)
                .await?
        };
        for entry in changed {
            if entry.stream > upto {
                continue;
            }
            let event = json!({"type": entry.kind, "content": entry.content});
            match &entry.room_id {
                None => global.push(event),
                Some(room_id) => {
                    if plan.joined.iter().any(|(m, _)| &m.room_id == room_id) {
                        let entry = room_entry(join, room_id, pass.upto.events);
                        entry.account_data.events.push(event);
                    }
                }
            }
        }
        Ok(global)
    }
}
