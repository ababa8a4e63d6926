//! `/sync`: assembles what changed for a user between two tokens, and waits
//! for the notifier when nothing has.
//!
//! However many rooms a user is in, one sync costs a fixed number of queries:
//! memberships (1), timelines (1 per 200 rooms), state (1 per 1,000 rooms),
//! account data (1). History visibility needs membership history only for the
//! rare events sent before the user joined under `joined`/`invited` rules.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

mod filter;

pub use filter::{Filter, RoomFilter};

use super::error::ServiceResult;
use super::notifier::Notifier;
use super::pdu::client_event_for;
use super::presence::{PresenceService, SyncGuard};
use super::receipts::ReceiptService;
use super::rooms::visibility::Viewer;
use super::rooms::{now_ms, Requester};
use super::timeline_cache::TimelineCache;
use super::token::{pagination_token, SyncToken};
use super::unread::UnreadService;
use crate::store::{
    AccountStore, Ephemeral, MembershipRecord, PresenceState, RoomStore, StoredEvent, StreamPos,
};

pub struct SyncRequest {
    pub since: Option<SyncToken>,
    pub timeout: Duration,
    pub full_state: bool,
    pub filter: Filter,
    /// The `set_presence` parameter; absent means online.
    pub set_presence: Option<PresenceState>,
    /// `since` proves the client holds everything before it, so delivery
    /// is recorded (a long-poll's or a reconnect's token; not the tokens
    /// an SSE stream moves through on its own).
    pub acknowledge: bool,
}

/// Adds an event to one section (`ephemeral`, `account_data`) of a joined
/// room's entry, creating an entry with an empty timeline if the room had none.
fn push_room_event(
    join: &mut Map<String, Value>,
    room_id: &str,
    section: &str,
    event: Value,
    upto: StreamPos,
) {
    let room = join.entry(room_id.to_owned()).or_insert_with(|| {
        json!({
            "timeline": {"events": [], "limited": false, "prev_batch": pagination_token(upto)},
            "state": {"events": []},
            "ephemeral": {"events": []},
            "account_data": {"events": []},
            "unread_notifications": {},
        })
    });
    if let Some(Value::Array(list)) = room.get_mut(section).and_then(|s| s.get_mut("events")) {
        list.push(event);
    }
}

/// A sync response with nothing new: the client keeps its token.
fn empty_response(since: SyncToken) -> Value {
    json!({
        "next_batch": since.to_string(),
        "rooms": {"join": {}, "invite": {}, "leave": {}, "knock": {}},
        "account_data": {"events": []},
        "presence": {"events": []},
        "to_device": {"events": []},
        "device_lists": {"changed": [], "left": []},
        "device_one_time_keys_count": {},
    })
}

pub struct SyncService {
    rooms: Arc<dyn RoomStore>,
    cache: Arc<TimelineCache>,
    ephemeral: Arc<dyn Ephemeral>,
    receipts: Arc<ReceiptService>,
    presence: Arc<PresenceService>,
    unread: Arc<UnreadService>,
    accounts: Arc<dyn AccountStore>,
    notifier: Arc<Notifier>,
    shutdown: CancellationToken,
    /// Per user, the event position up to which delivery was last recorded.
    delivered: Mutex<HashMap<String, StreamPos>>,
}

/// How one room enters the response.
enum RoomPlan {
    /// Timeline since the token, state changes only if the timeline has a gap.
    Incremental,
    /// Full state plus recent timeline: initial sync, full_state or a new join.
    Full,
}

/// What a `SyncService` reads from.
pub struct SyncSources {
    pub rooms: Arc<dyn RoomStore>,
    pub cache: Arc<TimelineCache>,
    pub accounts: Arc<dyn AccountStore>,
    pub ephemeral: Arc<dyn Ephemeral>,
    pub receipts: Arc<ReceiptService>,
    pub presence: Arc<PresenceService>,
    pub unread: Arc<UnreadService>,
    pub notifier: Arc<Notifier>,
}

impl SyncService {
    pub fn new(sources: SyncSources, shutdown: CancellationToken) -> Self {
        let SyncSources {
            rooms,
            cache,
            accounts,
            ephemeral,
            receipts,
            presence,
            unread,
            notifier,
        } = sources;
        Self {
            rooms,
            cache,
            ephemeral,
            receipts,
            presence,
            unread,
            accounts,
            notifier,
            shutdown,
            delivered: Mutex::new(HashMap::new()),
        }
    }

    /// A sync from `since` proves the client holds everything up to it:
    /// record `tern.delivered` for each room that had messages (not state
    /// events) from others since the last proof. Runs in the background; the sync does not wait.
    fn acknowledge_delivery(&self, who: &Requester, since: SyncToken) {
        let upto = since.events.min(self.cache.watermark());
        let previous = {
            let mut delivered = self.delivered.lock().expect("delivered lock");
            let previous = delivered.get(&who.user_id).copied().unwrap_or(0);
            if upto <= previous {
                return;
            }
            delivered.insert(who.user_id.clone(), upto);
            previous
        };
        // Memberships are cached by the previous sync; without them, wait
        // for the next one rather than query here.
        let Some(memberships) = self.cache.memberships(&who.user_id) else {
            return;
        };
        let mut receipts = Vec::new();
        for m in memberships.iter().filter(|m| m.membership == "join") {
            let Some(events) = self.cache.recent_shared(&m.room_id, previous, upto) else {
                continue;
            };
            // Ticks are for messages: state events (joins, names) get none.
            let last = events
                .iter()
                .rev()
                .find(|e| e.sender != who.user_id && e.state_key.is_none());
            if let Some(last) = last {
                receipts.push((
                    m.room_id.clone(),
                    last.event_id.clone(),
                    last.sender.clone(),
                    last.stream,
                ));
            }
        }
        if receipts.is_empty() {
            return;
        }
        let service = self.receipts.clone();
        let user_id = who.user_id.clone();
        tokio::spawn(async move {
            if let Err(err) = service.mark_delivered(&user_id, receipts).await {
                tracing::warn!(error = %err.message, "recording delivery failed");
            }
        });
    }

    /// The client proved it holds everything before `token` (an SSE
    /// client's explicit acknowledgement).
    pub fn acknowledge(&self, who: &Requester, token: SyncToken) {
        self.acknowledge_delivery(who, token);
    }

    /// The user counts as connected (presence) while the guard lives: one
    /// long-poll, or a whole SSE stream.
    pub async fn connect(
        &self,
        who: &Requester,
        set_presence: Option<PresenceState>,
    ) -> ServiceResult<SyncGuard> {
        self.presence.sync_started(&who.user_id, set_presence).await
    }

    /// Whether the server is shutting down: streams end so it can.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Answers at once if there is news (or no `since`), otherwise waits for
    /// the notifier until the timeout.
    pub async fn sync(&self, who: &Requester, request: &SyncRequest) -> ServiceResult<Value> {
        // Held until the response is ready (or the client goes away): the
        // user counts as connected meanwhile.
        let _connected = self.connect(who, request.set_presence).await?;
        self.sync_connected(who, request).await
    }

    /// [`Self::sync`] for a caller that holds a [`Self::connect`] guard.
    pub async fn sync_connected(
        &self,
        who: &Requester,
        request: &SyncRequest,
    ) -> ServiceResult<Value> {
        let Some(since) = request.since else {
            return self.compute(who, None, request).await.map(|(v, _)| v);
        };
        if request.acknowledge {
            self.acknowledge_delivery(who, since);
        }
        if request.full_state || request.timeout.is_zero() {
            return self
                .compute(who, Some(since), request)
                .await
                .map(|(v, _)| v);
        }
        let deadline = tokio::time::Instant::now() + request.timeout;
        let mut wake = self.notifier.subscribe(&who.user_id);
        loop {
            wake.borrow_and_update();
            // Boxed: the waiting future then holds a pointer, not the whole
            // state of `compute`, and idle long-polls stay small.
            let (response, has_news) = Box::pin(self.compute(who, Some(since), request)).await?;
            if has_news {
                return Ok(response);
            }
            drop(response);
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, wake.changed()) => match changed {
                    Ok(Ok(())) => continue,
                    // Timed out, or the notifier went away: nothing new.
                    _ => return Ok(empty_response(since)),
                },
                // Shutting down: answer now so the connection can close.
                _ = self.shutdown.cancelled() => return Ok(empty_response(since)),
            }
        }
    }

    /// A token from another node of a cluster can be ahead of this node's
    /// caches. Where the store shows it is real, the answer keeps its
    /// positions (the client already has everything up to them) instead of
    /// going back to the cache's, which would repeat events. A token ahead of
    /// the store too is not from this deployment's present (a restored
    /// backup, a forged token) and gets the cache's positions: a fresh start
    /// rather than a wait for positions that may never come.
    async fn hold_ahead_token(&self, since: &SyncToken, upto: &mut SyncToken) -> ServiceResult<()> {
        if since.events > upto.events && since.events <= self.rooms.events_position().await? {
            upto.events = since.events;
        }
        if since.receipts > upto.receipts
            && since.receipts <= self.receipts.store_position().await?
        {
            upto.receipts = since.receipts;
        }
        Ok(())
    }

    async fn compute(
        &self,
        who: &Requester,
        since: Option<SyncToken>,
        request: &SyncRequest,
    ) -> ServiceResult<(Value, bool)> {
        let filter = &request.filter;
        // Up to the cache's watermark, not the store's head: every event up
        // to it is visible in the cache, so nothing committed is skipped.
        let mut upto = SyncToken {
            events: self.cache.watermark(),
            account_data: self.accounts.account_data_position().await?,
            typing: self.ephemeral.typing_position().await?,
            receipts: self.receipts.position(),
            presence: self.presence.position().await?,
        };
        if let Some(since) = &since {
            self.hold_ahead_token(since, &mut upto).await?;
        }
        let since_events = since.map(|s| s.events).unwrap_or(0);
        let memberships = match self.cache.memberships(&who.user_id) {
            Some(list) => list,
            None => {
                let list = Arc::new(self.rooms.memberships_of_user(&who.user_id).await?);
                self.cache
                    .store_memberships(&who.user_id, upto.events, list.clone());
                list
            }
        };

        let mut plans: Vec<(MembershipRecord, RoomPlan)> = Vec::new();
        let mut invites = Vec::new();
        let mut leaves = Vec::new();
        for m in memberships.iter().cloned() {
            if !filter.allows_room(&m.room_id) || m.stream > upto.events {
                continue;
            }
            let changed = m.stream > since_events;
            match m.membership.as_str() {
                "join" => {
                    let plan = if since.is_none() || request.full_state || changed {
                        RoomPlan::Full
                    } else {
                        RoomPlan::Incremental
                    };
                    plans.push((m, plan));
                }
                "invite" if changed || since.is_none() => invites.push(m),
                "leave" | "ban"
                    if (changed && since.is_some())
                        || (since.is_none() && filter.room.include_leave) =>
                {
                    leaves.push(m)
                }
                _ => {}
            }
        }

        let limit = filter.timeline_limit();
        let now = now_ms();
        let mut join = Map::new();

        let incremental: Vec<String> = plans
            .iter()
            .filter(|(_, p)| matches!(p, RoomPlan::Incremental))
            .map(|(m, _)| m.room_id.clone())
            .collect();
        let full: Vec<String> = plans
            .iter()
            .filter(|(_, p)| matches!(p, RoomPlan::Full))
            .map(|(m, _)| m.room_id.clone())
            .collect();
        let join_streams: HashMap<&str, StreamPos> = plans
            .iter()
            .map(|(m, _)| (m.room_id.as_str(), m.stream))
            .collect();

        // Incremental rooms come from the cache when it holds everything
        // since the token; the rest from the store in one batch.
        let mut timelines = Vec::with_capacity(plans.len());
        let mut uncached = Vec::new();
        for room_id in &incremental {
            match self.cache.recent(room_id, since_events, upto.events, limit) {
                Some(slice) => timelines.push((room_id.clone(), slice)),
                None => uncached.push(room_id.clone()),
            }
        }
        timelines.extend(
            self.rooms
                .recent_events(&uncached, since_events, upto.events, limit)
                .await?,
        );
        let incremental: HashSet<String> = incremental.into_iter().collect();
        let full_set: HashSet<&str> = full.iter().map(String::as_str).collect();
        timelines.extend(
            self.rooms
                .recent_events(&full, 0, upto.events, limit)
                .await?,
        );

        // State: everything for full rooms; for incremental rooms with a gap,
        // the state that changed in the gap.
        let gapped: Vec<String> = timelines
            .iter()
            .filter(|(room, slice)| slice.limited && incremental.contains(room))
            .map(|(room, _)| room.clone())
            .collect();
        let mut state_by_room: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        for event in self
            .rooms
            .current_state_of_rooms(&full, 0, upto.events)
            .await?
        {
            state_by_room
                .entry(event.room_id.clone())
                .or_default()
                .push(event);
        }
        for event in self
            .rooms
            .current_state_of_rooms(&gapped, since_events, upto.events)
            .await?
        {
            state_by_room
                .entry(event.room_id.clone())
                .or_default()
                .push(event);
        }

        // People who came to share a room with the user since the token:
        // the members of rooms the user joined, and whoever joined a room
        // of theirs. Their presence goes out even if it did not move.
        let mut newly_shared: HashSet<String> = HashSet::new();
        if since.is_some() {
            for (m, _) in plans.iter().filter(|(m, _)| m.stream > since_events) {
                newly_shared.extend(self.notifier.room_members(&m.room_id).await.iter().cloned());
            }
        }
        for (room_id, slice) in timelines {
            let join_stream = join_streams.get(room_id.as_str()).copied().unwrap_or(0);
            let events = self
                .visible(&who.user_id, &room_id, join_stream, slice.events)
                .await?;
            if since.is_some() {
                newly_shared.extend(
                    events
                        .iter()
                        .filter(|e| {
                            e.kind == "m.room.member" && e.pdu["content"]["membership"] == "join"
                        })
                        .filter_map(|e| e.state_key.clone()),
                );
            }
            let is_full = full_set.contains(room_id.as_str());
            if events.is_empty() && !is_full {
                continue;
            }
            let timeline_ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
            let first_stream = events.first().map(|e| e.stream).unwrap_or(upto.events + 1);
            let state: Vec<Value> = state_by_room
                .get(&room_id)
                .map(|list| {
                    list.iter()
                        .filter(|e| {
                            !timeline_ids.contains(e.event_id.as_str()) && e.stream < first_stream
                        })
                        .filter(|e| filter.room.state.matches(e))
                        .map(|e| self.format(e, who, now))
                        .collect()
                })
                .unwrap_or_default();
            let prev_batch = pagination_token(first_stream - 1);
            let timeline: Vec<Value> = events
                .iter()
                .filter(|e| filter.room.timeline.matches(e))
                .map(|e| self.format(e, who, now))
                .collect();
            join.insert(
                room_id,
                json!({
                    "timeline": {"events": timeline, "limited": slice.limited, "prev_batch": prev_batch},
                    "state": {"events": state},
                    "ephemeral": {"events": []},
                    "account_data": {"events": []},
                    "unread_notifications": {},
                }),
            );
        }

        let mut invite = Map::new();
        for m in &invites {
            let state = self.rooms.current_state(&m.room_id).await?;
            let inviter = state
                .iter()
                .find(|e| e.event_id == m.event_id)
                .map(|e| e.sender.as_str())
                .unwrap_or_default();
            let stripped: Vec<Value> = state
                .iter()
                .filter(|e| {
                    matches!(
                        e.kind.as_str(),
                        "m.room.create"
                            | "m.room.join_rules"
                            | "m.room.name"
                            | "m.room.avatar"
                            | "m.room.canonical_alias"
                            | "m.room.encryption"
                            | "m.room.topic"
                    ) || (e.kind == "m.room.member"
                        && (e.state_key.as_deref() == Some(who.user_id.as_str())
                            || e.state_key.as_deref() == Some(inviter)))
                })
                .map(|e| {
                    json!({"type": e.kind, "state_key": e.state_key, "sender": e.sender,
                           "content": e.pdu.get("content").cloned().unwrap_or(json!({}))})
                })
                .collect();
            invite.insert(
                m.room_id.clone(),
                json!({"invite_state": {"events": stripped}}),
            );
        }

        let mut leave = Map::new();
        for m in &leaves {
            let slices = self
                .rooms
                .recent_events(
                    std::slice::from_ref(&m.room_id),
                    since_events,
                    m.stream,
                    limit,
                )
                .await?;
            let Some((_, slice)) = slices.into_iter().next() else {
                continue;
            };
            let events = self
                .visible(&who.user_id, &m.room_id, 0, slice.events)
                .await?;
            let first_stream = events.first().map(|e| e.stream).unwrap_or(m.stream);
            let timeline: Vec<Value> = events.iter().map(|e| self.format(e, who, now)).collect();
            leave.insert(
                m.room_id.clone(),
                json!({
                    "timeline": {"events": timeline, "limited": slice.limited,
                                 "prev_batch": pagination_token(first_stream - 1)},
                    "state": {"events": []},
                    "account_data": {"events": []},
                }),
            );
        }

        let since_ad = since.map(|s| s.account_data).unwrap_or(0);
        let mut global_ad = Vec::new();
        let account_data = if since_ad >= upto.account_data {
            Vec::new()
        } else {
            self.accounts
                .account_data_since(&who.user_id, since_ad)
                .await?
        };
        for entry in account_data {
            if entry.stream > upto.account_data {
                continue;
            }
            let event = json!({"type": entry.kind, "content": entry.content});
            match &entry.room_id {
                None => global_ad.push(event),
                Some(room_id) => {
                    if plans.iter().any(|(m, _)| &m.room_id == room_id) {
                        push_room_event(&mut join, room_id, "account_data", event, upto.events);
                    }
                }
            }
        }

        // Typing: rooms whose typists changed since the token, and every
        // room shown in full. Typing positions start over when the server
        // restarts, so a token from before then counts as "from the start".
        let since_typing = since
            .map(|s| s.typing)
            .filter(|t| *t <= upto.typing)
            .unwrap_or(0);
        let joined_ids: Vec<String> = plans
            .iter()
            .filter(|(_, p)| matches!(p, RoomPlan::Incremental))
            .map(|(m, _)| m.room_id.clone())
            .collect();
        let mut typing = self
            .ephemeral
            .typing_since(&joined_ids, since_typing)
            .await?;
        typing.extend(self.ephemeral.typing_since(&full, 0).await?);
        for (room_id, users) in typing {
            let event = json!({"type": "m.typing", "content": {"user_ids": users}});
            push_room_event(&mut join, &room_id, "ephemeral", event, upto.events);
        }

        // Receipts that moved since the token; all current ones for rooms
        // shown in full.
        let since_receipts = since.map(|s| s.receipts).unwrap_or(0);
        let mut receipts = if since_receipts < upto.receipts {
            self.receipts
                .receipt_events(&joined_ids, since_receipts, &who.user_id)
                .await?
        } else {
            Vec::new()
        };
        receipts.extend(self.receipts.receipt_events(&full, 0, &who.user_id).await?);
        for (room_id, event) in receipts {
            push_room_event(&mut join, &room_id, "ephemeral", event, upto.events);
        }

        // Unread counts for every joined room the response shows.
        let shown: Vec<String> = join.keys().cloned().collect();
        let counts = self
            .unread
            .counts(&who.user_id, &shown, upto.events)
            .await?;
        for (entry, c) in join.values_mut().zip(counts) {
            entry["unread_notifications"] = c.to_json();
        }

        // Presence of those who share a joined room, whatever the room filter.
        let presence_filter = &filter.presence;
        // Nothing moved in the presence stream: skip the room list too.
        let presence_moved = since.is_none_or(|s| s.presence != upto.presence);
        newly_shared.remove(&who.user_id);
        let presence = if (presence_moved || !newly_shared.is_empty())
            && presence_filter.allows_type("m.presence")
        {
            let joined_rooms: Vec<String> = memberships
                .iter()
                .filter(|m| m.membership == "join" && m.stream <= upto.events)
                .map(|m| m.room_id.clone())
                .collect();
            let mut events = if presence_moved {
                self.presence
                    .sync_events(
                        &who.user_id,
                        &joined_rooms,
                        since.map(|s| s.presence),
                        upto.presence,
                    )
                    .await?
            } else {
                Vec::new()
            };
            let reported: HashSet<String> = events
                .iter()
                .filter_map(|e| e["sender"].as_str().map(str::to_owned))
                .collect();
            let missing: Vec<String> = newly_shared
                .into_iter()
                .filter(|u| !reported.contains(u))
                .collect();
            events.extend(self.presence.current_events(&who.user_id, &missing).await?);
            events.retain(|e| {
                presence_filter.matches_parts("m.presence", e["sender"].as_str().unwrap_or(""))
            });
            if let Some(limit) = presence_filter.limit.filter(|l| *l >= 0) {
                events.truncate(limit as usize);
            }
            events
        } else {
            Vec::new()
        };

        let has_news = !join.is_empty()
            || !invite.is_empty()
            || !leave.is_empty()
            || !global_ad.is_empty()
            || !presence.is_empty();
        let response = json!({
            "next_batch": upto.to_string(),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": {}},
            "account_data": {"events": global_ad},
            "presence": {"events": presence},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
        });
        Ok((response, has_news))
    }

    /// Drops events the user may not see. Events after the user's current
    /// join are always visible; older ones need the membership history.
    async fn visible(
        &self,
        user_id: &str,
        room_id: &str,
        join_stream: StreamPos,
        events: Vec<StoredEvent>,
    ) -> ServiceResult<Vec<StoredEvent>> {
        let needs_history = events.iter().any(|e| {
            e.stream < join_stream && e.visibility != "shared" && e.visibility != "world_readable"
        }) || join_stream == 0;
        if !needs_history {
            return Ok(events);
        }
        let viewer = Viewer {
            user_id,
            history: self.rooms.membership_history(room_id, user_id).await?,
        };
        Ok(events.into_iter().filter(|e| viewer.can_see(e)).collect())
    }

    fn format(&self, event: &StoredEvent, who: &Requester, now: i64) -> Value {
        client_event_for(event, &who.user_id, &who.device_id, now, false)
    }
}
