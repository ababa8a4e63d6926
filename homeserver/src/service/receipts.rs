//! Read and delivery receipts (spec: "Receipts"), plus Tern's delivered
//! ticks: receipt type `tern.delivered`, recorded automatically when a
//! client's next `/sync` proves it received events, and per-member "message
//! info" for one event.

use parking_lot::Mutex;
use ruma_common::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, ServerName, UserId};
use ruma_events::room::member::MembershipState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::error::{ServiceError, ServiceResult};
use super::rooms::{now_ms, Requester, RoomService};
use super::unread::UnreadService;
use crate::store::cluster::ClusterMessage;
use crate::store::{
    EventBus, NewReceipt, ReceiptRecord, ReceiptStore, StoredEvent, StreamNotice, StreamPos,
};

/// Tern's "message info" of one event: when it was sent, and when each
/// other joined member got and read it (null until then).
#[derive(Serialize)]
pub struct MessageInfoResponse {
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    pub sent_ts: Option<i64>,
    pub members: Vec<MemberReceipts>,
    pub delivered_to_all: bool,
    pub read_by_all: bool,
}

#[derive(Serialize)]
pub struct MemberReceipts {
    pub user_id: OwnedUserId,
    pub delivered_ts: Option<i64>,
    pub read_ts: Option<i64>,
}

/// Tern's delivered receipt: "this user's device has everything up to here".
pub const DELIVERED: &str = "tern.delivered";
pub const READ: &str = "m.read";
pub const READ_PRIVATE: &str = "m.read.private";

/// Receipts kept in memory for incremental syncs.
const RECENT_RECEIPTS: usize = 100_000;

/// Recent receipts in memory, so a woken sync reads them without a query.
/// Like the timeline cache: a watermark marks the highest position up to
/// which every committed receipt is here, and syncs read up to it only.
/// Kept per room, so a sync reads only its rooms' receipts, however busy
/// the rest of the server is.
struct RecentReceipts {
    /// Every receipt after this position is here.
    floor: StreamPos,
    watermark: StreamPos,
    /// Each room's receipts in stream order.
    rooms: HashMap<OwnedRoomId, VecDeque<ReceiptRecord>>,
    /// Every kept receipt's position and room, oldest first: the eviction order.
    order: VecDeque<(StreamPos, OwnedRoomId)>,
    pending: BTreeMap<StreamPos, ReceiptRecord>,
}

/// What a client posted: a receipt of a type on an event, maybe in a thread.
pub struct PostedReceipt<'a> {
    pub room_id: &'a RoomId,
    pub receipt_type: &'a str,
    pub event_id: &'a EventId,
    pub thread_id: Option<String>,
}

/// One receipt of an `m.receipt` EDU another server sent.
pub struct RemoteReceipt<'a> {
    pub room_id: &'a RoomId,
    pub receipt_type: &'a str,
    pub user_id: &'a UserId,
    pub event_id: &'a EventId,
    pub thread_id: Option<String>,
    pub ts: i64,
}

/// A receipt of `receipt_type` on `event`, and (reading implies having
/// received) a delivered one with it unless it is one.
fn with_delivered(
    user_id: &UserId,
    receipt_type: &str,
    thread_id: Option<String>,
    event: &StoredEvent,
    ts: i64,
) -> Vec<NewReceipt> {
    let make = |kind: &str| NewReceipt {
        room_id: event.room_id.clone(),
        user_id: user_id.to_owned(),
        receipt_type: kind.to_owned(),
        thread_id: thread_id.clone(),
        event_id: event.event_id.clone(),
        event_sender: event.sender.clone(),
        event_stream: event.stream,
        ts,
    };
    let mut receipts = vec![make(receipt_type)];
    if receipt_type != DELIVERED {
        receipts.push(make(DELIVERED));
    }
    receipts
}

/// The content of an `m.receipt` EDU of one receipt.
fn receipt_edu(
    room_id: &RoomId,
    receipt_type: &str,
    user_id: &UserId,
    event_id: &EventId,
    ts: i64,
) -> Value {
    json!({ room_id.as_str(): { receipt_type: { user_id.as_str(): {
        "event_ids": [event_id], "data": { "ts": ts }
    }}}})
}

pub struct ReceiptService {
    store: Arc<dyn ReceiptStore>,
    bus: Arc<dyn EventBus>,
    recent: Mutex<RecentReceipts>,
}

impl ReceiptService {
    pub async fn new(store: Arc<dyn ReceiptStore>, bus: Arc<dyn EventBus>) -> ServiceResult<Self> {
        let position = store.receipts_position().await?;
        Ok(Self {
            store,
            bus,
            recent: Mutex::new(RecentReceipts {
                floor: position,
                watermark: position,
                rooms: HashMap::new(),
                order: VecDeque::new(),
                pending: BTreeMap::new(),
            }),
        })
    }

    /// Adds committed receipts; returns those that became visible, in order.
    fn remember(&self, records: Vec<ReceiptRecord>) -> Vec<ReceiptRecord> {
        let mut recent = self.recent.lock();
        for record in records {
            // In a cluster a receipt can arrive twice (its message, and the
            // store when a gap is filled): the first one counts.
            if record.stream > recent.watermark {
                recent.pending.insert(record.stream, record);
            }
        }
        let mut visible = Vec::new();
        loop {
            let wanted = recent.watermark + 1;
            let Some(record) = recent.pending.remove(&wanted) else {
                break;
            };
            recent.watermark = wanted;
            recent
                .order
                .push_back((record.stream, record.receipt.room_id.clone()));
            recent
                .rooms
                .entry(record.receipt.room_id.clone())
                .or_default()
                .push_back(record.clone());
            visible.push(record);
        }
        while recent.order.len() > RECENT_RECEIPTS {
            let Some((stream, room_id)) = recent.order.pop_front() else {
                break;
            };
            recent.floor = stream;
            if let Some(list) = recent.rooms.get_mut(&room_id) {
                list.pop_front();
                if list.is_empty() {
                    recent.rooms.remove(&room_id);
                }
            }
        }
        visible
    }

    /// `POST /receipt/{type}/{eventId}`: a joined member marks an event it can
    /// see. Returns the event's position.
    pub async fn post(
        self: &Arc<Self>,
        rooms: &RoomService,
        unread: &UnreadService,
        who: &Requester,
        posted: PostedReceipt<'_>,
    ) -> ServiceResult<StreamPos> {
        let PostedReceipt {
            room_id,
            receipt_type,
            event_id,
            thread_id,
        } = posted;
        if ![READ, READ_PRIVATE, DELIVERED].contains(&receipt_type) {
            return Err(ServiceError::invalid_param(format!(
                "Unsupported receipt type {receipt_type}"
            )));
        }
        if thread_id
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.len() > 255)
        {
            return Err(ServiceError::invalid_param("Invalid thread_id"));
        }
        rooms.require_joined(room_id, &who.user_id).await?;
        let event = rooms.get_event(&who.user_id, room_id, event_id).await?;
        let ts = now_ms();
        let receipts = with_delivered(&who.user_id, receipt_type, thread_id, &event, ts);
        if receipt_type != DELIVERED {
            // Before the receipt is announced: the syncs it wakes (the
            // reader's own among them) must already count the room read.
            unread.mark_read(&who.user_id, room_id, event.stream);
        }
        self.record(receipts).await?;
        if receipt_type != READ_PRIVATE {
            let edu = receipt_edu(room_id, receipt_type, &who.user_id, &event.event_id, ts);
            rooms.share_edu(room_id, "m.receipt", edu).await;
        }
        Ok(event.stream)
    }

    /// A receipt from another server's `m.receipt` EDU: only of a user of
    /// that server, joined to the room, on an event of the room.
    pub async fn receive_remote(
        self: &Arc<Self>,
        rooms: &RoomService,
        origin: &ServerName,
        remote: RemoteReceipt<'_>,
    ) -> ServiceResult<()> {
        let RemoteReceipt {
            room_id,
            receipt_type,
            user_id,
            event_id,
            thread_id,
            ts,
        } = remote;
        if user_id.server_name() != origin {
            return Err(ServiceError::forbidden(format!(
                "{user_id} is not a user of {origin}"
            )));
        }
        if ![READ, DELIVERED].contains(&receipt_type) {
            return Ok(()); // private or unknown kinds are not for us
        }
        let state = rooms.require_joined(room_id, user_id).await?;
        if !state.server_allowed(origin) {
            return Err(ServiceError::forbidden("denied by the room's server ACL"));
        }
        let event = rooms.get_event(user_id, room_id, event_id).await?;
        let receipts = with_delivered(user_id, receipt_type, thread_id, &event, ts);
        self.record(receipts).await
    }

    /// Records that `user_id` received each room up to the given event
    /// (`room, event id, event sender, event position`).
    pub async fn mark_delivered(
        self: &Arc<Self>,
        rooms: &RoomService,
        user_id: &UserId,
        upto: Vec<(OwnedRoomId, OwnedEventId, OwnedUserId, StreamPos)>,
    ) -> ServiceResult<()> {
        let ts = now_ms();
        // Other Tern servers show their senders the ticks (others ignore
        // the receipt type).
        for (room_id, event_id, _, _) in &upto {
            let edu = receipt_edu(room_id, DELIVERED, user_id, event_id, ts);
            rooms.share_edu(room_id, "m.receipt", edu).await;
        }
        let receipts = upto
            .into_iter()
            .map(
                |(room_id, event_id, event_sender, event_stream)| NewReceipt {
                    room_id,
                    user_id: user_id.to_owned(),
                    receipt_type: DELIVERED.to_owned(),
                    thread_id: None,
                    event_id,
                    event_sender,
                    event_stream,
                    ts,
                },
            )
            .collect();
        self.record(receipts).await
    }

    /// Writes receipts and makes them visible. Runs in its own task: once the
    /// store has committed them, they must reach the in-memory watermark even
    /// if the request that asked is cancelled, or every later receipt would
    /// wait behind the gap.
    async fn record(self: &Arc<Self>, receipts: Vec<NewReceipt>) -> ServiceResult<()> {
        let this = self.clone();
        tokio::spawn(async move { this.write_and_announce(receipts).await })
            .await
            .map_err(ServiceError::internal)?
    }

    async fn write_and_announce(&self, receipts: Vec<NewReceipt>) -> ServiceResult<()> {
        let positions = self.store.set_receipts(receipts.clone()).await?;
        let committed = receipts
            .into_iter()
            .zip(positions)
            .filter_map(|(receipt, stream)| stream.map(|stream| ReceiptRecord { receipt, stream }))
            .collect::<Vec<_>>();
        if !committed.is_empty() {
            self.bus.share(&|| ClusterMessage::Receipts {
                records: committed.clone(),
            });
        }
        self.announce(committed).await;
        Ok(())
    }

    /// Makes committed receipts (from this node or another) visible to this
    /// node's syncs and wakes whoever may see them.
    pub async fn announce(&self, committed: Vec<ReceiptRecord>) {
        for record in self.remember(committed) {
            // Delivered ticks concern the message's sender alone: waking the
            // whole room for each member's delivery would cost members
            // squared per message.
            let only_user = (record.receipt.receipt_type == DELIVERED)
                .then(|| record.receipt.event_sender.clone());
            let notice = StreamNotice::Receipt {
                stream: record.stream,
                room_id: record.receipt.room_id,
                only_user,
            };
            if let Err(err) = self.bus.publish(notice).await {
                tracing::warn!(%err, "publishing a receipt notice failed");
            }
        }
    }

    /// The store's receipt head, which in a cluster may be ahead of
    /// [`Self::position`].
    pub async fn store_position(&self) -> ServiceResult<StreamPos> {
        Ok(self.store.receipts_position().await?)
    }

    /// Up to here every committed receipt is visible to syncs.
    pub fn position(&self) -> StreamPos {
        self.recent.lock().watermark
    }

    /// `m.receipt` events per room for receipts that moved after `since`,
    /// as `viewer` may see them: private read receipts only their own,
    /// delivered receipts only for events they sent.
    pub async fn receipt_events(
        &self,
        room_ids: &[OwnedRoomId],
        since: StreamPos,
        viewer: &UserId,
    ) -> ServiceResult<Vec<(OwnedRoomId, Value)>> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        let records = self.receipts_since(room_ids, since).await?;
        let mut by_room: HashMap<OwnedRoomId, Map<String, Value>> = HashMap::new();
        for ReceiptRecord { receipt: r, .. } in records {
            let private = r.receipt_type == READ_PRIVATE && r.user_id != viewer;
            let not_for_viewer = r.receipt_type == DELIVERED && r.event_sender != viewer;
            if private || not_for_viewer {
                continue;
            }
            let mut data = json!({"ts": r.ts});
            if let Some(thread) = &r.thread_id {
                data["thread_id"] = json!(thread);
            }
            let content = by_room.entry(r.room_id.clone()).or_default();
            let event = content
                .entry(r.event_id.to_string())
                .or_insert_with(|| json!({}));
            event[&r.receipt_type][r.user_id.as_str()] = data;
        }
        Ok(by_room
            .into_iter()
            .map(|(room, content)| (room, json!({"type": "m.receipt", "content": content})))
            .collect())
    }

    /// From memory when it holds everything since `since`, else from the store.
    async fn receipts_since(
        &self,
        room_ids: &[OwnedRoomId],
        since: StreamPos,
    ) -> ServiceResult<Vec<ReceiptRecord>> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        {
            let recent = self.recent.lock();
            if since >= recent.floor {
                let mut found = Vec::new();
                for room_id in room_ids {
                    if let Some(list) = recent.rooms.get(room_id) {
                        // In stream order: start at the first one after `since`.
                        let start = list.partition_point(|r| r.stream <= since);
                        found.extend(list.range(start..).cloned());
                    }
                }
                // Callers let a later receipt replace an earlier one.
                found.sort_by_key(|r| r.stream);
                return Ok(found);
            }
        }
        let watermark = self.position();
        let mut records = self.store.receipts_since(room_ids, since).await?;
        records.retain(|r| r.stream <= watermark);
        Ok(records)
    }

    /// Per-member delivered and read times of one event (Tern's "message info").
    pub async fn message_info(
        &self,
        rooms: &RoomService,
        who: &Requester,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> ServiceResult<MessageInfoResponse> {
        let event = rooms.get_event(&who.user_id, room_id, event_id).await?;
        let state = rooms.known_state(room_id).await?;
        let times = self.store.receipt_times(room_id, event.stream).await?;
        let time_of = |user: &UserId, kind: &str| {
            times
                .iter()
                .find(|(u, k, _)| u == user && k == kind)
                .map(|(_, _, ts)| *ts)
        };
        let mut members: Vec<OwnedUserId> = state
            .members_with(MembershipState::Join)
            .into_iter()
            .filter(|m| *m != event.sender)
            .collect();
        members.sort();
        let mut list = Vec::with_capacity(members.len());
        let (mut all_delivered, mut all_read) = (true, true);
        for member in members {
            let mut read = time_of(&member, READ);
            if member == who.user_id {
                // Your own private receipt counts for you, and only for you.
                read = read.into_iter().chain(time_of(&member, READ_PRIVATE)).min();
            }
            let delivered = time_of(&member, DELIVERED).into_iter().chain(read).min();
            all_delivered &= delivered.is_some();
            all_read &= read.is_some();
            list.push(MemberReceipts {
                user_id: member,
                delivered_ts: delivered,
                read_ts: read,
            });
        }
        Ok(MessageInfoResponse {
            sent_ts: event.pdu["origin_server_ts"].as_i64(),
            event_id: event.event_id,
            sender: event.sender,
            members: list,
            delivered_to_all: all_delivered,
            read_by_all: all_read,
        })
    }
}
