//! `/sync`: assembles what changed for a user between two tokens, and waits
//! for the notifier when nothing has.
//!
//! However many rooms a user is in, one sync costs a fixed number of queries:
//! memberships (1), timelines (1 per 200 rooms), state (1 per 1,000 rooms),
//! account data (1). History visibility needs membership history only for the
//! rare events sent before the user joined under `joined`/`invited` rules.
//!
//! One pass (`SyncService::compute`) runs these steps, one file each:
//! plan which rooms enter and how (`plan.rs`), joined rooms with their
//! timelines, state and unread counts (`join.rs`), invites (`invite.rs`),
//! left rooms (`leave.rs`), account data (`account_data.rs`), typing and
//! receipts (`ephemeral.rs`), presence (`presence.rs`), into the types of
//! `response.rs`. Recording delivery when a client proves what it holds is
//! `delivery.rs`.

use ruma_common::{RoomId, UserId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod account_data;
mod delivery;
pub use delivery::AckMarks;
mod e2ee;
mod ephemeral;
mod filter;
mod invite;
mod join;
mod leave;
mod plan;
mod presence;
mod response;

pub use filter::{Filter, RoomFilter};
pub use response::SyncResponse;

use self::plan::{Pass, Plan};
use self::response::{Events, Rooms};
use super::accounts::AccountService;
use super::e2ee::E2eeService;
use super::error::ServiceResult;
use super::notifier::Notifier;
use super::pdu::client_event_for;
use super::presence::{PresenceService, SyncGuard};
use super::receipts::ReceiptService;
use super::rooms::visibility::Viewer;
use super::rooms::{Requester, RoomService};
use super::timeline_cache::TimelineCache;
use super::token::SyncToken;
use super::unread::UnreadService;
use crate::store::{
    AccountStore, MembershipRecord, PresenceState, RoomStore, StoredEvent, StreamPos, TypingStore,
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

/// A sync response with nothing new: the client keeps its token.
fn empty_response(since: SyncToken) -> SyncResponse {
    let next_batch = since.to_string();
    SyncResponse {
        next_batch,
        ..SyncResponse::default()
    }
}

pub struct SyncService {
    rooms: Arc<dyn RoomStore>,
    cache: Arc<TimelineCache>,
    typing: Arc<dyn TypingStore>,
    receipts: Arc<ReceiptService>,
    presence: Arc<PresenceService>,
    unread: Arc<UnreadService>,
    accounts: Arc<dyn AccountStore>,
    notifier: Arc<Notifier>,
    /// Shares delivered receipts with the rooms' other servers.
    sharing: RoomService,
    shutdown: CancellationToken,
    /// Per user, what their clients acknowledged holding and how far
    /// delivery was recorded.
    acks: Arc<AckMarks>,
    /// To-device inboxes, device lists and key counts.
    e2ee: Arc<E2eeService>,
    /// Whom each user ignores (cached there).
    ignoring: Arc<AccountService>,
}

/// What a `SyncService` reads from.
pub struct SyncSources {
    pub rooms: Arc<dyn RoomStore>,
    pub cache: Arc<TimelineCache>,
    pub accounts: Arc<dyn AccountStore>,
    pub typing: Arc<dyn TypingStore>,
    pub receipts: Arc<ReceiptService>,
    pub presence: Arc<PresenceService>,
    pub unread: Arc<UnreadService>,
    pub notifier: Arc<Notifier>,
    /// Where delivered receipts go on to the rooms' other servers.
    pub sharing: RoomService,
    /// Where acknowledgements are noted for the push sender.
    pub acks: Arc<AckMarks>,
    pub e2ee: Arc<E2eeService>,
    /// Whose events and invites each user does not want.
    pub ignoring: Arc<AccountService>,
}

impl SyncService {
    pub fn new(sources: SyncSources, shutdown: CancellationToken) -> Self {
        let SyncSources {
            rooms,
            cache,
            accounts,
            typing,
            receipts,
            presence,
            unread,
            notifier,
            sharing,
            acks,
            e2ee,
            ignoring,
        } = sources;
        Self {
            rooms,
            cache,
            typing,
            receipts,
            presence,
            unread,
            accounts,
            notifier,
            sharing,
            shutdown,
            acks,
            e2ee,
            ignoring,
        }
    }

    /// The client proved it holds everything before `token` (an SSE
    /// client's explicit acknowledgement).
    pub async fn acknowledge(&self, who: &Requester, token: SyncToken) -> ServiceResult<()> {
        self.acknowledge_delivery(who, token);
        self.e2ee.acknowledge_to_device(who, token.to_device).await
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
    pub async fn sync(
        &self,
        who: &Requester,
        request: &SyncRequest,
    ) -> ServiceResult<SyncResponse> {
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
    ) -> ServiceResult<SyncResponse> {
        let Some(since) = request.since else {
            return self.compute(who, None, request).await.map(|(v, _)| v);
        };
        if request.acknowledge {
            self.acknowledge(who, since).await?;
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
                    _ => return self.nothing_new(who, since).await,
                },
                // Shutting down: answer now so the connection can close.
                _ = self.shutdown.cancelled() => return self.nothing_new(who, since).await,
            }
        }
    }

    /// The answer of a long-poll that waited in vain: the same token, and
    /// the device's key counts (an empty count would tell an encrypting
    /// client its one-time keys ran out, and it would upload more).
    async fn nothing_new(&self, who: &Requester, since: SyncToken) -> ServiceResult<SyncResponse> {
        let mut response = empty_response(since);
        let (counts, fallbacks) = self.e2ee.key_counts(who).await?;
        response.device_one_time_keys_count = counts;
        response.device_unused_fallback_key_types = fallbacks;
        Ok(response)
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

    /// One pass: what changed for the user between `since` and now, and
    /// whether any of it is news.
    async fn compute(
        &self,
        who: &Requester,
        since: Option<SyncToken>,
        request: &SyncRequest,
    ) -> ServiceResult<(SyncResponse, bool)> {
        let upto = self.positions(since.as_ref()).await?;
        let memberships = self.memberships(&who.user_id, upto.events).await?;
        let ignored = self.ignoring.ignored_users(&who.user_id).await?;
        let pass = Pass::new(who, since, request, upto, ignored);
        let plan = Plan::new(&pass, &memberships);

        let mut join = BTreeMap::new();
        let sharing = self.add_joined_rooms(&pass, &plan, &mut join).await?;
        let invite = self.invited_rooms(&pass, &plan.invites).await?;
        let leave = self.left_rooms(&pass, &plan.leaves).await?;
        let account_data = self.add_account_data(&pass, &plan, &mut join).await?;
        self.add_typing(&pass, &plan, &mut join).await?;
        self.add_receipts(&pass, &plan, &mut join).await?;
        self.add_unread_counts(&pass, &mut join).await?;
        let mut e2ee = self.e2ee_sections(&pass, &plan, &sharing).await?;
        let presence = self
            .presence_events(&pass, &memberships, sharing.newly_shared)
            .await?;

        let has_news = !join.is_empty()
            || !invite.is_empty()
            || !leave.is_empty()
            || !account_data.is_empty()
            || !presence.is_empty()
            || !e2ee.to_device.is_empty()
            || !e2ee.device_lists.changed.is_empty()
            || !e2ee.device_lists.left.is_empty();
        // A response that goes out now carries the key counts; one that
        // waits for news is computed again.
        let waits = since.is_some() && !request.full_state && !request.timeout.is_zero();
        if has_news || !waits {
            self.add_key_counts(&pass, &mut e2ee).await?;
        }
        let next = SyncToken {
            to_device: e2ee.to_device_upto,
            ..upto
        };
        let response = SyncResponse {
            next_batch: next.to_string(),
            rooms: Rooms {
                join,
                invite,
                leave,
                knock: BTreeMap::new(),
            },
            account_data: Events {
                events: account_data,
            },
            presence: Events { events: presence },
            to_device: Events {
                events: e2ee.to_device,
            },
            device_lists: e2ee.device_lists,
            device_one_time_keys_count: e2ee.one_time_keys_count,
            device_unused_fallback_key_types: e2ee.unused_fallback_key_types,
        };
        Ok((response, has_news))
    }

    /// Where this pass ends in each stream.
    async fn positions(&self, since: Option<&SyncToken>) -> ServiceResult<SyncToken> {
        // Up to the cache's watermark, not the store's head: every event up
        // to it is visible in the cache, so nothing committed is skipped.
        let mut upto = SyncToken {
            events: self.cache.watermark(),
            account_data: self.accounts.account_data_position().await?,
            typing: self.typing.typing_position().await?,
            receipts: self.receipts.position(),
            presence: self.presence.position().await?,
            device_lists: self.e2ee.device_list_position().await?,
            to_device: self.e2ee.to_device_position().await?,
        };
        if let Some(since) = since {
            self.hold_ahead_token(since, &mut upto).await?;
        }
        Ok(upto)
    }

    /// The user's memberships: as cached by an earlier sync, or read from
    /// the store and cached.
    async fn memberships(
        &self,
        user_id: &UserId,
        upto: StreamPos,
    ) -> ServiceResult<Arc<Vec<MembershipRecord>>> {
        if let Some(list) = self.cache.memberships(user_id) {
            return Ok(list);
        }
        let list = Arc::new(self.rooms.memberships_of_user(user_id).await?);
        self.cache.store_memberships(user_id, upto, list.clone());
        Ok(list)
    }

    /// Drops events the user may not see. Events after the user's current
    /// join are always visible; older ones need the membership history.
    async fn visible(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
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
