//! Delivery receipts (`tern.delivered`): a sync proves what the client
//! holds, and the rooms whose messages it now has get a receipt.

use super::SyncService;
use crate::service::rooms::Requester;
use crate::service::token::SyncToken;
use ruma_events::room::member::MembershipState;

impl SyncService {
    /// A sync from `since` proves the client holds everything up to it:
    /// record `tern.delivered` for each room that had messages (not state
    /// events) from others since the last proof. Runs in the background; the sync does not wait.
    pub(super) fn acknowledge_delivery(&self, who: &Requester, since: SyncToken) {
        let upto = since.events.min(self.cache.watermark());
        // Memberships are cached by the previous sync; without them, wait
        // for the next one rather than query here (before moving the mark,
        // so that sync's proof still covers these messages: a message
        // without a delivered receipt is pushed).
        let Some(memberships) = self.cache.memberships(&who.user_id) else {
            return;
        };
        let previous = {
            let mut delivered = self.delivered.lock();
            let previous = delivered.get(&who.user_id).copied().unwrap_or(0);
            if upto <= previous {
                return;
            }
            delivered.insert(who.user_id.clone(), upto);
            previous
        };
        let mut receipts = Vec::new();
        for m in memberships
            .iter()
            .filter(|m| m.membership == MembershipState::Join)
        {
            // The client holds everything up to `upto`: the latest message
            // cached is enough, even if the cache does not reach back to
            // the previous proof.
            let events = self.cache.cached_shared(&m.room_id, previous, upto);
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
        let rooms = self.sharing.clone();
        let user_id = who.user_id.clone();
        tokio::spawn(async move {
            if let Err(err) = service.mark_delivered(&rooms, &user_id, receipts).await {
                tracing::warn!(error = %err.message, "recording delivery failed");
            }
        });
    }
}
