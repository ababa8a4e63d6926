//! `GET /notifications`: the events a user's push rules notified them of,
//! newest first, each marked read or not.
//!
//! Like unread counts, nothing is written per recipient on the send path:
//! the list is read from the timelines of the user's joined rooms (events
//! since they joined, which they may always see), evaluated with their push
//! rules page by page. A page reads at most [`MAX_SCANNED`] events, so a
//! user whose recent history notifies rarely gets a short page with a
//! `next_token` to go further back, as the spec allows.

use std::collections::HashMap;
use std::sync::Arc;

use ruma_common::OwnedRoomId;
use ruma_events::room::member::MembershipState;
use serde::Serialize;
use serde_json::{json, Value};

use super::error::{ServiceError, ServiceResult};
use super::pdu::client_event_for;
use super::push_rules::{PreparedEvent, PushOutcome, PushRuleService, RoomPushContext};
use super::rooms::{now_ms, Requester, RoomService};
use super::unread::{display_name, push_context};
use crate::store::{ReceiptStore, RoomStore, StoredEvent, StreamPos};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Events read per request at most, whatever the limit.
const MAX_SCANNED: usize = 1_000;
/// Events read per room and round.
const BATCH: usize = 100;

pub struct NotificationService {
    rooms: RoomService,
    store: Arc<dyn RoomStore>,
    receipts: Arc<dyn ReceiptStore>,
    push_rules: Arc<PushRuleService>,
}

/// One `GET /notifications` request.
pub struct NotificationsRequest {
    /// Only events before this position (the previous page's `next_token`).
    pub from: Option<StreamPos>,
    pub limit: Option<usize>,
    pub only_highlight: bool,
}

/// `GET /notifications`: a page, and where the next one starts.
#[derive(Serialize)]
pub struct NotificationsResponse {
    pub notifications: Vec<Notification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Serialize)]
pub struct Notification {
    pub actions: Value,
    pub event: Value,
    pub read: bool,
    pub room_id: OwnedRoomId,
    pub ts: i64,
}

/// The spec's `actions` for an outcome.
fn actions(outcome: &PushOutcome) -> Value {
    let mut list = vec![json!("notify")];
    if let Some(sound) = &outcome.sound {
        list.push(json!({"set_tweak": "sound", "value": sound}));
    }
    if outcome.highlight {
        list.push(json!({"set_tweak": "highlight"}));
    }
    Value::Array(list)
}

impl NotificationService {
    pub fn new(
        rooms: RoomService,
        store: Arc<dyn RoomStore>,
        receipts: Arc<dyn ReceiptStore>,
        push_rules: Arc<PushRuleService>,
    ) -> Self {
        Self {
            rooms,
            store,
            receipts,
            push_rules,
        }
    }

    pub fn parse_from(token: &str) -> ServiceResult<StreamPos> {
        token
            .parse::<StreamPos>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ServiceError::invalid_param("Invalid from token"))
    }

    pub async fn list(
        &self,
        who: &Requester,
        request: NotificationsRequest,
    ) -> ServiceResult<NotificationsResponse> {
        let limit = request.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        // Joined rooms and when the user joined each.
        let joined: HashMap<OwnedRoomId, StreamPos> = self
            .store
            .memberships_of_user(&who.user_id)
            .await?
            .into_iter()
            .filter(|m| m.membership == MembershipState::Join)
            .map(|m| (m.room_id, m.stream))
            .collect();
        let room_ids: Vec<OwnedRoomId> = joined.keys().cloned().collect();
        let read: HashMap<OwnedRoomId, StreamPos> = self
            .receipts
            .read_positions(&who.user_id, &room_ids)
            .await?
            .into_iter()
            .collect();
        let ruleset = self.push_rules.get_ruleset(&who.user_id).await?;
        let now = now_ms();

        let mut before = request.from.unwrap_or(StreamPos::MAX);
        let mut scanned = 0;
        let mut found = Vec::new();
        let mut exhausted = false;
        let mut contexts: HashMap<OwnedRoomId, (RoomPushContext, String)> = HashMap::new();
        while found.len() < limit && scanned < MAX_SCANNED {
            // The newest BATCH events of each room before `before`; merged,
            // the newest BATCH overall are exact.
            let mut events: Vec<StoredEvent> = self
                .store
                .recent_events(&room_ids, 0, before.saturating_sub(1), BATCH)
                .await?
                .into_iter()
                .flat_map(|(_, slice)| slice.events)
                .filter(|e| joined.get(&e.room_id).is_some_and(|j| e.stream > *j))
                .collect();
            events.sort_by_key(|e| std::cmp::Reverse(e.stream));
            events.truncate(BATCH);
            if events.is_empty() {
                exhausted = true;
                break;
            }
            for event in &events {
                scanned += 1;
                before = event.stream;
                if event.sender == who.user_id {
                    continue;
                }
                // Each room's push context once per request, not per event.
                if !contexts.contains_key(&event.room_id) {
                    let Some(state) = self.rooms.state_snapshot(&event.room_id).await? else {
                        continue;
                    };
                    let context = (
                        push_context(&event.room_id, &state),
                        display_name(&state, &who.user_id),
                    );
                    contexts.insert(event.room_id.clone(), context);
                }
                let Some((context, name)) = contexts.get(&event.room_id) else {
                    continue;
                };
                let outcome = PreparedEvent::new(&event.pdu, context)
                    .evaluate(&ruleset, &who.user_id, name)
                    .await;
                if !outcome.notify || (request.only_highlight && !outcome.highlight) {
                    continue;
                }
                let read_upto = read.get(&event.room_id).copied().unwrap_or(0);
                found.push(Notification {
                    actions: actions(&outcome),
                    event: client_event_for(event, &who.user_id, &who.device_id, now, true),
                    read: event.stream <= read_upto,
                    room_id: event.room_id.clone(),
                    ts: event.pdu["origin_server_ts"].as_i64().unwrap_or(0),
                });
                if found.len() == limit {
                    break;
                }
            }
        }
        Ok(NotificationsResponse {
            notifications: found,
            next_token: (!exhausted).then(|| before.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_carry_the_tweaks() {
        let plain = PushOutcome {
            notify: true,
            highlight: false,
            sound: None,
        };
        assert_eq!(actions(&plain), json!(["notify"]));
        let mention = PushOutcome {
            notify: true,
            highlight: true,
            sound: Some("default".into()),
        };
        assert_eq!(
            actions(&mention),
            json!(["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}])
        );
    }

    #[test]
    fn from_tokens_are_positions() {
        assert_eq!(NotificationService::parse_from("42").unwrap(), 42);
        for bad in ["", "x", "-1", "0"] {
            assert!(NotificationService::parse_from(bad).is_err(), "{bad}");
        }
    }
}
